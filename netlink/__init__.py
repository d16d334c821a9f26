"""ctnetlink plumbing: expectation codec and sockets bound to a network namespace."""
