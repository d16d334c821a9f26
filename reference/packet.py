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

__all__ = ["L4Packet", "PacketError", "TCP_ACK", "TCP_FIN", "TCP_RST", "TCP_SYN", "parse_packet", "rebuild_packet"]

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
    l4_offset: int = 0  # where the UDP/TCP header starts in the queued bytes
    payload_offset: int = 0  # where its payload starts
    truncated: bool = False  # the IP header says the packet is longer than the bytes queued
    tcp_seq: int = 0  # the TCP segment's sequence number, as the sender wrote it (seqadj runs after the verdict)

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
        declared = total
        end = min(total, len(data))
        proto = data[9]
        src, dst = ipaddress.IPv4Address(data[12:16]), ipaddress.IPv4Address(data[16:20])
        off = ihl
    elif version == 6:
        if len(data) < 40:
            raise PacketError("truncated IPv6 header")
        declared = 40 + struct.unpack_from("!H", data, 4)[0]
        end = min(declared, len(data))
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
        return L4Packet(src, sport, dst, dport, proto, bytes(data[off + 8:end]), 0, off, off + 8, end < declared)
    if proto == IPPROTO_TCP:
        if off + 20 > end:
            raise PacketError("truncated TCP header")
        sport, dport = struct.unpack_from("!HH", data, off)
        doff = (data[off + 12] >> 4) * 4
        if doff < 20 or off + doff > end:
            raise PacketError("bad TCP data offset")
        return L4Packet(src, sport, dst, dport, proto, bytes(data[off + doff:end]), data[off + 13], off, off + doff,
                        end < declared, struct.unpack_from("!I", data, off + 4)[0])
    raise PacketError(f"IP protocol {proto} is neither UDP nor TCP")


def _fold(total: int) -> int:
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def internet_checksum(data: bytes, start: int = 0) -> int:
    """RFC 1071: the ones' complement of the ones' complement sum of 16-bit words."""
    if len(data) % 2:
        data += b"\0"
    total = start + sum(struct.unpack(f"!{len(data) // 2}H", data))
    return ~_fold(total) & 0xFFFF


def rebuild_packet(data: bytes, payload: bytes, dport: int | None = None) -> bytes:
    """The queued packet ``data`` with ``payload`` as its UDP/TCP payload (and
    ``dport`` as its destination port), lengths and checksums made right.

    What a verdict's NFQA_PAYLOAD carries: nfqnl_mangle() copies it over the
    packet and sets CHECKSUM_NONE, fixing nothing - the IPv4 total length and
    header checksum, the IPv6 payload length, the UDP length and the UDP/TCP
    checksum are the sender's to get right, where nf_nat_mangle_udp_packet()
    / nf_nat_mangle_tcp_packet() fix them for the kernel helper. The TCP
    checksum must be whole: nf_ct_seq_adjust() later changes it incrementally
    (inet_proto_csum_replace4()). The pseudo-header takes the IPv6 header's
    destination (no routing header's final one: conntrack queues none of those
    for SIP in practice)."""
    l4 = parse_packet(data)
    head = bytearray(data[:l4.payload_offset])
    off = l4.l4_offset
    if dport is not None:
        struct.pack_into("!H", head, off + 2, dport)
    segment_len = len(head) - off + len(payload)
    version = head[0] >> 4
    if version == 4:
        struct.pack_into("!H", head, 2, len(head) + len(payload))
        struct.pack_into("!H", head, 10, 0)
        ihl = (head[0] & 0x0F) * 4
        struct.pack_into("!H", head, 10, internet_checksum(bytes(head[:ihl])))
        pseudo = bytes(head[12:20]) + struct.pack("!BBH", 0, l4.proto, segment_len)
    else:
        struct.pack_into("!H", head, 4, len(head) - 40 + len(payload))
        pseudo = bytes(head[8:40]) + struct.pack("!IxxxB", segment_len, l4.proto)
    check_at = off + (6 if l4.proto == IPPROTO_UDP else 16)
    if l4.proto == IPPROTO_UDP:
        struct.pack_into("!H", head, off + 4, segment_len)
    struct.pack_into("!H", head, check_at, 0)
    check = internet_checksum(pseudo + bytes(head[off:]) + payload)
    if l4.proto == IPPROTO_UDP and check == 0:
        check = 0xFFFF  # RFC 768: zero means "no checksum"
    struct.pack_into("!H", head, check_at, check)
    return bytes(head) + payload


def build_packet(src: Address, sport: int, dst: Address, dport: int, proto: int, payload: bytes = b"",
                 tcp_flags: int = TCP_ACK, seq: int = 1, ack: int = 1) -> bytes:
    """The inverse of parse_packet() (checksums zero): queued-packet bytes for tests and benchmarks."""
    if proto == IPPROTO_UDP:
        l4 = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    elif proto == IPPROTO_TCP:
        l4 = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, tcp_flags, 65535,
                         0, 0) + payload
    else:
        raise ValueError(f"protocol {proto}")
    if src.version == 4:
        header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0x4000, 64, proto, 0,
                             src.packed, dst.packed)
    else:
        header = struct.pack("!IHBB16s16s", 6 << 28, len(l4), proto, 64, src.packed, dst.packed)
    return header + l4
