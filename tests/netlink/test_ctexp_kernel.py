"""CtExpSocket against the running kernel's SIP helper, in a fresh namespace.

Everything here runs on lo of one namespace. A packet on lo passes the helper
twice: nf_confirm() runs it at POSTROUTING on the way out and again at
LOCAL_IN on the way in, on the same conntrack. The second pass re-creates the
expectations of the first, which is what the event sequences below show.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import itertools
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from ipaddress import ip_address

import pytest
from pyroute2.netlink.exceptions import NetlinkError

from sipct.netlink.ctexp import (
    IPCTNL_MSG_EXP_GET,
    NF_CT_EXPECT_PERMANENT,
    NF_CT_EXPECT_USERSPACE,
    ExpectMask,
    ExpectTuple,
    KernelExpectation,
    MasterTuple,
    ctexp_msg,
    exp_msg_type,
)
from sipct.netlink.netns import entered_netns
from sipct.netlink.socket import CtExpSocket

from tests.support.netlink_sip_messages import invite, register

pytestmark = pytest.mark.netns

UDP = 17
UA4, REGISTRAR4 = "192.0.2.1", "192.0.2.2"
UA6, REGISTRAR6 = "2001:db8::1", "2001:db8::2"
ALL_ONES4 = ip_address("255.255.255.255")
ALL_ONES6 = ip_address("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")
# sip_exp_policy[*].timeout is 3 * 60 s; the kernel reports whole seconds
# left, rounded down, so a fresh expectation shows 180 or 179.
SIP_EXPECT_TIMEOUT = 180


def master(ua: str, registrar: str) -> MasterTuple:
    return MasterTuple(ip_address(ua), ip_address(registrar), 5060, 5060, UDP)


def fresh(timeout: int) -> bool:
    return SIP_EXPECT_TIMEOUT - 2 <= timeout <= SIP_EXPECT_TIMEOUT


def take(events: Iterator[tuple[str, KernelExpectation]], n: int) -> list[tuple[str, KernelExpectation]]:
    return list(itertools.islice(events, n))


@pytest.fixture
def ctexp(netns: str) -> Iterator[CtExpSocket]:
    sock = CtExpSocket(netns)
    try:
        yield sock
    finally:
        sock.close()


@pytest.fixture
def subscribed(ctexp: CtExpSocket) -> CtExpSocket:
    """Subscribed before any traffic: with nf_conntrack_events=2 (the
    default) a conntrack gets its event cache only if someone listens when
    it is created, and the expectations of a master without one never raise
    events (see test_no_events_for_master_created_without_listener)."""
    ctexp.subscribe_events()
    return ctexp


def register_expectation(ua: str, registrar: str) -> dict[str, object]:
    """What process_register_request() sets up for a Contact at ua:5060."""
    return {
        "family": socket.AF_INET6 if ":" in ua else socket.AF_INET,
        "proto": UDP,
        "master": master(ua, registrar),
        "tuple": ExpectTuple(ip_address(registrar), ip_address(ua), 0, 5060),
        "mask": ExpectMask(ALL_ONES6 if ":" in ua else ALL_ONES4, 0),
        "flags": frozenset({"PERMANENT", "INACTIVE"}),
        "klass": 0,
        "helper": "sip",
    }


def fields(exp: KernelExpectation) -> dict[str, object]:
    return {
        k: getattr(exp, k) for k in ("family", "proto", "master", "tuple", "mask", "flags", "klass", "helper")
    }


# -- the namespace plumbing -------------------------------------------------


SIOCGSKNS = 0x894C  # ioctl: an fd for the netns a socket belongs to


def test_socket_is_made_in_netns_and_thread_returns(netns: str) -> None:
    before = os.stat("/proc/thread-self/ns/net").st_ino
    with CtExpSocket(netns) as sock:
        assert os.stat("/proc/thread-self/ns/net").st_ino == before
        ns_fd = fcntl.ioctl(sock.fileno(), SIOCGSKNS)
        try:
            assert os.fstat(ns_fd).st_ino == os.stat(f"/run/netns/{netns}").st_ino != before
        finally:
            os.close(ns_fd)
        assert sock.dump() == []
    with pytest.raises(FileNotFoundError):
        CtExpSocket(netns + "-missing")
    assert os.stat("/proc/thread-self/ns/net").st_ino == before


def test_unprivileged_request_is_refused_with_its_reason(netns: str) -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux) to drop root")
    probe = (
        "from sipct.netlink.socket import CtExpSocket\n"
        "from pyroute2.netlink.exceptions import NetlinkError\n"
        "try:\n"
        "    CtExpSocket().dump()\n"
        "except NetlinkError as e:\n"
        "    print(e.code, e.args[1])\n"
    )
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    out = subprocess.run(
        ["ip", "netns", "exec", netns, *nobody, sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert out.startswith(f"{errno.EPERM} ")
    assert "needs root" in out


# -- what the SIP helper creates ----------------------------------------------


def test_register_ipv4_creates_one_signalling_expectation(subscribed: CtExpSocket, send_udp) -> None:
    send_udp(UA4, REGISTRAR4, register(UA4, REGISTRAR4))

    (exp,) = subscribed.dump()
    assert fields(exp) == register_expectation(UA4, REGISTRAR4)
    assert fresh(exp.timeout), exp.timeout
    assert exp.fn is None and exp.nat is None
    assert subscribed.master_helper(exp.master) == "sip"


def test_register_ipv4_events_show_the_second_helper_pass(subscribed: CtExpSocket, send_udp) -> None:
    send_udp(UA4, REGISTRAR4, register(UA4, REGISTRAR4))

    events = take(subscribed.events(2.0), 3)
    assert [kind for kind, _ in events] == ["new", "destroy", "new"]
    assert all(fields(e) == register_expectation(UA4, REGISTRAR4) for _, e in events)
    (_, first_new), (_, destroyed), (_, second_new) = events
    assert destroyed.id == first_new.id != second_new.id
    assert all(e.timeout == SIP_EXPECT_TIMEOUT for _, e in events)
    assert list(subscribed.events(0.3)) == []
    (dumped,) = subscribed.dump()
    assert dumped.id == second_new.id
    # __nf_ct_expect_check() replaced the first expectation with the second.
    assert sum(s.create for s in subscribed.stats()) == 2
    assert sum(s.delete for s in subscribed.stats()) == 1


def test_register_ipv6(subscribed: CtExpSocket, send_udp) -> None:
    send_udp(UA6, REGISTRAR6, register(UA6, REGISTRAR6))

    (exp,) = subscribed.dump()
    assert fields(exp) == register_expectation(UA6, REGISTRAR6)
    assert fresh(exp.timeout)
    kinds = [(kind, e.family) for kind, e in take(subscribed.events(2.0), 3)]
    assert kinds == [("new", socket.AF_INET6), ("destroy", socket.AF_INET6), ("new", socket.AF_INET6)]


def test_dump_lists_both_families(subscribed: CtExpSocket, send_udp) -> None:
    send_udp(UA4, REGISTRAR4, register(UA4, REGISTRAR4))
    send_udp(UA6, REGISTRAR6, register(UA6, REGISTRAR6))

    assert sorted(e.family for e in subscribed.dump()) == [socket.AF_INET, socket.AF_INET6]


def test_invite_with_sdp_expects_rtp_and_rtcp(subscribed: CtExpSocket, send_udp) -> None:
    send_udp(UA4, REGISTRAR4, invite(UA4, REGISTRAR4, 5000))

    exps = sorted(subscribed.dump(), key=lambda e: e.tuple.dport)
    assert [e.tuple for e in exps] == [
        ExpectTuple(ip_address(REGISTRAR4), ip_address(UA4), 0, 5000),
        ExpectTuple(ip_address(REGISTRAR4), ip_address(UA4), 0, 5001),
    ]
    for e in exps:
        assert e.klass == 1  # SIP_EXPECT_AUDIO
        assert e.flags == frozenset()
        assert e.mask == ExpectMask(ALL_ONES4, 0)
        assert e.master == master(UA4, REGISTRAR4)
        assert e.helper == "sip"
        assert fresh(e.timeout)
    # Second pass: process_invite_request() first flushes the master's media
    # expectations, then process_sdp() sets up both again.
    events = [(kind, e.tuple.dport) for kind, e in take(subscribed.events(2.0), 6)]
    assert events == [
        ("new", 5000),
        ("new", 5001),
        ("destroy", 5001),
        ("destroy", 5000),
        ("new", 5000),
        ("new", 5001),
    ]


# -- flushing -------------------------------------------------------------------


def populate(sock: CtExpSocket, send_udp) -> set[tuple[int, int]]:
    send_udp(UA4, REGISTRAR4, register(UA4, REGISTRAR4))
    send_udp(UA6, REGISTRAR6, register(UA6, REGISTRAR6))
    send_udp(UA4, REGISTRAR4, invite(UA4, REGISTRAR4, 5000))
    live = {(e.family, e.tuple.dport) for e in sock.dump()}
    assert live == {
        (socket.AF_INET, 5060),
        (socket.AF_INET6, 5060),
        (socket.AF_INET, 5000),
        (socket.AF_INET, 5001),
    }
    list(sock.events(0.3))
    return live


def test_flush_removes_every_family_and_reports_destroy(subscribed: CtExpSocket, send_udp) -> None:
    live = populate(subscribed, send_udp)

    subscribed.flush()

    assert subscribed.dump() == []
    events = take(subscribed.events(2.0), len(live))
    assert {kind for kind, _ in events} == {"destroy"}
    assert {(e.family, e.tuple.dport) for _, e in events} == live
    assert list(subscribed.events(0.3)) == []
    subscribed.flush()


def test_flush_helper_removes_only_that_helpers_expectations(subscribed: CtExpSocket, send_udp) -> None:
    populate(subscribed, send_udp)
    subscribed.flush_helper("ftp")
    assert len(subscribed.dump()) == 4
    subscribed.flush_helper("sip")
    assert subscribed.dump() == []


def test_flush_conntrack_takes_the_expectations_along(subscribed: CtExpSocket, send_udp) -> None:
    live = populate(subscribed, send_udp)

    subscribed.flush_conntrack()

    assert subscribed.dump() == []
    for gone in (master(UA4, REGISTRAR4), master(UA6, REGISTRAR6)):
        with pytest.raises(NetlinkError) as err:
            subscribed.master_helper(gone)
        assert err.value.code == errno.ENOENT
    events = take(subscribed.events(2.0), len(live))
    assert {(kind, e.family, e.tuple.dport) for kind, e in events} == {("destroy", f, p) for f, p in live}


# -- create / delete ------------------------------------------------------------


def test_create_and_delete(subscribed: CtExpSocket, send_udp, monkeypatch) -> None:
    def no_asyncio(*args, **kwargs):  # create, delete and flush take the plain send/recv path (wire.py)
        raise AssertionError("pyroute2's request path used for an ACK request")

    monkeypatch.setattr(subscribed, "nlm_request", no_asyncio)
    send_udp(UA4, REGISTRAR4, register(UA4, REGISTRAR4))
    list(subscribed.events(0.3))
    m = master(UA4, REGISTRAR4)
    rtp = ExpectTuple(ip_address(REGISTRAR4), ip_address(UA4), 0, 6000)

    subscribed.create(
        m,
        rtp,
        mask=ExpectMask(ip_address("0.0.0.0"), 0),
        klass=1,
        flags=NF_CT_EXPECT_PERMANENT | NF_CT_EXPECT_USERSPACE,
    )

    (made,) = [e for e in subscribed.dump() if e.tuple == rtp]
    assert made.master == m and made.klass == 1 and made.helper == "sip"
    assert made.mask == ExpectMask(ip_address("0.0.0.0"), 0)
    # ctnetlink_alloc_expect() strips USERSPACE; the timeout comes from the
    # helper's expect policy, not from us.
    assert made.flags == frozenset({"PERMANENT"})
    assert fresh(made.timeout)
    ((kind, announced),) = take(subscribed.events(2.0), 1)
    assert kind == "new" and dataclasses.replace(announced, timeout=made.timeout) == made

    with pytest.raises(NetlinkError) as err:
        subscribed.delete(dataclasses.replace(made, id=made.id ^ 1))
    assert err.value.code == errno.ENOENT

    subscribed.delete(made)

    assert [e.tuple for e in subscribed.dump()] == [
        ExpectTuple(ip_address(REGISTRAR4), ip_address(UA4), 0, 5060)
    ]
    ((kind, gone),) = take(subscribed.events(2.0), 1)
    assert kind == "destroy" and gone.id == made.id
    with pytest.raises(NetlinkError) as err:
        subscribed.delete(made)
    assert err.value.code == errno.ENOENT


def test_create_ipv6(subscribed: CtExpSocket, send_udp) -> None:
    send_udp(UA6, REGISTRAR6, register(UA6, REGISTRAR6))
    rtp = ExpectTuple(ip_address(REGISTRAR6), ip_address(UA6), 0, 6000)

    subscribed.create(master(UA6, REGISTRAR6), rtp, mask=ExpectMask(ALL_ONES6, 0), klass=1)

    (made,) = [e for e in subscribed.dump() if e.tuple == rtp]
    assert made.family == socket.AF_INET6
    assert made.mask == ExpectMask(ALL_ONES6, 0)
    assert made.flags == frozenset()


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("class above SIP_EXPECT_MAX", errno.EINVAL),
        ("same tuple again", errno.EEXIST),
        ("no such master", errno.ENOENT),
        ("master without helper", errno.EOPNOTSUPP),
    ],
)
def test_create_refusals(subscribed: CtExpSocket, send_udp, case: str, code: int) -> None:
    send_udp(UA4, REGISTRAR4, register(UA4, REGISTRAR4))
    m = master(UA4, REGISTRAR4)
    signalling = ExpectTuple(ip_address(REGISTRAR4), ip_address(UA4), 0, 5060)
    other = ExpectTuple(ip_address(REGISTRAR4), ip_address(UA4), 0, 6000)
    if case == "master without helper":
        with entered_netns(subscribed.netns):
            plain = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with plain:
            plain.bind((UA4, 7000))
            plain.sendto(b"x", (REGISTRAR4, 7000))
        assert subscribed.master_helper(m._replace(sport=7000, dport=7000)) is None
    attempt = {
        "class above SIP_EXPECT_MAX": lambda: subscribed.create(m, other, klass=4),
        "same tuple again": lambda: subscribed.create(m, signalling, mask=ExpectMask(ALL_ONES4, 0)),
        "no such master": lambda: subscribed.create(m._replace(sport=5061), other),
        "master without helper": lambda: subscribed.create(m._replace(sport=7000, dport=7000), other),
    }[case]
    with pytest.raises(NetlinkError) as err:
        attempt()
    assert err.value.code == code
    assert os.strerror(code) in str(err.value)


# -- events and their precondition ------------------------------------------------


def test_no_events_for_master_created_without_listener(ctexp: CtExpSocket, send_udp) -> None:
    # nf_ct_ecache_ext_add() looks at nf_ctnetlink_has_listener, which is one
    # flag for the whole machine (nfnetlink_bind_event()): a listener in any
    # other namespace - another lab running at the same time - gives this
    # master an event cache too.
    others = [n for n in os.listdir("/run/netns") if n.startswith("sipct-") and n != ctexp.netns] \
        if os.path.isdir("/run/netns") else []
    send_udp(UA4, REGISTRAR4, register(UA4, REGISTRAR4))
    ctexp.subscribe_events()

    send_udp(UA4, REGISTRAR4, register(UA4, REGISTRAR4))
    ctexp.flush()

    events = list(ctexp.events(0.5))
    if events and others:
        pytest.skip(f"other labs run at the same time ({len(others)} namespaces): their ctnetlink "
                    "listener makes every new conntrack carry an event cache")
    assert events == []
    assert ctexp.dump() == []


# -- the raw bytes the codec fixtures came from -----------------------------------


def raw_dump(netns: str) -> list[bytes]:
    """IPCTNL_MSG_EXP_GET dump, each reply message as the kernel wrote it."""
    with entered_netns(netns):
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 12)
    out: list[bytes] = []
    with sock:
        sock.bind((0, 0))
        request = struct.pack("=IHHII", 20, exp_msg_type(IPCTNL_MSG_EXP_GET), 0x301, 1, 0) + bytes(4)
        sock.send(request)
        while True:
            assert select.select([sock], [], [], 2.0)[0], "no dump reply"
            data = sock.recv(65536)
            offset = 0
            while offset < len(data):
                length, kind = struct.unpack_from("=IH", data, offset)
                if kind == 3:  # NLMSG_DONE
                    return out
                out.append(data[offset : offset + length])
                offset += length


def test_kernel_bytes_decode_and_reencode_identically(netns: str, subscribed: CtExpSocket, send_udp) -> None:
    send_udp(UA4, REGISTRAR4, register(UA4, REGISTRAR4))
    send_udp(UA6, REGISTRAR6, register(UA6, REGISTRAR6))
    send_udp(UA4, REGISTRAR4, invite(UA4, REGISTRAR4, 5000))
    dumped = {e.id: e for e in subscribed.dump()}

    raws = raw_dump(netns)

    assert len(raws) == len(dumped) == 4
    for raw in raws:
        msg = ctexp_msg(raw)
        msg.decode()
        exp = KernelExpectation.from_msg(msg)
        assert fields(exp) == fields(dumped[exp.id])
        header = msg["header"]
        again = exp.to_msg(header["type"] & 0xFF, header["flags"])
        again["header"]["sequence_number"] = header["sequence_number"]
        again["header"]["pid"] = header["pid"]
        again.encode()
        assert again.data == raw, raw.hex()


# -- conntracks: the delete-conntrack step and the reaping after a wait ----------------------------


def _dump_soon(sock: CtExpSocket) -> list[KernelExpectation]:
    """The table once the datagram just sent has been through the helper
    (loopback delivery may finish in a softirq after sendto() returned)."""
    import time

    deadline = time.monotonic() + 2.0
    while not (found := sock.dump()) and time.monotonic() < deadline:
        time.sleep(0.01)
    return found


def test_deleting_the_master_takes_its_expectations(subscribed: CtExpSocket, send_udp) -> None:
    send_udp(UA4, REGISTRAR4, register(UA4, REGISTRAR4))
    (exp,) = _dump_soon(subscribed)
    subscribed.drain_events()
    # Requests on a socket of their own: the request path reads (and drops) events.
    requests = CtExpSocket(subscribed.netns)
    try:
        assert requests.delete_conntrack(exp.master) is True
        assert requests.dump() == []
        assert [kind for kind, _ in subscribed.drain_events()] == ["destroy"]  # nf_ct_remove_expectations
        assert requests.delete_conntrack(exp.master) is False  # ENOENT: nothing left to delete
        # Found by the reply direction's tuple as well (nf_conntrack_find_get on either hash).
        send_udp(UA4, REGISTRAR4, register(UA4, REGISTRAR4))
        (exp,) = _dump_soon(requests)
        m = exp.master
        assert requests.delete_conntrack(type(m)(m.dst, m.src, m.dport, m.sport, m.proto)) is True
        assert requests.dump() == []
    finally:
        requests.close()


def test_reaping_leaves_live_conntracks_alone(subscribed: CtExpSocket, send_udp) -> None:
    send_udp(UA4, REGISTRAR4, register(UA4, REGISTRAR4))
    before = _dump_soon(subscribed)
    assert before
    subscribed.reap_expired_conntracks()
    assert [fields(e) for e in subscribed.dump()] == [fields(e) for e in before]


def test_a_signal_while_the_socket_closes_is_raised_once_it_is_closed(netns: str) -> None:
    # A run interrupted while it switched labs printed "coroutine
    # 'BaseEventLoop.shutdown_asyncgens' was never awaited" at exit: the signal
    # had landed in pyroute2's close, which runs its asyncio loop.
    script = f"""
import asyncio, os, signal, time
from sipct.netlink.interrupts import Interrupted, install
from sipct.netlink.socket import CtExpSocket
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(s, signal.SIG_DFL)
install()
sock = CtExpSocket({netns!r})
loop = sock.asyncore.event_loop
shutdown = asyncio.BaseEventLoop.shutdown_asyncgens
def signalled(self):
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.3)  # the handler runs here, inside pyroute2's close
    return shutdown(self)
asyncio.BaseEventLoop.shutdown_asyncgens = signalled
try:
    sock.close()
except Interrupted:
    print("raised after the close:", loop.is_closed(), sock._raw.fileno() == -1)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "raised after the close: True True", out.stderr
    assert "never awaited" not in out.stderr and "Exception ignored" not in out.stderr, out.stderr
