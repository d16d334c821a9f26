"""The capture's addresses on the lab's hosts: each endpoint a named host with
a documentation address, and every address inside SIP and SDP rewritten the
same way (with Content-Length following the body's new length).

The lab's rule (spec/topology.py): a host lives in its /24 or /64, and the
two hosts of a packet are in different networks, so that the packet crosses
the router where the helper runs. IPv4 has three documentation /24s, so more
than three hosts share them: hosts that exchange packets never do.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from sipct.harness.lab import DOCUMENTATION_NETWORKS  # noqa: the lab's own list
from sipct.spec.expectation import Address
from sipct.spec.topology import network_of, router_address

from .messages import Message

IPV4_NETWORKS = [n for n in DOCUMENTATION_NETWORKS if n.version == 4]
IPV4_LITERAL = re.compile(rb"(?<![0-9.])\d{1,3}(?:\.\d{1,3}){3}(?![0-9]|\.[0-9])")
IPV6_LITERAL = re.compile(rb"(?<![0-9A-Za-z:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:\.\d{1,3}){0,3}"
                   rb"(?![0-9A-Za-z:])")


class AddressPlanError(ValueError):
    pass


@dataclass
class AddressPlan:
    """Capture address -> lab address, and the hosts' names."""

    family: int
    names: dict[Address, str] = field(default_factory=dict)  # capture endpoint -> host name
    lab: dict[Address, Address] = field(default_factory=dict)  # capture address -> lab address (endpoints too)

    def host(self, addr: Address) -> str:
        return self.names[addr]

    @property
    def hosts(self) -> dict[str, Address]:
        return {name: self.lab[addr] for addr, name in self.names.items()}

    @property
    def others(self) -> dict[Address, Address]:
        """Addresses that only the messages name (media servers, NAT's outside, ...)."""
        return {a: b for a, b in self.lab.items() if a not in self.names}


def host_names(count: int) -> list[str]:
    """The first sender is the user agent, whom it first talks to the server."""
    return (["ua", "server"] + [f"host{i}" for i in range(3, count + 1)])[:count]


def plan_addresses(family: int, endpoints: list[Address], talks: set[frozenset[Address]],
                   mentioned: Iterable[Address], keep: bool) -> AddressPlan:
    """``endpoints`` in order of appearance; ``talks``: the pairs that exchange packets."""
    plan = AddressPlan(family)
    for addr, name in zip(endpoints, host_names(len(endpoints))):
        plan.names[addr] = name
    if keep:
        _check_kept(endpoints, talks)
        plan.lab = {a: a for a in endpoints}
        return plan
    if family == 6:
        for i, addr in enumerate(endpoints, start=1):
            plan.lab[addr] = ipaddress.IPv6Address(f"2001:db8:{i:x}::2")
    else:
        networks: dict[Address, int] = {}
        used = [2] * len(IPV4_NETWORKS)  # the next host number per network (.1 is the router)
        for addr in endpoints:
            taken = {networks[peer] for pair in talks if addr in pair for peer in pair
                     if peer != addr and peer in networks}
            free = [i for i in range(len(IPV4_NETWORKS)) if i not in taken]
            if not free:
                raise AddressPlanError(f"{addr} exchanges packets with hosts in all three IPv4 documentation "
                                       f"networks; the lab cannot place it")
            # Spread the hosts: the network with the fewest hosts so far, the first of equals.
            net = min(free, key=lambda i: (used[i], i))
            networks[addr] = net
            plan.lab[addr] = IPV4_NETWORKS[net].network_address + used[net]
            used[net] += 1
    spare = _spare_addresses(family, plan)
    for addr in mentioned:
        if addr not in plan.lab and _rewritable(addr):
            plan.lab[addr] = next(spare)
    return plan


