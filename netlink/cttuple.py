"""A conntrack tuple in ctnetlink's attributes (enum ctattr_tuple): the one
encoder and the one decoder every ctnetlink codec of sipct.netlink nests.

The layout is the kernel's: ctnetlink_dump_tuples() writes CTA_TUPLE_IP
{src, dst} then CTA_TUPLE_PROTO {num, ports}, each level a nest with
NLA_F_NESTED; ctnetlink_parse_tuple() reads it back. Conntracks, expectations
(tuple, mask, master, NAT tuple), queued packets (NFQA_CT) and verdicts
(NFQA_EXP) all carry it.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from pyroute2.netlink import NLA_F_NESTED, nla

from sipct.netlink.wire import DecodeError, Span, be16, nested, numbers, u8

__all__ = ["IPAddress", "RawTuple", "cta_tuple", "decode_tuple", "encode_tuple", "family_of"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# (src, dst, sport, dport, protocol number); a port is None where the tuple has none.
RawTuple = tuple[IPAddress, IPAddress, int | None, int | None, int]


class cta_tuple(nla):
    """enum ctattr_tuple. The kernel opens it with nla_nest_start(), which
    sets NLA_F_NESTED, and so do we, for every level."""

    nla_flags = NLA_F_NESTED
    prefix = "CTA_TUPLE_"
    nla_map = (
        ("CTA_TUPLE_UNSPEC", "none"),
        ("CTA_TUPLE_IP", "cta_ip"),
        ("CTA_TUPLE_PROTO", "cta_proto"),
        ("CTA_TUPLE_ZONE", "be16"),
    )

    class cta_ip(nla):
        nla_flags = NLA_F_NESTED
        prefix = "CTA_IP_"
        nla_map = (
            ("CTA_IP_UNSPEC", "none"),
            ("CTA_IP_V4_SRC", "ip4addr"),
            ("CTA_IP_V4_DST", "ip4addr"),
            ("CTA_IP_V6_SRC", "ip6addr"),
            ("CTA_IP_V6_DST", "ip6addr"),
        )

    class cta_proto(nla):
        nla_flags = NLA_F_NESTED
        prefix = "CTA_PROTO_"
        nla_map = (
            ("CTA_PROTO_UNSPEC", "none"),
            ("CTA_PROTO_NUM", "uint8"),
            ("CTA_PROTO_SRC_PORT", "be16"),
            ("CTA_PROTO_DST_PORT", "be16"),
            ("CTA_PROTO_ICMP_ID", "be16"),
            ("CTA_PROTO_ICMP_TYPE", "uint8"),
            ("CTA_PROTO_ICMP_CODE", "uint8"),
            ("CTA_PROTO_ICMPV6_ID", "be16"),
            ("CTA_PROTO_ICMPV6_TYPE", "uint8"),
            ("CTA_PROTO_ICMPV6_CODE", "uint8"),
        )


_TUPLE = numbers(cta_tuple)
_IP = numbers(cta_tuple.cta_ip)
_PROTO = numbers(cta_tuple.cta_proto)
_TUPLE_IP, _TUPLE_PROTO = _TUPLE["CTA_TUPLE_IP"], _TUPLE["CTA_TUPLE_PROTO"]
_NUM, _SPORT, _DPORT = _PROTO["CTA_PROTO_NUM"], _PROTO["CTA_PROTO_SRC_PORT"], _PROTO["CTA_PROTO_DST_PORT"]
# family -> (source attribute, destination attribute, address size, address class)
_ADDRESSES = {
    socket.AF_INET: (_IP["CTA_IP_V4_SRC"], _IP["CTA_IP_V4_DST"], 4, ipaddress.IPv4Address),
    socket.AF_INET6: (_IP["CTA_IP_V6_SRC"], _IP["CTA_IP_V6_DST"], 16, ipaddress.IPv6Address),
}


def family_of(addr: IPAddress) -> int:
    return socket.AF_INET if addr.version == 4 else socket.AF_INET6


def family_suffix(family: int) -> str:
    """V4 / V6, as the CTA_IP_* attribute names spell the family."""
    if family == socket.AF_INET:
        return "V4"
    if family == socket.AF_INET6:
        return "V6"
    raise ValueError(f"expectations exist for AF_INET/AF_INET6 only, not family {family}")


def encode_tuple(
    family: int, src: IPAddress, dst: IPAddress, sport: int | None, dport: int | None, proto: int
) -> dict[str, Any]:
    """Mirror of ctnetlink_dump_tuples(): ip {src, dst}, proto {num, ports}."""
    v = family_suffix(family)
    l4: list[list[Any]] = [["CTA_PROTO_NUM", proto]]
    if sport is not None:
        l4.append(["CTA_PROTO_SRC_PORT", sport])
    if dport is not None:
        l4.append(["CTA_PROTO_DST_PORT", dport])
    return {
        "attrs": [
            ["CTA_TUPLE_IP", {"attrs": [[f"CTA_IP_{v}_SRC", str(src)], [f"CTA_IP_{v}_DST", str(dst)]]}],
            ["CTA_TUPLE_PROTO", {"attrs": l4}],
        ]
    }


def decode_tuple(data: bytes, span: Span, family: int) -> RawTuple:
    """Mirror of ctnetlink_parse_tuple() for the nest at ``span``: CTA_TUPLE_IP
    and CTA_TUPLE_PROTO are required (ctnetlink_parse_tuple_ip/_proto), the
    ports are not (an ICMP tuple has none)."""
    if family not in _ADDRESSES:
        family_suffix(family)  # raises the family's error
    src_no, dst_no, size, address = _ADDRESSES[family]
    parts = nested(data, span)
    if _TUPLE_IP not in parts or _TUPLE_PROTO not in parts:
        raise DecodeError("tuple without CTA_TUPLE_IP or CTA_TUPLE_PROTO")
    ips, l4 = nested(data, parts[_TUPLE_IP]), nested(data, parts[_TUPLE_PROTO])
    src, dst, num = ips.get(src_no), ips.get(dst_no), l4.get(_NUM)
    if src is None or dst is None or num is None:
        raise DecodeError("tuple without its addresses or CTA_PROTO_NUM")
    if src[1] - src[0] != size or dst[1] - dst[0] != size:
        raise DecodeError(f"tuple address of {src[1] - src[0]}/{dst[1] - dst[0]} bytes, not {size}")
    sport, dport = l4.get(_SPORT), l4.get(_DPORT)
    return (
        address(bytes(data[src[0]:src[1]])),
        address(bytes(data[dst[0]:dst[1]])),
        None if sport is None else be16(data, sport),
        None if dport is None else be16(data, dport),
        u8(data, num),
    )
