"""Fuzzed messages through the reference helper in a lab: what the kernel did.

Needs a kernel with nfnetlink_cthelper (a VM kernel here: ``sipct fuzz
--kernel``). The daemon (``sipct helper``) runs in the lab's router
namespace under the name ``sipct.harness.threeway.REFERENCE_HELPER``; the
messages go from the UA host to the server's port 5060 (requests) or back
from port 5060 (responses), over IPv4 or IPv6, UDP or TCP, from several UA
ports (masters), strictly one after the other.

*When is a message done?* Delivered: the receiver read exactly its bytes.
Not delivered: the kernel queued it (the queue's ``id_sequence`` in
``/proc/PID/net/netfilter/nfnetlink_queue`` moved past its value before the
send), nothing is waiting for a verdict any more (``queue_total`` 0) and a
grace period has passed - so a drop costs the daemon's latency, not a fixed
timeout. A message judged dropped whose bytes reach the receiver later
(under TCG the softirq that carries a reinjected packet can lag) is marked
delivered and ``late``. The same file's ``queue_dropped`` / ``queue_user_dropped`` say
whether the queue ever overflowed (then the kernel let packets pass unhelped
and verdicts could not be compared: the run fails).

*What the kernel did* is read from ctnetlink expectation events in the
router namespace (joined before the first master exists), drained after
each message: a helper changes the table before it lets the packet go.

The spec is not consulted here (sipct.conformance.fuzz_check replays the
observations), so that a slow guest spends its time on the helper.
"""

from __future__ import annotations

import ipaddress
import os
import random
import select
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sipct.conformance.fuzz import FuzzMessage
from sipct.spec.expectation import IPPROTO_TCP, IPPROTO_UDP
from sipct.spec.expectation import expectation_key as row_key

__all__ = ["FuzzObservation", "Route", "fuzz_hosts", "observe", "route"]

UA = {4: ipaddress.ip_address("192.0.2.2"), 6: ipaddress.ip_address("2001:db8:1::2")}
SERVER = {4: ipaddress.ip_address("198.51.100.2"), 6: ipaddress.ip_address("2001:db8:2::2")}
SIP_PORT = 5060
UA_PORTS = tuple(range(20000, 20008))  # UDP masters
TCP_SLOTS = 2  # TCP connections kept open per family
TCP_PORT_BASE = 30000  # slot s, generation g: 30000 + 1000 s + g
TCP_MAX = 1400  # bytes: one segment on the lab's links
POLL_MS = 15  # milliseconds between looks at the queue while nothing arrives
GRACE = 0.03  # seconds the queue must stay empty before an undelivered message counts as dropped
NOT_QUEUED = 2.0  # seconds to wait for a message the kernel never queued
TCP_DROP_TIMEOUT = 1.5
TCP_CLOSE = 10.0  # seconds a reset connection's conntrack lives on (tcp_timeouts[TCP_CONNTRACK_CLOSE])


@dataclass(frozen=True, slots=True)
class Route:
    family: int
    proto: int
    slot: int  # UA port index (UDP) or TCP slot
    response: bool  # from the server's port 5060 back to the UA


def route(seed: int, msg: FuzzMessage, *, ipv6_share: float = 0.15, tcp_share: float = 0.05) -> Route:
    """Where message ``msg`` goes: a function of (seed, index, payload)."""
    rng = random.Random(f"sipct-fuzz-route:{seed}:{msg.index}")
    family = 6 if rng.random() < ipv6_share else 4
    tcp = rng.random() < tcp_share and 0 < len(msg.payload) <= TCP_MAX
    slot = rng.randrange(TCP_SLOTS if tcp else len(UA_PORTS))
    return Route(family, IPPROTO_TCP if tcp else IPPROTO_UDP, slot, msg.is_response)


@dataclass
class FuzzObservation:
    """One message as the kernel handled it (JSON-ready)."""

    index: int
    t: float  # seconds since the run started, when it was sent
    family: int
    proto: int
    ua_port: int
    response: bool
    delivered: bool
    exact: bool  # the receiver got exactly the bytes sent (there is no NAT)
    new: list[list] = field(default_factory=list)  # IPEXP_NEW events (expectation_key)
    destroyed: int = 0
    connect_t: float | None = None  # TCP: a fresh connection was opened just before
    reset_t: float | None = None  # TCP: the connection was reset after a drop
    wait: float = 0.0  # seconds until the message was done
    late: bool = False  # judged dropped, then arrived after all (a slow delivery, not a drop)


