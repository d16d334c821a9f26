"""The kernel-facing layer under both the harness and the reference helper:
ctnetlink's fixed layouts, expectation codec and sockets, entering a network
namespace, the running kernel's facts and the one converter from the kernel's
expectations to the spec's. It imports only the spec (spec <- netlink <-
harness / reference)."""
