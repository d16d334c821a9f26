"""Expectations as values: tuple, mask, class, flags, policy.

Mirrors ``struct nf_conntrack_expect`` and ``sip_exp_policy[]``: an expectation
is what the helper tells conntrack to let in next - a tuple (where the related
connection goes to, and optionally where it comes from) with a mask saying which
source parts must match.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass
from typing import Union

from .values import value

Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

IPPROTO_TCP = 6
IPPROTO_UDP = 17
PROTO_NAMES = {IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp"}
HELPER_NAME = "sip"  # HELPER_NAME in nf_conntrack_sip.c

# What nf_ct_expect_related() answers when it refuses an expectation.
EALREADY = -114
EBUSY = -16
EMFILE = -24


class ExpectClass(enum.IntEnum):
    """enum sip_expectation_classes (include/linux/netfilter/nf_conntrack_sip.h)."""

    SIGNALLING = 0
    AUDIO = 1
    VIDEO = 2
    IMAGE = 3

    @property
    def label(self) -> str:
        return self._name_.lower()  # not self.name: an enum property, read at every media expectation


class ExpectFlag(enum.IntFlag):
    """NF_CT_EXPECT_* (include/uapi/linux/netfilter/nf_conntrack_common.h)."""

    NONE = 0
    PERMANENT = 0x1
    INACTIVE = 0x2
    USERSPACE = 0x4

    def labels(self) -> list[str]:
        return [f.name for f in (ExpectFlag.PERMANENT, ExpectFlag.INACTIVE, ExpectFlag.USERSPACE)
                if self & f and f.name]


@dataclass(frozen=True, slots=True)
class Policy:
    """One entry of ``struct nf_conntrack_expect_policy``."""

    name: str
    max_expected: int
    timeout: int  # seconds


IP_CT_DIR_MAX = 2
# sip_exp_policy[] in nf_conntrack_sip.c
SIP_EXPECT_POLICY: dict[ExpectClass, Policy] = {
    ExpectClass.SIGNALLING: Policy("signalling", 1, 3 * 60),
    ExpectClass.AUDIO: Policy("audio", 2 * IP_CT_DIR_MAX, 3 * 60),
    ExpectClass.VIDEO: Policy("video", 2 * IP_CT_DIR_MAX, 3 * 60),
    ExpectClass.IMAGE: Policy("image", IP_CT_DIR_MAX, 3 * 60),
}


@value(order=True)
class ConnTuple:
    """A conntrack tuple in one direction (``struct nf_conntrack_tuple``)."""

    src: Address
    dst: Address
    proto: int
    sport: int
    dport: int

    @property
    def family(self) -> int:
        return self.src.version

    def reply(self) -> "ConnTuple":
        return ConnTuple(self.dst, self.src, self.proto, self.dport, self.sport)

    def __str__(self) -> str:
        return f"{PROTO_NAMES.get(self.proto, self.proto)} {_ep(self.src, self.sport)} -> {_ep(self.dst, self.dport)}"


def _ep(addr: Address | None, port: int | None) -> str:
    host = "*" if addr is None else (f"[{addr}]" if addr.version == 6 else str(addr))
    return f"{host}:{'*' if port is None else port}"


@value(order=True)
class ExpectTuple:
    """The tuple of an expectation together with its mask.

    ``src`` is None when the source-address mask is all zeroes (any source);
    SIP never sets a source port, so the source-port mask is always zero, but
    the field is kept so kernel observations with other masks compare honestly.
    """

    family: int
    proto: int
    src: Address | None
    dst: Address
    dport: int
    sport: int | None = None

    def matches(self, src: Address, sport: int, dst: Address, dport: int, proto: int) -> bool:
        """nf_ct_tuple_mask_cmp(): does a connection's original tuple fall under this one?"""
        return (self.proto == proto and self.dst == dst and self.dport == dport
                and (self.src is None or self.src == src)
                and (self.sport is None or self.sport == sport))

    def same_mask(self, other: "ExpectTuple") -> bool:
        return (self.src is None) == (other.src is None) and (self.sport is None) == (other.sport is None)

    def clashes(self, other: "ExpectTuple") -> bool:
        """expect_clash(): equal on the part covered by both masks."""
        if (self.family, self.proto, self.dst, self.dport) != (other.family, other.proto, other.dst, other.dport):
            return False
        if self.src is not None and other.src is not None and self.src != other.src:
            return False
        if self.sport is not None and other.sport is not None and self.sport != other.sport:
            return False
        return True

    def __str__(self) -> str:
        return f"{PROTO_NAMES.get(self.proto, self.proto)} {_ep(self.src, self.sport)} -> {_ep(self.dst, self.dport)}"


