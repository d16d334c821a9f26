"""The router's address translation: which NAT binding a new conntrack gets,
and where one host sends to reach another across the router.

This is the part of ``nf_nat_core.c`` and of the lab's nft ``nat`` chains
that the SIP helper depends on - not a model of NAT in general. A binding is
made once, for the first packet of a conntrack (``nf_nat_inet_fn()`` runs the
chains only while ``nf_nat_initialized()`` is false for the hook's manip
type): destination NAT at prerouting, source NAT at postrouting on the
packet as destination NAT left it. An expected connection whose expectation
carries ``nf_nat_sip_expected`` has its bindings set by that function
before the chains see it (:func:`~sipct.spec.natsip.nat_sip_expected`); the
chains bind only the manip types it left alone.

Source NAT keeps the source port when the translated tuple is unused
(``get_unique_tuple()``: "Only bother mapping if it's not already in range
and unique"); a rule with one port always maps to it. A clash would make the
kernel pick a random port (``nf_nat_l4proto_unique_tuple()``), which no
spec can predict: :class:`NatClash` says so instead.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Iterable

from .expectation import IPPROTO_TCP, IPPROTO_UDP, PROTO_NAMES, Address, ConnTuple
from .topology import Network, network_of, router_address
from .values import value


class NatClash(ValueError):
    """A binding the kernel would make with a random port, or one whose
    tuple another conntrack has (a one-port range keeps its port)."""


@value
class SourceNat:
    """``snat to ADDR[:PORT]`` or ``masquerade`` in a postrouting nat chain.

    It matches packets from ``inside`` (a network; or one host, and then
    maybe one source port) to any address outside that network. ``to`` None
    is masquerade: the router's address on the way out, which in the lab is
    its address in the destination's network."""

    inside: Network
    to: Address | None = None
    port: int | None = None
    host: Address | None = None
    sport: int | None = None
    proto: int | None = None

    def covers(self, src: Address, sport: int, proto: int) -> bool:
        if self.host is not None:
            return src == self.host and (self.sport is None or self.sport == sport) \
                and (self.proto is None or self.proto == proto)
        return src in self.inside

    def applies(self, src: Address, sport: int, dst: Address, proto: int) -> bool:
        return self.covers(src, sport, proto) and dst not in self.inside

    def address_for(self, dst: Address) -> Address:
        return self.to if self.to is not None else router_address(network_of(dst))

    def __str__(self) -> str:
        what = f"{self.host}{'' if self.sport is None else f':{self.sport}'}" if self.host else str(self.inside)
        proto = f" {PROTO_NAMES[self.proto]}" if self.proto else ""
        if self.to is None:
            return f"masquerade {what}{proto}"
        to = f"[{self.to}]" if self.to.version == 6 and self.port else str(self.to)
        return f"snat {what}{proto} to {to}{'' if self.port is None else f':{self.port}'}"


@value
class DestinationNat:
    """``dnat to TO:TO_PORT`` in a prerouting nat chain: a port forward of
    ``addr:port`` (UDP and TCP unless ``proto``)."""

    addr: Address
    port: int
    to: Address
    to_port: int
    proto: int | None = None

    def applies(self, dst: Address, dport: int, proto: int) -> bool:
        return dst == self.addr and dport == self.port and (self.proto is None or self.proto == proto)

    def __str__(self) -> str:
        proto = f"{PROTO_NAMES[self.proto]} " if self.proto else ""
        return f"dnat {proto}{_ep(self.addr, self.port)} to {_ep(self.to, self.to_port)}"


def _ep(addr: Address, port: int) -> str:
    return f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}"


