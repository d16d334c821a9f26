"""ctnetlink conntrack messages (NFNL_SUBSYS_CTNETLINK) as plain data.

The same attributes (enum ctattr_type) arrive nested in NFQA_CT of a queued
packet (ctnetlink_glue_build() -> __ctnetlink_glue_build()) and as the body
of IPCTNL_MSG_CT_NEW replies to a conntrack GET (ctnetlink_fill_info()); one
decoder reads both, :func:`conntrack_attrs`, with ``struct`` from the
``ct_msg`` attribute table (a queued packet's conntrack is decoded on the
reference helper's hot path). ``ct_msg`` also knows that CTA_HELP is nested
(ctnetlink_dump_helpinfo()), which pyroute2's own nfct_msg does not.

``seq_adj`` is the conntrack's TCP sequence adjustment per direction
(struct nf_ct_seqadj, CTA_SEQ_ADJ_ORIG/_REPLY: ctnetlink_dump_ct_seq_adj(),
present while IPS_SEQ_ADJUST is set), which :func:`seq_adj_attr` writes
back (ctnetlink_change_seq_adj()).

``helper_info`` is the helper's private data (CTA_HELP_INFO), the
``priv_data_len`` bytes the kernel keeps per conntrack for a userspace helper
(nfnl_cthelper_to_nlattr() / _from_nlattr()); what a helper keeps there is
its own business (the reference helper keeps its MasterState there).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

from pyroute2.netlink import NLA_F_NESTED, nla
from pyroute2.netlink.nfnetlink import nfgen_msg
from pyroute2.netlink.nfnetlink.nfctsocket import nfct_msg

from sipct.netlink.cttuple import cta_tuple, decode_tuple, encode_tuple, family_of
from sipct.netlink.wire import DecodeError, Span, asciiz, be16, be32, message_attributes, nested, numbers
from sipct.spec.expectation import ConnTuple

__all__ = [
    "IPS_ASSURED",
    "IPS_CONFIRMED",
    "IPS_DYING",
    "IPS_EXPECTED",
    "IPS_HELPER",
    "IPS_NAT_MASK",
    "IPS_SEEN_REPLY",
    "IPS_SEQ_ADJUST",
    "IPS_SRC_NAT",
    "IPS_DST_NAT",
    "IP_CT_ESTABLISHED",
    "IP_CT_ESTABLISHED_REPLY",
    "IP_CT_IS_REPLY",
    "IP_CT_NEW",
    "IP_CT_RELATED",
    "IP_CT_RELATED_REPLY",
    "KernelConntrack",
    "SeqAdj",
    "conntrack_attrs",
    "conntrack_from_bytes",
    "conntrack_from_msg",
    "ct_msg",
    "help_attr",
    "seq_adj_attr",
    "tuple_attr",
    "update_msg",
]

# enum ip_conntrack_status (include/uapi/linux/netfilter/nf_conntrack_common.h)
IPS_EXPECTED = 1 << 0
IPS_SEEN_REPLY = 1 << 1
IPS_ASSURED = 1 << 2
IPS_CONFIRMED = 1 << 3
IPS_SRC_NAT = 1 << 4
IPS_DST_NAT = 1 << 5
IPS_NAT_MASK = IPS_SRC_NAT | IPS_DST_NAT
IPS_SEQ_ADJUST = 1 << 6
IPS_DYING = 1 << 9
IPS_HELPER = 1 << 13

# enum ip_conntrack_info
IP_CT_ESTABLISHED = 0
IP_CT_RELATED = 1
IP_CT_NEW = 2
IP_CT_IS_REPLY = 3
IP_CT_ESTABLISHED_REPLY = IP_CT_ESTABLISHED + IP_CT_IS_REPLY
IP_CT_RELATED_REPLY = IP_CT_RELATED + IP_CT_IS_REPLY


class ct_msg(nfgen_msg):
    """A conntrack (NFNL_SUBSYS_CTNETLINK) message with CTA_HELP decoded right.

    pyroute2's nfct_msg declares CTA_HELP as a string, but the kernel nests
    it (ctnetlink_dump_helpinfo(): CTA_HELP { CTA_HELP_NAME, ... }). This is a
    separate class, not a subclass: pyroute2 caches the compiled nla table in
    a class attribute that a subclass would inherit from nfct_msg.
    """

    prefix = "CTA_"
    nla_map = tuple(
        ("CTA_HELP", "cta_help") if name == "CTA_HELP" else (name, kind) for name, kind in nfct_msg.nla_map
    )

    cta_tuple = cta_tuple
    cta_protoinfo = nfct_msg.cta_protoinfo
    cta_nat = nfct_msg.cta_nat
    cta_nat_seq_adj = nfct_msg.cta_nat_seq_adj
    cta_counters = nfct_msg.cta_counters
    cta_secctx = nfct_msg.cta_secctx
    cta_timestamp = nfct_msg.cta_timestamp
    cta_labels = nfct_msg.cta_labels
    cta_synproxy = nfct_msg.cta_synproxy
    cta_filter = nfct_msg.cta_filter

    class cta_help(nla):
        nla_flags = NLA_F_NESTED
        prefix = "CTA_HELP_"
        nla_map = (
            ("CTA_HELP_UNSPEC", "none"),
            ("CTA_HELP_NAME", "asciiz"),
            ("CTA_HELP_INFO", "hex"),
        )


def tuple_attr(t: ConnTuple) -> dict[str, Any]:
    """A conntrack tuple as the nested value of CTA_TUPLE_ORIG/_REPLY/_MASTER."""
    return encode_tuple(family_of(t.src), t.src, t.dst, t.sport, t.dport, t.proto)


def help_attr(name: str, info: bytes | None = None) -> dict[str, Any]:
    """CTA_HELP { CTA_HELP_NAME, CTA_HELP_INFO }: what ctnetlink_change_helper()
    reads - the name must be the conntrack's helper, the info is copied into
    the helper's private area (nfnl_cthelper_from_nlattr())."""
    attrs: list[list[Any]] = [["CTA_HELP_NAME", name]]
    if info is not None:
        attrs.append(["CTA_HELP_INFO", bytes(info)])  # "hex" encodes raw bytes
    return {"attrs": attrs}