IP_CT_DIR_ORIGINAL, IP_CT_DIR_REPLY = 0, 1
DIR_NAMES = {IP_CT_DIR_ORIGINAL: "original", IP_CT_DIR_REPLY: "reply"}
NAT_EXPECTFN = "sip"  # nf_nat_sip.c registers nf_nat_sip_expected as expectfn "sip"


@value(order=True)
class ExpectNat:
    """The NAT part of an expectation (``exp->dir``, ``exp->saved_addr``,
    ``exp->saved_proto``): nf_nat_sip's hooks move the expectation's
    destination to where the peer sends, and keep here where the connection
    must go instead (``nf_nat_sip_expected()`` maps it there). ctnetlink
    reports it as CTA_EXPECT_NAT, with CTA_EXPECT_FN "sip"."""

    dir: int  # the direction of the master the expected connection comes from
    addr: Address
    port: int

    def __str__(self) -> str:
        return f"nat {DIR_NAMES.get(self.dir, self.dir)} {_ep(self.addr, self.port)}"


@value
class Expectation:
    """One row of the expectation table, as both the spec and ctnetlink report it."""

    tuple: ExpectTuple
    klass: ExpectClass
    flags: ExpectFlag
    master: ConnTuple  # the master's original-direction tuple
    expires: float  # absolute time (the caller's clock) at which it expires
    helper: str = HELPER_NAME
    nat: ExpectNat | None = None  # set by nf_nat_sip's hooks, with expectfn "sip"

    def remaining(self, now: float) -> float:
        return self.expires - now

    def describe(self, now: float | None = None) -> str:
        flags = ",".join(self.flags.labels()) or "-"
        timeout = "" if now is None else f" timeout={self.remaining(now):.0f}s"
        nat = "" if self.nat is None else f" {self.nat} fn={NAT_EXPECTFN}"
        return f"{self.tuple} class={self.klass.label} flags={flags} helper={self.helper}{nat}{timeout}"


def expectation_key(e: Expectation) -> tuple[int, ...]:
    """Which row of the expectation table ``e`` is - the one key every part
    of sipct compares tables and events by (the kernel's, the spec's, the
    reference helper's shadow, a fuzz run's observations).

    The kernel tells rows apart by tuple and mask (expect_matches() in
    __nf_ct_expect_check()) and refuses one of another class or master on
    the same tuple (-EALREADY), so the key is the tuple with its mask - a
    wildcard source address or port is -1 - the class and the master's
    original tuple. Not the timeout, not the flags (activating an INACTIVE
    expectation changes the row, not which row it is: a comparison that
    holds rows to their flags adds them) and not the helper's name.

    Flat and made of ints: it hashes fast (ipaddress objects hash slowly),
    goes through JSON unchanged, and sorts as the spec's table lists
    expectations (family, protocol, destination, port, source first).
    """
    t, m = e.tuple, e.master
    return (t.family, t.proto, int(t.dst), t.dport, -1 if t.src is None else int(t.src),
            -1 if t.sport is None else t.sport, int(e.klass),
            int(m.src), int(m.dst), m.proto, m.sport, m.dport)
