"""The reference helper under faults and overload, in Debian's 6.1.192 (a VM).

Opt-in (``pytest -m vm tests/reference/test_vm_faults.py``): one boot runs
vm_faults.py, whose phases these tests read:

* ``kill``: SIGKILL of the daemon while a registration and a call are up
  and packets wait in its queue, then the same command again;
* ``enobufs``: the ctnetlink event socket overflowed by a burst of destroy
  events (``helper.event_rcvbuf`` small), detected and resynchronised;
* ``overload-open`` / ``overload-closed``: new calls above the daemon's rate
  (a burst, then a steady load) into a queue of 16 packets, with each
  failure policy.

The figures are printed (``-s`` shows them); SIPCT_FAULTS_JSON=PATH keeps the
guest's whole record. docs/reference-validation.rst ("Faults and overload")
has the measured numbers.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (the guest runs the netns lab as root)"),
]

HERE = Path(__file__).resolve().parent
RELEASE = "6.1.0-56-amd64"  # linux-image-6.1.0-56-amd64 (6.1.192)
TIMEOUT = 1200.0

FAULT_MODULES = ("nf_conntrack_sip", "nf_tables", "nft_ct", "nf_conntrack_netlink", "nfnetlink_queue",
                 "nfnetlink_cthelper")


@pytest.fixture(scope="module")
def faults(request: pytest.FixtureRequest) -> dict:
    """vm_faults.py in one boot of 6.1.192."""
    from tests.support.vm_guest import guest_result, installed_kernel, vm_selected

    if not vm_selected(request.config):
        pytest.skip("boots a VM (5-10 minutes under TCG): run `pytest -m vm tests/reference/test_vm_faults.py`")
    kernel = installed_kernel(RELEASE)
    with guest_result(kernel, HERE / "vm_faults.py", FAULT_MODULES, TIMEOUT, name="faults",
                      keep_json="SIPCT_FAULTS_JSON") as data:
        assert "error" not in data, data["error"] + data.get("log", "")[-3000:]
        print_figures(data)
        yield data


def print_figures(d: dict) -> None:
    k, e = d["kill"], d["enobufs"]
    print(f"\n{d['uname']} (profile {d['profile']}), nf_conntrack_expect_max {d['expect_max']}")
    print(f"kill -9: {k['queue_while_stopped'][0][2]} packet(s) waiting at the kill, "
          f"{k['queued_delivered_after_kill']} delivered later; restart READY in {k['restart']['ready_seconds']} s; "
          f"steps {k['steps']}")
    print(f"ENOBUFS: {e['rcvbuf_line']!r}; {e['expectations_before']} expectations flushed; "
          f"{e['overflow_lines']}; {e['resync_lines']}")
    for policy in ("open", "closed"):
        phase = d[f"overload-{policy}"]
        for what, o in (("burst", phase), ("paced", phase["paced"])):
            q0, q1 = (o["queue_before"] or [[0] * 9])[0], (o["queue_after"] or [[0] * 9])[0]
            print(f"overload fail-{policy}, {what}: {o['sent']} INVITEs in {o['send_seconds']} s, queue_maxlen "
                  f"{phase['queue_maxlen']}: delivered {o['delivered']}, calls with media {o['calls_with_media']}, "
                  f"queued (ids) {q1[7] - q0[7]}, queue_dropped {q1[5] - q0[5]}, user_dropped {q1[6] - q0[6]}, "
                  f"peak waiting {o['peak_waiting']}, drained {o['drain_seconds']} s after the first send, "
                  f"'nf_queue: full' lines {o['dmesg_full']}, RSS {phase['rss_kib_before']} -> "
                  f"{o['rss_kib_after']} KiB, log {o['log']}")


def ours(helpers: list[dict]) -> list[dict]:
    return [h for h in helpers if h["name"] == "sipct"]


def test_the_guest_is_6_1_192(faults: dict) -> None:
    assert faults["uname"] == RELEASE and faults["profile"] == "6.1.192" and faults["missing_modules"] == []


def test_packets_waiting_at_a_kill_are_dropped_and_while_down_bypass(faults: dict) -> None:
    k = faults["kill"]
    (line,) = k["queue_while_stopped"]
    assert line[0] == 0 and line[2] == 3  # the three OPTIONS waited for the stopped daemon
    assert k["delivered_while_stopped"] == 0 and k["killed_status"] == -9
    assert k["queued_delivered_after_kill"] == 0  # the queue went with the socket: dropped
    assert k["queue_after_kill"] == []  # no queue bound while no daemon runs
    assert k["steps"]["options_while_down"]  # NF_VERDICT_FLAG_QUEUE_BYPASS: passes unhelped


def test_a_killed_daemon_leaves_its_registration_and_the_restart_takes_it_over(faults: dict) -> None:
    k = faults["kill"]
    left = ours(k["helpers_after_kill"])
    assert len(left) == 4 and all(h["enabled"] and h["queue"] == 0 for h in left)
    assert ours(k["helpers_after_restart"]) == left
    assert sum("took over the registration a previous run left (queue 0, enabled)" in line
               for line in k["restart_log"]) == 4
    assert any("5 expectation(s) of 2 master(s) taken over from the kernel" in line for line in k["restart_log"])
    (line,) = k["queue_after_restart"]
    assert line[0] == 0


def test_calls_up_through_the_kill_keep_their_expectations_and_go_on(faults: dict) -> None:
    k, st = faults["kill"], faults["kill"]["steps"]
    assert all(st.values()), st
    before = k["table_before"]
    assert [(d, p) for d, p, *_ in before] == [("192.0.2.2", 5000), ("192.0.2.2", 5001), ("192.0.2.2", 5060),
                                               ("192.0.2.2", 7000), ("192.0.2.2", 7001)]
    assert [r[:3] for r in k["table_after_kill"]] == [r[:3] for r in before]
    # The 200 OK to the REGISTER sent before the kill activates its expectation.
    reg = [r for r in k["table_after_register_200"] if r[1] == 5060]
    assert reg[0][2] == ["PERMANENT"] and 590 <= reg[0][3] <= 600
    # The 200 OK with SDP to the INVITE sent before the kill expects the answer's media.
    answer = [(d, p) for d, p, *_ in k["table_after_invite_200"] if d == "198.51.100.2"]
    assert answer == [("198.51.100.2", 6000), ("198.51.100.2", 6001)]
    # RTP used an expectation made before the kill; the BYE removed the rest, the de-registration its own.
    assert 5000 not in [p for _, p, *_ in k["table_after_rtp"]]
    assert [p for _, p, *_ in k["table_after_bye"]] == [5060]
    assert k["table_after_unregister"] == []
    for what in ("tracebacks", "internal_errors", "policy_verdicts", "lost_repeats"):
        assert k["log"][what] == 0, (what, k["log"])


def test_a_clean_stop_leaves_no_queue_and_the_close_no_helper(faults: dict) -> None:
    for phase in (faults["kill"], faults["enobufs"], faults["overload-open"]):
        assert phase["stop"]["exit"] == 0 and phase["stop"]["queues"] == []
        # The lab's nft ct helper objects still refer to it: left registered, disabled.
        assert ours(phase["stop"]["helpers"]) and not any(h["enabled"] for h in ours(phase["stop"]["helpers"]))
    assert faults["after_close"]["helpers"] == [] and faults["after_close"]["queues"] == []


def test_enobufs_is_noticed_logged_once_and_resynchronised(faults: dict) -> None:
    e = faults["enobufs"]
    assert "receive buffer 8192 bytes (helper.event_rcvbuf = 4096)" in e["rcvbuf_line"]
    assert e["calls_delivered"] == 12 and e["expectations_before"] == 24 and e["expectations_after_flush"] == 0
    (line,) = e["overflow_lines"]
    assert "expectation destroy events were lost; resynchronising" in line
    (resync,) = [line for line in e["resync_lines"] if "(lost events)" in line]
    removed = int(resync.split(" added, ")[1].split(" removed")[0])
    assert removed > 0  # expectations the shadow held whose destroy events never came
    assert e["alive"] and e["log"]["tracebacks"] == 0 and e["log"]["internal_errors"] == 0
    # The retransmitted INVITE and a new call get their expectations again.
    assert e["retransmit_delivered"] and e["new_call_delivered"]
    assert sorted(p for _, p, *_ in e["table_after"]) == [31000, 31001, 31400, 31401]


def test_overload_fail_open_accepts_what_the_queue_cannot_hold(faults: dict) -> None:
    o = faults["overload-open"]
    q0, q1 = o["queue_before"][0], o["queue_after"][0]
    assert o["alive"] and o["log"]["tracebacks"] == 0 and o["log"]["internal_errors"] == 0
    assert o["delivered"] == o["sent"]  # every INVITE went through, helped or not
    assert q1[5] == q0[5] and q1[6] == q0[6]  # fail-open counts nothing
    assert 0 < o["calls_with_media"] < o["sent"]  # some helped, the rest passed unhelped
    assert o["peak_waiting"] <= o["queue_maxlen"]
    p = o["paced"]
    assert p["delivered"] == p["sent"] and 0 < p["calls_with_media"] < p["sent"]
    assert p["queue_after"][0][5] == p["queue_before"][0][5] and p["dmesg_full"] == 0
    assert p["peak_waiting"] <= o["queue_maxlen"] and p["log"]["tracebacks"] == 0


def test_overload_fail_closed_drops_and_counts_it(faults: dict) -> None:
    o = faults["overload-closed"]
    q0, q1 = o["queue_before"][0], o["queue_after"][0]
    assert o["alive"] and o["log"]["tracebacks"] == 0 and o["log"]["internal_errors"] == 0
    dropped = q1[5] - q0[5]
    assert dropped > 0 and o["delivered"] < o["sent"]
    assert o["calls_with_media"] <= o["delivered"]
    assert o["peak_waiting"] <= o["queue_maxlen"]
    p = o["paced"]
    dropped = p["queue_after"][0][5] - p["queue_before"][0][5]
    assert dropped > 0 and 0 < p["calls_with_media"] <= p["delivered"] < p["sent"]
    assert p["peak_waiting"] <= o["queue_maxlen"] and p["log"]["tracebacks"] == 0
    # Killed afterwards with 3 packets waiting: dropped, as under fail-open; then with no
    # listener a packet bypasses the queue whatever the policy.
    (line,) = o["queue_while_stopped"]
    assert line[2] == 3 and o["queued_delivered_after_kill"] == 0
    assert o["killed_status"] == -9 and o["queue_after_kill"] == [] and o["invite_while_down"]
    assert o["media_while_down"] == []


def test_memory_stays_bounded_under_overload(faults: dict) -> None:
    for policy in ("open", "closed"):
        o = faults[f"overload-{policy}"]
        assert o["rss_kib_after"] < o["rss_kib_before"] + 32 * 1024, o
        assert o["paced"]["rss_kib_after"] < o["rss_kib_before"] + 32 * 1024, o
