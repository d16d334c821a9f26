"""nfnetlink_queue messages (NFNL_SUBSYS_QUEUE): queue binding, queued packets, verdicts.

Declared from include/uapi/linux/netfilter/nfnetlink_queue.h; the layout
follows net/netfilter/nfnetlink_queue.c: nfqnl_build_packet_message() for
NFQNL_MSG_PACKET, nfqnl_recv_config() for NFQNL_MSG_CONFIG and
nfqnl_recv_verdict() / nfqnl_recv_verdict_batch() for the verdicts.

With NFQA_CFG_F_CONNTRACK set on the queue every packet carries its
conntrack: NFQA_CT holds the ctnetlink conntrack attributes
(ctnetlink_glue_build()) and NFQA_CT_INFO its ctinfo. A verdict may carry
NFQA_CT back - ctnetlink_glue_parse() applies CTA_TIMEOUT, CTA_STATUS,
CTA_HELP (helper name + private data), CTA_LABELS and CTA_MARK - and one
NFQA_EXP, an expectation in ctnetlink's attributes that
ctnetlink_glue_attach_expect() links to the packet's conntrack (even an
unconfirmed one, and with CTA_EXPECT_HELP_NAME as the helper of the expected
connection). The nested tables and decoders are ctnetlink's
(sipct.netlink.conntrack, .ctexp): one codec.

Two messages go by for every queued packet - it and its verdict, the reference
helper's hot path - and pyroute2's generic codec costs about 200 µs of CPU
natively to decode a packet with its conntrack nested in NFQA_CT, and as
much again to encode the verdict with the helper's private data, each
several times the spec's decision. :func:`packet_from_bytes` is therefore
the decoder of NFQNL_MSG_PACKET, reading with ``struct`` (sipct.netlink.wire)
the attribute numbers of the ``nla_map`` tables below, and
:func:`encode_verdict` writes ``Verdict.to_msg()`` with
:func:`sipct.netlink.wire.encode_request`, in about a tenth of that. Bytes
that are not what the kernel writes raise DecodeError (a ValueError).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from typing import Any

from pyroute2.netlink import NLA_F_NESTED, nla
from pyroute2.netlink.nfnetlink import NFNL_SUBSYS_QUEUE, nfgen_msg

from sipct.netlink.conntrack import KernelConntrack, conntrack_attrs, ct_msg, help_attr
from sipct.netlink.ctexp import KernelExpectation, ctexp_msg, expectation_attrs
from sipct.netlink.wire import (NLMSG, DecodeError, Span, asciiz, be32, encode_request, message_attributes, nested,
                                numbers)

__all__ = [
    "ETH_P_IP",
    "ETH_P_IPV6",
    "NFQA_CFG_F_CONNTRACK",
    "NFQA_CFG_F_FAIL_OPEN",
    "NFQA_CFG_F_GSO",
    "NFQA_CFG_F_SECCTX",
    "NFQA_CFG_F_UID_GID",
    "NFQNL_CFG_CMD_BIND",
    "NFQNL_CFG_CMD_NONE",
    "NFQNL_CFG_CMD_UNBIND",
    "NFQNL_COPY_META",
    "NFQNL_COPY_NONE",
    "NFQNL_COPY_PACKET",
    "NFQNL_MSG_CONFIG",
    "NFQNL_MSG_PACKET",
    "NFQNL_MSG_VERDICT",
    "NFQNL_MSG_VERDICT_BATCH",
    "NF_ACCEPT",
    "NF_DROP",
    "NF_REPEAT",
    "QueueConfig",
    "QueuedPacket",
    "Verdict",
    "config_from_bytes",
    "encode_verdict",
    "nfq_config_msg",
    "nfq_msg",
    "packet_from_bytes",
    "queue_msg_type",
    "verdict_from_bytes",
]

# enum nfqnl_msg_types
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2
NFQNL_MSG_VERDICT_BATCH = 3

# enum nfqnl_msg_config_cmds
NFQNL_CFG_CMD_NONE = 0
NFQNL_CFG_CMD_BIND = 1
NFQNL_CFG_CMD_UNBIND = 2
NFQNL_CFG_CMD_PF_BIND = 3
NFQNL_CFG_CMD_PF_UNBIND = 4

# enum nfqnl_config_mode
NFQNL_COPY_NONE = 0
NFQNL_COPY_META = 1
NFQNL_COPY_PACKET = 2

# NFQA_CFG_FLAGS
NFQA_CFG_F_FAIL_OPEN = 1 << 0
NFQA_CFG_F_CONNTRACK = 1 << 1
NFQA_CFG_F_GSO = 1 << 2
NFQA_CFG_F_UID_GID = 1 << 3
NFQA_CFG_F_SECCTX = 1 << 4

# include/uapi/linux/netfilter.h
NF_DROP = 0
NF_ACCEPT = 1
NF_STOLEN = 2
NF_QUEUE = 3
NF_REPEAT = 4
VERDICT_NAMES = {NF_DROP: "drop", NF_ACCEPT: "accept", NF_STOLEN: "stolen", NF_QUEUE: "queue", NF_REPEAT: "repeat"}

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD


def queue_msg_type(msg: int) -> int:
    """nlmsg_type of a queue message (nfnl_msg_type())."""
    return (NFNL_SUBSYS_QUEUE << 8) | msg


class nfq_config_msg(nfgen_msg):
    """NFQNL_MSG_CONFIG: enum nfqnl_attr_config; res_id is the queue number."""

    prefix = "NFQA_CFG_"
    nla_map = (
        ("NFQA_CFG_UNSPEC", "none"),
        ("NFQA_CFG_CMD", "nfqa_cfg_cmd"),
        ("NFQA_CFG_PARAMS", "nfqa_cfg_params"),
        ("NFQA_CFG_QUEUE_MAXLEN", "be32"),
        ("NFQA_CFG_MASK", "be32"),
        ("NFQA_CFG_FLAGS", "be32"),
    )

    class nfqa_cfg_cmd(nla):
        """struct nfqnl_msg_config_cmd"""

        fields = (("command", "B"), ("_pad", "B"), ("pf", ">H"))

    class nfqa_cfg_params(nla):
        """struct nfqnl_msg_config_params (packed: 5 bytes)"""

        fields = (("copy_range", ">I"), ("copy_mode", "B"))


class _nfqa_ct(nla):
    """NFQA_CT: the conntrack attributes of ctnetlink (enum ctattr_type),
    decoded with ctnetlink's ct_msg table. A separate class, not a
    subclass: pyroute2 caches compiled attribute tables per class."""

    nla_flags = NLA_F_NESTED
    prefix = "CTA_"
    nla_map = ct_msg.nla_map


for _name in ("cta_tuple", "cta_protoinfo", "cta_nat", "cta_nat_seq_adj", "cta_counters", "cta_secctx",
              "cta_timestamp", "cta_labels", "cta_synproxy", "cta_filter", "cta_help"):
    setattr(_nfqa_ct, _name, getattr(ct_msg, _name))


class _nfqa_exp(nla):
    """NFQA_EXP: one expectation in ctnetlink's attributes (enum ctattr_expect)."""

    nla_flags = NLA_F_NESTED
    prefix = "CTA_EXPECT_"
    nla_map = ctexp_msg.nla_map
    cta_tuple = ctexp_msg.cta_tuple
    cta_expect_nat = ctexp_msg.cta_expect_nat


