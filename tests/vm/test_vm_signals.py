"""A signal to `sipct run --kernel` / `sipct conformance --kernel` while QEMU
boots or while the guest runs ends QEMU too, and leaves no work folder.

vng runs in a session of its own (sipct.harness.groups): a signal to sipct
does not reach QEMU, sipct has to end it.  Three boots, so only with the vm
marker (`pytest -m vm tests/vm/test_vm_signals.py`).
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest

from tests.support.kill import Job, marked

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (the guest runs the netns lab as root)"),
]

SEED = int(os.environ.get("SIPCT_KILL_SEED", "18"))
DIALOG = "spec/examples/invite-cancel.yaml"


def workdir_of(mark: str) -> Path | None:
    """The run's sipct-vm-* folder: vng's working directory."""
    for pid in marked(mark):
        try:
            cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
        except OSError:
            continue
        if cwd.name.startswith("sipct-vm-"):
            return cwd
    return None


@pytest.mark.parametrize("case", ["run, booting", "run, guest running", "conformance, guest running"])
def test_a_signal_during_a_vm_run_ends_qemu_too(case: str, kernel_6_1_192, second_boot, tmp_path: Path) -> None:
    rng = random.Random(f"{SEED}-{case}")
    command, moment = case.split(", ")
    argv = (["run", "--json", "--kernel", str(kernel_6_1_192.vmlinuz), DIALOG] if command == "run" else
            ["conformance", "--kernel", str(kernel_6_1_192.vmlinuz), "--no-host", "--no-curated", "--no-reproducers",
             "--examples", "3", "--out", str(tmp_path), "--json", str(tmp_path / "report.json")])
    signum = rng.choice([signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
    job = Job(argv, signum, rng.random() < 0.5, False, 0.0, f"vm-{SEED}-{case}")
    job.start(dict(os.environ))
    workdir = None
    deadline = time.monotonic() + 400
    # booting: a few seconds after vng started; guest running: once the guest has started sipct
    ready = (lambda w: True) if moment == "booting" else (lambda w: (w / "share" / "t.modules").exists())
    while job.proc.poll() is None and time.monotonic() < deadline:
        workdir = workdir or workdir_of(job.mark)
        if workdir is not None and ready(workdir):
            break
        time.sleep(0.1)
    assert workdir is not None and job.proc.poll() is None, f"{case}: never got there"
    time.sleep(rng.uniform(1, 4))
    job.send()
    try:
        job.proc.wait(60)
    finally:
        job.proc.kill()
    job.finish()
    assert job.leftovers == [], f"{job.describe()} left {job.leftovers}"
    assert job.returncode == 128 + signum, job.stderr
    assert f"interrupted by {signal.Signals(signum).name} during: " in job.stderr
    assert "kernel 6.1.0-56-amd64: " in job.stderr and "Traceback" not in job.stderr
    assert not workdir.exists()