def _s32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def _before(seq1: int, seq2: int) -> bool:
    """before() of include/net/tcp.h: seq1 precedes seq2 modulo 2**32."""
    return _s32(seq1 - seq2) < 0


@dataclass(frozen=True, slots=True)
class SeqAdj:
    """struct nf_ct_seqadj: one direction's TCP sequence adjustment. A
    segment that starts after ``correction_pos`` moves by ``offset_after``,
    one at or before it (a retransmission) by ``offset_before``
    (nf_ct_seq_adjust()). The offsets are s32, the position a u32."""

    correction_pos: int = 0
    offset_before: int = 0
    offset_after: int = 0

    def set(self, seq: int, off: int) -> SeqAdj:
        """nf_ct_seqadj_set(): the segment starting at ``seq`` left the router
        ``off`` bytes longer. Only the first change, or one past the last
        correction position, moves the record: a retransmission of the segment
        last changed must not count twice."""
        if off == 0:
            return self
        if self.offset_before == self.offset_after or _before(self.correction_pos, seq):
            return SeqAdj(seq & 0xFFFFFFFF, self.offset_after, _s32(self.offset_after + off))
        return self

    def offset(self, seq: int) -> int:
        """What nf_ct_seq_adjust() adds to the sequence number ``seq`` of a segment of this direction."""
        return self.offset_after if _before(self.correction_pos, seq) else self.offset_before


def seq_adj_attr(seq: SeqAdj) -> dict[str, Any]:
    """CTA_SEQ_ADJ_ORIG/_REPLY { CTA_SEQADJ_CORRECTION_POS, _OFFSET_BEFORE,
    _OFFSET_AFTER }: change_seq_adj() requires all three (EINVAL)."""
    return {"attrs": [["CTA_NAT_SEQ_CORRECTION_POS", seq.correction_pos & 0xFFFFFFFF],
                      ["CTA_NAT_SEQ_OFFSET_BEFORE", seq.offset_before & 0xFFFFFFFF],
                      ["CTA_NAT_SEQ_OFFSET_AFTER", seq.offset_after & 0xFFFFFFFF]]}