class nfq_msg(nfgen_msg):
    """NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT and NFQNL_MSG_VERDICT_BATCH share
    enum nfqnl_attr_type; nfgen_family is the packet's protocol family and
    res_id the queue number."""

    prefix = "NFQA_"
    nla_map = (
        ("NFQA_UNSPEC", "none"),
        ("NFQA_PACKET_HDR", "nfqa_packet_hdr"),
        ("NFQA_VERDICT_HDR", "nfqa_verdict_hdr"),
        ("NFQA_MARK", "be32"),
        ("NFQA_TIMESTAMP", "nfqa_timestamp"),
        ("NFQA_IFINDEX_INDEV", "be32"),
        ("NFQA_IFINDEX_OUTDEV", "be32"),
        ("NFQA_IFINDEX_PHYSINDEV", "be32"),
        ("NFQA_IFINDEX_PHYSOUTDEV", "be32"),
        ("NFQA_HWADDR", "nfqa_hwaddr"),
        ("NFQA_PAYLOAD", "cdata"),
        ("NFQA_CT", "nfqa_ct"),
        ("NFQA_CT_INFO", "be32"),
        ("NFQA_CAP_LEN", "be32"),
        ("NFQA_SKB_INFO", "be32"),
        ("NFQA_EXP", "nfqa_exp"),
        ("NFQA_UID", "be32"),
        ("NFQA_GID", "be32"),
        ("NFQA_SECCTX", "cdata"),
        ("NFQA_VLAN", "nfqa_vlan"),
        ("NFQA_L2HDR", "cdata"),
        ("NFQA_PRIORITY", "be32"),
    )

    nfqa_ct = _nfqa_ct
    nfqa_exp = _nfqa_exp

    class nfqa_packet_hdr(nla):
        """struct nfqnl_msg_packet_hdr (packed: 7 bytes)"""

        fields = (("packet_id", ">I"), ("hw_protocol", ">H"), ("hook", "B"))

    class nfqa_verdict_hdr(nla):
        """struct nfqnl_msg_verdict_hdr"""

        fields = (("verdict", ">I"), ("id", ">I"))

    class nfqa_timestamp(nla):
        """struct nfqnl_msg_packet_timestamp"""

        fields = (("sec", ">Q"), ("usec", ">Q"))

    class nfqa_hwaddr(nla):
        """struct nfqnl_msg_packet_hw"""

        fields = (("hw_addrlen", ">H"), ("_pad", "H"), ("hw_addr", "8s"))

    class nfqa_vlan(nla):
        nla_flags = NLA_F_NESTED
        prefix = "NFQA_VLAN_"
        nla_map = (
            ("NFQA_VLAN_UNSPEC", "none"),
            ("NFQA_VLAN_PROTO", "be16"),
            ("NFQA_VLAN_TCI", "be16"),
        )


