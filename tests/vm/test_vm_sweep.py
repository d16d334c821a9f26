"""VM guests left by a SIGKILLed run: the sweeper ends them and removes their
work folder, and never a live run's guest nor a process that is not one.

No VM is booted: the guest is a fake vng - a Python script called ``vng``,
started with the command line sipct gives the real one - that starts a fake
QEMU (a Python process called ``qemu-system-x86_64`` with the ``-fsdev``
sharing the folder) and sleeps.  The owner is a separate Python process that
makes the work folder and starts the guest with sipct's own functions
(``new_guest_workdir``, ``start_guest``), then is SIGKILLed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sipct.harness.labns import process_start, process_stat
from sipct.harness.sweep import GUEST_OWNER, GUEST_PREFIX, _shares, find_guests, remove_stale_guests
from sipct.harness.vmboot import vng_command
from sipct.harness.vmkernels import VmKernel

REPO = Path(__file__).resolve().parents[2]
SIPCT = str(Path(sys.executable).parent / "sipct")
RELEASE = "6.1.0-56-amd64"

FAKE_VNG = """\
#!{python}
# A stand-in for vng: starts a fake QEMU sharing --rwdir's folder, then waits (as vng waits for QEMU).
import subprocess, sys, time
share = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--rwdir="))
subprocess.Popen(["qemu-system-x86_64", "-c", "import time; time.sleep(600)", "-fsdev",
                  f"local,id=virtfs5,path={{share}},security_model=none,multidevs=remap"], executable=sys.executable)
