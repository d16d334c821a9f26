"""SIGTERM, SIGINT and SIGHUP at random moments of `sipct run` and `sipct
conformance` leave no namespace and no process behind, and sipct says what it
was doing.

Runs six at a time, each signalled once: a random signal, sent to the
process or to its whole group, at a random delay counted from the start or
from its first namespace (so that most land in the labs' life: build, sends,
waits, TCP connects, lab switches, teardown).  Seeded; at most SIPCT_KILLS
runs (default 300) within SIPCT_KILL_SECONDS (default 80, calibration
included: some 120-250 runs on two loaded cores); SIPCT_KILL_SEED (default
18) picks them.  A long run: SIPCT_KILLS=3000 SIPCT_KILL_SECONDS=1800.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.kill import SIGNALS, Job, clean_up_after, summary

pytestmark = pytest.mark.netns

KILLS = int(os.environ.get("SIPCT_KILLS", "300"))
BUDGET = float(os.environ.get("SIPCT_KILL_SECONDS", "80"))
SEED = int(os.environ.get("SIPCT_KILL_SEED", "18"))
AT_ONCE = 6
HANG = 60.0  # seconds a signalled run may take to end before it counts as hung
MIN_INTERRUPTED = 40  # fewer runs ended by the signal than this: the test tested nothing

# Several dialogs with other hosts each: the run switches labs between them.
RUN = ["run", "--json", "spec/examples/invite-cancel.yaml",
       "conformance/scenarios/rfc3665/session-retransmissions.yaml",  # two 0.5 s waits
       "conformance/scenarios/rfc3665/session-successful-tcp.yaml"]  # TCP connects
# Many short sends and TCP connections, no waits.
SENDS = ["run", "--json", "spec/examples/invite-audio-video.yaml", "spec/examples/invite-bad-media-port.yaml",
         "spec/examples/tcp-coalesced-split.yaml", "conformance/scenarios/rfc3665/call-cancel-tcp.yaml",
         "conformance/scenarios/rfc3665/registration-successful-tcp.yaml"]
CURATED = ["spec/examples/invite-cancel.yaml", "conformance/scenarios/rfc3665/call-cancel-tcp.yaml"]


def conformance(folder: Path) -> list[str]:
    folder.mkdir(exist_ok=True)
    return ["conformance", "--no-curated", *(a for c in CURATED for a in ("--scenarios", c)),
            "--no-reproducers", "--examples", "5", "--seed", "1", "--json", str(folder / "report.json"),
            "--out", str(folder)]


def nft_tables() -> str:
    return subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout


def calibrate(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(seconds from the start to the first namespace, seconds from there to the end)."""
    job = Job(argv, SIGNALS[0], False, True, float("inf"), "calibration")
    job.start(env)
    while job.proc.poll() is None:
        job.due(time.monotonic(), set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set())
        time.sleep(0.002)
    end = time.monotonic()
    job.finish()
    assert job.returncode == 0, f"`sipct {' '.join(argv)}` failed uninterrupted: {job.stderr[-2000:]}"
    assert job.lab_seen is not None
    return job.lab_seen - job.started, end - job.lab_seen


def test_signals_at_random_moments_leave_nothing_behind(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    env = dict(os.environ)
    tables_before = nft_tables()
    started = time.monotonic()
    calibration = conformance(tmp_path / "calibration")
    # (share of the runs, command, its calibrated times)
    shapes = [(0.4, RUN, calibrate(RUN, env)), (0.35, SENDS, calibrate(SENDS, env)),
              (0.25, calibration, calibrate(calibration, env))]

    def next_job(i: int) -> Job:
        _, argv, (before_lab, in_lab) = rng.choices(shapes, weights=[s[0] for s in shapes])[0]
        if argv is calibration:
            argv = conformance(tmp_path / f"job{i}")
        # From the start (the imports, the first lab); anywhere in the labs'
        # life; near its end, where the last lab is removed.  A little past the
        # calibrated end: a loaded machine runs longer.
        where = rng.random()
        after_lab = where >= 0.1
        if not after_lab:
            delay = rng.uniform(0, before_lab + 1.2 * in_lab)
        elif where < 0.75:
            delay = rng.uniform(0, 1.2 * in_lab)
        else:
            delay = rng.uniform(0.8 * in_lab, 1.3 * in_lab)
        return Job(argv, rng.choice(SIGNALS), rng.random() < 0.5, after_lab, delay, f"{SEED}-{i}")

    done: list[Job] = []
    running: list[Job] = []
    launched = 0
    failures: list[str] = []
    while running or (launched < KILLS and time.monotonic() - started < BUDGET):
        while len(running) < AT_ONCE and launched < KILLS and time.monotonic() - started < BUDGET:
            job = next_job(launched)
            job.start(env)
            running.append(job)
            launched += 1
        now = time.monotonic()
        netns = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
        for job in list(running):
            if job.signalled is None and job.proc.poll() is None and job.due(now, netns):
                job.send()
            if job.proc.poll() is not None:
                running.remove(job)
                job.finish()
                done.append(job)
                if job.leftovers:
                    failures.append(f"{job.describe()} left {', '.join(job.leftovers)}; stderr: {job.stderr[-800:]}")
                    clean_up_after(job)
                elif job.returncode == 128 + job.signum and ("Traceback" in job.stderr or
                                                             "interrupted by" not in job.stderr):
                    failures.append(f"{job.describe()}: no clean report of the interruption: {job.stderr[-1500:]}")
            elif job.signalled is not None and now - job.signalled > HANG:
                failures.append(f"{job.describe()}: still running {HANG:.0f} s after the signal")
                job.proc.kill()
        time.sleep(0.002)
    seconds = time.monotonic() - started
    report = summary(done, seconds)
    print(report)
    assert not failures, f"{len(failures)} of {len(done)} runs went wrong:\n" + "\n".join(failures[:10]) + \
        "\n" + report
    assert nft_tables() == tables_before, "the initial namespace's nftables tables changed"
    assert sum(j.returncode == 128 + j.signum for j in done) >= MIN_INTERRUPTED, report