def _header(msg: Any, msg_type: int, flags: int, family: int, queue_num: int) -> Any:
    msg["header"]["type"] = queue_msg_type(msg_type)
    msg["header"]["flags"] = flags
    msg["nfgen_family"] = family
    msg["version"] = 0
    msg["res_id"] = queue_num
    return msg


# --- plain data --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """One NFQNL_MSG_CONFIG request: a command (bind/unbind), the copy mode,
    the queue length, and the flags to change (``mask`` says which).
    Absent parts (None) are not sent and leave the queue as it is."""

    queue_num: int
    command: int | None = None
    pf: int = 0
    copy_mode: int | None = None
    copy_range: int = 0xFFFF
    queue_maxlen: int | None = None
    flags: int | None = None
    mask: int | None = None

    def to_attrs(self) -> list[list[Any]]:
        attrs: list[list[Any]] = []
        if self.command is not None:
            attrs.append(["NFQA_CFG_CMD", {"command": self.command, "_pad": 0, "pf": self.pf}])
        if self.copy_mode is not None:
            attrs.append(["NFQA_CFG_PARAMS", {"copy_range": self.copy_range, "copy_mode": self.copy_mode}])
        if self.queue_maxlen is not None:
            attrs.append(["NFQA_CFG_QUEUE_MAXLEN", self.queue_maxlen])
        if self.flags is not None:
            # nfqnl_recv_config() refuses flags without a mask (EINVAL).
            attrs.append(["NFQA_CFG_MASK", self.flags if self.mask is None else self.mask])
            attrs.append(["NFQA_CFG_FLAGS", self.flags])
        return attrs

    def to_msg(self, flags: int = 0) -> nfq_config_msg:
        msg = _header(nfq_config_msg(), NFQNL_MSG_CONFIG, flags, 0, self.queue_num)
        msg["attrs"] = self.to_attrs()
        return msg

    @classmethod
    def from_msg(cls, msg: Any) -> QueueConfig:
        return config_from_bytes(*_buffer(msg))


@dataclass(frozen=True, slots=True)
class QueuedPacket:
    """One NFQNL_MSG_PACKET: the packet (network header on), where it was
    queued, and - with NFQA_CFG_F_CONNTRACK - its conntrack and ctinfo."""

    queue_num: int
    family: int  # NFPROTO_IPV4 / NFPROTO_IPV6 (entry->state.pf)
    packet_id: int
    hw_protocol: int  # ETH_P_IP / ETH_P_IPV6
    hook: int
    payload: bytes = b""
    ct: KernelConntrack | None = None
    ctinfo: int | None = None
    mark: int | None = None
    indev: int | None = None
    outdev: int | None = None
    cap_len: int | None = None
    skb_info: int | None = None
    timestamp: tuple[int, int] | None = None  # (sec, usec)

    def to_attrs(self) -> list[list[Any]]:
        """Attributes in nfqnl_build_packet_message() order."""
        attrs: list[list[Any]] = [["NFQA_PACKET_HDR", {"packet_id": self.packet_id,
                                                        "hw_protocol": self.hw_protocol, "hook": self.hook}]]
        if self.indev is not None:
            attrs.append(["NFQA_IFINDEX_INDEV", self.indev])
        if self.outdev is not None:
            attrs.append(["NFQA_IFINDEX_OUTDEV", self.outdev])
        if self.mark is not None:
            attrs.append(["NFQA_MARK", self.mark])
        if self.timestamp is not None:
            attrs.append(["NFQA_TIMESTAMP", {"sec": self.timestamp[0], "usec": self.timestamp[1]}])
        if self.ct is not None:
            attrs.append(["NFQA_CT", {"attrs": self.ct.to_attrs()}])
            attrs.append(["NFQA_CT_INFO", self.ctinfo or 0])
        if self.cap_len is not None:
            attrs.append(["NFQA_CAP_LEN", self.cap_len])
        if self.skb_info is not None:
            attrs.append(["NFQA_SKB_INFO", self.skb_info])
        attrs.append(["NFQA_PAYLOAD", self.payload])
        return attrs

    def to_msg(self) -> nfq_msg:
        msg = _header(nfq_msg(), NFQNL_MSG_PACKET, 0, self.family, self.queue_num)
        msg["attrs"] = self.to_attrs()
        return msg

    @classmethod
    def from_msg(cls, msg: Any) -> QueuedPacket:
        return packet_from_bytes(*_buffer(msg))


@dataclass(frozen=True, slots=True)
class Verdict:
    """One NFQNL_MSG_VERDICT (or, with ``batch``, NFQNL_MSG_VERDICT_BATCH: the
    verdict for every packet up to ``packet_id``).

    What the verdict changes on the packet's conntrack goes in NFQA_CT
    (ctnetlink_glue_parse_ct()): ``ct_timeout`` (CTA_TIMEOUT, seconds) and the
    helper's private data (CTA_HELP {CTA_HELP_NAME ``helper``, CTA_HELP_INFO
    ``helper_info``}). ``exp`` is an expectation for ctnetlink_glue_attach_expect()
    (its master is the packet's conntrack, whatever ``exp.master`` says) and
    ``exp_helper`` the helper the expected connection gets. NFQA_CT is sent
    whenever one of these is: nfqnl_recv_verdict() reads NFQA_EXP only then.

    ``payload`` replaces the packet (NFQA_PAYLOAD, nfqnl_mangle(): a whole
    L3 packet, its lengths and checksums already right). NFQA_CT goes with
    it, empty if need be: only with a conntrack from NFQA_CT does
    nfqnl_recv_verdict() pass the length change to seq_adjust
    (ctnetlink_glue_seqadj(), TCP under NAT). ``conntrack`` False leaves
    NFQA_CT out whatever else is set (and NFQA_EXP with it): nothing of the
    conntrack changes, seq_adjust included."""

    queue_num: int
    packet_id: int
    verdict: int
    family: int = 0
    ct_timeout: int | None = None
    helper: str | None = None
    helper_info: bytes | None = None
    exp: KernelExpectation | None = None
    exp_helper: str | None = None
    mark: int | None = None
    batch: bool = False
    payload: bytes | None = None
    conntrack: bool = True

    @property
    def name(self) -> str:
        return VERDICT_NAMES.get(self.verdict, str(self.verdict))

    def ct_attrs(self) -> list[list[Any]] | None:
        if not self.conntrack:
            return None
        attrs: list[list[Any]] = []
        if self.ct_timeout is not None:
            attrs.append(["CTA_TIMEOUT", self.ct_timeout])
        if self.helper is not None:
            attrs.append(["CTA_HELP", help_attr(self.helper, self.helper_info)])
        if not attrs and self.exp is None and self.payload is None:
            return None
        return attrs

    def exp_attrs(self) -> list[list[Any]]:
        """What ctnetlink_glue_attach_expect() reads: tuple and mask
        (required), the class and flags ctnetlink_alloc_expect() takes, and
        the helper name for the expected connection."""
        e = self.exp
        assert e is not None
        attrs: list[list[Any]] = [
            ["CTA_EXPECT_TUPLE", e.tuple_attr()],
            ["CTA_EXPECT_MASK", e.mask_attr()],
            ["CTA_EXPECT_FLAGS", e.flag_bits],
            ["CTA_EXPECT_CLASS", e.klass],
        ]
        if self.exp_helper is not None:
            attrs.append(["CTA_EXPECT_HELP_NAME", self.exp_helper])
        if e.nat is not None:
            attrs.append(["CTA_EXPECT_NAT", e.nat_attr()])  # ctnetlink_alloc_expect() takes both here too
        if e.fn is not None:
            attrs.append(["CTA_EXPECT_FN", e.fn])
        return attrs

    def to_attrs(self) -> list[list[Any]]:
        attrs: list[list[Any]] = [["NFQA_VERDICT_HDR", {"verdict": self.verdict, "id": self.packet_id}]]
        if self.mark is not None:
            attrs.append(["NFQA_MARK", self.mark])
        ct = self.ct_attrs()
        if ct is not None:
            attrs.append(["NFQA_CT", {"attrs": ct}])
        if self.exp is not None and ct is not None:
            attrs.append(["NFQA_EXP", {"attrs": self.exp_attrs()}])
        if self.payload is not None:
            attrs.append(["NFQA_PAYLOAD", self.payload])
        return attrs

    def to_msg(self, flags: int = 0) -> nfq_msg:
        kind = NFQNL_MSG_VERDICT_BATCH if self.batch else NFQNL_MSG_VERDICT
        msg = _header(nfq_msg(), kind, flags, self.family, self.queue_num)
        msg["attrs"] = self.to_attrs()
        return msg

    @classmethod
    def from_msg(cls, msg: Any) -> Verdict:
        return verdict_from_bytes(*_buffer(msg))


def _buffer(msg: Any) -> tuple[bytes, int]:
    """A pyroute2 message's own buffer and offset (encoded first if it was built, not received)."""
    if not msg.data:
        msg.encode()
    return msg.data, msg.offset


# --- the codec ------------------------------------------------------------------------------------
_PACKET_HDR = struct.Struct(">IHB")  # struct nfqnl_msg_packet_hdr, packed
_VERDICT_HDR = struct.Struct(">II")  # struct nfqnl_msg_verdict_hdr
_TIMESTAMP = struct.Struct(">QQ")  # struct nfqnl_msg_packet_timestamp
_CFG_CMD = struct.Struct(">BBH")  # struct nfqnl_msg_config_cmd
_CFG_PARAMS = struct.Struct(">IB")  # struct nfqnl_msg_config_params, packed

_Q = numbers(nfq_msg)
_CFG = numbers(nfq_config_msg)
_CT = numbers(ct_msg)
_HELP = numbers(ct_msg.cta_help)
# The top-level attributes QueuedPacket holds that are one big-endian u32.
_Q_U32 = {_Q[name]: field for name, field in (
    ("NFQA_MARK", "mark"), ("NFQA_IFINDEX_INDEV", "indev"), ("NFQA_IFINDEX_OUTDEV", "outdev"),
    ("NFQA_CAP_LEN", "cap_len"), ("NFQA_SKB_INFO", "skb_info"), ("NFQA_CT_INFO", "ctinfo"))}


def _struct(data: bytes, span: Span, layout: struct.Struct, what: str) -> tuple[Any, ...]:
    if span[1] - span[0] != layout.size:
        raise DecodeError(f"{what} of {span[1] - span[0]} bytes, not {layout.size}")
    return layout.unpack_from(data, span[0])


def packet_from_bytes(data: bytes, off: int = 0) -> QueuedPacket:
    """The NFQNL_MSG_PACKET at ``off`` of a datagram (nlmsghdr on), as
    nfqnl_build_packet_message() wrote it."""
    family, queue_num, attrs = message_attributes(data, off)
    hdr = attrs.get(_Q["NFQA_PACKET_HDR"])
    if hdr is None:
        raise DecodeError("queued packet without NFQA_PACKET_HDR")
    packet_id, hw_protocol, hook = _struct(data, hdr, _PACKET_HDR, "NFQA_PACKET_HDR")
    fields: dict[str, Any] = {field: be32(data, attrs[number]) for number, field in _Q_U32.items()
                              if number in attrs}
    stamp = attrs.get(_Q["NFQA_TIMESTAMP"])
    if stamp is not None:
        fields["timestamp"] = _struct(data, stamp, _TIMESTAMP, "NFQA_TIMESTAMP")
    ct = attrs.get(_Q["NFQA_CT"])
    if ct is not None:
        fields["ct"] = conntrack_attrs(data, nested(data, ct), family)
    payload = attrs.get(_Q["NFQA_PAYLOAD"])
    return QueuedPacket(queue_num, family, packet_id, hw_protocol, hook,
                        b"" if payload is None else bytes(data[payload[0]:payload[1]]), **fields)


def verdict_from_bytes(data: bytes, off: int = 0) -> Verdict:
    """Decode a verdict (for tests and tracing), as nfqnl_recv_verdict() reads it.
    NFQA_EXP comes back with an all-zero master: the kernel takes the packet's conntrack."""
    family, queue_num, attrs = message_attributes(data, off)
    hdr = attrs.get(_Q["NFQA_VERDICT_HDR"])
    if hdr is None:
        raise DecodeError("verdict without NFQA_VERDICT_HDR")
    verdict, packet_id = _struct(data, hdr, _VERDICT_HDR, "NFQA_VERDICT_HDR")
    ct = nested(data, attrs[_Q["NFQA_CT"]]) if _Q["NFQA_CT"] in attrs else {}
    help_ = nested(data, ct[_CT["CTA_HELP"]]) if _CT["CTA_HELP"] in ct else {}
    name, info = help_.get(_HELP["CTA_HELP_NAME"]), help_.get(_HELP["CTA_HELP_INFO"])
    exp = exp_helper = None
    if _Q["NFQA_EXP"] in attrs:
        exp = expectation_attrs(data, nested(data, attrs[_Q["NFQA_EXP"]]), family)
        exp, exp_helper = replace(exp, helper=None), exp.helper
    timeout, mark = ct.get(_CT["CTA_TIMEOUT"]), attrs.get(_Q["NFQA_MARK"])
    payload = attrs.get(_Q["NFQA_PAYLOAD"])
    return Verdict(
        queue_num=queue_num,
        packet_id=packet_id,
        verdict=verdict,
        family=family,
        ct_timeout=None if timeout is None else be32(data, timeout),
        helper=None if name is None else asciiz(data, name),
        helper_info=None if info is None else bytes(data[info[0]:info[1]]),
        exp=exp,
        exp_helper=exp_helper,
        mark=None if mark is None else be32(data, mark),
        batch=NLMSG.unpack_from(data, off)[1] == queue_msg_type(NFQNL_MSG_VERDICT_BATCH),
        payload=None if payload is None else bytes(data[payload[0]:payload[1]]),
        conntrack=_Q["NFQA_CT"] in attrs or payload is None,
    )


def config_from_bytes(data: bytes, off: int = 0) -> QueueConfig:
    """Decode an NFQNL_MSG_CONFIG (for tests), as nfqnl_recv_config() reads it."""
    _, queue_num, attrs = message_attributes(data, off)
    cmd, params = attrs.get(_CFG["NFQA_CFG_CMD"]), attrs.get(_CFG["NFQA_CFG_PARAMS"])
    command, _, pf = (None, 0, 0) if cmd is None else _struct(data, cmd, _CFG_CMD, "NFQA_CFG_CMD")
    copy_range, copy_mode = (0xFFFF, None) if params is None else _struct(data, params, _CFG_PARAMS,
                                                                          "NFQA_CFG_PARAMS")

    def number(name: str) -> int | None:
        span = attrs.get(_CFG[name])
        return None if span is None else be32(data, span)

    return QueueConfig(queue_num, command, pf, copy_mode, copy_range, number("NFQA_CFG_QUEUE_MAXLEN"),
                       number("NFQA_CFG_FLAGS"), number("NFQA_CFG_MASK"))


def encode_verdict(verdict: Verdict, flags: int, seq: int, pid: int) -> bytes | None:
    """``verdict`` as the bytes of ``verdict.to_msg()`` with this nlmsghdr
    (None: an attribute encode_request() does not write, left to pyroute2)."""
    msg = verdict.to_msg()
    return encode_request(msg, msg["header"]["type"], flags, seq, pid)
