"""helper.workers: the supervisor (readiness, SIGHUP, a dead worker restarted,
one that cannot start, SIGTERM) and the rulesets that spread masters over
the workers' helpers.

The supervisor runs for real - fork, signals, the workers' sd_notify
datagrams - in a child interpreter whose workers run a stand-in for the
daemon (``run``): the daemon itself needs nfnetlink_cthelper, which only the
VM kernels have (tests/reference/vm_guest.py runs it with two workers).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sipct.harness.ruleset import render_ruleset
from sipct.reference.config import load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "reference" / "examples" / "sipct-helper-workers.nft"

SUPERVISED = """
import os, signal, sys, time
import sipct.reference.daemon as daemon
from sipct.reference.config import parse_config
from sipct.reference.workers import supervise

MODE = sys.argv[1]

def run(config, netns=None):
    # A stand-in worker: says READY=1 as the daemon does, then serves until SIGTERM.
    if MODE == "cannot-start" and config.worker_index == 1:
        return 2
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    signal.signal(signal.SIGHUP, lambda *a: print(f"worker {config.worker_index}: SIGHUP", flush=True))
    daemon.notify(f"READY=1\\nSTATUS=helper {config.name}")
    print(f"worker {config.worker_index}: {config.name} queues {config.queues} pid {os.getpid()}", flush=True)
    while not stop:
        time.sleep(0.01)
    return 0

daemon.run = run
sys.exit(supervise(parse_config('[helper]\\nname = "sipct"\\nqueue = 3\\nworkers = 2\\n')))
"""


class Supervisor:
    def __init__(self, tmp_path: Path, mode: str = "serve") -> None:
        self.notify_path = tmp_path / "notify"
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.listener.bind(str(self.notify_path))
        self.listener.settimeout(20)
        self.out = open(tmp_path / "out", "w+")
        self.proc = subprocess.Popen([sys.executable, "-c", SUPERVISED, mode], stdout=self.out,
                                     stderr=subprocess.STDOUT, env=dict(os.environ, NOTIFY_SOCKET=str(self.notify_path)))

    def notified(self) -> str:
        return self.listener.recv(4096).decode()

    def text(self) -> str:
        self.out.flush()
        return Path(self.out.name).read_text()

    def wait_for(self, pattern: str, count: int = 1) -> str:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if len(re.findall(pattern, self.text())) >= count:
                return self.text()
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} x{count} in: {self.text()}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.listener.close()
        self.out.close()


@pytest.fixture
def supervisor(tmp_path):
    made: list[Supervisor] = []

    def start(mode: str = "serve") -> Supervisor:
        made.append(Supervisor(tmp_path, mode))
        return made[-1]

    yield start
    for s in made:
        s.close()


def worker_pids(text: str) -> dict[int, int]:
    return {int(i): int(pid) for i, pid in re.findall(r"worker (\d): \S+ queues \S+ pid (\d+)", text)}


def test_ready_once_every_worker_is_and_sigterm_stops_them_all(supervisor) -> None:
    s = supervisor()
    ready = s.notified()
    assert ready.startswith("READY=1") and "2 workers (sipct-0, sipct-1) on queue(s) 3,4" in ready
    text = s.wait_for(r"worker \d: sipct-\d queues", 2)
    assert "worker 0: sipct-0 queues (3,)" in text and "worker 1: sipct-1 queues (4,)" in text
    pids = worker_pids(text)
    s.proc.send_signal(15)
    assert s.proc.wait(20) == 0
    assert s.notified() == "STOPPING=1"
    for pid in pids.values():
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def test_sighup_reaches_every_worker(supervisor) -> None:
    s = supervisor()
    s.notified()
    s.wait_for(r"worker \d: sipct-\d queues", 2)
    s.proc.send_signal(1)
    text = s.wait_for(r"worker \d: SIGHUP", 2)
    assert "worker 0: SIGHUP" in text and "worker 1: SIGHUP" in text
    s.proc.send_signal(15)
    assert s.proc.wait(20) == 0


def test_a_worker_that_dies_is_started_again(supervisor) -> None:
    s = supervisor()
    s.notified()
    first = worker_pids(s.wait_for(r"worker \d: sipct-\d queues", 2))
    os.kill(first[1], 9)
    text = s.wait_for(r"worker 1: sipct-1 queues", 2)
    assert "worker 1 (pid %d) ended (signal SIGKILL): restarting it" % first[1] in text
    assert worker_pids(text)[1] != first[1] and worker_pids(text)[0] == first[0]
    assert s.proc.poll() is None
    s.proc.send_signal(15)
    assert s.proc.wait(20) == 0


def test_a_worker_that_cannot_start_stops_the_others_with_its_status(supervisor) -> None:
    s = supervisor("cannot-start")
    assert s.proc.wait(20) == 2
    text = s.text()
    assert "worker 1 could not start (exit status 2): stopping every worker" in text
    assert s.notified() == "STOPPING=1"  # and never READY=1


# --- the rulesets ------------------------------------------------------------------------------------

@pytest.fixture
def netns():
    if os.geteuid() != 0 or shutil.which("nft") is None:
        pytest.skip("needs root and nft")
    name = f"sipct-workers{os.getpid()}-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=30)


def _load(netns: str, ruleset: str) -> subprocess.CompletedProcess:
    # The running kernel has no userspace helpers: the objects take the kernel's "sip" to load.
    return subprocess.run(["ip", "netns", "exec", netns, "nft", "-f", "-"], input=ruleset, capture_output=True,
                          text=True, timeout=30)


def test_the_example_names_the_helpers_two_workers_register_and_loads(netns) -> None:
    text = EXAMPLE.read_text()
    config = parse_config('[helper]\nworkers = 2\n')
    assert sorted(set(re.findall(r'type "([^"]+)"', text))) == list(config.names) == ["sip-0", "sip-1"]
    assert load_config(ROOT / "reference" / "examples" / "sipct-helper.toml").workers == 1
    done = _load(netns, re.sub(r'type "sip-\d"', 'type "sip"', text))
    assert done.returncode == 0, done.stderr
    listed = subprocess.run(["ip", "netns", "exec", netns, "nft", "list", "table", "inet", "sipct_helper"],
                            capture_output=True, text=True, timeout=30).stdout
    assert listed.count("jhash") == 12


def test_the_lab_ruleset_spreads_over_every_worker_and_loads(netns) -> None:
    ruleset = render_ruleset([5060, 5070], True, ["sipct-0", "sipct-1", "sipct-2"])
    assert re.findall(r'type "([^"]+)" protocol udp', ruleset) == ["sipct-0", "sipct-1", "sipct-2"]
    assert 'mod 3 seed 0x0 map { 0 : "sip-udp-0", 1 : "sip-udp-1", 2 : "sip-udp-2" }' in ruleset
    done = _load(netns, re.sub(r'type "sipct-\d"', 'type "sip"', ruleset))
    assert done.returncode == 0, done.stderr
    assert render_ruleset([5060], True, "sipct") == render_ruleset([5060], True, ["sipct"])