@dataclass(frozen=True)
class NatTopology:
    """The NAT rules of one router, first match wins in each chain."""

    snat: tuple[SourceNat, ...] = ()
    dnat: tuple[DestinationNat, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.snat or self.dnat)

    def source_rule(self, src: Address, sport: int, dst: Address, proto: int) -> SourceNat | None:
        for rule in self.snat:
            if rule.applies(src, sport, dst, proto):
                return rule
        return None

    def destination_rule(self, dst: Address, dport: int, proto: int) -> DestinationNat | None:
        for rule in self.dnat:
            if rule.applies(dst, dport, proto):
                return rule
        return None

    def bind(self, original: ConnTuple, *, dst: tuple[Address, int] | None = None,
             src: tuple[Address, int | None] | None = None, in_use: Iterable[tuple] = ()) -> ConnTuple:
        """The reply tuple of a new conntrack whose first packet is ``original``.

        ``dst`` / ``src`` are bindings already made (by nf_nat_sip_expected;
        a ``src`` port None maps the address only);
        the chains make the others. ``in_use`` holds the keys (src, dst,
        proto, sport, dport) of every tuple conntrack knows, to refuse a
        binding the kernel would resolve with a random port or not at all."""
        new_dst, new_dport = original.dst, original.dport
        if dst is not None:
            new_dst, new_dport = dst
        else:
            rule = self.destination_rule(original.dst, original.dport, original.proto)
            if rule is not None:
                new_dst, new_dport = rule.to, rule.to_port
        new_src, new_sport = original.src, original.sport
        one_port = False  # the source port comes from a one-port range
        if src is not None:
            new_src, new_sport = src
            one_port = new_sport is not None
            if new_sport is None:
                # nf_nat_sip_expected()'s "change src to where master sends
                # to" sets NF_NAT_RANGE_MAP_IPS alone: get_unique_tuple()
                # (nf_nat_core.c) keeps the source port when the tuple is unique.
                new_sport = original.sport
        else:
            srule = self.source_rule(original.src, original.sport, new_dst, original.proto)
            if srule is not None:
                new_src = srule.address_for(new_dst)
                if srule.port is not None:
                    new_sport, one_port = srule.port, True
        # get_unique_tuple() keeps the tuple when nf_nat_used_tuple() says it
        # is free. Else a one-port range keeps its port all the same ("range->
        # min_proto.all == range->max_proto.all"), and confirming the conntrack
        # then clashes with the one that has the tuple; any other source
        # mapping - masquerade, the address-only ones, and the null binding
        # nf_nat_inet_fn() gives a conntrack no source rule matched - takes a
        # random port (nf_nat_l4proto_unique_tuple()).
        if (new_dst, new_src, original.proto, new_dport, new_sport) in set(in_use):
            if one_port:
                raise NatClash(f"{original} bound to {new_src}:{new_sport} clashes with a conntrack that has that "
                               "tuple: get_unique_tuple() keeps a one-port range's port, confirming it fails")
            raise NatClash(f"{original} would need a source port other than {new_sport} at {new_src}, which the "
                           "kernel picks at random (nf_nat_l4proto_unique_tuple)")
        return ConnTuple(new_dst, new_src, original.proto, new_dport, new_sport)

    def face(self, sender: Address, receiver: Address, port: int, proto: int) -> tuple[Address, int]:
        """Where ``sender`` sends to reach ``receiver:port``: a port forward's
        public address, the address and port a source NAT gives the
        receiver, or the receiver itself."""
        for d in self.dnat:
            if d.to == receiver and d.to_port == port and (d.proto is None or d.proto == proto) \
                    and not _same_side(sender, receiver):
                return d.addr, d.port
        for s in self.snat:
            if s.covers(receiver, port, proto) and sender not in s.inside:
                return s.address_for(sender), port if s.port is None else s.port
        return receiver, port


def _same_side(a: Address, b: Address) -> bool:
    return network_of(a) == network_of(b)


def translated(original: ConnTuple, reply: ConnTuple) -> bool:
    """IPS_NAT_MASK: nf_nat_setup_info() sets IPS_SRC_NAT / IPS_DST_NAT only
    when the binding changes the tuple - a NAT to the same address is none."""
    return reply != original.reply()


def parse_network(text: str) -> Network:
    return ipaddress.ip_network(text, strict=False)


PROTOS = {"udp": IPPROTO_UDP, "tcp": IPPROTO_TCP}
