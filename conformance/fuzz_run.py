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

*Behind NAT* (``nat_share`` of the UDP messages): the router masquerades
the UA's ports :data:`NAT_PORTS` (one rule per port, sipct.spec.natmap), so
those masters are translated and nf_nat_sip's rewrites apply wherever a
message names the UA (most seeds do: 192.0.2.2 is the address the examples
and SDP offers use most). A request goes to the server as before and arrives
rewritten and from the router's address; a response goes to the UA's
masqueraded face (the router's address in the server's network) and may
arrive at another of the UA's ports (``forced_dport``). The receiver takes
the first datagram as the message's: which bytes, from where and at which
port is recorded, and sipct.conformance.fuzz_check compares it with what the
spec rewrites. A response on a translated master that does not exist yet
would reach the router itself, so the first one of a port is preceded by a
warm-up request (an observation of its own, with its payload).

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
from dataclasses import dataclass, field, replace
from pathlib import Path

from sipct.conformance.fuzz import FuzzMessage
from sipct.spec.expectation import IPPROTO_TCP, IPPROTO_UDP
from sipct.spec.expectation import expectation_key as row_key
from sipct.spec.natmap import NatTopology, SourceNat
from sipct.spec.topology import network_of

__all__ = ["FuzzObservation", "Route", "fuzz_hosts", "fuzz_nat", "nat_face", "observe", "route"]

UA = {4: ipaddress.ip_address("192.0.2.2"), 6: ipaddress.ip_address("2001:db8:1::2")}
SERVER = {4: ipaddress.ip_address("198.51.100.2"), 6: ipaddress.ip_address("2001:db8:2::2")}
SIP_PORT = 5060
UA_PORTS = tuple(range(20000, 20008))  # UDP masters
# UDP masters behind the router's masquerade: 5060 first (the port most seeds'
# Via and Contact name, so most replies keep their port), then ports whose
# replies nf_nat_sip sends to the Via's port (forced_dport).
NAT_PORTS = (5060, *range(21000, 21007))
WARM_UP = b"sipct-fuzz warm-up\r\n"  # no SIP method, no header: the helper accepts it unchanged
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
    slot: int  # UA port index (UDP, of NAT_PORTS behind NAT) or TCP slot
    response: bool  # from the server's port 5060 back to the UA
    nat: bool = False  # a master the router masquerades (UDP only)

    @property
    def ua_port(self) -> int:
        return NAT_PORTS[self.slot] if self.nat else UA_PORTS[self.slot]


def route(seed: int, msg: FuzzMessage, *, ipv6_share: float = 0.15, tcp_share: float = 0.05,
          nat_share: float = 0.0) -> Route:
    """Where message ``msg`` goes: a function of (seed, index, payload). The
    NAT draw comes last, so a run without NAT routes as before."""
    rng = random.Random(f"sipct-fuzz-route:{seed}:{msg.index}")
    family = 6 if rng.random() < ipv6_share else 4
    tcp = rng.random() < tcp_share and 0 < len(msg.payload) <= TCP_MAX
    slot = rng.randrange(TCP_SLOTS if tcp else len(UA_PORTS))
    nat = not tcp and nat_share > 0 and rng.random() < nat_share
    if nat and rng.random() < 0.5:
        # map_addr() rewrites an address only with the master's port, and the
        # seeds' URIs say 5060 (or nothing, which is 5060): half the NAT
        # messages go on that master.
        slot = 0
    return Route(family, IPPROTO_TCP if tcp else IPPROTO_UDP, slot % len(NAT_PORTS) if nat else slot,
                 msg.is_response, nat)


def fuzz_nat() -> NatTopology:
    """The router's nat chain: masquerade the UA's NAT_PORTS, per family."""
    return NatTopology(snat=tuple(SourceNat(network_of(UA[f]), host=UA[f], sport=p, proto=IPPROTO_UDP)
                                  for f in (4, 6) for p in NAT_PORTS))


def nat_face(family: int, port: int) -> tuple:
    """Where the server sends to reach the UA's masqueraded ``port``."""
    return fuzz_nat().face(SERVER[family], UA[family], port, IPPROTO_UDP)


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
    exact: bool  # the receiver got exactly the bytes sent
    new: list[list] = field(default_factory=list)  # IPEXP_NEW events (expectation_key)
    destroyed: int = 0
    connect_t: float | None = None  # TCP: a fresh connection was opened just before
    reset_t: float | None = None  # TCP: the connection was reset after a drop
    wait: float = 0.0  # seconds until the message was done
    late: bool = False  # judged dropped, then arrived after all (a slow delivery, not a drop)
    nat: bool = False  # through the masquerade (Route.nat)
    payload: str | None = None  # a warm-up's bytes (latin-1): it is no message of the run
    received: str | None = None  # NAT: the bytes that arrived (latin-1), when not those sent
    seen: list | None = None  # NAT: [source address, source port, receiving port] of what arrived
    stale: int = 0  # NAT: datagrams found waiting at the receiver before the send (a late earlier one)
    stale_data: list[str] = field(default_factory=list)  # NAT: their bytes (latin-1)


