"""The queued packet's headers: where the L4 payload starts, and the TCP flags.

NFQUEUE hands over the packet from its network header on (NFQNL_COPY_PACKET).
Conntrack has already defragmented it (nf_defrag_ipv4/ipv6 run before the
conntrack hook), so one queued packet is one whole datagram or TCP segment.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from sipct.spec.expectation import IPPROTO_TCP, IPPROTO_UDP, Address

__all__ = ["L4Packet", "PacketError", "TCP_ACK", "TCP_FIN", "TCP_RST", "TCP_SYN", "parse_packet"]

TCP_FIN, TCP_SYN, TCP_RST, TCP_ACK = 0x01, 0x02, 0x04, 0x10

# IPv6 extension headers that a transport header can follow (RFC 8200 4.1):
# hop-by-hop, routing, fragment, destination options.
_IPV6_EXTENSIONS = {0, 43, 44, 60}
_IPV6_FRAGMENT = 44


class PacketError(ValueError):
    """The queued bytes are not an IPv4/IPv6 UDP or TCP packet."""


@dataclass(frozen=True, slots=True)
class L4Packet:
    src: Address
    sport: int
    dst: Address
    dport: int
    proto: int
    payload: bytes
    tcp_flags: int = 0

    @property
    def syn(self) -> bool:
        return bool(self.tcp_flags & TCP_SYN)


def parse_packet(data: bytes) -> L4Packet:
    """Split a queued packet into addresses, ports and payload."""
    if not data:
        raise PacketError("empty packet")
    version = data[0] >> 4
    if version == 4:
        if len(data) < 20:
            raise PacketError("truncated IPv4 header")
        ihl = (data[0] & 0x0F) * 4
        total = struct.unpack_from("!H", data, 2)[0]
        if ihl < 20 or total < ihl or len(data) < ihl:
            raise PacketError("bad IPv4 header length")
        end = min(total, len(data))
        proto = data[9]
        src, dst = ipaddress.IPv4Address(data[12:16]), ipaddress.IPv4Address(data[16:20])
        off = ihl
    elif version == 6:
        if len(data) < 40:
            raise PacketError("truncated IPv6 header")
        end = min(40 + struct.unpack_from("!H", data, 4)[0], len(data))
        proto = data[6]
        src, dst = ipaddress.IPv6Address(data[8:24]), ipaddress.IPv6Address(data[24:40])
        off = 40
        while proto in _IPV6_EXTENSIONS:
            if off + 8 > end:
                raise PacketError("truncated IPv6 extension header")
            if proto == _IPV6_FRAGMENT:
                proto, size = data[off], 8
            else:
                proto, size = data[off], (data[off + 1] + 1) * 8
            off += size
    else:
        raise PacketError(f"IP version {version}")
    if proto == IPPROTO_UDP:
        if off + 8 > end:
            raise PacketError("truncated UDP header")
        sport, dport = struct.unpack_from("!HH", data, off)
        return L4Packet(src, sport, dst, dport, proto, bytes(data[off + 8:end]))
    if proto == IPPROTO_TCP:
        if off + 20 > end:
            raise PacketError("truncated TCP header")
        sport, dport = struct.unpack_from("!HH", data, off)
        doff = (data[off + 12] >> 4) * 4
        if doff < 20 or off + doff > end:
            raise PacketError("bad TCP data offset")
        return L4Packet(src, sport, dst, dport, proto, bytes(data[off + doff:end]), data[off + 13])
    raise PacketError(f"IP protocol {proto} is neither UDP nor TCP")


def build_packet(src: Address, sport: int, dst: Address, dport: int, proto: int, payload: bytes = b"",
                 tcp_flags: int = TCP_ACK) -> bytes:
    """The inverse of parse_packet() (checksums zero): queued-packet bytes for tests and benchmarks."""
    if proto == IPPROTO_UDP:
        l4 = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    elif proto == IPPROTO_TCP:
        l4 = struct.pack("!HHIIBBHHH", sport, dport, 1, 1, 5 << 4, tcp_flags, 65535, 0, 0) + payload
    else:
        raise ValueError(f"protocol {proto}")
    if src.version == 4:
        header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0x4000, 64, proto, 0,
                             src.packed, dst.packed)
    else:
        header = struct.pack("!IHBB16s16s", 6 << 28, len(l4), proto, 64, src.packed, dst.packed)
    return header + l4
