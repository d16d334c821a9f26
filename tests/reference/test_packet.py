"""The reference helper's own bytes: the IP/UDP/TCP headers of queued
packets (sipct.reference.packet) and its private data per master
(sipct.reference.master_state)."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipct.reference.master_state import MasterState
from sipct.reference.packet import build_packet, parse_packet

ip = ipaddress.ip_address
UDP, TCP = 17, 6


def test_master_state() -> None:
    assert MasterState.unpack(MasterState(1826, 314159, 5062).pack()) == MasterState(1826, 314159, 5062)
    assert MasterState.unpack(bytes(12)) is None  # a fresh helper area: no state yet
    assert MasterState.unpack(None) is None and MasterState.unpack(b"\1\2") is None


@given(st.sampled_from(["192.0.2.1", "2001:db8::1"]), st.integers(1, 65535), st.integers(1, 65535),
       st.sampled_from([UDP, TCP]), st.binary(max_size=300), st.integers(0, 0x3F))
def test_packet_headers_round_trip(src: str, sport: int, dport: int, proto: int, payload: bytes, flags: int) -> None:
    a = ip(src)
    b = ip("198.51.100.2") if a.version == 4 else ip("2001:db8::2")
    pkt = parse_packet(build_packet(a, sport, b, dport, proto, payload, flags))
    assert (pkt.src, pkt.sport, pkt.dst, pkt.dport, pkt.proto, pkt.payload) == (a, sport, b, dport, proto, payload)
    assert pkt.tcp_flags == (flags if proto == TCP else 0)


def test_ipv6_extension_headers_are_skipped() -> None:
    inner = build_packet(ip("2001:db8::1"), 5060, ip("2001:db8::2"), 5060, UDP, b"x")
    udp = inner[40:]
    hop = bytes([UDP, 0]) + bytes(6)  # hop-by-hop options, 8 bytes, next header UDP
    header = bytearray(inner[:40])
    header[6] = 0
    struct.pack_into("!H", header, 4, len(hop) + len(udp))
    assert parse_packet(bytes(header) + hop + udp).payload == b"x"


@pytest.mark.parametrize("data", [b"", b"\x45\x00", b"\x60" + bytes(10), b"\x75" + bytes(40),
                                  build_packet(ip("192.0.2.1"), 1, ip("192.0.2.2"), 2, UDP)[:24]])
def test_bad_packets_are_refused(data: bytes) -> None:
    from sipct.reference.packet import PacketError
    with pytest.raises(PacketError):
        parse_packet(data)


def _dpkt_packet(src: str, dst: str, proto: int, sport: int, dport: int, payload: bytes, options: bytes = b"") -> bytes:
    """The packet as dpkt writes it: dpkt fills in the IPv4 total length and
    every checksum left at 0, not the UDP and IPv6 lengths nor the IPv4 header length."""
    import dpkt

    l4 = (dpkt.udp.UDP(sport=sport, dport=dport, ulen=8 + len(payload), data=payload) if proto == UDP
          else dpkt.tcp.TCP(sport=sport, dport=dport, seq=7, ack=9, flags=0x18, data=payload))
    a, b = ip(src), ip(dst)
    if a.version == 4:
        return bytes(dpkt.ip.IP(src=a.packed, dst=b.packed, p=proto, ttl=63, id=4711, hl=5 + len(options) // 4,
                                  opts=options, data=l4))
    return bytes(dpkt.ip6.IP6(src=a.packed, dst=b.packed, nxt=proto, hlim=63, plen=len(l4), data=l4))


@pytest.mark.parametrize("src, dst", [("192.0.2.10", "203.0.113.5"), ("2001:db8::10", "2001:db8:1::5")])
@pytest.mark.parametrize("proto", [UDP, TCP])
@pytest.mark.parametrize("old, new", [(b"INVITE sip:bob@192.0.2.10 SIP/2.0\r\n", b"INVITE sip:bob@203.0.113.1 SIP/2.0\r\n\r\n"),
                                      (b"a" * 301, b"b" * 17), (b"odd", b"")])
def test_rebuilt_packet_is_what_dpkt_writes(src: str, dst: str, proto: int, old: bytes, new: bytes) -> None:
    """Lengths and checksums of a rewritten packet, checked against an independent writer."""
    from sipct.reference.packet import rebuild_packet

    queued = _dpkt_packet(src, dst, proto, 5060, 5062, old)
    assert rebuild_packet(queued, new) == _dpkt_packet(src, dst, proto, 5060, 5062, new)
    assert rebuild_packet(queued, new, dport=5070) == _dpkt_packet(src, dst, proto, 5060, 5070, new)


def test_rebuilt_packet_keeps_ipv4_options() -> None:
    from sipct.reference.packet import rebuild_packet

    options = bytes([148, 4, 0, 0])  # router alert
    queued = _dpkt_packet("192.0.2.10", "203.0.113.5", UDP, 5060, 5060, b"x" * 10, options)
    assert rebuild_packet(queued, b"y" * 40) == _dpkt_packet("192.0.2.10", "203.0.113.5", UDP, 5060, 5060,
                                                            b"y" * 40, options)


def test_internet_checksum_known_values() -> None:
    """RFC 1071 section 3's example words, and the all-ones fold."""
    from sipct.reference.packet import internet_checksum

    assert internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == ~0xDDF2 & 0xFFFF
    assert internet_checksum(bytes.fromhex("4500003c1c4640004006000" "0ac100a63ac100a0c")) == 0xB1E6