def expectation_key(e) -> list:
    """A spec Expectation as an observation's JSON: its row
    (sipct.spec.expectation.expectation_key), its flags and its NAT part
    (direction, saved address and port; -1 each without) - everything but
    the timeout and the helper's name."""
    nat = [-1, -1, -1] if e.nat is None else [e.nat.dir, int(e.nat.addr), e.nat.port]
    return [*row_key(e), int(e.flags), *nat]


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
    nat_masters: set[tuple[int, int]] = set()  # (family, slot) whose masqueraded master passed a request
    try:
        if any(r.nat for r in routes):
            lab.set_nat(fuzz_nat())
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
            if r.nat and r.response and (r.family, r.slot) not in nat_masters:
                warm = _send_nat(lab, stats, msg.index, WARM_UP, replace(r, response=False), ua, server, started)
                warm.payload = WARM_UP.decode("latin-1")
                out.append(_drained(warm, events, to_spec))
                if warm.delivered:
                    nat_masters.add((r.family, r.slot))
            if r.nat:
                obs = _send_nat(lab, stats, msg.index, msg.payload, r, ua, server, started)
                if obs.delivered and not r.response:
                    nat_masters.add((r.family, r.slot))
            else:
                obs = _send(lab, stats, tcp, late, payloads, msg, r, ua, server, started)
            out.append(_drained(obs, events, to_spec))
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


def _drained(obs: FuzzObservation, events, to_spec) -> FuzzObservation:
    """``obs`` with the expectation events its message caused."""
    for kind, exp in events.drain_events():
        if kind == "new":
            obs.new.append(expectation_key(to_spec(exp, obs.t)))
        else:
            obs.destroyed += 1
    return obs


def _wait(rxs: Sequence[socket.socket], stats: QueueStats, before: int, take):
    """Wait for the message at the receivers ``rxs``: ``take(rx, data,
    source)`` says whether a datagram is it (its result) or not (None: a
    straggler). None when the kernel queued the message and nothing waits
    for a verdict any more (a drop), or it never queued it. Blocks on the
    receivers and looks at the queue only between reads: a busy loop would
    take the guest's CPU from the daemon."""
    poller = select.poll()
    by_fd = {rx.fileno(): rx for rx in rxs}
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + NOT_QUEUED
    settled = None
    while True:
        ready = poller.poll(POLL_MS if settled is None else 5)
        for fd, _ in ready:
            try:
                data, source = by_fd[fd].recvfrom(65536)
            except BlockingIOError:
                continue
            found = take(by_fd[fd], data, source)
            if found is not None:
                return found
        if ready:
            continue
        now = time.monotonic()
        total, _, _, seq = stats.read()
        if seq != before:
            deadline = now + 60.0  # queued: its verdict will come
            if total == 0:
                settled = settled or now
                if now - settled >= GRACE:
                    return None
            else:
                settled = None
        if now > deadline:
            return None


def _wait_udp(rx: socket.socket, payload: bytes, stats: QueueStats, before: int, on_other) -> tuple[bool, bool]:
    """(delivered, exact): the datagram with exactly ``payload`` arrived."""
    def take(_rx, data: bytes, _source) -> tuple[bool, bool] | None:
        if data == payload:
            return True, True
        on_other(data)  # a straggler of an earlier message
        return None

    return _wait([rx], stats, before, take) or (False, False)


def _send_nat(lab, stats: QueueStats, index: int, payload: bytes, r: Route, ua: dict, server: dict,
              started: float) -> FuzzObservation:
    """One datagram of a masqueraded master; the first one to arrive is taken
    as it (the rewrite makes its bytes unknown here)."""
    f, port = r.family, r.ua_port
    if r.response:
        tx = lab._driver.udp_socket(server[f], f, SIP_PORT)
        rxs = [lab._driver.udp_socket(ua[f], f, p) for p in NAT_PORTS]  # forced_dport may pick another
        to = nat_face(f, port)
    else:
        tx = lab._driver.udp_socket(ua[f], f, port)
        rxs = [lab._driver.udp_socket(server[f], f, SIP_PORT)]
        to = (lab.address(server[f], f), SIP_PORT)
    stale: list[str] = []
    for rx in rxs:  # what an earlier, judged dropped, message left behind
        while True:
            try:
                stale.append(rx.recv(65536).decode("latin-1"))
            except BlockingIOError:
                break
    before = stats.read()[3]
    t = time.monotonic() - started
    tx.sendto(payload, (str(to[0]), to[1]))
    got = _wait(rxs, stats, before, lambda rx, data, source: (rx.getsockname()[1], data, source))
    obs = FuzzObservation(index, t, f, IPPROTO_UDP, port, r.response, got is not None,
                          got is not None and got[1] == payload, wait=time.monotonic() - started - t,
                          nat=True, stale=len(stale), stale_data=stale)
    if got is not None:
        rport, data, source = got
        obs.seen = [str(ipaddress.ip_address(source[0].split("%")[0])), source[1], rport]
        if data != payload:
            obs.received = data.decode("latin-1")
    return obs


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
