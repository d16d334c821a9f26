"""What one captured frame carries, as far as the SIP helper cares: an IPv4 or
IPv6 UDP datagram or TCP segment (decoded with dpkt), or why it is skipped."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

import dpkt

from sipct.spec.expectation import IPPROTO_TCP, IPPROTO_UDP, Address

from .files import CaptureError, Frame

# LINKTYPE_* values (tcpdump.org/linktypes.html)
LINKTYPE_NULL, LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LOOP = 0, 1, 101, 108
LINKTYPE_LINUX_SLL, LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_LINUX_SLL2 = 113, 228, 229, 276
_OPENBSD_RAW = 12  # DLT_RAW on some BSDs, written by their libpcap as is
PACKET_OUTGOING = 4  # sll_pkttype: sent by this host
ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD
TH_FIN, TH_SYN, TH_RST, TH_ACK = 0x01, 0x02, 0x04, 0x10


@dataclass(frozen=True, slots=True)
class Skipped:
    reason: str


@dataclass(frozen=True, slots=True)
class IpPacket:
    frame: Frame
    family: int
    src: Address
    dst: Address
    proto: int
    sport: int
    dport: int
    payload: bytes
    cut: bool = False  # the snaplen cut the payload
    seq: int = 0  # TCP
    flags: int = 0  # TCP
    ack: int = 0  # TCP: the acknowledgment number
    outgoing: bool = False  # the capturing host sent it (a cooked capture says so)

    @property
    def key(self) -> tuple:
        """What stays the same when a router forwards the packet (not the TTL)."""
        return (self.src, self.dst, self.proto, self.sport, self.dport, self.seq, self.flags, self.payload)


def decode(source: str, frame: Frame) -> IpPacket | Skipped:
    network, outgoing = _network_layer(source, frame)
    if network is None:
        return Skipped("not IP")
    ethertype, buf = network
    cut = frame.orig_len > len(frame.data)
    if ethertype == ETH_P_IP:
        return _ipv4(source, frame, buf, cut, outgoing)
    if ethertype == ETH_P_IPV6:
        return _ipv6(source, frame, buf, cut, outgoing)
    return Skipped("not IP")


def _network_layer(source: str, frame: Frame) -> tuple[tuple[int, bytes] | None, bool]:
    data, link = frame.data, frame.linktype
    if link == LINKTYPE_ETHERNET:
        if len(data) < 14:
            raise CaptureError(source, frame.number, f"an Ethernet frame of {len(data)} bytes has no header")
        at, ethertype = 12, struct.unpack("!H", data[12:14])[0]
        while ethertype in (0x8100, 0x88A8) and len(data) >= at + 6:  # 802.1Q / 802.1ad tags
            at += 4
            ethertype = struct.unpack("!H", data[at:at + 2])[0]
        return ((ethertype, data[at + 2:]) if ethertype in (ETH_P_IP, ETH_P_IPV6) else None), False
    if link == LINKTYPE_LINUX_SLL:
        if len(data) < 16:
            raise CaptureError(source, frame.number, f"a Linux cooked frame of {len(data)} bytes has no header")
        pkttype, ethertype = struct.unpack("!H", data[:2])[0], struct.unpack("!H", data[14:16])[0]
        return (ethertype, data[16:]), pkttype == PACKET_OUTGOING
    if link == LINKTYPE_LINUX_SLL2:
        if len(data) < 20:
            raise CaptureError(source, frame.number, f"a Linux cooked (v2) frame of {len(data)} bytes has no header")
        ethertype, pkttype = struct.unpack("!H", data[:2])[0], data[10]
        return (ethertype, data[20:]), pkttype == PACKET_OUTGOING
    if link in (LINKTYPE_RAW, _OPENBSD_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6):
        if not data:
            return None, False
        version = data[0] >> 4
        return ({4: (ETH_P_IP, data), 6: (ETH_P_IPV6, data)}.get(version)), False
    if link in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if len(data) < 4:
            return None, False
        # The BSD address family, in the capturing host's byte order (NULL) or in network order (LOOP);
        # AF_INET6 is 24, 28 or 30 depending on the BSD.
        families = set(struct.unpack("<I", data[:4]) + struct.unpack(">I", data[:4]))
        if 2 in families:
            return (ETH_P_IP, data[4:]), False
        return ((ETH_P_IPV6, data[4:]) if families & {24, 28, 30} else None), False
    raise CaptureError(source, frame.number, f"link type {link} is not supported (Ethernet, Linux cooked, raw IP "
                                             f"and BSD loopback are)")


def _ipv4(source: str, frame: Frame, buf: bytes, cut: bool, outgoing: bool) -> IpPacket | Skipped:
    if len(buf) < 20 or buf[0] >> 4 != 4 or (buf[0] & 0xF) < 5:
        if cut:
            raise CaptureError(source, frame.number, _snaplen("the IPv4 header", frame))
        raise CaptureError(source, frame.number, "malformed IPv4 header")
    ip = dpkt.ip.IP(buf)
    if ip.len > len(buf) and not cut:
        raise CaptureError(source, frame.number, f"the IPv4 total length is {ip.len} bytes, but the frame holds "
                                                 f"{len(buf)}: the packet is truncated")
    if ip.mf or ip.offset:
        return Skipped("IP fragment (not reassembled)")
    return _transport(source, frame, 4, ip.src, ip.dst, ip.p, buf[ip.hl * 4:ip.len or None], ip.len > len(buf),
                      outgoing)


def _ipv6(source: str, frame: Frame, buf: bytes, cut: bool, outgoing: bool) -> IpPacket | Skipped:
    if len(buf) < 40 or buf[0] >> 4 != 6:
        if cut:
            raise CaptureError(source, frame.number, _snaplen("the IPv6 header", frame))
        raise CaptureError(source, frame.number, "malformed IPv6 header")
    ip = dpkt.ip6.IP6(buf)
    if ip.plen > len(buf) - 40 and not cut:
        raise CaptureError(source, frame.number, f"the IPv6 payload length is {ip.plen} bytes, but the frame "
                                                 f"holds {len(buf) - 40}: the packet is truncated")
    if 44 in ip.extension_hdrs:
        return Skipped("IP fragment (not reassembled)")
    body = ip.data if isinstance(ip.data, bytes) else bytes(ip.data)
    return _transport(source, frame, 6, ip.src, ip.dst, ip.p, body, ip.plen > len(buf) - 40, outgoing)


def _transport(source: str, frame: Frame, family: int, src: bytes, dst: bytes, proto: int, body: bytes,
               cut: bool, outgoing: bool) -> IpPacket | Skipped:
    if proto not in (IPPROTO_UDP, IPPROTO_TCP):
        return Skipped("not UDP or TCP")
    src_addr, dst_addr = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if proto == IPPROTO_UDP:
        if len(body) < 8:
            if cut:
                raise CaptureError(source, frame.number, _snaplen("the UDP header", frame))
            raise CaptureError(source, frame.number, "the UDP header is cut short: the packet is truncated")
        sport, dport, ulen = struct.unpack("!HHH", body[:6])
        if ulen < 8:
            raise CaptureError(source, frame.number, f"UDP length {ulen} is less than its header")
        payload = body[8:ulen]
        return IpPacket(frame, family, src_addr, dst_addr, proto, sport, dport, payload,
                        cut=cut and len(payload) < ulen - 8, outgoing=outgoing)
    if len(body) < 20 or (body[12] >> 4) < 5 or len(body) < (body[12] >> 4) * 4:
        if cut:
            raise CaptureError(source, frame.number, _snaplen("the TCP header", frame))
        raise CaptureError(source, frame.number, "malformed TCP header")
    tcp = dpkt.tcp.TCP(body)
    return IpPacket(frame, family, src_addr, dst_addr, proto, tcp.sport, tcp.dport, body[tcp.off * 4:],
                    cut=cut, seq=tcp.seq, flags=tcp.flags, ack=tcp.ack, outgoing=outgoing)


def _snaplen(what: str, frame: Frame) -> str:
    return (f"{what} is cut: the frame was captured with {len(frame.data)} of its {frame.orig_len} bytes "
            f"(the snaplen); capture again with the whole packet (tcpdump -s 0)")
