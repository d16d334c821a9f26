"""netlink's fixed layouts, read and written with ``struct``: the one reader
of attributes every decoder of sipct.netlink uses, and the request writer.

Reading: :func:`attributes` walks the attributes between two offsets of a
received datagram into {number: (payload start, payload end)} - the last
one of a number wins, as pyroute2's get_attr() would give it - and refuses
(:class:`DecodeError`) an attribute shorter than its header or running past
its parent; the leaf readers refuse a payload of the wrong size. The message
codecs (ctexp, conntrack, cthelper, nfqueue) are built on these and read the
attribute numbers from the pyroute2 classes' ``nla_map`` tables, which stay
the one definition of every message.

Writing: every ctnetlink request the harness and the reference helper make is a
pyroute2 message object whose ``attrs`` are lists of [name, value]; pyroute2's
``encode()`` of one costs a few hundred µs of CPU natively (an expectation
with its three nested tuples: about 300), which the reference helper pays per
expectation change and per verdict. :func:`encode_request` writes the same
bytes from the same object: the attribute numbers, nesting flags and struct
formats come from the classes' ``nla_map``, ``nla_flags`` and ``fields``;
the leaf kinds it writes are the ones the classes use for requests (uint8,
be16, be32, ip4addr/ip6addr, asciiz, hex and cdata as raw bytes). A message
with any other kind is left to pyroute2 (None). tests/netlink/test_nfqueue_codec.py
holds it byte for byte to pyroute2's encoding.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from typing import Any

__all__ = ["BE16", "BE32", "NFGEN", "NLA", "NLA_TYPE_MASK", "NLMSG", "DecodeError", "Span", "asciiz", "attributes",
           "be16", "be32", "encode_request", "message_attributes", "nested", "netlink_messages", "numbers",
           "u8"]

# The fixed layouts of netlink (shared by every struct-level reader and writer of the project).
NLMSG = struct.Struct("=IHHII")  # struct nlmsghdr: length, type, flags, sequence, port id
NLA = struct.Struct("=HH")  # struct nlattr: length, type
NLA_TYPE_MASK = 0x3FFF  # ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER)
NFGEN = struct.Struct("=BBH")  # struct nfgenmsg: family, version, res_id (network order)
BE16 = struct.Struct(">H")
BE32 = struct.Struct(">I")


class _Unwritten(Exception):
    """An attribute this encoder does not write: pyroute2 encodes the message."""


_LEAVES = {
    "uint8": struct.Struct("B").pack,
    "be16": BE16.pack,
    "be32": BE32.pack,
    "ip4addr": lambda text: socket.inet_pton(socket.AF_INET, text),
    "ip6addr": lambda text: socket.inet_pton(socket.AF_INET6, text),
    "asciiz": lambda text: text.encode("ascii") + b"\0",
    "hex": bytes,  # raw bytes in, as pyroute2 takes them
    "cdata": bytes,
}
_TABLES: dict[type, dict[str, tuple[int, str, Any]]] = {}


def _table(cls: Any) -> dict[str, tuple[int, str, Any]]:
    """name -> (number, leaf kind or "", nested class) from the class's nla_map."""
    table = _TABLES.get(cls)
    if table is None:
        table = {}
        for number, (name, kind) in enumerate(cls.nla_map):
            if kind in _LEAVES:
                table[name] = (number, kind, None)
            elif getattr(getattr(cls, kind, None), "nla_map", None):
                sub = getattr(cls, kind)
                table[name] = (number | getattr(sub, "nla_flags", 0), "", sub)
            elif getattr(getattr(cls, kind, None), "fields", None):
                sub = getattr(cls, kind)
                table[name] = (number | getattr(sub, "nla_flags", 0), "fields", sub)
        _TABLES[cls] = table
    return table


def _encode_attrs(cls: Any, attrs: Any) -> bytes:
    table = _table(cls)
    out = []
    for name, value in attrs:
        entry = table.get(name)
        if entry is None:
            raise _Unwritten(name)
        number, kind, sub = entry
        if kind == "":
            payload = _encode_attrs(sub, value["attrs"])
        elif kind == "fields":
            payload = b"".join(struct.pack(fmt, value[field]) for field, fmt in sub.fields)
        else:
            payload = _LEAVES[kind](value)
        out.append(_nla(number, payload))
    return b"".join(out)


