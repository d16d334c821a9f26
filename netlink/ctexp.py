"""ctnetlink conntrack-expectation messages (NFNL_SUBSYS_CTNETLINK_EXP).

pyroute2 ships no message classes for this subsystem, so they are declared
here from include/uapi/linux/netfilter/nfnetlink_conntrack.h, and the layout
follows the kernel's encoder ctnetlink_exp_dump_expect() and decoders
ctnetlink_create_expect()/ctnetlink_del_expect() in
net/netfilter/nf_conntrack_netlink.c.

`KernelExpectation` is the plain-data view of one expectation; its
`to_attrs()` emits attributes in the order ctnetlink_exp_dump_expect() does,
so decoding a kernel message and encoding it again reproduces its bytes.

:func:`expectation_from_bytes` is the decoder - the one, for dumps, events
and replies alike: it reads the datagram with ``struct`` (sipct.netlink.wire),
since the harness dumps the expectation table after every step of every
dialog and pyroute2's lazy attribute objects cost ~0.6 ms per expectation
there. `KernelExpectation.from_msg()` is it applied to a pyroute2 message's
own buffer.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pyroute2.netlink import NLA_F_NESTED, nla
from pyroute2.netlink.nfnetlink import (
    NFNL_SUBSYS_CTNETLINK,
    NFNL_SUBSYS_CTNETLINK_EXP,
    NFNLGRP_CONNTRACK_EXP_DESTROY,
    NFNLGRP_CONNTRACK_EXP_NEW,
    nfgen_msg,
)

from sipct.netlink.cttuple import IPAddress, cta_tuple, decode_tuple, encode_tuple, family_of
from sipct.netlink.wire import DecodeError, Span, asciiz, be32, message_attributes, nested, numbers

__all__ = [
    "CTA_EXPECT_CLASS",
    "CTA_EXPECT_FLAGS",
    "CTA_EXPECT_FN",
    "CTA_EXPECT_HELP_NAME",
    "CTA_EXPECT_ID",
    "CTA_EXPECT_MASK",
    "CTA_EXPECT_MASTER",
    "CTA_EXPECT_NAT",
    "CTA_EXPECT_TIMEOUT",
    "CTA_EXPECT_TUPLE",
    "CTA_EXPECT_ZONE",
    "EXPECT_FLAG_NAMES",
    "IPCTNL_MSG_EXP_DELETE",
    "IPCTNL_MSG_EXP_GET",
    "IPCTNL_MSG_EXP_GET_STATS_CPU",
    "IPCTNL_MSG_EXP_NEW",
    "NFNLGRP_CONNTRACK_EXP_DESTROY",
    "NFNLGRP_CONNTRACK_EXP_NEW",
    "NFNL_SUBSYS_CTNETLINK",
    "NFNL_SUBSYS_CTNETLINK_EXP",
    "NF_CT_EXPECT_INACTIVE",
    "NF_CT_EXPECT_PERMANENT",
    "NF_CT_EXPECT_USERSPACE",
    "ExpectMask",
    "ExpectNat",
    "ExpectStats",
    "ExpectTuple",
    "IPAddress",
    "KernelExpectation",
    "MasterTuple",
    "ctexp_msg",
    "ctexp_stats_cpu_msg",
    "exp_msg_type",
    "expectation_attrs",
    "expectation_from_bytes",
    "family_of",
]

# enum ctnl_exp_msg_types
IPCTNL_MSG_EXP_NEW = 0
IPCTNL_MSG_EXP_GET = 1
IPCTNL_MSG_EXP_DELETE = 2
IPCTNL_MSG_EXP_GET_STATS_CPU = 3

# enum ctattr_expect
CTA_EXPECT_MASTER = 1
CTA_EXPECT_TUPLE = 2
CTA_EXPECT_MASK = 3
CTA_EXPECT_TIMEOUT = 4
CTA_EXPECT_ID = 5
CTA_EXPECT_HELP_NAME = 6
CTA_EXPECT_ZONE = 7
CTA_EXPECT_FLAGS = 8
CTA_EXPECT_CLASS = 9
CTA_EXPECT_NAT = 10
CTA_EXPECT_FN = 11

# include/uapi/linux/netfilter/nf_conntrack_common.h
NF_CT_EXPECT_PERMANENT = 0x1
NF_CT_EXPECT_INACTIVE = 0x2
NF_CT_EXPECT_USERSPACE = 0x4

EXPECT_FLAG_NAMES: dict[int, str] = {
    NF_CT_EXPECT_PERMANENT: "PERMANENT",
    NF_CT_EXPECT_INACTIVE: "INACTIVE",
    NF_CT_EXPECT_USERSPACE: "USERSPACE",
}
_FLAG_BITS = {name: bit for bit, name in EXPECT_FLAG_NAMES.items()}


def exp_msg_type(msg: int) -> int:
    """nlmsg_type of an expectation message (nfnl_msg_type())."""
    return (NFNL_SUBSYS_CTNETLINK_EXP << 8) | msg


# ---------------------------------------------------------------------------
# nla declarations


class ctexp_msg(nfgen_msg):
    """One expectation: enum ctattr_expect."""

    prefix = "CTA_EXPECT_"
    nla_map = (
        ("CTA_EXPECT_UNSPEC", "none"),
        ("CTA_EXPECT_MASTER", "cta_tuple"),
        ("CTA_EXPECT_TUPLE", "cta_tuple"),
        ("CTA_EXPECT_MASK", "cta_tuple"),
        ("CTA_EXPECT_TIMEOUT", "be32"),
        ("CTA_EXPECT_ID", "be32"),
        ("CTA_EXPECT_HELP_NAME", "asciiz"),
        ("CTA_EXPECT_ZONE", "be16"),
        ("CTA_EXPECT_FLAGS", "be32"),
        ("CTA_EXPECT_CLASS", "be32"),
        ("CTA_EXPECT_NAT", "cta_expect_nat"),
        ("CTA_EXPECT_FN", "asciiz"),
    )

    cta_tuple = cta_tuple

    class cta_expect_nat(nla):
        nla_flags = NLA_F_NESTED
        prefix = "CTA_EXPECT_NAT_"
        nla_map = (
            ("CTA_EXPECT_NAT_UNSPEC", "none"),
            ("CTA_EXPECT_NAT_DIR", "be32"),
            ("CTA_EXPECT_NAT_TUPLE", "cta_tuple"),
        )

        cta_tuple = cta_tuple


class ctexp_stats_cpu_msg(nfgen_msg):
    """Per-CPU counters of IPCTNL_MSG_EXP_GET_STATS_CPU (enum ctattr_expect_stats);
    res_id carries the CPU number (ctnetlink_exp_stat_fill_info())."""

    prefix = "CTA_STATS_EXP_"
    nla_map = (
        ("CTA_STATS_EXP_UNSPEC", "none"),
        ("CTA_STATS_EXP_NEW", "be32"),
        ("CTA_STATS_EXP_CREATE", "be32"),
        ("CTA_STATS_EXP_DELETE", "be32"),
    )


# ---------------------------------------------------------------------------
# plain data


class MasterTuple(NamedTuple):
    """Original-direction tuple of the master conntrack."""

    src: IPAddress
    dst: IPAddress
    sport: int | None
    dport: int | None
    proto: int

    def to_attr(self) -> dict[str, Any]:
        """The nested value of a CTA_TUPLE_ORIG / CTA_EXPECT_MASTER attribute."""
        return encode_tuple(family_of(self.src), self.src, self.dst, self.sport, self.dport, self.proto)


class ExpectTuple(NamedTuple):
    """What an expected connection's original tuple must look like."""

    src: IPAddress
    dst: IPAddress
    sport: int | None
    dport: int | None


