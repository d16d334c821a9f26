"""The daemon's I/O around the core, with stand-in sockets: start-up order,
verdicts, kernel refusals, internal errors, signals, sd_notify.

(The running kernel has no nfnetlink_cthelper; test_vm_helper.py runs the
real thing in a 6.1 VM.)"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import signal
import socket
import threading
import time

import pytest
from pyroute2.netlink.exceptions import NetlinkError

import sipct.reference.daemon as daemon_mod
from sipct.reference.config import parse_config
from sipct.reference.daemon import HelperDaemon, notify, run
from sipct.netlink.conntrack import IP_CT_ESTABLISHED_REPLY, IP_CT_NEW, IPS_CONFIRMED, KernelConntrack
from sipct.netlink.nfqueue import ETH_P_IP, NF_ACCEPT, NF_DROP, NF_REPEAT, QueuedPacket
from sipct.reference.netlink.socket import HelperNetlinkError
from sipct.reference.packet import build_packet
from sipct.spec.expectation import ConnTuple

ip = ipaddress.ip_address
UA, SRV = ip("192.0.2.2"), ip("198.51.100.2")
MASTER = ConnTuple(UA, SRV, 17, 5060, 5060)


class StubQueue:
    """HelperSocket's interface, recording what the daemon asks."""

    instances: list[StubQueue] = []
    # Refusals to play, set on the class by a test (monkeypatch) or on an instance.
    fail_register: NetlinkError | None = None
    fail_unregister: NetlinkError | None = None
    fail_send: Exception | None = None
    left: tuple = ()  # the registrations a previous run left in the kernel

    def __init__(self, netns=None) -> None:
        self.calls: list[tuple] = []
        self.verdicts: list = []
        self.inbox: list[QueuedPacket] = []
        self.errors: list = []
        self._r, self._w = socket.socketpair()
        StubQueue.instances.append(self)

    def fileno(self) -> int:
        return self._r.fileno()

    def register(self, helper, *, exclusive=False):
        if self.fail_register:
            raise self.fail_register
        self.calls.append(("register", str(helper)))

    def set_enabled(self, helper, enabled):
        self.calls.append(("enabled", str(helper), enabled))

    def helpers(self):
        return list(self.left)

    def unregister(self, helper):
        self.calls.append(("unregister", str(helper)))
        if self.fail_unregister:
            raise self.fail_unregister

    def bind_queue(self, queue_num, *, fail_open, maxlen=None):
        self.calls.append(("bind", queue_num, fail_open, maxlen))

    def unbind_queue(self, queue_num):
        self.calls.append(("unbind", queue_num))

    def push(self, pkt: QueuedPacket) -> None:
        self.inbox.append(pkt)
        self._w.send(b"x")

    def receive(self, limit=64):
        try:
            self._r.recv(4096, socket.MSG_DONTWAIT)
        except BlockingIOError:
            pass
        out, self.inbox = self.inbox, []
        return out

    def send_verdict(self, verdict):
        if self.fail_send:
            raise self.fail_send
        self.verdicts.append(verdict)

    def close(self):
        self._r.close()
        self._w.close()
        self.calls.append(("close",))


class StubCtnetlink:
    """ExpectationSocket's interface."""

    instances: list[StubCtnetlink] = []

    def __init__(self, netns=None) -> None:
        self.calls: list[tuple] = []
        self.refuse: dict[tuple, Exception] = {}  # (kind, dport) -> exception
        self._r, self._w = socket.socketpair()
        StubCtnetlink.instances.append(self)

    def fileno(self):
        return self._r.fileno()

    def subscribe_destroy_events(self):
        self.calls.append(("subscribe",))

    overflow = False  # the next drain_events() reports ENOBUFS

    def drain_events(self):
        if self.overflow:
            self.overflow = False
            raise OSError(errno.ENOBUFS, "ctnetlink events: the socket overflowed and events were lost")
        return []

    def dump(self):
        self.calls.append(("dump",))
        return []

    def conntracks(self, originals):
        return {}

    def _do(self, kind, dport):
        self.calls.append((kind, dport))
        exc = self.refuse.get((kind, dport))
        if exc is not None:
            raise exc

    def create(self, master, tuple, *, proto, mask, klass, flags, nat=None, fn=None):
        self._do("create", tuple.dport)

    def delete(self, exp, *, match_id=True):
        self._do("delete", exp.tuple.dport)

    def set_timeout(self, exp, seconds):
        self._do("timeout", exp.tuple.dport)

    def close(self):
        self._r.close()
        self._w.close()


