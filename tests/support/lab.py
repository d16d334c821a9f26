"""Shared hosts and router probes for the lab tests."""

from __future__ import annotations

import os

from pyroute2 import NFCTSocket
from sipct.netlink.netns import in_netns, open_netns
from sipct.harness.lab import HostSpec, Lab, lab_namespaces

UA = HostSpec("ua", ("192.0.2.2", "2001:db8:1::2"))
SERVER = HostSpec("server", ("198.51.100.2", "2001:db8:2::2"))


def own_namespaces() -> list[str]:
    """Lab namespaces made by this very process."""
    return [n for n in lab_namespaces() if n.startswith(f"sipct-{os.getpid()}-")]


def router_conntracks(lab: Lab) -> list:
    """The router's conntrack entries, both families, read over ctnetlink."""
    entries = []
    fd = open_netns(lab.router_netns)
    try:
        with in_netns(fd):  # pyroute2 makes its socket here, in the router
            for family in (2, 10):  # AF_INET, AF_INET6: a dump is per family
                with NFCTSocket(family) as ct:
                    entries += list(ct.dump())
    finally:
        os.close(fd)
    return entries


def router_expectations(lab: Lab) -> list[str]:
    """The router's expectations, one line each, from its /proc/net.

    /proc/thread-self/net is this thread's namespace's view, which in_netns
    has just switched to the router's.
    """
    fd = open_netns(lab.router_netns)
    try:
        with in_netns(fd):
            with open("/proc/thread-self/net/nf_conntrack_expect") as f:
                return f.read().splitlines()
    finally:
        os.close(fd)