def expectation_key(e) -> list:
    """A spec Expectation as an observation's JSON: its row
    (sipct.spec.expectation.expectation_key) and its flags - everything but
    the timeout and the helper's name."""
    return [*row_key(e), int(e.flags)]


def fuzz_hosts():
    """The lab's hosts as dialogs (sipct.harness.threeway builds one host per address)."""
    from sipct.spec.dialog import Dialog

    return [Dialog(f"fuzz-ipv{f}", "sipct fuzz", f, {"ua": UA[f], "server": SERVER[f]}, ()) for f in (4, 6)]


class QueueStats:
    """The daemon's queue in /proc/PID/net/netfilter/nfnetlink_queue
    (nfqnl_seq_show(): queue_number peer_portid queue_total copy_mode
    copy_range queue_dropped queue_user_dropped id_sequence 1)."""

    def __init__(self, pid: int, queue: int) -> None:
        self.queue = queue
        self._fd = os.open(f"/proc/{pid}/net/netfilter/nfnetlink_queue", os.O_RDONLY)

    def read(self) -> tuple[int, int, int, int]:
        """(queue_total, queue_dropped, queue_user_dropped, id_sequence)."""
        os.lseek(self._fd, 0, os.SEEK_SET)
        for line in os.read(self._fd, 65536).decode().splitlines():
            f = line.split()
            if f and int(f[0]) == self.queue:
                return int(f[2]), int(f[5]), int(f[6]), int(f[7])
        return 0, 0, 0, 0

    def close(self) -> None:
        os.close(self._fd)


class _Late:
    """Messages judged dropped, by receiving socket: a datagram that arrives
    later with their bytes was delivered after all (under TCG the softirq that
    carries a reinjected packet to the receiver can be late)."""

    def __init__(self) -> None:
        self.waiting: dict[tuple, list[FuzzObservation]] = {}

    def arrived(self, key: tuple, data: bytes, payloads: dict[int, bytes]) -> None:
        for obs in self.waiting.get(key, ()):
            if not obs.delivered and payloads[obs.index] == data:
                obs.delivered = obs.exact = obs.late = True
                self.waiting[key].remove(obs)
                return

    def add(self, key: tuple, obs: FuzzObservation) -> None:
        pending = self.waiting.setdefault(key, [])
        pending.append(obs)
        del pending[:-50]


class _Tcp:
    def __init__(self) -> None:
        self.conns: dict[tuple[int, int], object] = {}
        self.generation: dict[tuple[int, int], int] = {}
        self.closing: list[float] = []  # run times when a reset connection's conntrack has expired

    def port(self, family: int, slot: int) -> int:
        return TCP_PORT_BASE + 1000 * slot + 100 * (family == 6) + self.generation.get((family, slot), 0)


def observe(messages: Sequence[FuzzMessage], routes: Sequence[Route], runner, *, progress=None) -> dict:
    """Send ``messages`` along ``routes`` through ``runner``'s lab
    (a sipct.harness.threeway.ReferenceRunner: lab + daemon); returns the
    observations and the daemon's health."""
    from sipct.netlink.kernel import to_spec
    from sipct.netlink.socket import CtExpSocket

    lab, daemon = runner.lab, runner.daemon
    names = {str(spec.addresses[0]): name for name, spec in lab.hosts.items()}
    ua = {f: names[str(UA[f])] for f in (4, 6)}
    server = {f: names[str(SERVER[f])] for f in (4, 6)}
    events = CtExpSocket(lab.router_netns)
    stats = QueueStats(daemon.proc.pid, runner.config.queues[0])
    tcp = _Tcp()
    late = _Late()
    payloads = {m.index: m.payload for m in messages}
    out: list[FuzzObservation] = []
    alive_during = True
    started = time.monotonic()
    try:
        events.subscribe_events()
        events.drain_events()
        # Warm the neighbour caches and sockets outside the helper's ports.
        for f in (4, 6):
            lab.udp_send(ua[f], 9, server[f], 9, b"warm-up", family=f, timeout=2.0)
        started = time.monotonic()
        for msg, r in zip(messages, routes):
            if tcp.closing and time.monotonic() - started >= tcp.closing[0]:
                # Conntracks die lazily: an expired master keeps its expectations
                # until gc_worker() (up to 60 s later) or a lookup unlinks it; the
                # spec lets it die on time. A dump is such a lookup (as after a
                # dialog's wait step in the harness).
                events.reap_expired_conntracks()
                now = time.monotonic() - started
                tcp.closing = [d for d in tcp.closing if d > now]
            obs = _send(lab, stats, tcp, late, payloads, msg, r, ua, server, started)
            for kind, exp in events.drain_events():
                if kind == "new":
                    obs.new.append(expectation_key(to_spec(exp, obs.t)))
                else:
                    obs.destroyed += 1
            out.append(obs)
            if progress is not None and msg.index % 500 == 0:
                progress(msg.index, time.monotonic() - started)
            if not daemon.alive():
                alive_during = False
                break
        time.sleep(2.0)
        for (host, port, f) in list(late.waiting):
            rx = lab._driver.udp_socket(host, f, port)
            while True:
                try:
                    late.arrived((host, port, f), rx.recv(65536), payloads)
                except BlockingIOError:
                    break
        total, qdrop, udrop, seq = stats.read()
    finally:
        stats.close()
        events.close()
    return {"observations": [o.__dict__ for o in out], "seconds": round(time.monotonic() - started, 1),
            "queue": {"dropped": qdrop, "user_dropped": udrop, "id_sequence": seq, "waiting": total},
            "alive": alive_during and daemon.alive()}