@pytest.fixture
def stubs(monkeypatch):
    StubQueue.instances.clear()
    StubCtnetlink.instances.clear()
    monkeypatch.setattr(daemon_mod, "HelperSocket", StubQueue)
    monkeypatch.setattr(daemon_mod, "ExpectationSocket", StubCtnetlink)
    return StubQueue.instances, StubCtnetlink.instances


def started(text: str = "[helper]\nqueue = 3\nprofile = \"6.1.192\"\n[sip]\nexpect_max = 4096\n") -> HelperDaemon:
    d = HelperDaemon(parse_config(text))
    d.start()
    return d


def packet(payload: bytes, *, new: bool = False, reply: bool = False, pid: int = 1) -> QueuedPacket:
    src, dst = (SRV, UA) if reply else (UA, SRV)
    ct = KernelConntrack(socket.AF_INET, MASTER, MASTER.reply(), 11, 0 if new else IPS_CONFIRMED, 0 if new else 30,
                         helper="sip", helper_info=bytes(12))
    return QueuedPacket(3, socket.AF_INET, pid, ETH_P_IP, 4, build_packet(src, 5060, dst, 5060, 17, payload), ct,
                        IP_CT_NEW if new else (IP_CT_ESTABLISHED_REPLY if reply else 0))


def sip(first: str, *headers: str, body: str = "") -> bytes:
    lines = [first, *headers, f"Content-Length: {len(body)}", "", body]
    return "\r\n".join(lines).encode()


REGISTER = sip(f"REGISTER sip:{SRV} SIP/2.0", f"Via: SIP/2.0/UDP {UA}:5060", "CSeq: 1 REGISTER",
               f"Contact: <sip:bob@{UA}:5060>", "Expires: 600")
SDP = f"v=0\r\no=- 1 1 IN IP4 {UA}\r\ns=-\r\nc=IN IP4 {UA}\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n"
INVITE = sip(f"INVITE sip:bob@{SRV} SIP/2.0", f"Via: SIP/2.0/UDP {UA}:5060", "CSeq: 1 INVITE",
             "Content-Type: application/sdp", body=SDP)


def test_start_order(stubs, monkeypatch, tmp_path) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(tmp_path / "notify"))
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    d = started()
    (queue,), (events, ops) = stubs
    assert events.calls == [("subscribe",)]  # before anything can be missed
    assert [c[0] for c in queue.calls] == ["register"] * 4 + ["bind"]
    assert queue.calls[-1] == ("bind", 3, True, 1024)
    assert ops.calls == [("dump",)]  # the restart path: rebuild from the kernel
    assert listener.recv(1024).startswith(b"READY=1")
    d.stop()
    assert queue.calls[-6:] == [("unbind", 3)] + [("unregister", str(h)) for h in d.config.registrations()] + \
        [("close",)]
    assert listener.recv(1024) == b"STOPPING=1"


def test_register_verdict_carries_the_expectation(stubs) -> None:
    d = started()
    (queue,), (_, ops) = stubs
    d.handle(packet(REGISTER, new=True))
    (v,) = queue.verdicts
    assert (v.verdict, v.ct_timeout, v.helper) == (NF_ACCEPT, 3600, "sip")
    assert v.exp is not None and v.exp_helper == "sip" and v.exp.flags == {"PERMANENT", "INACTIVE"}
    assert ops.calls == [("dump",)]  # nothing over ctnetlink


