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
