"""``sipct helper``: the daemon around HelperCore.

One process serves the network namespace it runs in (start it with
``ip netns exec NAME`` for another one). It

1. joins ctnetlink's expectation-destroy events (before anything else, so
   nothing the kernel removes from now on goes unnoticed; should the socket
   overflow, ENOBUFS, the lost events are made up for by a resynchronisation),
2. registers the userspace helper once per (family, transport) with
   nfnetlink_cthelper - or updates the registration a previous run left, as a
   run killed by SIGKILL does -
3. binds its queue(s) with NFQA_CFG_F_CONNTRACK (whole packets; fail-open
   on queue overflow when the failure policy is "open"),
4. reads the kernel's expectations of the helper back over ctnetlink and
   rebuilds its shadow from them (a restart while calls are up keeps them),
5. tells systemd it is ready (sd_notify READY=1), then loops: queued packet
   -> HelperCore.decide() -> ctnetlink operations -> verdict, the last two by
   sipct.reference.execute through the daemon's NetlinkPort.

SIGTERM/SIGINT: unbind the queues and unregister the helper (while nft
``ct helper`` objects still refer to it the kernel refuses, EBUSY; it is
then left registered but disabled, so its packets pass unqueued), exit 0.
SIGHUP: re-read the configuration's log level.

Nothing a packet, the spec or the kernel does ends the loop: every
per-packet failure is logged and answered with the failure policy's verdict.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from pyroute2.netlink.exceptions import NetlinkError

from sipct.netlink.nfqueue import QueuedPacket, Verdict

from .config import HelperConfig, load_config
from .core import Decision, HelperCore
from .execute import execute, resync
from .natcheck import nat_expectfn
from .netlink.port import NetlinkPort
from .netlink.socket import ExpectationSocket, HelperSocket, netlink_text

__all__ = ["HelperDaemon", "RouteOracle", "notify", "setup_logging"]

log = logging.getLogger("sipct.helper")
TICK = 1.0  # seconds between housekeeping rounds
SO_RCVBUFFORCE = 33  # <asm-generic/socket.h>; Python's socket module does not name it
LOST_EVENTS = "lost events"  # the resynchronisation after the event socket overflowed


def setup_logging(level: str, worker: int | None = None) -> None:
    """Log to stderr; without timestamps under systemd (journald adds them);
    a worker's lines say which worker wrote them."""
    fmt = "%(levelname)s " if os.environ.get("JOURNAL_STREAM") else "%(asctime)s %(levelname)s "
    fmt += "%(message)s" if worker is None else f"worker {worker}: %(message)s"
    root = logging.getLogger("sipct")
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
    for handler in root.handlers:
        handler.setFormatter(logging.Formatter(fmt))
    root.setLevel(level.upper())


def notify(state: str) -> bool:
    """sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(address)
            s.sendall(state.encode())
        return True
    except OSError as exc:
        log.debug("sd_notify to %s failed: %s", address, exc)
        return False


class RouteOracle:
    """The routing question of sip_external_media (set_expected_rtp_rtcp()):
    does the route to the media address leave by the device this packet
    leaves by? Answered from the namespace's routing table, cached briefly."""

    def __init__(self, netns: str | None = None, ttl: float = 10.0) -> None:
        from pyroute2 import IPRoute

        from sipct.netlink.netns import entered_netns

        with entered_netns(netns):
            self._ipr = IPRoute()
            self._ipr.link_lookup(ifname="lo")  # makes the socket now, in the namespace
        self._ttl = ttl
        self._cache: dict[str, tuple[float, int | None]] = {}

    def _oif(self, addr: object) -> int | None:
        key = str(addr)
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            routes = self._ipr.route("get", dst=key)
            oif = routes[0].get("RTA_OIF") if routes else None
        except Exception:  # no route: NetlinkError ENETUNREACH and friends
            oif = None
        self._cache[key] = (now + self._ttl, oif)
        return oif

    def __call__(self, media: object, packet_dst: object) -> bool | None:
        media_oif = self._oif(media)
        if media_oif is None:
            return None
        return media_oif == self._oif(packet_dst)

    def close(self) -> None:
        self._ipr.close()


@dataclass
class _Signals:
    stop: bool = False
    reload: bool = False