time.sleep(600)
"""

# The owner: makes the work folder and starts the guest as run_in_vm does, prints both, then waits.
OWNER = """\
import subprocess, sys, time
from pathlib import Path
from sipct.harness.vmboot import new_guest_workdir, start_guest, vng_command
from sipct.harness.vmkernels import VmKernel
kernel = VmKernel(Path("/boot/vmlinuz-{release}"), "{release}", "{release} (fake)", Path("/lib/modules/{release}"))
workdir = new_guest_workdir(kernel.release)
share = workdir / "share"
share.mkdir()
(share / "guest.sh").write_text("true\\n")
with open(workdir / "vng.log", "wb") as log:
    proc = start_guest(vng_command(Path(sys.argv[1]), kernel, share), workdir, kernel.release,
                       stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
print(workdir, proc.pid, flush=True)
time.sleep(600)
""".format(release=RELEASE)


@dataclass
class FakeGuest:
    owner: subprocess.Popen[str]
    workdir: Path
    pgid: int

    def members(self) -> list[int]:
        """The group's processes that still run (zombies have ended)."""
        return group_members(self.pgid)

    def kill_owner(self) -> None:
        self.owner.send_signal(signal.SIGKILL)
        self.owner.wait(10)


def group_members(pgid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid and (process_stat(int(entry)) or ("Z",))[0] != "Z":
                    out.append(int(entry))
            except OSError:
                pass
    return out


def cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return [a.decode() for a in f.read().split(b"\0")[:-1]]


@pytest.fixture
def tmpdir_(tmp_path: Path) -> Path:
    """The temporary folder of the owners and the sweeper: the guests of
    runs going on at the same time (a VM matrix) stay out of these tests."""
    root = tmp_path / "tmp"
    root.mkdir()
    return root


@pytest.fixture
def fake_vng(tmp_path: Path) -> Path:
    path = tmp_path / "bin" / "vng"
    path.parent.mkdir()
    path.write_text(FAKE_VNG.format(python=sys.executable))
    path.chmod(0o755)
    return path


@pytest.fixture
def guest(fake_vng: Path, tmpdir_: Path) -> Iterator[FakeGuest]:
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(fake_vng)], stdout=subprocess.PIPE, text=True,
                             cwd=REPO, env={**os.environ, "TMPDIR": str(tmpdir_)})
    assert owner.stdout is not None
    workdir, pgid = owner.stdout.readline().split()
    fake = FakeGuest(owner, Path(workdir), int(pgid))
    try:
        deadline = time.monotonic() + 30
        while len(fake.members()) < 2 and time.monotonic() < deadline:  # vng and its QEMU
            time.sleep(0.05)
        assert len(fake.members()) == 2
        yield fake
    finally:
        owner.kill()
        owner.wait()
        try:
            os.killpg(fake.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_gone(pgid: int, seconds: float = 10.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := group_members(pgid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def test_the_guest_is_marked_with_its_owner_and_group(guest: FakeGuest, tmpdir_: Path) -> None:
    assert guest.workdir.parent == tmpdir_ and guest.workdir.name.startswith(GUEST_PREFIX)
    marker = json.loads((guest.workdir / GUEST_OWNER).read_text())
    assert marker["pid"] == guest.owner.pid and marker["start"] == process_start(guest.owner.pid)
    assert marker["pgid"] == guest.pgid and marker["kernel"] == RELEASE
    assert marker["share"] == str(guest.workdir / "share")
    vng = cmdline(guest.pgid)
    assert os.path.basename(vng[1]) == "vng" and f"--rwdir={guest.workdir / 'share'}" in vng  # as the real one


def test_the_guest_of_a_sigkilled_owner_is_ended_and_removed(guest: FakeGuest, tmpdir_: Path) -> None:
    guest.kill_owner()
    (found,) = find_guests(tmpdir_)
    assert not found.live and found.why == f"process {guest.owner.pid} is gone"
    assert found.processes == sorted(guest.members()) and found.groups == [guest.pgid]
    assert found.programs == ["qemu-system-x86_64", "vng"]

    (removed,) = remove_stale_guests(tmpdir=tmpdir_)
    assert removed.workdir == str(guest.workdir) and not removed.error
    assert wait_gone(guest.pgid, 1.0) == []  # SIGTERM ended both, well within the grace
    assert not guest.workdir.exists()
    assert find_guests(tmpdir_) == []


def test_a_live_owners_guest_is_left_alone(guest: FakeGuest, tmpdir_: Path) -> None:
    (found,) = remove_stale_guests(tmpdir=tmpdir_)
    assert found.live and found.why == f"process {guest.owner.pid} runs"
    time.sleep(0.2)
    assert len(guest.members()) == 2 and (guest.workdir / "share" / "guest.sh").exists()
    assert guest.owner.poll() is None


def test_sipct_clean_dry_run_lists_it_and_clean_ends_it(guest: FakeGuest, tmpdir_: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmpdir_)}
    kept = subprocess.run([SIPCT, "clean", "--dry-run"], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=60)
    assert kept.returncode == 0, kept.stderr
    line = (f"kept    guest {guest.workdir.name} (process {guest.owner.pid} runs): kernel {RELEASE}, "
            f"process group {guest.pgid} (qemu-system-x86_64, vng), {guest.workdir}")
    assert line in kept.stdout.splitlines()

    guest.kill_owner()
    listed = subprocess.run([SIPCT, "clean", "--dry-run"], capture_output=True, text=True, cwd=REPO, env=env,
                            timeout=60)
    assert listed.returncode == 0, listed.stderr
    line = (f"stale   guest {guest.workdir.name} (process {guest.owner.pid} is gone): kernel {RELEASE}, "
            f"process group {guest.pgid} (qemu-system-x86_64, vng), {guest.workdir}")
    assert line in listed.stdout.splitlines()
    assert "1 stale VM guest(s) to end and remove" in listed.stdout.splitlines()[-1]
    time.sleep(0.2)
    assert len(guest.members()) == 2 and guest.workdir.exists()  # a dry run ends nothing

    # What every run (`sipct run --kernel`, `sipct conformance --kernels`, ...) does first.
    swept = subprocess.run([sys.executable, "-c", "from sipct.harness.clean_cli import sweep_stale_labs; "
                            "sweep_stale_labs()"], capture_output=True, text=True, cwd=REPO, env=env, timeout=60)
    assert swept.returncode == 0, swept.stderr
    assert (f"sipct: ended a VM guest left behind: guest {guest.workdir.name} (process {guest.owner.pid} "
            f"is gone): kernel {RELEASE}, process group {guest.pgid}") in swept.stderr
    assert wait_gone(guest.pgid) == [] and not guest.workdir.exists()


def test_a_guest_killed_before_its_group_was_recorded_is_found_by_its_command_line(
        guest: FakeGuest, tmpdir_: Path) -> None:
    marker = guest.workdir / GUEST_OWNER
    data = json.loads(marker.read_text())
    marker.write_text(json.dumps({**data, "pgid": None}))  # as the marker is before start_guest records it
    guest.kill_owner()
    (found,) = find_guests(tmpdir_)
    assert not found.live and found.pgid is None and found.groups == [guest.pgid]
    remove_stale_guests(tmpdir=tmpdir_)
    assert wait_gone(guest.pgid) == [] and not guest.workdir.exists()


def dead_owner_marker(workdir: Path, pgid: int | None) -> None:
    """A marker written by a process that has exited since."""
    subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                    "from sipct.harness.sweep import write_guest_owner; "
                    "write_guest_owner(Path(sys.argv[1]), kernel='x', pgid=None if sys.argv[2] == '-' "
                    "else int(sys.argv[2]))", str(workdir), "-" if pgid is None else str(pgid)],
                   check=True, cwd=REPO)


