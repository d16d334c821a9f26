"""Netlink bytes built by hand, laid out as the kernel lays them out, and
pyroute2's encoding and decoding of the codec classes, for the codec tests."""

from __future__ import annotations

import socket
import struct


def nla(kind: int, payload: bytes, nested: bool = False) -> bytes:
    """struct nlattr + payload + padding to 4 bytes (nla_put / nla_nest_start)."""
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind | (0x8000 if nested else 0)) + payload + bytes(-length % 4)


def nlmsg(kind: int, family: int, res_id: int, body: bytes, flags: int = 0, seq: int = 0) -> bytes:
    """struct nlmsghdr + struct nfgenmsg (nfnl_msg_put()) + attributes."""
    payload = struct.pack("=BBH", family, 0, socket.htons(res_id)) + body
    return struct.pack("=IHHII", 16 + len(payload), kind, flags, seq, 0) + payload


def decode(cls, data: bytes):
    msg = cls(data)
    msg.decode()
    return msg


def encoded(msg) -> bytes:
    msg.encode()
    return bytes(msg.data)
