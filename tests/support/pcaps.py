"""Captures written with dpkt for the tests: Ethernet frames of IPv4/IPv6
UDP datagrams and TCP segments, as pcap or pcapng."""

from __future__ import annotations

import ipaddress
import io
import struct
from dataclasses import dataclass

import dpkt


@dataclass
class Pkt:
    time: float
    frame: bytes
    interface: int = 0


def _ip(src: str, dst: str, proto: int, l4: dpkt.Packet) -> dpkt.Packet:
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version == 4:
        ip = dpkt.ip.IP(src=s.packed, dst=d.packed, p=proto, ttl=64, data=l4)
        ip.len = len(ip)
        return ip
    ip = dpkt.ip6.IP6(src=s.packed, dst=d.packed, nxt=proto, hlim=64, data=l4)
    ip.plen = len(l4)
    return ip


def ether(ip: dpkt.Packet) -> bytes:
    kind = 0x0800 if isinstance(ip, dpkt.ip.IP) else 0x86DD
    return bytes(dpkt.ethernet.Ethernet(src=b"\x02\0\0\0\0\1", dst=b"\x02\0\0\0\0\2", type=kind, data=ip))


def udp(src: str, sport: int, dst: str, dport: int, payload: bytes) -> bytes:
    u = dpkt.udp.UDP(sport=sport, dport=dport, data=payload)
    u.ulen = len(u)
    return ether(_ip(src, dst, 17, u))


def tcp(src: str, sport: int, dst: str, dport: int, seq: int, payload: bytes = b"", flags: int = 0x18,
        ack: int = 0) -> bytes:
    return ether(_ip(src, dst, 6, dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq, ack=ack, flags=flags,
                                                 off=5, data=payload)))


class TcpFlow:
    """Both directions of one connection, sequence numbers counted."""

    def __init__(self, client: tuple[str, int], server: tuple[str, int]) -> None:
        self.client, self.server = client, server
        self.seq = {client: 1000, server: 5000}

    def handshake(self) -> list[bytes]:
        c, s = self.client, self.server
        out = [tcp(*c, *s, self.seq[c], flags=0x02), tcp(*s, *c, self.seq[s], flags=0x12),
               tcp(*c, *s, self.seq[c] + 1, flags=0x10)]
        self.seq[c] += 1
        self.seq[s] += 1
        return out

    def send(self, from_client: bool, payload: bytes) -> bytes:
        a, b = (self.client, self.server) if from_client else (self.server, self.client)
        frame = tcp(*a, *b, self.seq[a], payload)
        self.seq[a] += len(payload)
        return frame


def pcap(packets: list[Pkt], snaplen: int = 65535) -> bytes:
    out = io.BytesIO()
    w = dpkt.pcap.Writer(out, snaplen=snaplen)
    for p in packets:
        w.writepkt(p.frame, p.time)
    return out.getvalue()


def pcap_cut(packets: list[Pkt], snaplen: int) -> bytes:
    """A pcap whose frames the snaplen cut (caplen < len)."""
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, 1))
    for p in packets:
        data = p.frame[:snaplen]
        out += struct.pack("<IIII", int(p.time), int(p.time % 1 * 1e6), len(data), len(p.frame)) + data
    return bytes(out)


def pcapng(packets: list[Pkt], interfaces: int = 1) -> bytes:
    out = io.BytesIO()
    idbs = [dpkt.pcapng.InterfaceDescriptionBlockLE(snaplen=65535, linktype=1) for _ in range(interfaces)]
    w = dpkt.pcapng.Writer(out, idb=idbs)
    for p in packets:
        us = int(round(p.time * 1e6))
        w.writepkt(dpkt.pcapng.EnhancedPacketBlockLE(iface_id=p.interface, ts_high=us >> 32, ts_low=us & 0xFFFFFFFF,
                                                     pkt_data=p.frame))
    return out.getvalue()


def invite(ua: str, server: str, *, media_port: int = 7078, uri_ua: str | None = None) -> bytes:
    uri_ua = uri_ua or ua
    ip = "IP6" if ":" in ua else "IP4"
    body = (f"v=0\r\no=- 1 1 IN {ip} {ua}\r\ns=-\r\nc=IN {ip} {ua}\r\nt=0 0\r\n"
            f"m=audio {media_port} RTP/AVP 0\r\n").encode()
    head = (f"INVITE sip:bob@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {uri_ua}:5060;branch=z9hG4bK1\r\n"
            f"From: <sip:alice@{uri_ua}>;tag=1\r\nTo: <sip:bob@{server}>\r\nCall-ID: c1@{uri_ua}\r\n"
            f"CSeq: 1 INVITE\r\nContact: <sip:alice@{uri_ua}:5060>\r\nContent-Type: application/sdp\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    return head + body


def ok(ua: str, server: str, method: str = "INVITE") -> bytes:
    return (f"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {ua}:5060;branch=z9hG4bK1\r\nCall-ID: c1@{ua}\r\n"
            f"CSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n").encode()
