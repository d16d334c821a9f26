"""Where the lab puts its hosts: host specs and the L2 segments they share.

Pure planning, no namespaces: hosts whose subnets overlap share one segment
(a bridge in the router namespace), see :mod:`sipct.harness.lab`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from sipct.spec.topology import network_of, router_address

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

# RFC 5737 and RFC 3849: the lab only ever carries documentation addresses.
DOCUMENTATION_NETWORKS: tuple[IPNetwork, ...] = (
    IPv4Network("192.0.2.0/24"),
    IPv4Network("198.51.100.0/24"),
    IPv4Network("203.0.113.0/24"),
    IPv6Network("2001:db8::/32"),
)

_HOST_NAME = re.compile(r"[a-z][a-z0-9_]{0,23}")
ROUTER_ROLE = "router"
DEFAULT_TIMEOUT = 0.2  # seconds a send waits before calling the packet dropped




@dataclass(frozen=True)
class HostSpec:
    """An endpoint host: its name and its addresses (strings are accepted)."""

    name: str
    addresses: tuple[IPAddress, ...] = field(default=())

    def __post_init__(self) -> None:
        if not _HOST_NAME.fullmatch(self.name) or self.name == ROUTER_ROLE:
            raise ValueError(
                f"host name {self.name!r}: use [a-z][a-z0-9_]* (at most 24), not 'router'"
            )
        addresses = tuple(ipaddress.ip_address(a) for a in self.addresses)
        if not addresses:
            raise ValueError(f"host {self.name!r} has no address")
        object.__setattr__(self, "addresses", addresses)

    def address(self, family: int) -> IPAddress:
        """The host's first address of IP version `family` (4 or 6)."""
        for addr in self.addresses:
            if addr.version == family:
                return addr
        raise LookupError(f"host {self.name!r} has no IPv{family} address")


@dataclass(frozen=True)
class Segment:
    """One L2 segment: a router-side bridge and the subnets/hosts on it."""

    bridge: str
    subnets: tuple[IPNetwork, ...]
    hosts: tuple[str, ...]


def plan_segments(hosts: Sequence[HostSpec]) -> list[Segment]:
    """Group hosts into bridges: hosts that share any subnet share a segment."""
    names = [h.name for h in hosts]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate host names in {names}")
    seen: dict[IPAddress, str] = {}
    for host in hosts:
        for addr in host.addresses:
            if not any(addr in net for net in DOCUMENTATION_NETWORKS):
                raise ValueError(
                    f"{addr} of {host.name!r} is not a documentation address "
                    "(192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32)"
                )
            net = network_of(addr)
            if addr == router_address(net):
                raise ValueError(f"{addr} of {host.name!r} is the router's address in {net}")
            if addr.version == 4 and addr in (net.network_address, net.broadcast_address):
                raise ValueError(f"{addr} of {host.name!r} is not a host address of {net}")
            if addr in seen:
                raise ValueError(f"{addr} is given to both {seen[addr]!r} and {host.name!r}")
            seen[addr] = host.name

    # Union-find over hosts, joined through the subnets they have in common.
    parent = list(range(len(hosts)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[IPNetwork, int] = {}
    for i, host in enumerate(hosts):
        for addr in host.addresses:
            j = owner.setdefault(network_of(addr), i)
            parent[root(i)] = root(j)

    groups: dict[int, list[int]] = {}
    for i in range(len(hosts)):
        groups.setdefault(root(i), []).append(i)
    segments = []
    for k, members in enumerate(groups.values()):
        subnets = dict.fromkeys(network_of(a) for i in members for a in hosts[i].addresses)
        segments.append(Segment(f"br{k}", tuple(subnets), tuple(hosts[i].name for i in members)))
    return segments