def update_msg(original: ConnTuple, *, timeout: int | None = None, helper: str | None = None,
               helper_info: bytes | None = None, seq_adj: dict[bool, SeqAdj] | None = None) -> ct_msg:
    """The body of an IPCTNL_MSG_CT_NEW that changes the existing conntrack
    ``original`` (ctnetlink_change_conntrack()): CTA_HELP, CTA_TIMEOUT and,
    per direction (reply? -> record), CTA_SEQ_ADJ_ORIG/_REPLY."""
    msg = ct_msg()
    msg["nfgen_family"] = socket.AF_INET if original.family == 4 else socket.AF_INET6
    msg["version"] = 0
    msg["res_id"] = 0
    attrs: list[list[Any]] = [["CTA_TUPLE_ORIG", tuple_attr(original)]]
    if helper is not None:
        attrs.append(["CTA_HELP", help_attr(helper, helper_info)])
    if timeout is not None:
        attrs.append(["CTA_TIMEOUT", int(timeout)])
    for reply, seq in sorted((seq_adj or {}).items()):
        attrs.append(["CTA_SEQ_ADJ_REPLY" if reply else "CTA_SEQ_ADJ_ORIG", seq_adj_attr(seq)])
    msg["attrs"] = attrs
    return msg


@dataclass(frozen=True, slots=True)
class KernelConntrack:
    """One struct nf_conn as ctnetlink reports it (the fields a helper needs).

    ``timeout`` is whole seconds left; an unconfirmed conntrack (the first
    packet still on its way) reports 0. ``helper_info`` is the helper's
    private data (CTA_HELP_INFO), ``master`` the original tuple of the
    conntrack that expected this one (CTA_TUPLE_MASTER)."""

    family: int  # AF_INET / AF_INET6
    original: ConnTuple
    reply: ConnTuple | None = None
    id: int | None = None
    status: int = 0
    timeout: int | None = None
    mark: int | None = None
    zone: int | None = None
    helper: str | None = None
    helper_info: bytes | None = None
    master: ConnTuple | None = None
    seq_adj: tuple[SeqAdj, SeqAdj] | None = None  # (original, reply) while IPS_SEQ_ADJUST

    @property
    def natted(self) -> bool:
        """IPS_NAT_MASK: what ctnetlink_glue_seqadj() asks before it adjusts."""
        return bool(self.status & IPS_NAT_MASK)

    @property
    def expected(self) -> bool:
        return bool(self.status & IPS_EXPECTED)

    @property
    def confirmed(self) -> bool:
        return bool(self.status & IPS_CONFIRMED)

    @property
    def seen_reply(self) -> bool:
        return bool(self.status & IPS_SEEN_REPLY)

    def to_attrs(self) -> list[list[Any]]:
        """Attributes in __ctnetlink_glue_build() order (the ones held here)."""
        attrs: list[list[Any]] = [["CTA_TUPLE_ORIG", tuple_attr(self.original)]]
        if self.reply is not None:
            attrs.append(["CTA_TUPLE_REPLY", tuple_attr(self.reply)])
        if self.zone is not None:
            attrs.append(["CTA_ZONE", self.zone])
        if self.id is not None:
            attrs.append(["CTA_ID", self.id])
        attrs.append(["CTA_STATUS", self.status])
        if self.timeout is not None:
            attrs.append(["CTA_TIMEOUT", self.timeout])
        if self.helper is not None:
            attrs.append(["CTA_HELP", help_attr(self.helper, self.helper_info)])
        if self.master is not None:
            attrs.append(["CTA_TUPLE_MASTER", tuple_attr(self.master)])
        if self.seq_adj is not None:
            attrs.append(["CTA_SEQ_ADJ_ORIG", seq_adj_attr(self.seq_adj[0])])
            attrs.append(["CTA_SEQ_ADJ_REPLY", seq_adj_attr(self.seq_adj[1])])
        if self.mark is not None:
            attrs.append(["CTA_MARK", self.mark])
        return attrs


