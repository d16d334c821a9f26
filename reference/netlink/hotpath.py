"""The two messages of every queued packet, with ``struct``: the daemon's hot path.

pyroute2's generic codec costs about 200 µs of CPU natively to decode a
queued packet (``queue.nfq_msg`` with the conntrack nested in NFQA_CT) and
as much again to encode the verdict with the helper's private data - each
several times the spec's decision. :func:`decode_packet` reads the same bytes
into the same :class:`~sipct.reference.netlink.queue.QueuedPacket`, and
:func:`encode_verdict` writes the same bytes as ``Verdict.to_msg()``, in a
tenth of that.

They are not a second codec: every attribute number and flag comes from the
``nla_map`` tables and ``nla_flags`` of the pyroute2 classes (the verdict is
``Verdict.to_msg()`` written by :func:`sipct.netlink.wire.encode_request`),
and whatever the decoder would not read exactly as pyroute2 does makes it
give up (return None) - a length other than the type's, a tuple without its
address or protocol, a helper name without its NUL, an attribute running
past its parent; the caller then decodes with pyroute2 as before.
tests/reference/test_codecs.py holds both to pyroute2's answers: equal
packets from encoded and from mangled bytes, byte-identical verdicts.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Any

from sipct.netlink.ctexp import cta_tuple, ct_msg
from sipct.netlink.wire import BE16, BE32, NFGEN, NLA, NLA_TYPE_MASK, encode_request
from sipct.reference.netlink.conntrack import KernelConntrack
from sipct.reference.netlink.queue import QueuedPacket, nfq_msg
from sipct.spec.expectation import ConnTuple

__all__ = ["decode_packet", "encode_verdict"]

_PACKET_HDR = struct.Struct(">IHB")  # struct nfqnl_msg_packet_hdr, packed
_TIMESTAMP = struct.Struct(">QQ")  # struct nfqnl_msg_packet_timestamp


def _numbers(cls: Any) -> dict[str, int]:
    """Attribute name -> number, as the class's nla_map numbers them."""
    return {item[0]: index for index, item in enumerate(cls.nla_map)}


_Q = _numbers(nfq_msg)
_CT = _numbers(ct_msg)
_TUPLE = _numbers(cta_tuple)
_IP = _numbers(cta_tuple.cta_ip)
_PROTO = _numbers(cta_tuple.cta_proto)
_HELP = _numbers(ct_msg.cta_help)

# The top-level attributes QueuedPacket holds that are one big-endian u32.
_Q_U32 = {_Q[name]: field for name, field in (
    ("NFQA_MARK", "mark"), ("NFQA_IFINDEX_INDEV", "indev"), ("NFQA_IFINDEX_OUTDEV", "outdev"),
    ("NFQA_CAP_LEN", "cap_len"), ("NFQA_SKB_INFO", "skb_info"), ("NFQA_CT_INFO", "ctinfo"))}
_CT_U32 = {_CT[name]: field for name, field in (
    ("CTA_ID", "id"), ("CTA_STATUS", "status"), ("CTA_TIMEOUT", "timeout"), ("CTA_MARK", "mark"))}
_ADDRESSES = {
    socket.AF_INET: (_IP["CTA_IP_V4_SRC"], _IP["CTA_IP_V4_DST"], 4, ipaddress.IPv4Address),
    socket.AF_INET6: (_IP["CTA_IP_V6_SRC"], _IP["CTA_IP_V6_DST"], 16, ipaddress.IPv6Address),
}


class _GiveUp(Exception):
    """Something pyroute2 should decode (and judge) instead."""


def _attrs(data: bytes, start: int, end: int) -> dict[int, tuple[int, int]]:
    """Attribute number -> (payload start, payload end); the last one of a
    number wins, as in attr_tree()."""
    out: dict[int, tuple[int, int]] = {}
    off = start
    while off + 4 <= end:
        length, kind = NLA.unpack_from(data, off)
        if length < 4 or off + length > end:
            raise _GiveUp
        out[kind & NLA_TYPE_MASK] = (off + 4, off + length)
        off += (length + 3) & ~3
    if off < end:
        raise _GiveUp
    return out


def _u32(data: bytes, span: tuple[int, int]) -> int:
    if span[1] - span[0] != 4:
        raise _GiveUp
    return BE32.unpack_from(data, span[0])[0]