def _nla(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return NLA.pack(length, kind) + payload + bytes(-length % 4)


def encode_request(msg: Any, msg_type: int, flags: int, seq: int, pid: int) -> bytes | None:
    """A pyroute2 nfnetlink message object not yet encoded (``msg["attrs"]``
    a list of [name, value] as the codec classes build them) as the bytes
    its ``encode()`` would make with this nlmsghdr; None when it holds an
    attribute kind this encoder does not write (pyroute2 then encodes it)."""
    try:
        body = _encode_attrs(type(msg), msg["attrs"])
        payload = NFGEN.pack(msg["nfgen_family"], msg["version"], socket.htons(msg["res_id"])) + body
    except (_Unwritten, struct.error, KeyError, TypeError, ValueError, OSError, UnicodeError):
        return None
    return NLMSG.pack(16 + len(payload), msg_type, flags, seq, pid) + payload


# --- reading ----------------------------------------------------------------------------------------
Span = tuple[int, int]  # (payload start, payload end) of one attribute in the datagram


class DecodeError(ValueError):
    """Bytes that are not the message they claim to be (a ValueError, as a
    missing required attribute is)."""


def netlink_messages(data: bytes) -> Iterator[tuple[int, int, int, int]]:
    """(type, flags, sequence number, offset) of each message in a datagram."""
    off = 0
    while off + NLMSG.size <= len(data):
        length, kind, flags, seq, _ = NLMSG.unpack_from(data, off)
        if length < NLMSG.size:
            return
        yield kind, flags, seq, off
        off += (length + 3) & ~3


def message_attributes(data: bytes, off: int) -> tuple[int, int, dict[int, Span]]:
    """(nfgen_family, res_id, attributes) of the nfnetlink message at ``off``
    (nlmsghdr on; res_id in host order)."""
    length = NLMSG.unpack_from(data, off)[0]
    end = off + length
    if length < NLMSG.size + NFGEN.size or end > len(data):
        raise DecodeError(f"netlink message of {length} bytes at offset {off} of a {len(data)}-byte datagram")
    family, _, res_id = NFGEN.unpack_from(data, off + NLMSG.size)
    return family, socket.ntohs(res_id), attributes(data, off + NLMSG.size + NFGEN.size, end)


def attributes(data: bytes, start: int, end: int) -> dict[int, Span]:
    """Attribute number (flag bits off) -> payload span, for the attributes
    laid end to end in ``data[start:end]`` (nla_for_each_attr())."""
    out: dict[int, Span] = {}
    off = start
    while off + 4 <= end:
        length, kind = NLA.unpack_from(data, off)
        if length < 4 or off + length > end:
            raise DecodeError(f"attribute {kind & NLA_TYPE_MASK} of {length} bytes at offset {off} "
                              f"does not fit in its {end - start}-byte parent")
        out[kind & NLA_TYPE_MASK] = (off + 4, off + length)
        off += (length + 3) & ~3
    if off < end:
        raise DecodeError(f"{end - off} stray bytes after the attributes at offset {off}")
    return out


def nested(data: bytes, span: Span) -> dict[int, Span]:
    """The attributes inside a nest."""
    return attributes(data, span[0], span[1])


def _sized(span: Span, size: int, what: str) -> int:
    if span[1] - span[0] != size:
        raise DecodeError(f"{what} of {span[1] - span[0]} bytes, not {size}")
    return span[0]


def u8(data: bytes, span: Span) -> int:
    return data[_sized(span, 1, "u8 attribute")]


def be16(data: bytes, span: Span) -> int:
    return BE16.unpack_from(data, _sized(span, 2, "be16 attribute"))[0]


def be32(data: bytes, span: Span) -> int:
    return BE32.unpack_from(data, _sized(span, 4, "be32 attribute"))[0]


def asciiz(data: bytes, span: Span) -> str:
    """A NUL-terminated name (nla_put_string()): the text before the NUL."""
    text = bytes(data[span[0]:span[1]])
    if not text.endswith(b"\0") or b"\0" in text[:-1] or not text.isascii():
        raise DecodeError(f"{text!r} is not a NUL-terminated ASCII name")
    return text[:-1].decode("ascii")


def numbers(cls: Any) -> dict[str, int]:
    """Attribute name -> number, as a codec class's nla_map numbers them."""
    return {item[0]: index for index, item in enumerate(cls.nla_map)}
