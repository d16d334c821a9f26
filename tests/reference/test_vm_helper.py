"""The reference helper against a real kernel: Debian's 6.1.192 in a VM.

The running kernel has no nfnetlink_cthelper (CONFIG_NETFILTER_NETLINK_GLUE_CT
is off), so these boot linux-image-6.1.0-56-amd64 with virtme-ng:

* ``sipct run --helper reference --kernel 6.1.0-56-amd64`` on two examples:
  each dialog through nf_conntrack_sip and through ``sipct helper``
  (registered as "sipct" in a lab of its own, sipct.harness.threeway), both
  compared with the spec step by step;
* vm_guest.py: a restart of the helper in the middle of a registration, and
  SIGTERM (one more boot);
* ``sipct conformance --helper reference --kernel``: the examples, two RFC 3665
  flows and a few generated dialogs three-way, with the registry - the one boot
  of these that the default run (and so CI) makes; the others need ``-m vm``.

One known difference is allowed, and only where it belongs (the registry's
``reference-activation-replaces-the-expectation``): when a 200 OK activates a
registration (refresh_signalling_expectation()), the kernel helper clears
NF_CT_EXPECT_INACTIVE in place, while a userspace helper can only replace
the expectation (ctnetlink cannot change flags), so the kernel reports a
destroy and a new event the spec does not predict. The table, flags and
timeouts must still agree.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sipct.cli.main import examples_dir

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (the guest runs the netns lab as root)"),
]

HERE = Path(__file__).resolve().parent
RELEASE = "6.1.0-56-amd64"  # linux-image-6.1.0-56-amd64 (6.1.192)
# The two NAT dialogs send RTP from outside first: it reaches the phone only through
# the helper's NAT expectation (nf_nat_sip_expected() maps the router's address to it).
DIALOGS = ("register.yaml", "invite-audio-video.yaml", "nat-register-incoming-call.yaml", "nat-ipv6-masquerade.yaml")
TIMEOUT = 900.0


@pytest.fixture(scope="module")
def installed_kernel():
    """6.1.192 with vng, or a skip that says what to install."""
    from tests.support.vm_guest import installed_kernel

    return installed_kernel(RELEASE)


@pytest.fixture(scope="module")
def kernel(request: pytest.FixtureRequest, installed_kernel):
    """For the boots beyond the default run's one (the three-way suite below)."""
    from tests.support.vm_guest import vm_selected

    if not vm_selected(request.config):
        pytest.skip("boots a VM (2-5 minutes under TCG): run `pytest -m vm tests/reference`")
    return installed_kernel