def _conn_tuple(data: bytes, span: tuple[int, int] | None, family: int) -> ConnTuple | None:
    if span is None:
        return None
    parts = _attrs(data, *span)
    ip, l4 = parts.get(_TUPLE["CTA_TUPLE_IP"]), parts.get(_TUPLE["CTA_TUPLE_PROTO"])
    if ip is None or l4 is None:
        raise _GiveUp
    src_no, dst_no, size, address = _ADDRESSES[family]
    ips, ports = _attrs(data, *ip), _attrs(data, *l4)
    src, dst, num = ips.get(src_no), ips.get(dst_no), ports.get(_PROTO["CTA_PROTO_NUM"])
    sport, dport = ports.get(_PROTO["CTA_PROTO_SRC_PORT"]), ports.get(_PROTO["CTA_PROTO_DST_PORT"])
    if src is None or dst is None or num is None or sport is None or dport is None:
        raise _GiveUp
    if src[1] - src[0] != size or dst[1] - dst[0] != size or num[1] - num[0] != 1 \
            or sport[1] - sport[0] != 2 or dport[1] - dport[0] != 2:
        raise _GiveUp
    return ConnTuple(address(data[src[0]:src[1]]), address(data[dst[0]:dst[1]]), data[num[0]],
                     BE16.unpack_from(data, sport[0])[0], BE16.unpack_from(data, dport[0])[0])


def _conntrack(data: bytes, span: tuple[int, int], family: int) -> KernelConntrack:
    attrs = _attrs(data, *span)
    original = _conn_tuple(data, attrs.get(_CT["CTA_TUPLE_ORIG"]), family)
    if original is None:
        raise _GiveUp
    fields: dict[str, Any] = {field: _u32(data, attrs[number]) for number, field in _CT_U32.items()
                              if number in attrs}
    zone = attrs.get(_CT["CTA_ZONE"])
    if zone is not None:
        if zone[1] - zone[0] != 2:
            raise _GiveUp
        fields["zone"] = BE16.unpack_from(data, zone[0])[0]
    help_ = attrs.get(_CT["CTA_HELP"])
    if help_ is not None:
        parts = _attrs(data, *help_)
        name, info = parts.get(_HELP["CTA_HELP_NAME"]), parts.get(_HELP["CTA_HELP_INFO"])
        if name is not None:
            text = data[name[0]:name[1]]
            if not text.endswith(b"\0") or b"\0" in text[:-1] or not text[:-1].isascii():
                raise _GiveUp
            fields["helper"] = text[:-1].decode("ascii")
        if info is not None:
            fields["helper_info"] = data[info[0]:info[1]]
    return KernelConntrack(
        family=family, original=original,
        reply=_conn_tuple(data, attrs.get(_CT["CTA_TUPLE_REPLY"]), family),
        master=_conn_tuple(data, attrs.get(_CT["CTA_TUPLE_MASTER"]), family),
        **fields)


def decode_packet(data: bytes, off: int, length: int) -> QueuedPacket | None:
    """The NFQNL_MSG_PACKET at ``data[off:off + length]`` (nlmsghdr on), or
    None when pyroute2 has to decode it."""
    end = off + length
    if length < 20 or end > len(data):
        return None
    family, _, res_id = NFGEN.unpack_from(data, off + 16)
    try:
        attrs = _attrs(data, off + 20, end)
        hdr = attrs.get(_Q["NFQA_PACKET_HDR"])
        if hdr is None or hdr[1] - hdr[0] != _PACKET_HDR.size:
            return None
        packet_id, hw_protocol, hook = _PACKET_HDR.unpack_from(data, hdr[0])
        fields: dict[str, Any] = {field: _u32(data, attrs[number]) for number, field in _Q_U32.items()
                                  if number in attrs}
        stamp = attrs.get(_Q["NFQA_TIMESTAMP"])
        if stamp is not None:
            if stamp[1] - stamp[0] != _TIMESTAMP.size:
                return None
            fields["timestamp"] = _TIMESTAMP.unpack_from(data, stamp[0])
        ct = attrs.get(_Q["NFQA_CT"])
        if ct is not None:
            if family not in _ADDRESSES:
                return None
            fields["ct"] = _conntrack(data, ct, family)
        payload = attrs.get(_Q["NFQA_PAYLOAD"])
        return QueuedPacket(socket.ntohs(res_id), family, packet_id, hw_protocol, hook,
                            b"" if payload is None else data[payload[0]:payload[1]], **fields)
    except (_GiveUp, struct.error):
        return None


def encode_verdict(verdict: Any, flags: int, seq: int, pid: int) -> bytes | None:
    """``verdict`` (a queue.Verdict) as the bytes of ``verdict.to_msg()``
    with this nlmsghdr (None: left to pyroute2)."""
    msg = verdict.to_msg()
    return encode_request(msg, msg["header"]["type"], flags, seq, pid)