def test_media_on_a_new_master_repeat_then_ctnetlink(stubs) -> None:
    d = started()
    (queue,), (_, ops) = stubs
    d.handle(packet(INVITE, new=True, pid=1))
    d.handle(packet(INVITE, pid=2))  # the same packet, queued again after NF_REPEAT: now confirmed
    assert [v.verdict for v in queue.verdicts] == [NF_REPEAT, NF_ACCEPT]
    assert ops.calls[1:] == [("create", 5000), ("create", 5001)]


def test_a_refused_rtcp_takes_rtp_back_and_drops(stubs, caplog) -> None:
    d = started()
    (queue,), (_, ops) = stubs
    ops.refuse[("create", 5001)] = NetlinkError(errno.EBUSY, "clash")
    d.handle(packet(INVITE, new=True, pid=1))
    d.handle(packet(INVITE, pid=2))
    assert ops.calls[1:] == [("create", 5000), ("create", 5001), ("delete", 5000)]
    assert queue.verdicts[-1].verdict == NF_DROP
    assert "media.failed" in caplog.text and d.core.needs_resync


@pytest.mark.parametrize("fail_policy,verdict", [("open", NF_ACCEPT), ("closed", NF_DROP)])
def test_internal_errors_never_kill_the_daemon(stubs, caplog, fail_policy: str, verdict: int) -> None:
    d = started(f"[helper]\nqueue = 3\nfail_policy = \"{fail_policy}\"\n")
    (queue,), (_, ops) = stubs
    ops.refuse[("create", 5000)] = RuntimeError("socket gone mad")  # not a NetlinkError
    d.handle(packet(INVITE, new=True, pid=1))
    d.handle(packet(INVITE, pid=2))
    assert queue.verdicts[-1].verdict == verdict and "internal error" in caplog.text
    queue.fail_send = OSError(errno.ENOBUFS, "No buffer space")
    d.handle(packet(REGISTER, pid=3))  # cannot even answer: logged, no exception
    queue.fail_send = None
    d.handle(packet(b"\x00garbage", pid=4))  # not SIP at all: accepted by the spec
    assert queue.verdicts[-1].verdict == NF_ACCEPT


def test_sigterm_stops_and_a_referenced_helper_is_disabled(stubs, monkeypatch) -> None:
    config = parse_config("[helper]\nqueue = 3\n")
    monkeypatch.setattr(daemon_mod, "setup_logging", lambda level, worker=None: None)
    monkeypatch.setattr(StubQueue, "fail_unregister", HelperNetlinkError(errno.EBUSY, "busy"))
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        started_at = time.monotonic()
        assert run(config) == 0
        assert time.monotonic() - started_at < 2  # woken by the signal, not by the tick
    finally:
        timer.cancel()
        signal.set_wakeup_fd(-1)
        for s, h in previous.items():
            signal.signal(s, h)
    (queue,), _ = stubs
    disabled = [c for c in queue.calls if c[0] == "enabled"]
    assert len(disabled) == 4 and all(c[2] is False for c in disabled)


def test_run_exits_2_when_the_kernel_refuses(stubs, monkeypatch, caplog) -> None:
    monkeypatch.setattr(StubQueue, "fail_register", HelperNetlinkError(
        errno.EINVAL, "register: Invalid argument: the kernel has no nfnetlink_cthelper"))
    monkeypatch.setattr(daemon_mod, "setup_logging", lambda level, worker=None: None)
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        with caplog.at_level(logging.ERROR, "sipct"):
            assert run(parse_config("")) == 2
    finally:
        signal.set_wakeup_fd(-1)
        for s, h in previous.items():
            signal.signal(s, h)
    assert "cannot start: register: Invalid argument: the kernel has no nfnetlink_cthelper" in caplog.text


def test_a_failed_start_leaves_the_registration_alone(stubs, monkeypatch) -> None:
    """Another helper owns the queue: this one must not unregister (or
    disable) the registration the other one uses."""
    def refuse(self, queue_num, **kwargs):
        raise HelperNetlinkError(errno.EPERM, "bind queue: the queue is bound by another process")

    monkeypatch.setattr(StubQueue, "bind_queue", refuse)
    d = HelperDaemon(parse_config(""))
    with pytest.raises(HelperNetlinkError):
        d.start()
    d.stop()
    (queue,), _ = stubs
    assert not [c for c in queue.calls if c[0] in ("unregister", "enabled")]


