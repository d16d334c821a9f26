"""The conformance suite: generated and curated dialogs through spec and kernel."""