class ExpectMask(NamedTuple):
    """struct nf_conntrack_tuple_mask: only the source side can be masked.

    src all-ones: the expected connection must come from tuple.src; zero: from
    anywhere. sport 0xffff: from tuple.sport only; 0: from any port.
    """

    src: IPAddress
    sport: int | None

    @property
    def src_is_wildcard(self) -> bool:
        return int(self.src) == 0

    @property
    def sport_is_wildcard(self) -> bool:
        return not self.sport


class ExpectNat(NamedTuple):
    """CTA_EXPECT_NAT: where a NAT helper wants the expected connection
    mangled to (exp->dir, exp->saved_addr, exp->saved_proto)."""

    dir: int
    src: IPAddress
    sport: int | None


class ExpectStats(NamedTuple):
    """Per-CPU expectation counters of the namespace (struct ip_conntrack_stat)."""

    cpu: int
    new: int
    create: int
    delete: int


def _flag_names(value: int | frozenset[str] | set[str]) -> frozenset[str]:
    if isinstance(value, int):
        names = set()
        for bit in range(32):
            if value & (1 << bit):
                names.add(EXPECT_FLAG_NAMES.get(1 << bit, f"0x{1 << bit:x}"))
        return frozenset(names)
    return frozenset(value)


def _flag_bits(names: frozenset[str]) -> int:
    bits = 0
    for name in names:
        bits |= _FLAG_BITS[name] if name in _FLAG_BITS else int(name, 16)
    return bits