class HelperDaemon:
    """The I/O around HelperCore. ``clock`` gives monotonic seconds."""

    def __init__(self, config: HelperConfig, *, netns: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.netns = netns
        self.clock = clock
        self.params = config.module_params()
        self.profile = config.kernel_profile()
        self.registrations = config.registrations()
        self.core: HelperCore | None = None
        self.queue: HelperSocket | None = None
        self.ops: ExpectationSocket | None = None
        self.port: NetlinkPort | None = None  # queue and ops as the executor's KernelPort
        self.events: ExpectationSocket | None = None
        self.routes: RouteOracle | None = None
        self.signals = _Signals()
        self.registered: list = []
        self.bound: list[int] = []
        self.serving = False  # started completely: the registration is ours to remove
        self._last_resync = 0.0
        self._resync_why: str | None = None  # a reason more precise than "after a surprise"
        self.event_rcvbuf = 0  # the event socket's receive buffer as the kernel set it (bytes)

    # --- life cycle ------------------------------------------------------------------------------
    def start(self) -> None:
        cfg = self.config
        if self.params.sip_external_media:
            self.routes = RouteOracle(self.netns)
        expectfn, why = nat_expectfn()
        if why is not None:
            log.warning("%s", why)
        self.core = HelperCore(self.params, self.profile, helper_name=cfg.name, fail_open=cfg.fail_open,
                               same_interface=self.routes, nat_expectfn=expectfn)
        self.events = ExpectationSocket(self.netns)
        self.event_rcvbuf = self._size_event_buffer(cfg.event_rcvbuf)
        self.events.subscribe_destroy_events()
        self.ops = ExpectationSocket(self.netns)
        self.queue = HelperSocket(self.netns)
        self.port = NetlinkPort(self.queue, self.ops, cfg.name)
        left = self._registrations_left()
        for helper in self.registrations:
            self.queue.register(helper)
            self.registered.append(helper)
            old = left.get((helper.name, helper.l3num, helper.l4proto))
            # A process killed with SIGKILL cannot unregister: its helper stays in the
            # kernel, enabled, with the masters that point at it and their expectations.
            # NFNL_MSG_CTHELPER_NEW without NLM_F_EXCL updates that same object
            # (nfnl_cthelper_update()), so nothing the previous run left is lost.
            taken = "" if old is None else (f"; took over the registration a previous run left (queue "
                                            f"{old.queue_num}, {'enabled' if old.enabled else 'disabled'})")
            log.info("registered userspace helper %s (policies %s, %d bytes of private data)%s", helper,
                     ", ".join(f"{p.name} max {p.max_expected} {p.timeout}s" for p in helper.policies),
                     helper.priv_data_len, taken)
        for queue_num in cfg.queues:
            self.queue.bind_queue(queue_num, fail_open=cfg.fail_open, maxlen=cfg.queue_maxlen)
            self.bound.append(queue_num)
            log.info("bound queue %d (NFQA_CT, fail-%s, max %d packets)", queue_num, cfg.fail_policy,
                     cfg.queue_maxlen)
        report = self.resync("start")
        log.info("ready: profile %s, ports %s, sip_timeout %d, direct_signalling %d, direct_media %d, "
                 "external_media %d, NAT expectfn %s; %d expectation(s) of %d master(s) taken over from the kernel",
                 self.profile.name, ",".join(map(str, self.params.ports)), self.params.sip_timeout,
                 self.params.sip_direct_signalling, self.params.sip_direct_media, self.params.sip_external_media,
                 self.core.nat_expectfn, report.added if report else 0, report.adopted if report else 0)
        self.serving = True
        notify(f"READY=1\nSTATUS=helper {cfg.name} on queue(s) {','.join(map(str, cfg.queues))}")

    def _size_event_buffer(self, request: int) -> int:
        """Set the event socket's receive buffer (``helper.event_rcvbuf``, 0:
        leave it) and return what the kernel made of it: it doubles a request
        and raises it to SOCK_MIN_RCVBUF (sock_setsockopt()). FORCE passes
        net.core.rmem_max (CAP_NET_ADMIN)."""
        assert self.events is not None
        with socket.fromfd(self.events.fileno(), socket.AF_NETLINK, socket.SOCK_DGRAM) as dup:
            if request:
                try:
                    dup.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, request)
                except OSError:
                    dup.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, request)
            size = dup.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        log.info("ctnetlink event socket: receive buffer %d bytes%s", size,
                 f" (helper.event_rcvbuf = {request})" if request else "")
        return size

    def _registrations_left(self) -> dict:
        """(name, family, transport) -> the kernel's registration of it now, if any."""
        assert self.queue is not None
        try:
            return {(h.name, h.l3num, h.l4proto): h for h in self.queue.helpers()}
        except (OSError, NetlinkError, TimeoutError):
            return {}  # register() below says what is wrong

    def stop(self) -> None:
        """Unbind, unregister, close; every step is tried whatever the others did."""
        notify("STOPPING=1")
        if self.queue is not None:
            for queue_num in self.bound:
                try:
                    self.queue.unbind_queue(queue_num)
                    log.info("unbound queue %d", queue_num)
                except (OSError, NetlinkError) as exc:
                    log.warning("%s", netlink_text(exc))
            self.bound.clear()
            if not self.serving:
                # Start-up failed (another process owns the queue, say): the
                # registration may be that process's - leave it alone.
                self.registered.clear()
            for helper in self.registered:
                try:
                    self.queue.unregister(helper)
                    log.info("unregistered %s", helper)
                except NetlinkError as exc:
                    if exc.code != errno.EBUSY:
                        log.warning("%s", netlink_text(exc))
                        continue
                    try:
                        self.queue.set_enabled(helper, False)
                        log.info("%s is still referenced (nft ct helper object): left registered, disabled "
                                 "(its packets pass unqueued until the helper runs again)", helper)
                    except (OSError, NetlinkError) as exc2:
                        log.warning("%s", netlink_text(exc2))
                except OSError as exc:
                    log.warning("unregister %s: %s", helper, exc)
            self.registered.clear()
        for sock in (self.queue, self.ops, self.events, self.routes):
            if sock is not None:
                try:
                    sock.close()
                except Exception as exc:  # closing must not stop the others
                    log.debug("close: %s", exc)
        self.queue = self.ops = self.events = self.routes = None
        self.port = None

    def install_signal_handlers(self) -> int:
        """SIGTERM/SIGINT stop, SIGHUP reloads; returns a wake-up fd for select()."""
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        signal.set_wakeup_fd(w)

        def on_stop(signum: int, frame: object) -> None:
            self.signals.stop = True

        def on_hup(signum: int, frame: object) -> None:
            self.signals.reload = True

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)
        return r

    def run(self, wakeup_fd: int | None = None) -> None:
        assert self.queue is not None and self.events is not None
        sel = selectors.DefaultSelector()
        sel.register(self.queue.fileno(), selectors.EVENT_READ, "queue")
        sel.register(self.events.fileno(), selectors.EVENT_READ, "events")
        if wakeup_fd is not None:
            sel.register(wakeup_fd, selectors.EVENT_READ, "signal")
        try:
            while not self.signals.stop:
                ready = {key.data for key, _ in sel.select(TICK)}
                if "signal" in ready:
                    try:
                        os.read(wakeup_fd, 512)  # type: ignore[arg-type]
                    except BlockingIOError:
                        pass
                # Events first: a destroy (say, RTP that used an expectation)
                # happened before the packets queued since.
                if "events" in ready:
                    self.read_events()
                if "queue" in ready:
                    self.read_queue()
                if self.signals.reload:
                    self.signals.reload = False
                    self.reload()
                self.housekeeping()
        finally:
            sel.close()

    # --- the work --------------------------------------------------------------------------------
    def read_queue(self) -> None:
        assert self.queue is not None
        try:
            packets = self.queue.receive()
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                log.warning("queue socket overflowed: the kernel could not deliver some packets (with "
                            "fail_policy=open they passed unhelped, else they were dropped)")
                return
            log.error("reading the queue: %s", exc)
            return
        for pkt in packets:
            self.handle(pkt)
        for code, seq in self.queue.errors:
            log.warning("the kernel refused a verdict: %s", os.strerror(code))
        self.queue.errors.clear()

    def handle(self, pkt: QueuedPacket) -> None:
        """One packet: decide, change the table, answer. Never raises."""
        assert self.core is not None and self.port is not None
        now = self.clock()
        try:
            decision = self.core.decide(pkt, now)
            if decision.error:
                # "error:" marks the failure policy's verdicts (sipct fuzz counts them by it).
                log.warning("packet %d: error: %s -> %s", pkt.packet_id, decision.error, decision.verdict_name)
            verdict = execute(self.core, self.port, pkt, decision)
            if log.isEnabledFor(logging.DEBUG):
                self._trace(pkt, decision, verdict)
        except Exception as exc:  # an internal error never kills the daemon
            log.exception("packet %d: internal error: %s", pkt.packet_id, exc)
            self.core.needs_resync = True
            try:
                self.port.send_verdict(pkt, self.core.policy_verdict)
            except Exception as exc2:
                log.error("packet %d: cannot send the policy verdict either: %s", pkt.packet_id, exc2)

    def read_events(self) -> None:
        assert self.core is not None and self.events is not None
        try:
            events = self.events.drain_events()
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                # The kernel could not queue some destroy events on the socket
                # (netlink_broadcast() -> netlink_overrun()): the shadow may hold
                # expectations the kernel no longer has. Only a dump can tell.
                log.warning("ctnetlink event socket overflowed (ENOBUFS, receive buffer %d bytes): expectation "
                            "destroy events were lost; resynchronising from a dump of the kernel's table",
                            self.event_rcvbuf)
                self._resync_why = LOST_EVENTS
            else:
                log.warning("%s: resynchronising", exc)
            self.core.needs_resync = True
            return
        now = self.clock()
        for kind, exp in events:
            if kind == "destroy":
                try:
                    if self.core.expectation_destroyed(exp, now):
                        log.debug("the kernel removed %s -> %s:%s class %d", exp.tuple.src, exp.tuple.dst,
                                  exp.tuple.dport, exp.klass)
                except Exception as exc:
                    log.exception("destroy event: %s", exc)
                    self.core.needs_resync = True

    def housekeeping(self) -> None:
        assert self.core is not None
        now = self.clock()
        try:
            if self.core.expire_pending(now):
                log.warning("packet(s) answered with NF_REPEAT did not come back: resynchronising")
            interval = self.config.resync_interval
            due = interval > 0 and now - self._last_resync >= interval
            if (self.core.needs_resync or due) and not self.core.pending:
                why = (self._resync_why or "after a surprise") if self.core.needs_resync else "periodic"
                self.resync(why)
        except Exception as exc:
            log.exception("housekeeping: %s", exc)

    def resync(self, why: str):
        """Read the kernel's expectations (and the masters the shadow lacks)
        and make the shadow agree."""
        assert self.core is not None and self.port is not None
        self._last_resync = self.clock()
        try:
            report = resync(self.core, self.port, self.clock)
        except (OSError, NetlinkError) as exc:
            log.warning("resynchronisation (%s) failed: %s", why, netlink_text(exc))
            return None
        self._resync_why = None
        if report.removed or report.added or report.unknown_masters or why == LOST_EVENTS:
            log.info("resynchronised (%s): %d expectation(s) added, %d removed, %d master(s) adopted, "
                     "%d without a known master", why, report.added, report.removed, report.adopted,
                     report.unknown_masters)
        return report

    def reload(self) -> None:
        path = self.config.path
        if path is None:
            return
        try:
            fresh = load_config(path)
        except Exception as exc:
            log.error("SIGHUP: %s (keeping the running configuration)", exc)
            return
        setup_logging(fresh.log_level, self.config.worker_index)
        index = self.config.worker_index
        changed = ["workers"] if index is not None and fresh.workers != self.config.workers else []
        if index is not None and index < fresh.workers:
            fresh = fresh.worker(index)
        changed += [k for k in ("name", "families", "transports", "queue", "tcp_queue", "queue_maxlen",
                                "fail_policy", "profile", "resync_interval", "event_rcvbuf", "params")
                    if getattr(fresh, k) != getattr(self.config, k)]
        log.info("SIGHUP: log level %s%s", fresh.log_level,
                 f"; changed but only applied by a restart: {', '.join(changed)}" if changed else "")

    def _trace(self, pkt: QueuedPacket, decision: Decision, verdict: int) -> None:
        ct = pkt.ct
        rule_ids = decision.result.rule_ids if decision.result is not None else []
        log.debug("packet %d ct %s pass %d: %s (%s) rules %s ops [%s]%s%s", pkt.packet_id,
                  ct.original if ct else "-", decision.pass_no, Verdict(0, 0, verdict).name, decision.reason,
                  ",".join(rule_ids) or "-", "; ".join(str(o) for o in decision.ops),
                  f" exp {decision.exp}" if decision.exp else "",
                  f" rewritten {len(pkt.payload)} -> {len(decision.packet)} bytes" if decision.packet else "")


def run(config: HelperConfig, netns: str | None = None) -> int:
    """Start, serve until SIGTERM/SIGINT, stop. Exit status 0, or 2 when it
    could not start (the reason is logged)."""
    if config.workers > 1 and config.worker_index is None:
        from .workers import supervise
        return supervise(config, netns)
    setup_logging(config.log_level, config.worker_index)
    daemon = HelperDaemon(config, netns=netns)
    wakeup = daemon.install_signal_handlers()
    try:
        try:
            daemon.start()
        except (OSError, NetlinkError, TimeoutError) as exc:
            log.error("cannot start: %s", netlink_text(exc))
            return 2
        daemon.run(wakeup)
        log.info("stopping")
        return 0
    finally:
        daemon.stop()