def test_processes_that_are_not_the_guest_are_never_ended(tmpdir_: Path, fake_vng: Path) -> None:
    workdir = tmpdir_ / f"{GUEST_PREFIX}decoy"
    share = workdir / "share"
    share.mkdir(parents=True)
    sleep = "import time; time.sleep(600)"
    # The marker's group, but no vng or QEMU: a pid (and group) reused by something else.
    other = subprocess.Popen([sys.executable, "-c", sleep, f"--rwdir={share}"], start_new_session=True)
    # A vng, but sharing another folder: another run's guest.
    elsewhere = tmpdir_ / "elsewhere" / "share"
    vng = subprocess.Popen(vng_command(fake_vng, VmKernel(Path("/boot/x"), "x", "x", Path("/lib/modules/x")),
                                        elsewhere), start_new_session=True)
    try:
        dead_owner_marker(workdir, other.pid)
        deadline = time.monotonic() + 30
        while len(group_members(vng.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        (found,) = find_guests(tmpdir_)
        assert not found.live and found.pgid == other.pid and found.processes == [] and found.groups == []
        remove_stale_guests(tmpdir=tmpdir_)
        assert not workdir.exists()  # the folder of a gone owner goes
        time.sleep(0.3)
        assert other.poll() is None and len(group_members(vng.pid)) == 2
    finally:
        other.kill()
        other.wait()
        os.killpg(vng.pid, signal.SIGKILL)
        vng.wait()


def test_markers_of_another_boot_are_not_judged(tmpdir_: Path) -> None:
    # Inside a guest /tmp shows the host's folders: their owners' pids mean nothing there.
    workdir = tmpdir_ / f"{GUEST_PREFIX}otherboot"
    (workdir / "share").mkdir(parents=True)
    dead_owner_marker(workdir, None)
    marker = workdir / GUEST_OWNER
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "boot_id": "another-boot"}))
    (tmpdir_ / f"{GUEST_PREFIX}nomarker" / "share").mkdir(parents=True)  # made before markers existed
    assert find_guests(tmpdir_) == []
    remove_stale_guests(tmpdir=tmpdir_)
    assert workdir.exists() and (tmpdir_ / f"{GUEST_PREFIX}nomarker").exists()


def test_shared_folders_are_read_from_vng_and_qemu_command_lines() -> None:
    kernel = VmKernel(Path("/boot/vmlinuz-x"), "x", "x", Path("/lib/modules/x"))
    share = Path("/tmp/sipct-vm-abc/share")
    assert _shares(vng_command(Path("/v/bin/vng"), kernel, share)) == {str(share)}
    qemu = ["qemu-system-x86_64", "-fsdev", "local,id=virtfs1,path=/,security_model=none,readonly=on",
            "-fsdev", f"local,id=virtfs5,path={share}/,security_model=none,multidevs=remap"]
    assert _shares(qemu) == {"/", str(share)}