_CT = numbers(ct_msg)
_HELP = numbers(ct_msg.cta_help)
_ORIG, _REPLY, _MASTER = _CT["CTA_TUPLE_ORIG"], _CT["CTA_TUPLE_REPLY"], _CT["CTA_TUPLE_MASTER"]
_ZONE, _CT_HELP = _CT["CTA_ZONE"], _CT["CTA_HELP"]
_HELP_NAME, _HELP_INFO = _HELP["CTA_HELP_NAME"], _HELP["CTA_HELP_INFO"]
_SEQ_ADJ = (_CT["CTA_SEQ_ADJ_ORIG"], _CT["CTA_SEQ_ADJ_REPLY"])
_SEQADJ = numbers(ct_msg.cta_nat_seq_adj)
_SEQADJ_FIELDS = (_SEQADJ["CTA_NAT_SEQ_CORRECTION_POS"], _SEQADJ["CTA_NAT_SEQ_OFFSET_BEFORE"],
                  _SEQADJ["CTA_NAT_SEQ_OFFSET_AFTER"])
# The attributes KernelConntrack holds that are one big-endian u32.
_U32 = {_CT[name]: field for name, field in (
    ("CTA_ID", "id"), ("CTA_STATUS", "status"), ("CTA_TIMEOUT", "timeout"), ("CTA_MARK", "mark"))}


def _conn_tuple(data: bytes, span: Span | None, family: int) -> ConnTuple | None:
    if span is None:
        return None
    src, dst, sport, dport, proto = decode_tuple(data, span, family)
    return ConnTuple(src, dst, proto, sport or 0, dport or 0)


def _seq_adj(data: bytes, span: Span | None) -> SeqAdj:
    """One CTA_SEQ_ADJ_* nest (dump_ct_seq_adj() writes all three); a direction missing is all zero."""
    if span is None:
        return SeqAdj()
    inner = nested(data, span)
    pos, before, after = (be32(data, inner[n]) if n in inner else 0 for n in _SEQADJ_FIELDS)
    return SeqAdj(pos, _s32(before), _s32(after))


def conntrack_attrs(data: bytes, attrs: dict[int, Span], family: int) -> KernelConntrack:
    """The conntrack the CTA_* attributes ``attrs`` describe (ctnetlink_fill_info(),
    __ctnetlink_glue_build()); CTA_TUPLE_ORIG is required."""
    original = _conn_tuple(data, attrs.get(_ORIG), family)
    if original is None:
        raise DecodeError("conntrack attributes lack CTA_TUPLE_ORIG")
    fields: dict[str, Any] = {field: be32(data, attrs[number]) for number, field in _U32.items() if number in attrs}
    if _ZONE in attrs:
        fields["zone"] = be16(data, attrs[_ZONE])
    if _CT_HELP in attrs:
        help_ = nested(data, attrs[_CT_HELP])
        if _HELP_NAME in help_:
            fields["helper"] = asciiz(data, help_[_HELP_NAME])
        if _HELP_INFO in help_:
            start, end = help_[_HELP_INFO]
            fields["helper_info"] = bytes(data[start:end])
    if _SEQ_ADJ[0] in attrs or _SEQ_ADJ[1] in attrs:
        fields["seq_adj"] = (_seq_adj(data, attrs.get(_SEQ_ADJ[0])), _seq_adj(data, attrs.get(_SEQ_ADJ[1])))
    return KernelConntrack(family=family, original=original, reply=_conn_tuple(data, attrs.get(_REPLY), family),
                           master=_conn_tuple(data, attrs.get(_MASTER), family), **fields)


def conntrack_from_bytes(data: bytes, off: int = 0) -> KernelConntrack:
    """Decode the conntrack message (IPCTNL_MSG_CT_NEW, a GET's reply) at ``off`` of a datagram."""
    family, _, attrs = message_attributes(data, off)
    return conntrack_attrs(data, attrs, family)


def conntrack_from_msg(msg: Any) -> KernelConntrack:
    """A received pyroute2 ct_msg, decoded from its own buffer."""
    return conntrack_from_bytes(msg.data, msg.offset)
