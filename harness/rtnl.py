"""The rtnetlink calls that build the lab (pyroute2), and the lab's error."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from pyroute2 import IPRoute
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD
from pyroute2.netlink.rtnl.ndmsg import NUD_PERMANENT

IPAddress = IPv4Address | IPv6Address


class LabError(RuntimeError):
    """The lab could not be built (the message says which step failed)."""


def ifindex(ipr: IPRoute, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise LabError(f"interface {ifname} missing")
    return found[0]


def link_up(ipr: IPRoute, ifname: str) -> None:
    ipr.link("set", index=ifindex(ipr, ifname), state="up")


def add_address(ipr: IPRoute, ifindex: int, addr: IPAddress, prefixlen: int) -> None:
    # IFA_F_NODAD on top of accept_dad=0: belt and braces, the address is
    # usable the moment the call returns.
    ipr.addr(
        "add",
        index=ifindex,
        address=str(addr),
        prefixlen=prefixlen,
        flags=IFA_F_NODAD if addr.version == 6 else 0,
    )


def add_neighbour(ipr: IPRoute, ifindex: int, addr: IPAddress, mac: str) -> None:
    ipr.neigh("add", dst=str(addr), lladdr=mac, ifindex=ifindex, state=NUD_PERMANENT)
