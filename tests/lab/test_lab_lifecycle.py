"""Lab setup, reuse and, above all, cleanup: no namespace may outlive its lab."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from sipct.harness import labns
from sipct.harness.lab import HostSpec, Lab

from tests.support.lab import SERVER, UA, own_namespaces, router_conntracks
from tests.support.sip_messages import invite

pytestmark = pytest.mark.netns

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def ip_netns_list() -> set[str]:
    # Ask iproute2, not our own code, what namespaces exist.
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def test_namespaces_exist_while_open_and_are_gone_after_close() -> None:
    with Lab([UA, SERVER]) as lab:
        names = set(lab.namespaces)
        assert len(names) == 3
        assert names <= ip_netns_list()
    assert not names & ip_netns_list()
    lab.close()  # idempotent


def test_exception_inside_the_with_block_removes_every_namespace() -> None:
    names: set[str] = set()
    with pytest.raises(ZeroDivisionError):
        with Lab([UA, SERVER]) as lab:
            names = set(lab.namespaces)
            assert names <= ip_netns_list()
            raise ZeroDivisionError("boom inside the lab")
    assert names and not names & ip_netns_list()


def test_failure_halfway_through_setup_removes_what_was_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[str] = []

    def broken_ruleset(self: Lab) -> None:
        seen.extend(own_namespaces())
        raise RuntimeError("nft exploded")

    monkeypatch.setattr(Lab, "_load_ruleset", broken_ruleset)
    with pytest.raises(RuntimeError, match="nft exploded"):
        Lab([UA, SERVER])
    assert len(seen) == 3  # they had been created ...
    assert not set(seen) & ip_netns_list()  # ... and are gone


def _run_lab_child(script: str) -> tuple[subprocess.Popen[str], list[str]]:
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    if not line:
        child.wait(10)
        pytest.fail(f"lab child did not start: {child.stderr.read() if child.stderr else ''}")
    names = line.split()
    assert len(names) == 3 and set(names) <= ip_netns_list()
    return child, names


_CHILD_PROLOGUE = """
    import signal, sys, time
    from sipct.harness.lab import HostSpec, Lab
    hosts = [HostSpec("ua", ("192.0.2.2",)), HostSpec("server", ("198.51.100.2",))]
