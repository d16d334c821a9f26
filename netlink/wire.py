"""nfnetlink requests written with ``struct`` from the codec classes' own tables.

Every ctnetlink request the harness and the reference helper make is a
pyroute2 message object whose ``attrs`` are lists of [name, value]; pyroute2's
``encode()`` of one costs a few hundred µs of CPU natively (an expectation
with its three nested tuples: about 300), which the reference helper pays per
expectation change and per verdict. :func:`encode_request` writes the same
bytes from the same object: the attribute numbers, nesting flags and struct
formats come from the classes' ``nla_map``, ``nla_flags`` and ``fields``;
the leaf kinds it writes are the ones the classes use for requests (uint8,
be16, be32, ip4addr/ip6addr, asciiz, hex and cdata as raw bytes). A message
with any other kind is left to pyroute2 (None). tests/reference/test_codecs.py
holds it byte for byte to pyroute2's encoding.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

__all__ = ["BE16", "BE32", "NFGEN", "NLA", "NLA_TYPE_MASK", "NLMSG", "encode_request"]

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
