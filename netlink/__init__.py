"""The kernel-facing layer under both the harness and the reference helper:
every netlink codec, once - netlink's fixed layouts and attribute reader
(wire), the ctnetlink tuple (cttuple), conntracks (conntrack), expectations
(ctexp), nfnetlink_cthelper (cthelper), nfnetlink_queue (nfqueue) - the
ctnetlink socket, entering a network namespace, the running kernel's facts
and the one converter from the kernel's expectations to the spec's. It
imports only the spec (spec <- netlink <- harness / reference)."""