def _spare_addresses(family: int, plan: AddressPlan):
    """Addresses no host has, for those only the messages name: IPv6 in its own
    /64 (2001:db8:ff::/64), IPv4 from the top of the last network down."""
    taken = set(plan.lab.values())
    if family == 6:
        n = 0x100
        while True:
            candidate = ipaddress.IPv6Address(f"2001:db8:ff::{n:x}")
            n += 1
            if candidate not in taken:
                yield candidate
    for net in reversed(IPV4_NETWORKS):
        for host in range(254, 1, -1):
            candidate = net.network_address + host
            if candidate not in taken:
                yield candidate
    raise AddressPlanError("no documentation address left for the addresses the messages name")


def _check_kept(endpoints: list[Address], talks: set[frozenset[Address]]) -> None:
    """--keep-addresses: the capture's addresses must already be lab addresses."""
    for addr in endpoints:
        if not any(addr in net for net in DOCUMENTATION_NETWORKS):
            raise AddressPlanError(f"--keep-addresses: {addr} is not a documentation address (192.0.2.0/24, "
                                   f"198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32), which the lab carries only")
        net = network_of(addr)
        if addr == router_address(net):
            raise AddressPlanError(f"--keep-addresses: {addr} is the lab router's address in {net}")
        if addr.version == 4 and addr in (net.network_address, net.broadcast_address):
            raise AddressPlanError(f"--keep-addresses: {addr} is not a host address of {net}")
    for pair in sorted(talks, key=lambda p: sorted(map(str, p))):
        a, b = sorted(pair, key=str)
        if network_of(a) == network_of(b):
            raise AddressPlanError(f"--keep-addresses: {a} and {b} exchange packets inside one network "
                                   f"({network_of(a)}), so they would not cross the lab's router; "
                                   f"import without --keep-addresses")


def _rewritable(addr: Address) -> bool:
    """0.0.0.0 (SDP's hold), loopback and multicast mean the same anywhere."""
    return not (addr.is_unspecified or addr.is_loopback or addr.is_multicast)


def addresses_in(data: bytes, family: int) -> list[Address]:
    found = []
    for match in (IPV4_LITERAL if family == 4 else IPV6_LITERAL).finditer(data):
        addr = _parse(match.group(0), family)
        if addr is not None:
            found.append(addr)
    return found


def _parse(text: bytes, family: int) -> Address | None:
    try:
        addr = ipaddress.ip_address(text.decode("ascii"))
    except ValueError:
        return None
    return addr if addr.version == family else None


@dataclass(frozen=True, slots=True)
class Edit:
    start: int
    end: int
    new: bytes


def address_edits(data: bytes, start: int, end: int, plan: AddressPlan) -> list[Edit]:
    edits = []
    for match in (IPV4_LITERAL if plan.family == 4 else IPV6_LITERAL).finditer(data, start, end):
        addr = _parse(match.group(0), plan.family)
        if addr is not None and addr in plan.lab and plan.lab[addr] != addr:
            edits.append(Edit(match.start(), match.end(), str(plan.lab[addr]).encode()))
    return edits


def message_edits(data: bytes, message: Message, plan: AddressPlan) -> list[Edit]:
    """The addresses rewritten, and the Content-Length value moved by as much
    as the body grew or shrank (so a length that was wrong stays as wrong)."""
    edits = address_edits(data, message.start, message.end, plan)
    if message.length_value is not None:
        grown = sum(len(e.new) - (e.end - e.start) for e in edits if e.start >= message.body_start)
        if grown:
            a, b = message.length_value
            edits.append(Edit(a, b, str(max(0, int(data[a:b]) + grown)).encode()))
    return sorted(edits, key=lambda e: e.start)


def apply_edits(data: bytes, edits: list[Edit]) -> bytes:
    out, at = [], 0
    for e in edits:
        out += [data[at:e.start], e.new]
        at = e.end
    out.append(data[at:])
    return b"".join(out)


def moved_offset(offset: int, edits: list[Edit]) -> int:
    """Where an offset of the old bytes is in the new ones (an offset inside an
    edited span moves to the span's start)."""
    shift = 0
    for e in edits:
        if e.end <= offset:
            shift += len(e.new) - (e.end - e.start)
        elif e.start < offset:
            return e.start + shift
    return offset + shift
