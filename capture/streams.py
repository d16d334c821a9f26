"""A capture's SIP packets as the lab would replay them: the copies a router
capture sees twice dropped, each TCP connection's byte streams rebuilt from
its segments (retransmissions dropped, gaps refused), in capture order."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from sipct.spec.expectation import IPPROTO_TCP, IPPROTO_UDP, Address

from .files import CaptureError
from .packets import TH_ACK, TH_RST, TH_SYN, IpPacket

# A forwarded copy is seen within this time of the original; a SIP
# retransmission over UDP comes T1 (500 ms) later at the soonest.
COPY_WINDOW = 0.2

Endpoint = tuple[Address, int]


@dataclass(frozen=True, slots=True)
class Handshake:
    """A TCP connection's start: ``client`` connected to ``server``."""

    time: float
    frames: tuple[int, ...]  # empty when the capture has no SYN for it
    client: Endpoint
    server: Endpoint


@dataclass(frozen=True, slots=True)
class Data:
    time: float
    frame: int
    proto: int
    src: Endpoint
    dst: Endpoint
    payload: bytes


@dataclass
class _Connection:
    client: Endpoint
    server: Endpoint
    syn_frames: list[int]
    syn_time: float
    next_seq: dict[Endpoint, int] = field(default_factory=dict)  # by sender
    started: bool = False  # its Handshake was emitted


@dataclass
class Streams:
    events: list[Handshake | Data] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    masters: set[frozenset] = field(default_factory=set)


def sip_streams(source: str, packets: list[IpPacket], ports: tuple[int, ...], skipped: Counter) -> Streams:
    out = Streams(skipped=skipped)
    recent: dict[tuple, IpPacket] = {}
    connections: dict[frozenset, _Connection] = {}
    for p in packets:
        if p.sport not in ports and p.dport not in ports:
            out.skipped["not on a SIP port"] += 1
            continue
        copy = recent.get(p.key)
        if copy is not None and p.frame.time - copy.frame.time <= COPY_WINDOW and (
                copy.frame.interface != p.frame.interface or copy.outgoing != p.outgoing):
            out.skipped["forwarded copy (seen again on another interface)"] += 1
            continue
        recent[p.key] = p
        if p.cut:
            raise CaptureError(source, p.frame.number,
                               f"the SIP payload is cut: the frame was captured with {len(p.frame.data)} of its "
                               f"{p.frame.orig_len} bytes (the snaplen); capture again with the whole packet "
                               f"(tcpdump -s 0)")
        src, dst = (p.src, p.sport), (p.dst, p.dport)
        if p.proto == IPPROTO_UDP:
            if not p.payload:
                out.skipped["UDP without payload"] += 1
                continue
            out.masters.add(frozenset((IPPROTO_UDP, src, dst)))
            out.events.append(Data(p.frame.time, p.frame.number, IPPROTO_UDP, src, dst, p.payload))
            continue
        _tcp(source, p, src, dst, ports, connections, out)
    return out


def _tcp(source: str, p: IpPacket, src: Endpoint, dst: Endpoint, ports: tuple[int, ...],
         connections: dict[frozenset, _Connection], out: Streams) -> None:
    key = frozenset((src, dst))
    conn = connections.get(key)
    if p.flags & TH_SYN and not p.flags & TH_ACK:
        if conn is None or conn.started:  # a new connection, or the 4-tuple used again
            conn = connections[key] = _Connection(src, dst, [], p.frame.time)
        conn.syn_frames.append(p.frame.number)
        conn.next_seq[src] = (p.seq + 1) & 0xFFFFFFFF
        out.skipped["TCP handshake and control segments (the connect step)"] += 1
        return
    if conn is None:
        # No SYN in the capture: the side on a SIP port is the server (the receiver when both are).
        client, server = (src, dst) if dst[1] in ports else (dst, src)
        conn = connections[key] = _Connection(client, server, [], p.frame.time)
    if p.flags & TH_SYN:  # SYN-ACK
        conn.syn_frames.append(p.frame.number)
        conn.next_seq[src] = (p.seq + 1) & 0xFFFFFFFF
        out.skipped["TCP handshake and control segments (the connect step)"] += 1
        return
    if not p.payload:
        out.skipped["TCP handshake and control segments (the connect step)" if not p.flags & TH_RST
                    else "TCP resets"] += 1
        return
    expected = conn.next_seq.get(src)
    data = p.payload
    if expected is not None:
        ahead = (p.seq - expected) & 0xFFFFFFFF
        if ahead and ahead < 1 << 31:
            raise CaptureError(source, p.frame.number,
                               f"{ahead} bytes of the TCP stream {_ep(src)} -> {_ep(dst)} before this segment are "
                               f"not in the capture (lost by the capture, or the segments are out of order)")
        behind = (expected - p.seq) & 0xFFFFFFFF
        if behind >= len(data):
            out.skipped["TCP retransmission"] += 1
            return
        data = data[behind:]
    conn.next_seq[src] = (p.seq + len(p.payload)) & 0xFFFFFFFF
    if not conn.started:
        conn.started = True
        out.masters.add(frozenset((IPPROTO_TCP, conn.client, conn.server)))
        out.events.append(Handshake(conn.syn_time, tuple(conn.syn_frames), conn.client, conn.server))
    out.events.append(Data(p.frame.time, p.frame.number, IPPROTO_TCP, src, dst, data))


def _ep(ep: Endpoint) -> str:
    addr, port = ep
    return f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}"
