"""The reference helper's own netlink sockets: nfnetlink_cthelper and
nfnetlink_queue on one socket (the daemon's), and its ctnetlink expectation
socket. Every message they send or read is encoded and decoded by
sipct.netlink, which holds each netlink codec once.
"""