def _all_ones(family: int) -> IPAddress:
    return ipaddress.ip_address((1 << 32) - 1 if family == socket.AF_INET else (1 << 128) - 1)


def _any(family: int) -> IPAddress:
    return ipaddress.IPv4Address(0) if family == socket.AF_INET else ipaddress.IPv6Address(0)


@dataclass(frozen=True)
class KernelExpectation:
    """One struct nf_conntrack_expect as ctnetlink reports it.

    `timeout` is whole seconds left (the kernel rounds down and clamps at 0);
    `id` is the kernel's opaque, per-boot hash (nf_expect_get_id()), None in
    an expectation we are about to create. `flags` may be given as the
    kernel's bit mask or as names; it is stored as names.
    """

    family: int
    proto: int
    master: MasterTuple
    tuple: ExpectTuple
    mask: ExpectMask
    timeout: int
    flags: frozenset[str] = field(default_factory=frozenset)
    klass: int = 0
    helper: str | None = None
    id: int | None = None
    fn: str | None = None
    nat: ExpectNat | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "flags", _flag_names(self.flags))
        unknown = {n for n in self.flags if n not in _FLAG_BITS and not n.startswith("0x")}
        if unknown:
            raise ValueError(f"unknown expectation flags {sorted(unknown)}")

    @property
    def flag_bits(self) -> int:
        return _flag_bits(self.flags)

    @classmethod
    def from_msg(cls, msg: Any) -> KernelExpectation:
        """A pyroute2 ctexp_msg, decoded from its own buffer (encoded first if it was built, not received)."""
        if not msg.data:
            msg.encode()
        return expectation_from_bytes(msg.data, msg.offset)

    def tuple_attr(self) -> dict[str, Any]:
        t = self.tuple
        return encode_tuple(self.family, t.src, t.dst, t.sport, t.dport, self.proto)

    def master_attr(self) -> dict[str, Any]:
        return self.master.to_attr()

    def mask_attr(self) -> dict[str, Any]:
        # ctnetlink_exp_dump_mask(): memset(0xff), then the stored source
        # mask, the tuple's protocol number; ports only where the tuple has them.
        return encode_tuple(
            self.family,
            self.mask.src,
            _all_ones(self.family),
            self.mask.sport,
            None if self.tuple.dport is None else 0xFFFF,
            self.proto,
        )

    def nat_attr(self) -> dict[str, Any]:
        """CTA_EXPECT_NAT as ctnetlink_exp_dump_expect() writes it and
        ctnetlink_parse_expect_nat() reads it: the saved address and port
        are the tuple's source side; ctnetlink_parse_tuple() wants the
        destination and both ports too (zero: unused)."""
        assert self.nat is not None
        nat_tuple = encode_tuple(
            self.family,
            self.nat.src,
            _any(self.family),
            self.nat.sport,
            None if self.nat.sport is None else 0,
            self.master.proto,
        )
        return {"attrs": [["CTA_EXPECT_NAT_DIR", self.nat.dir], ["CTA_EXPECT_NAT_TUPLE", nat_tuple]]}

    def to_attrs(self) -> list[list[Any]]:
        """Attributes in ctnetlink_exp_dump_expect() order; optional ones
        (id, helper, fn, nat) only when set, as the kernel does."""
        attrs: list[list[Any]] = [
            ["CTA_EXPECT_TUPLE", self.tuple_attr()],
            ["CTA_EXPECT_MASK", self.mask_attr()],
            ["CTA_EXPECT_MASTER", self.master_attr()],
        ]
        if self.nat is not None:
            attrs.append(["CTA_EXPECT_NAT", self.nat_attr()])
        attrs.append(["CTA_EXPECT_TIMEOUT", self.timeout])
        if self.id is not None:
            attrs.append(["CTA_EXPECT_ID", self.id])
        attrs.append(["CTA_EXPECT_FLAGS", self.flag_bits])
        attrs.append(["CTA_EXPECT_CLASS", self.klass])
        if self.helper is not None:
            attrs.append(["CTA_EXPECT_HELP_NAME", self.helper])
        if self.fn is not None:
            attrs.append(["CTA_EXPECT_FN", self.fn])
        return attrs

    def to_msg(self, msg_type: int = IPCTNL_MSG_EXP_NEW, flags: int = 0) -> ctexp_msg:
        """An encoded-ready message carrying this expectation (as
        ctnetlink_exp_fill_info() builds it: nfgen_family = tuple's l3num)."""
        msg = ctexp_msg()
        msg["header"]["type"] = exp_msg_type(msg_type)
        msg["header"]["flags"] = flags
        msg["nfgen_family"] = self.family
        msg["version"] = 0
        msg["res_id"] = 0
        msg["attrs"] = self.to_attrs()
        return msg