def _wait_udp(rx: socket.socket, payload: bytes, stats: QueueStats, before: int, on_other) -> tuple[bool, bool]:
    """(delivered, exact). Blocks on the receiver and looks at the queue only
    between reads: a busy loop would take the guest's CPU from the daemon."""
    poller = select.poll()
    poller.register(rx, select.POLLIN)
    deadline = time.monotonic() + NOT_QUEUED
    settled = None
    while True:
        if poller.poll(POLL_MS if settled is None else 5):
            try:
                data = rx.recv(65536)
            except BlockingIOError:
                continue
            if data == payload:
                return True, True
            on_other(data)  # a straggler of an earlier message
            continue
        now = time.monotonic()
        total, _, _, seq = stats.read()
        if seq != before:
            deadline = now + 60.0  # queued: its verdict will come
            if total == 0:
                settled = settled or now
                if now - settled >= GRACE:
                    return False, False
            else:
                settled = None
        if now > deadline:
            return False, False


def _send(lab, stats: QueueStats, tcp: _Tcp, late: _Late, payloads: dict[int, bytes], msg: FuzzMessage, r: Route,
          ua: dict, server: dict, started: float) -> FuzzObservation:
    f = r.family
    if r.proto == IPPROTO_UDP:
        port = UA_PORTS[r.slot]
        src, sport, dst, dport = (server[f], SIP_PORT, ua[f], port) if r.response else \
            (ua[f], port, server[f], SIP_PORT)
        # The lab's own sockets (SocketDriver), without udp_send()'s fixed wait for a drop.
        tx, rx = lab._driver.udp_socket(src, f, sport), lab._driver.udp_socket(dst, f, dport)
        key = (dst, dport, f)
        while True:  # leftovers of dropped-then-late messages
            try:
                late.arrived(key, rx.recv(65536), payloads)
            except BlockingIOError:
                break
        before = stats.read()[3]
        t = time.monotonic() - started
        tx.sendto(msg.payload, (str(lab.address(dst, f)), dport))
        delivered, exact = _wait_udp(rx, msg.payload, stats, before,
                                     lambda data: late.arrived(key, data, payloads))
        obs = FuzzObservation(msg.index, t, f, r.proto, port, r.response, delivered, exact,
                              wait=time.monotonic() - started - t)
        if not delivered:
            late.add(key, obs)
        return obs
    key = (f, r.slot)
    connect_t = None
    conn = tcp.conns.get(key)
    port = tcp.port(f, r.slot)
    if conn is None:
        connect_t = time.monotonic() - started
        conn = lab.tcp_connect(ua[f], port, server[f], SIP_PORT, f, timeout=TCP_DROP_TIMEOUT)
        tcp.conns[key] = conn
    t = time.monotonic() - started
    delivery = conn.send(not r.response, [msg.payload], timeout=TCP_DROP_TIMEOUT)
    exact = delivery.delivered and delivery.data == msg.payload
    reset_t = None
    if not delivery.delivered or conn.closed:
        # The driver reset the connection (a dropped segment would be retransmitted
        # forever): the next TCP message of this slot opens a new one on a new port.
        reset_t = time.monotonic() - started
        tcp.closing.append(reset_t + TCP_CLOSE)
        conn.abort()
        del tcp.conns[key]
        tcp.generation[key] = tcp.generation.get(key, 0) + 1
    return FuzzObservation(msg.index, t, f, r.proto, port, r.response, delivery.delivered, exact,
                           connect_t=connect_t, reset_t=reset_t, wait=time.monotonic() - started - t)