def test_sighup_rereads_the_log_level(stubs, tmp_path) -> None:
    path = tmp_path / "helper.toml"
    path.write_text("[log]\nlevel = \"warning\"\n")
    d = HelperDaemon(parse_config(path.read_text(), path))
    path.write_text("[log]\nlevel = \"debug\"\n[helper]\nqueue = 9\n")
    d.reload()
    assert logging.getLogger("sipct").level == logging.DEBUG
    logging.getLogger("sipct").setLevel(logging.WARNING)


def test_notify_without_systemd(monkeypatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False


def test_the_fuzz_run_s_log_patterns_match_the_daemon_s_lines(stubs, caplog) -> None:
    """`sipct fuzz` counts the daemon's log lines by these patterns; a pattern
    that never matches what the daemon writes would count nothing."""
    from sipct.conformance.fuzz_cli import LOG_PATTERNS

    d = started()
    (queue,), (_, ops) = stubs
    with caplog.at_level(logging.INFO, "sipct"):
        unconfirmed = packet(INVITE, pid=1)
        d.handle(QueuedPacket(3, socket.AF_INET, 1, ETH_P_IP, 4, unconfirmed.payload, None, 0))  # no NFQA_CT
        ops.refuse[("create", 5000)] = RuntimeError("socket gone mad")
        d.handle(packet(INVITE, new=True, pid=2))
        d.handle(packet(INVITE, pid=3))
    counts = {name: len(__import__("re").findall(pattern, caplog.text)) for name, pattern in LOG_PATTERNS.items()}
    assert counts["policy_verdicts"] == 1, caplog.text
    assert counts["internal_errors"] == 1 and counts["tracebacks"] == 1


def test_a_restart_takes_over_the_registration_a_killed_run_left(stubs, monkeypatch, caplog) -> None:
    """After SIGKILL the helper stays registered; the next start updates that
    object (no NLM_F_EXCL) and says so."""
    config = parse_config("[helper]\nqueue = 3\nfamilies = [\"ipv4\"]\ntransports = [\"udp\"]\n")
    (helper,) = config.registrations()
    monkeypatch.setattr(StubQueue, "left", (helper,))
    with caplog.at_level(logging.INFO, "sipct"):
        d = HelperDaemon(config)
        d.start()
    (queue,), _ = stubs
    assert queue.calls[0] == ("register", str(helper))
    assert "took over the registration a previous run left (queue 3, enabled)" in caplog.text
    d.stop()


def test_the_event_socket_s_receive_buffer_is_configurable(stubs, caplog) -> None:
    with caplog.at_level(logging.INFO, "sipct"):
        d = started("[helper]\nqueue = 3\nevent_rcvbuf = 65536\n")
    assert d.event_rcvbuf >= 65536  # the kernel doubles a request
    assert f"ctnetlink event socket: receive buffer {d.event_rcvbuf} bytes (helper.event_rcvbuf = 65536)" \
        in caplog.text
    d.stop()


def test_lost_events_are_one_line_and_a_resynchronisation(stubs, caplog) -> None:
    """ENOBUFS on the event socket: destroy events were lost, so the shadow
    may hold expectations the kernel dropped; the daemon says so once, dumps
    the table and says what the dump changed, even when nothing."""
    d = started()
    (_,), (events, ops) = stubs
    events.overflow = True
    with caplog.at_level(logging.INFO, "sipct"):
        d.read_events()
        assert d.core.needs_resync
        d.housekeeping()
    assert not d.core.needs_resync and ops.calls.count(("dump",)) == 2
    lines = [r.getMessage() for r in caplog.records]
    (lost,) = [m for m in lines if "ENOBUFS" in m]
    assert lost.startswith("ctnetlink event socket overflowed (ENOBUFS, receive buffer ")
    assert "expectation destroy events were lost; resynchronising" in lost
    assert "resynchronised (lost events): 0 expectation(s) added, 0 removed, 0 master(s) adopted, " \
        "0 without a known master" in lines
    d.stop()