# --- the decoder ------------------------------------------------------------------------------
_NAT = numbers(ctexp_msg.cta_expect_nat)


def expectation_from_bytes(data: bytes, off: int = 0) -> KernelExpectation:
    """Decode the IPCTNL_MSG_EXP_NEW/DELETE message at ``off`` of a datagram
    (netlink header included): what ctnetlink_exp_fill_info() wrote."""
    family, _, attrs = message_attributes(data, off)
    for required in (CTA_EXPECT_MASTER, CTA_EXPECT_TUPLE, CTA_EXPECT_MASK):
        if required not in attrs:
            raise DecodeError("expectation message lacks CTA_EXPECT_TUPLE, _MASK or _MASTER")
    return expectation_attrs(data, attrs, family)


def expectation_attrs(data: bytes, attrs: dict[int, Span], family: int) -> KernelExpectation:
    """The expectation the CTA_EXPECT_* attributes ``attrs`` describe, as
    ctnetlink_create_expect() reads them: CTA_EXPECT_TUPLE and _MASK are
    required; an absent CTA_EXPECT_MASTER (NFQA_EXP of a verdict, whose
    master is the packet's conntrack) reads as the all-zero tuple."""
    if CTA_EXPECT_TUPLE not in attrs or CTA_EXPECT_MASK not in attrs:
        raise DecodeError("expectation lacks CTA_EXPECT_TUPLE or _MASK")
    t_src, t_dst, t_sport, t_dport, proto = decode_tuple(data, attrs[CTA_EXPECT_TUPLE], family)
    if CTA_EXPECT_MASTER in attrs:
        master = MasterTuple(*decode_tuple(data, attrs[CTA_EXPECT_MASTER], family))
    else:
        master = MasterTuple(_any(family), _any(family), None, None, proto)
    # ctnetlink_exp_dump_mask() fills every field the mask cannot hold
    # with ones, so only the source side carries information.
    k_src, _, k_sport, _, _ = decode_tuple(data, attrs[CTA_EXPECT_MASK], family)
    nat = None
    if CTA_EXPECT_NAT in attrs:
        n = nested(data, attrs[CTA_EXPECT_NAT])
        if _NAT["CTA_EXPECT_NAT_DIR"] not in n or _NAT["CTA_EXPECT_NAT_TUPLE"] not in n:
            raise DecodeError("CTA_EXPECT_NAT without its direction or tuple")
        n_src, _, n_sport, _, _ = decode_tuple(data, n[_NAT["CTA_EXPECT_NAT_TUPLE"]], family)
        nat = ExpectNat(be32(data, n[_NAT["CTA_EXPECT_NAT_DIR"]]), n_src, n_sport)

    def number(key: int) -> int | None:
        return be32(data, attrs[key]) if key in attrs else None

    def text(key: int) -> str | None:
        return asciiz(data, attrs[key]) if key in attrs else None

    return KernelExpectation(
        family=family,
        proto=proto,
        master=master,
        tuple=ExpectTuple(t_src, t_dst, t_sport, t_dport),
        mask=ExpectMask(k_src, k_sport),
        timeout=number(CTA_EXPECT_TIMEOUT) or 0,
        flags=_flag_names(number(CTA_EXPECT_FLAGS) or 0),
        klass=number(CTA_EXPECT_CLASS) or 0,
        helper=text(CTA_EXPECT_HELP_NAME),
        id=number(CTA_EXPECT_ID),
        fn=text(CTA_EXPECT_FN),
        nat=nat,
    )