"""


def test_sigterm_removes_the_namespaces_and_still_terminates() -> None:
    child, names = _run_lab_child(
        _CHILD_PROLOGUE
        + """
    lab = Lab(hosts)  # no with block: only the signal handler can clean up
    print(" ".join(lab.namespaces), flush=True)
    time.sleep(30)
    """
    )
    child.send_signal(signal.SIGTERM)
    assert child.wait(10) == -signal.SIGTERM
    assert not set(names) & ip_netns_list()


def test_sigterm_handler_chains_to_the_previous_one() -> None:
    child, names = _run_lab_child(
        _CHILD_PROLOGUE
        + """
    def previous(signum, frame):
        print("previous handler ran", flush=True)
        sys.exit(3)
    signal.signal(signal.SIGTERM, previous)
    with Lab(hosts) as lab:
        print(" ".join(lab.namespaces), flush=True)
        time.sleep(30)
    """
    )
    child.send_signal(signal.SIGTERM)
    assert child.wait(10) == 3
    assert child.stdout is not None and "previous handler ran" in child.stdout.read()
    assert not set(names) & ip_netns_list()


def test_sigint_removes_the_namespaces_and_still_terminates() -> None:
    child, names = _run_lab_child(
        _CHILD_PROLOGUE
        + """
    # A background job of a non-interactive shell starts with SIGINT ignored,
    # and Python then raises no KeyboardInterrupt: restore it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with Lab(hosts) as lab:
        print(" ".join(lab.namespaces), flush=True)
        time.sleep(30)
    """
    )
    child.send_signal(signal.SIGINT)
    # Uncaught, the interruption ends the process by its signal, as Python's own KeyboardInterrupt does.
    assert child.wait(10) == -signal.SIGINT
    assert child.stderr is not None and "interrupted by SIGINT" in child.stderr.read()
    assert not set(names) & ip_netns_list()


def test_two_labs_at_once_do_not_interfere() -> None:
    # Identical hosts and addresses in both: only the namespaces keep them apart.
    with Lab([UA, SERVER]) as one, Lab([UA, SERVER]) as two:
        assert not set(one.namespaces) & set(two.namespaces)
        listening_in_two = two._driver.udp_socket("server", 4, 5060)

        message = invite(5000)
        assert one.udp_send("ua", 5060, "server", 5060, message).data == message

        with pytest.raises(BlockingIOError):
            listening_in_two.recv(65536)
        assert len(router_conntracks(one)) == 1
        assert router_conntracks(two) == []

        one.close()
        assert two.udp_send("ua", 5060, "server", 5060, message).data == message


def test_hosts_in_one_subnet_share_a_bridge_and_talk_on_link() -> None:
    hosts = [
        HostSpec("a", ("192.0.2.2",)),
        HostSpec("b", ("192.0.2.3",)),
        HostSpec("c", ("203.0.113.2",)),
    ]
    with Lab(hosts) as lab:
        assert [s.hosts for s in lab.segments] == [("a", "b"), ("c",)]
        assert lab.udp_send("a", 40000, "b", 40000, b"lan").data == b"lan"
        # Same segment is bridged, not routed: conntrack never saw it ...
        assert router_conntracks(lab) == []
        # ... while the routed path is tracked.
        assert lab.udp_send("a", 40000, "c", 40000, b"wan").data == b"wan"
        assert len(router_conntracks(lab)) == 1


def test_hosts_joined_by_ipv6_route_ipv4_back_out_of_the_same_bridge() -> None:
    hosts = [
        HostSpec("a", ("192.0.2.2", "2001:db8:1::2")),
        HostSpec("b", ("198.51.100.2", "2001:db8:1::3")),
    ]
    with Lab(hosts) as lab:
        assert len(lab.segments) == 1
        assert lab.udp_send("a", 40000, "b", 40000, b"v6", family=6).data == b"v6"
        assert router_conntracks(lab) == []  # on-link
        delivery = lab.udp_send("a", 40000, "b", 40000, b"v4", family=4)
        assert delivery.data == b"v4" and delivery.src == ("192.0.2.2", 40000)
        assert len(router_conntracks(lab)) == 1  # routed, hairpin on br0


def test_lab_is_reusable_for_many_dialogs_fast(clean_lab: Lab) -> None:
    """The throughput the conformance runs rely on: >= 100 four-message
    dialogs per second through one lab, with a reset after each."""
    from tests.support.sip_messages import request, response

    dialogs = 100
    start = time.perf_counter()
    for n in range(dialogs):
        call_id = f"bench-{n}"
        for src, dst, message in (
            ("ua", "server", invite(5000, call_id=call_id)),
            ("server", "ua", response("200 OK", "INVITE", call_id=call_id)),
            ("ua", "server", request("ACK", call_id=call_id)),
            ("ua", "server", request("BYE", call_id=call_id, cseq=314160)),
        ):
            delivery = clean_lab.udp_send(src, 5060, dst, 5060, message)
            assert delivery.delivered and delivery.data == message
        clean_lab.reset()
    elapsed = time.perf_counter() - start
    assert dialogs / elapsed >= 100, f"{dialogs / elapsed:.0f} dialogs/s"


def test_closed_lab_refuses_to_send() -> None:
    lab = Lab([UA, SERVER])
    lab.close()
    with pytest.raises(RuntimeError, match="closed"):
        lab.udp_send("ua", 5060, "server", 5060, b"x")


def _init_namespace_state() -> dict[str, str]:
    def read(path: str) -> str:
        with open(path) as f:
            return f.read()

    return {
        "links": subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout,
        "nft": subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout,
        **{
            path: read(path)
            for path in (
                "/proc/sys/net/ipv4/ip_forward",
                "/proc/sys/net/ipv6/conf/all/forwarding",
                "/proc/sys/net/ipv6/conf/default/accept_dad",
                "/proc/sys/net/ipv4/conf/all/send_redirects",
                "/proc/sys/net/bridge/bridge-nf-call-iptables",
            )
            if os.path.exists(path)
        },
        "conntrack": read("/proc/net/nf_conntrack")
        if os.path.exists("/proc/net/nf_conntrack")
        else "",
    }


def test_nothing_outside_the_lab_changes() -> None:
    # This test process runs in the initial namespace: its links, sysctls,
    # ruleset and conntrack table must look the same after a full lab life.
    before = _init_namespace_state()
    if before["conntrack"]:
        pytest.skip("the initial namespace tracks connections of its own")
    with Lab([UA, SERVER]) as lab:
        assert lab.udp_send("ua", 5060, "server", 5060, invite(5000)).delivered
        lab.tcp_connect("ua", 40000, "server", 5060).send(True, [b"x"])
        lab.reset()
        during = _init_namespace_state()
    assert during == before
    assert _init_namespace_state() == before


def test_atexit_removes_a_lab_that_was_never_closed() -> None:
    child, names = _run_lab_child(
        _CHILD_PROLOGUE
        + """
    lab = Lab(hosts)
    print(" ".join(lab.namespaces), flush=True)
    sys.stdin.readline()  # exit (normally, without close) when told
    """
    )
    assert set(names) <= ip_netns_list()
    child.communicate(input="go\n", timeout=10)
    assert child.returncode == 0
    assert not set(names) & ip_netns_list()


def test_the_exit_hook_is_inherited_harmlessly_by_forked_children() -> None:
    # A forked child (a library's helper process, say) must never tear its parent's labs down.
    with Lab([UA, SERVER]) as lab:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            labns.remove_all_tracked()
            os._exit(0)
        os.waitpid(pid, 0)
        assert set(lab.namespaces) <= ip_netns_list()


def test_a_lab_built_right_after_another_carries_its_first_datagram() -> None:
    # linkwatch runs at most once a second: a lab built just after another
    # lab's teardown had links still DOWN (noop qdisc, bridge port not
    # forwarding) for a while, and its first datagram was dropped; seen in
    # 2 of 20 back-to-back builds on a quiet machine before Lab waited.
    for _ in range(12):
        with Lab([UA, SERVER]) as lab:
            down = []
            for ns in lab.namespaces:
                listing = subprocess.run(["ip", "-n", ns, "-o", "link"], capture_output=True, text=True,
                                         check=True).stdout
                down += [line.split()[1] for line in listing.splitlines()
                         if ": lo:" not in line and "state UP" not in line]
            assert not down, f"links not up right after the build: {down}"
            assert lab.udp_send("ua", 5060, "server", 5060, invite(5000), timeout=2.0).delivered