@pytest.fixture(scope="module")
def three_way(kernel) -> list[dict]:
    """`sipct run --helper reference --kernel 6.1.0-56-amd64 --json` on DIALOGS."""
    sipct = Path(sys.executable).parent / "sipct"
    proc = subprocess.run([str(sipct), "run", "--helper", "reference", "--kernel", RELEASE, "--json",
                           *(str(examples_dir() / d) for d in DIALOGS)],
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_run_shows_spec_kernel_and_reference(three_way) -> None:
    assert [r["dialog"] for r in three_way] == ["register", "invite-audio-video", "nat-register-incoming-call",
                                                "nat-ipv6-masquerade"]
    for result in three_way:
        assert result["format"] == "sipct.run/1" and result["helper"] == "reference"
        assert result["vm"]["release"] == RELEASE
        assert result["agree"], result  # spec = kernel helper
        assert result["reference"]["helper"] == "sipct"
        for step in result["steps"]:
            assert "reference" in step and "delivered" in step["reference"]


def test_the_reference_agrees_but_for_the_activation_events(three_way) -> None:
    """Verdicts, payloads, tables, flags and timeouts as the spec predicts;
    events too, except the replace at the activating 200 OK."""
    for result in three_way:
        for step in result["steps"]:
            for div in step["reference_divergences"]:
                allowed = (div["aspect"] == "events" and "register-response.refresh" in step["spec"]["rules"])
                assert allowed, f"{result['dialog']} step {step['index']}: {div}"
    register = three_way[0]
    activation = register["steps"][1]
    assert "register-response.refresh" in activation["spec"]["rules"]
    assert [e["text"] for e in activation["reference"]["expectations"]] == \
        [e["text"] for e in activation["kernel"]["expectations"]]
    kinds = sorted(ev["kind"] for ev in activation["reference"]["events"])
    assert kinds == ["destroy", "new"]
    assert three_way[1]["reference"]["agree"]


@pytest.mark.parametrize(("dialog", "rtp", "expectation"), [
    ("nat-register-incoming-call", "udp registrar:12000 -> phone:16000",
     "udp registrar:* -> 203.0.113.1:16000 audio nat phone:16000"),
    ("nat-ipv6-masquerade", "udp pbx:9000 -> phone:20000", "udp pbx:* -> [2001:db8:b::1]:20000 audio nat phone:20000"),
])
def test_rtp_flows_through_the_reference_helper_s_nat_expectations(three_way, dialog, rtp, expectation) -> None:
    """RTP from outside, before the phone sent any, is addressed to the router:
    only the reference helper's NAT expectation (CTA_EXPECT_NAT, expectfn "sip")
    brings it to the phone - delivered there with the bytes sent, and the
    expectation used up (its destroy event), as with the kernel's helper."""
    (result,) = [r for r in three_way if r["dialog"] == dialog]
    index = next(i for i, s in enumerate(result["steps"]) if s["step"].startswith(rtp + ":"))
    before, step = result["steps"][index - 1], result["steps"][index]
    assert expectation in [e["text"] for e in before["reference"]["expectations"]]
    assert step["reference"]["delivered"] and step["kernel"]["delivered"]
    assert step["reference_divergences"] == [], step["reference_divergences"]
    assert {"kind": "destroy", "expectation": expectation} in [
        {"kind": ev["kind"], "expectation": ev["expectation"]} for ev in step["reference"]["events"]]
    assert expectation not in [e["text"] for e in step["reference"]["expectations"]]


# The modules vm_guest.py needs (tests/support/vm_guest.py loads them).
LIFECYCLE_MODULES = ("nf_conntrack_sip", "nf_tables", "nft_ct", "nf_conntrack_netlink", "nfnetlink_queue",
                     "nfnetlink_cthelper")


@pytest.fixture(scope="module")
def lifecycle(kernel):
    """vm_guest.py in one more boot."""
    from tests.support.vm_guest import guest_result

    with guest_result(kernel, HERE / "vm_guest.py", LIFECYCLE_MODULES, TIMEOUT, name="ref") as data:
        yield data


def test_the_guest_ran_both_helpers(lifecycle) -> None:
    assert "error" not in lifecycle, lifecycle.get("error", "") + lifecycle.get("log", "")[-3000:]
    assert lifecycle["uname"] == RELEASE and lifecycle["missing_modules"] == []
    # nf_conntrack_sip owns "sip"; the reference helper runs next to it as "sipct".
    assert "nf_conntrack_sip" in lifecycle["lsmod"] and "nfnetlink_cthelper" in lifecycle["lsmod"]


def test_a_restart_keeps_the_registration(lifecycle) -> None:
    r = lifecycle
    assert r["first_exit"] == 0
    # While the helper is down the expectation stays in the kernel.
    assert [(d, p) for d, p, _ in r["table_while_down"]] == [("192.0.2.2", 5060)]
    after_register, after_ok, _, after_unbind_ok = r["steps"]
    assert all(s["delivered"] for s in r["steps"])
    assert after_register["table"][0][2] == ["INACTIVE", "PERMANENT"]
    assert after_register["table"][0][4] == "sipct"
    # The restarted helper knew the REGISTER's CSeq (private data): the 200 OK activated it.
    (dst, port, flags, timeout, _), = after_ok["table"]
    assert (dst, port, flags) == ("192.0.2.2", 5060, ["PERMANENT"]) and 590 <= timeout <= 600
    assert after_unbind_ok["table"] == []  # and the unbinding 200 OK removed it


def test_a_restart_in_a_tcp_call_behind_nat66_keeps_the_sequence_adjustment(lifecycle) -> None:
    """The new process adopts the TCP master with the kernel's seqadj record
    (CTA_SEQ_ADJ_*) and writes the next one over ctnetlink from it: the ACK
    and BYE it rewrites, and the 200 OK after them, reach real TCP stacks at
    the sequence numbers the spec predicts."""
    r = lifecycle["tcp_nat_restart"]
    assert r["first_exit"] == 0 and r["exit_code"] == 0, r["log"][-3000:]
    assert r["agree"], r["divergences"]
    # Step 3 (ACK, BYE) moves by what the old process recorded for the phone's stream,
    # step 4 (the BYE's 200) by what the new one recorded for the PBX's (step 2).
    assert r["shifts"][3] == [-4] and r["shifts"][4] == [1]
    ready = re.findall(r"ready: .*; (\d+) expectation\(s\) of (\d+) master\(s\) taken over", r["log"])
    assert len(ready) == 2 and ready[1][1] == "1", ready  # the second process took the call's master over
    # This guest loads no nf_nat_sip (LIFECYCLE_MODULES): the daemon falls back to nat-follow-master,
    # which ctnetlink accepts for the call's NAT expectations (their tables agree with the spec's).
    assert "NAT expectfn nat-follow-master" in r["log"] and "nf_nat_sip is loadable" in r["log"]
    assert "Traceback" not in r["log"]


def test_sigterm_unbinds_and_leaves_a_referenced_helper_disabled(lifecycle) -> None:
    assert lifecycle["exit_code"] == 0
    # The lab's nft ct helper objects still referred to it: registered, disabled.
    ours = [h for h in lifecycle["helpers_after_stop"] if h["name"] == "sipct"]
    assert ours and not any(h["enabled"] for h in ours)
    assert "left registered, disabled" in lifecycle["log"]
    # Once the lab was gone it was unregistered.
    assert lifecycle["helpers_after_close"] == []


def test_two_workers_share_the_masters_and_agree_with_the_spec(lifecycle) -> None:
    w = lifecycle["workers"]
    assert w["names"] == ["sipct-0", "sipct-1"] and w["children"] == 2
    for rounds in w["rounds"]:
        assert [d["dialog"] for d in rounds] and all(not d["divergences"] for d in rounds), rounds
        # The ruleset's hash gave masters to both workers.
        assert {h for d in rounds for h in d["helpers"]} == {"sipct-0", "sipct-1"}, rounds


def test_a_killed_worker_is_restarted_and_sigterm_stops_them_all(lifecycle) -> None:
    w = lifecycle["workers"]
    assert w["restarted"] and w["supervisor_alive"], w["log"][-3000:]
    assert "worker 0 (pid" in w["log"] and "ended (signal SIGKILL): restarting it" in w["log"]
    assert w["exit_code"] == 0
    # The lab's nft objects still named them: each worker left its helpers registered but disabled.
    assert w["helpers_after_stop"] == [], w["log"][-3000:]
    assert "Traceback" not in w["log"]


def test_the_three_way_suite_keeps_the_daemons_log(installed_kernel, tmp_path, capsys) -> None:
    """`sipct conformance --helper reference --kernel`: the examples and curated
    dialogs (UDP, TCP, IPv6, TCP over IPv6 behind NAT) and a few generated
    ones through both helpers in one boot; no unregistered divergence of
    either, and the daemon's config and
    log are copied out of the VM. This is the default run's (and CI's) proof
    that the reference helper works against a real kernel: one boot, 3-5
    minutes under TCG."""
    from sipct.cli.main import main
    from sipct.conformance.corpus import SCENARIOS
    from sipct.spec.dialog import Send, load_dialog

    examples = sorted(examples_dir().glob("*.yaml"))
    scenarios = [*examples, SCENARIOS / "rfc3665" / "session-successful-tcp.yaml",
                 SCENARIOS / "rfc3665" / "session-ipv6.yaml", SCENARIOS / "nat" / "ipv6-tcp-seq-adjust.yaml"]
    referenced = len(scenarios)
    registering = sum(1 for p in examples if any(isinstance(s, Send) and s.payload.startswith(b"REGISTER ")
                                                 for s in load_dialog(p).steps))
    report, out_dir = tmp_path / "matrix.json", tmp_path / "out"
    args = ["conformance", "--helper", "reference", "--kernel", RELEASE, "--no-host", "--no-curated",
            "--examples", "4", "--seed", "3", "--out", str(out_dir), "--json", str(report)]
    for path in scenarios:
        args += ["--scenarios", str(path)]
    status = main(args)
    out = capsys.readouterr().out
    (k,) = json.loads(report.read_text())["kernels"]
    assert status == 0, (k.get("error"), out[-3000:])
    assert k["divergences"]["unregistered"] == 0 and k["reference"]["divergences"]["unregistered"] == 0
    assert k["reference"]["dialogs"]["curated"] == referenced and k["reference"]["dialogs"]["generated"] >= 1
    # Agreeing completely: all but the registrations (their registered activation events).
    assert k["reference"]["agreeing"]["curated"] >= referenced - registering
    (kept,) = k["reference_logs"]
    assert Path(kept) == out_dir / f"{RELEASE}-reference-helper"
    log = (Path(kept) / "helper.log").read_text()
    assert "ready: profile 6.1.192" in log and "stopping" in log
    assert "Traceback" not in log and " WARNING " not in log
    assert 'name = "sipct"' in (Path(kept) / "helper.toml").read_text()
    assert f"{RELEASE}: the reference helper's config and log: {kept}" in out
