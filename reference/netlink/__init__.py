"""The reference helper's own netlink messages: nfnetlink_cthelper and nfnetlink_queue.

Expectations and conntracks are ctnetlink's, whose codec lives in
sipct.netlink.ctexp and is reused here, not repeated.
"""
