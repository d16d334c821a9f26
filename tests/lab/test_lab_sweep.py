"""Labs left by SIGKILL: the next lab-making command and `sipct clean` remove
them, and never a live run's."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from sipct.harness.labns import LabName, lab_prefix, process_start, process_stat
from sipct.netlink.netns import create_netns, remove_netns
from sipct.harness.sweep import find_labs, remove_stale_labs

from tests.support.kill import MARK, REPO, SIPCT, marked, namespaces_of

pytestmark = pytest.mark.netns

SLOW = "conformance/scenarios/slow/registration-unanswered-expires.yaml"  # waits 198 s
QUICK = "spec/examples/invite-cancel.yaml"


def sipct(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SIPCT, *args], capture_output=True, text=True, cwd=REPO, timeout=120)


def start_slow_run(mark: str = "sweep") -> tuple[subprocess.Popen[bytes], list[str]]:
    """A `sipct run` in its lab's long wait; its lab's namespaces."""
    proc = subprocess.Popen([SIPCT, "run", "--json", SLOW], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=REPO, env={**os.environ, MARK: mark})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        names = namespaces_of(proc.pid)
        if any(n.endswith("-router") for n in names) and len(names) == 3:
            return proc, names
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    pytest.fail(f"the run made no lab within 60 s: {namespaces_of(proc.pid)}")


def sigkill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def test_sipct_clean_lists_and_removes_the_lab_of_a_sigkilled_run() -> None:
    proc, names = start_slow_run()
    sigkill(proc)
    try:
        assert namespaces_of(proc.pid) == names  # what SIGKILL leaves

        listed = sipct("clean", "--dry-run")
        assert listed.returncode == 0, listed.stderr
        lab = names[0].rsplit("-", 1)[0]
        assert f"stale   {lab} (process {proc.pid} is gone)" in listed.stdout
        assert namespaces_of(proc.pid) == names  # a dry run removes nothing

        cleaned = sipct("clean")
        assert cleaned.returncode == 0, cleaned.stderr
        assert f"removed {lab} (process {proc.pid} is gone): " in cleaned.stdout
        assert "stale lab(s) removed" in cleaned.stdout.splitlines()[-1]
        assert namespaces_of(proc.pid) == []
    finally:
        for name in namespaces_of(proc.pid):
            remove_netns(name)


def test_the_next_run_removes_the_lab_of_a_sigkilled_run() -> None:
    proc, names = start_slow_run()
    sigkill(proc)
    try:
        run = sipct("run", "--json", QUICK)
        assert run.returncode == 0, run.stderr
        assert f"sipct: removed a lab left behind: {names[0].rsplit('-', 1)[0]}" in run.stderr
        assert namespaces_of(proc.pid) == []
    finally:
        for name in namespaces_of(proc.pid):
            remove_netns(name)


def test_a_live_runs_lab_is_left_alone() -> None:
    proc, names = start_slow_run()
    try:
        cleaned = sipct("clean")
        assert cleaned.returncode == 0, cleaned.stderr
        assert f"kept    {names[0].rsplit('-', 1)[0]} (process {proc.pid} runs)" in cleaned.stdout
        run = sipct("run", "--json", QUICK)
        assert run.returncode == 0, run.stderr
        assert namespaces_of(proc.pid) == names and proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 128 + signal.SIGTERM
    assert namespaces_of(proc.pid) == []


# -- how the sweeper decides, on namespaces with a prefix of this test's own ------------------------


@pytest.fixture
def prefix() -> str:
    # Not "sipct-": the labs of runs going on at the same time stay out of these tests.
    return f"sipcttest{os.getpid()}-"


def made(prefix: str, *names: str) -> list[str]:
    full = [f"{prefix}{n}" for n in names]
    for name in full:
        create_netns(name)
    return full


def gone_pid() -> int:
    dead = subprocess.Popen(["true"])
    dead.wait()
    return dead.pid


def test_the_maker_decides_live_or_stale(prefix: str) -> None:
    me, start, dead = os.getpid(), process_start(os.getpid()), gone_pid()
    zombie = subprocess.Popen(["true"])
    while (process_stat(zombie.pid) or ("Z",))[0] != "Z":  # exited, and not reaped before the sweep
        time.sleep(0.01)
    names = made(prefix, f"{me}-{start}-00000001-router",  # this very process
                 f"{me}-{start + 1}-00000002-router",  # this pid, another process: the pid was reused
                 f"{dead}-{start}-00000003-router", f"{dead}-{start}-00000003-h0",  # a gone process, two namespaces
                 f"{me}-00000004-router",  # the old form, pid alive: cannot tell, so kept
                 f"{dead}-00000005-router",  # the old form, pid free
                 f"{zombie.pid}-{process_start(zombie.pid)}-00000006-router",  # killed, not reaped yet
                 "not-a-lab")
    try:
        labs = {lab.lab[len(prefix):]: lab for lab in find_labs(prefix)}
        assert {k: v.live for k, v in labs.items()} == {
            f"{me}-{start}-00000001": True, f"{me}-{start + 1}-00000002": False,
            f"{dead}-{start}-00000003": False, f"{me}-00000004": True, f"{dead}-00000005": False,
            f"{zombie.pid}-{process_start(zombie.pid)}-00000006": False}
        assert labs[f"{dead}-{start}-00000003"].namespaces == sorted(names[2:4])
        assert "later process" in labs[f"{me}-{start + 1}-00000002"].why

        removed = [ns for lab in remove_stale_labs(prefix=prefix) if not lab.live for ns in lab.namespaces]
        left = sorted(n for n in os.listdir("/run/netns") if n.startswith(prefix))
        assert sorted(removed) == sorted(names[1:4] + [names[5], names[6]])
        assert left == sorted([names[0], names[4], names[7]])
    finally:
        zombie.wait()
        for name in names:
            remove_netns(name)


def test_processes_left_in_a_stale_lab_are_ended(prefix: str) -> None:
    (name,) = made(prefix, f"{gone_pid()}-1-0000000a-router")
    mark = f"sweep-{os.getpid()}"
    sleeper = subprocess.Popen(["ip", "netns", "exec", name, "sleep", "600"], env={**os.environ, MARK: mark})
    try:
        deadline = time.monotonic() + 10
        while not (stale := find_labs(prefix)[0]).processes and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stale.processes == [sleeper.pid]
        remove_stale_labs(prefix=prefix)
        assert sleeper.wait(10) == -signal.SIGTERM
        assert marked(mark) == [] and not os.path.exists(f"/run/netns/{name}")
    finally:
        sleeper.kill()
        remove_netns(name)


def test_lab_names_carry_pid_and_start_time() -> None:
    name = LabName.parse(f"{lab_prefix('0123abcd')}-router")
    assert name is not None
    assert (name.pid, name.start, name.token, name.role) == (os.getpid(), process_start(os.getpid()), "0123abcd",
                                                              "router")
    old = LabName.parse("sipct-123-12345678-h0")
    assert old is not None and (old.pid, old.start, old.token, old.role) == (123, None, "12345678", "h0")
    assert LabName.parse("sipct-t123-abc") is None  # a test's own namespace (tests/netlink)
