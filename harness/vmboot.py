"""One boot with virtme-ng: the `vng` command (TCG, the shared folder, the
script it runs), QEMU's process group recorded in the work folder's owner
marker (sipct.harness.sweep ends a SIGKILLed owner's guest), the wait with
its boot and overall time-outs, and what the guest wrote read back as a
:class:`VmResult`.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sipct.harness.groups import start_group, stop_group
from sipct.harness.sweep import GUEST_PREFIX, write_guest_owner
from sipct.harness.vmkernels import MODULE, SETUP_HINT, VmError, VmKernel
from sipct.netlink.interrupts import doing, shielded

__all__ = [
    "DEFAULT_BOOT_TIMEOUT",
    "VmResult",
    "boot_guest",
    "boot_script",
    "find_vng",
    "new_guest_workdir",
    "start_guest",
    "timeout_for",
    "vng_command",
]

VNG_TESTED = "1.42"  # the virtme-ng version this runner was written against (pyproject: sipct[vm])
DEFAULT_BOOT_TIMEOUT = 240.0  # seconds until the guest runs its script


def find_vng() -> Path:
    """The `vng` command: this venv's, else the PATH's; VmError with the fix if absent."""
    candidates = [Path(sys.prefix) / "bin" / "vng"]
    found = shutil.which("vng")
    if found:
        candidates.append(Path(found))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            break
    else:
        raise VmError(f"virtme-ng (vng) is not installed: run {SETUP_HINT}, or "
                      f"`.venv/bin/pip install 'virtme-ng=={VNG_TESTED}'` plus `apt-get install "
                      "qemu-system-x86 busybox-static`")
    if shutil.which("qemu-system-x86_64") is None:
        raise VmError(f"QEMU is not installed (no qemu-system-x86_64): run {SETUP_HINT} "
                      "or `apt-get install qemu-system-x86`")
    if not any(shutil.which(b) for b in ("busybox", "busybox-static", "busybox.static")):
        raise VmError(f"busybox is not installed (virtme-ng builds the guest's initramfs with it): "
                      f"run {SETUP_HINT} or `apt-get install busybox-static`")
    return c


@dataclass
class VmResult:
    """What one boot produced.  ``results`` are the guest's ``sipct run --json``
    objects (format sipct.run/1), one per dialog, with the host's dialog paths
    as their ``source``."""

    kernel: VmKernel
    module_params: dict[str, object]
    exit_code: int  # the guest sipct's exit status (0 agree, 1 diverged, 2 error)
    json: Any  # the parsed JSON as sipct printed it (an object for one dialog, else a list)
    stdout: str  # sipct's stdout (the JSON text)
    stderr: str  # sipct's stderr
    guest_release: str  # uname -r in the guest
    guest_version: str  # /proc/version in the guest
    loaded_params: dict[str, str]  # /sys/module/nf_conntrack_sip/parameters after modprobe
    missing_modules: list[str]  # optional modules (GUEST_MODULES) the guest could not load
    boot_seconds: float  # host wall time from starting vng until the guest script ran
    total_seconds: float  # host wall time of the whole boot
    guest_times: dict[str, float] = field(default_factory=dict)  # guest uptime at: booted, modules, done
    vng_log: str = ""  # vng's output (the kernel console too with console=True)
    command: list[str] = field(default_factory=list)  # the vng command line
    workdir: Path | None = None  # the kept work folder (keep=True): guest.sh, vng.log, share/
    sources: dict[str, str] = field(default_factory=dict)  # guest path of a staged input -> host path

    def host_path(self, text: str) -> str:
        """The host path of a file the guest named (a staged input or a file
        in one); other text unchanged."""
        if text in self.sources:
            return self.sources[text]
        for guest, host in self.sources.items():
            if text.startswith(guest.rstrip("/") + "/"):
                return host.rstrip("/") + text[len(guest.rstrip("/")):]
        return text

    @property
    def results(self) -> list[dict[str, Any]]:
        return [self.json] if isinstance(self.json, dict) else list(self.json or [])

    @property
    def run_seconds(self) -> float | None:
        """Guest time spent in `sipct run` (imports included)."""
        t = self.guest_times
        return t["done"] - t["modules"] if "done" in t and "modules" in t else None

    def timing(self) -> dict[str, float | None]:
        return {"boot": round(self.boot_seconds, 1), "total": round(self.total_seconds, 1),
                "sipct": None if self.run_seconds is None else round(self.run_seconds, 1)}


def vng_command(vng: Path, kernel: VmKernel, share: Path, memory: str = "2G", cpus: int = 2) -> list[str]:
    """Boot ``kernel`` under TCG (KVM hangs in nested VMs) and run ``share/guest.sh``."""
    return [str(vng), "--run", str(kernel.vmlinuz), "--disable-kvm", "--memory", memory, "--cpus", str(cpus),
            "--user", "root", f"--rwdir={share}", "--exec", f"sh {shlex.quote(str(share / 'guest.sh'))}"]


def _vng_env(vng: Path) -> dict[str, str]:
    # vng runs virtme-run from PATH: the venv's bin folder must be on it.
    return dict(os.environ, PATH=f"{vng.parent}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}")


def new_guest_workdir(kernel: str) -> Path:
    """A new work folder for one boot (``sipct-vm-*`` in the temporary folder),
    marked as this process's (sipct.harness.sweep: a SIGKILLed owner's guest
    is ended and its folder removed by the next run or `sipct clean`)."""
    workdir = Path(tempfile.mkdtemp(prefix=GUEST_PREFIX))
    try:
        write_guest_owner(workdir, kernel=kernel)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return workdir


def start_guest(command: Sequence[str], workdir: Path, kernel: str, **popen: Any) -> subprocess.Popen:
    """Start vng (``command``, sharing ``workdir/share``) as the leader of a
    process group of its own (groups.start_group), and record the group in
    ``workdir``'s owner marker.  A SIGKILL between the two leaves the group
    unrecorded; the sweeper then finds it by its command line."""
    proc = start_group(command, **popen)
    with shielded():
        try:
            write_guest_owner(workdir, kernel=kernel, pgid=proc.pid)
        except BaseException:
            stop_group(proc)
            raise
    return proc


def boot_script(kernel: VmKernel, share: Path, timeout: float) -> bool:
    """Boot ``kernel`` and run ``share/guest.sh``, a script the caller wrote
    (for scripts other than sipct's own: bench/router.py, the reference
    helper's VM test); ``share`` is ``FOLDER/share``, FOLDER the caller's
    work folder, marked as this process's (a SIGKILLed owner's guest is
    ended and FOLDER removed by the sweeper). The QEMU process group is
    killed after ``timeout`` seconds; vng's output goes to ``FOLDER/vng.log``. True when the script
    got to write ``share/rc``."""
    vng = find_vng()
    if share.name != "share":
        raise ValueError(f"{share}: the shared folder must be called share (FOLDER/share)")
    write_guest_owner(share.parent, kernel=kernel.release)  # FOLDER is removed if this process is SIGKILLed
    with open(share.parent / "vng.log", "wb") as log, doing(f"kernel {kernel.release}: {share / 'guest.sh'}"):
        proc = start_guest(vng_command(vng, kernel, share), share.parent, kernel.release,
                           stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=share.parent,
                           env=_vng_env(vng))
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:
            stop_group(proc)
    return (share / "rc").exists()


def boot_guest(kernel: VmKernel, command: list[str], workdir: Path, share: Path,
          timeout: float, boot_timeout: float, params: list[str], json_file: str | None = None,
          cancel: threading.Event | None = None) -> VmResult:
    env = _vng_env(Path(command[0]))
    log_path = workdir / "vng.log"
    shown = shlex.join(command)
    started = time.monotonic()
    booted: float | None = None
    with open(log_path, "wb") as log, doing(f"kernel {kernel.release}: booting it in QEMU") as task:
        proc = start_guest(command, workdir, kernel.release, stdin=subprocess.DEVNULL, stdout=log,
                           stderr=subprocess.STDOUT, cwd=workdir, env=env)
        try:
            while True:
                try:
                    proc.wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    pass
                now = time.monotonic()
                if booted is None and (share / "t.booted").exists():
                    booted = now
                    task.what = f"kernel {kernel.release}: the guest runs sipct (booted in {now - started:.0f} s)"
                if proc.returncode is not None:
                    break
                if cancel is not None and cancel.is_set():
                    stop_group(proc)
                    raise VmError("cancelled (QEMU killed)", kernel=kernel.release)
                if booted is None and now - started > boot_timeout:
                    stop_group(proc)
                    raise VmError(f"did not boot within {boot_timeout:.0f} s (QEMU killed); "
                                  f"{_log_tail(log_path)}; to watch the console run: {shown} --verbose",
                                  kernel=kernel.release)
                if now - started > timeout:
                    stop_group(proc)
                    when = "before booting" if booted is None else f"after booting in {booted - started:.0f} s"
                    raise VmError(f"the guest did not finish within {timeout:.0f} s (QEMU killed) {when}; "
                                  f"{_guest_tail(share)}", kernel=kernel.release)
        finally:
            stop_group(proc)  # also when vng is gone: QEMU, in its group, may not be
    total = time.monotonic() - started
    if booted is None and (share / "t.booted").exists():
        booted = started + total  # finished between two polls
    if booted is None:
        raise VmError(f"did not boot (vng exited with {proc.returncode}): {_log_tail(log_path)}; "
                      f"to watch the console run: {shown} --verbose", kernel=kernel.release)

    release = _read(share / "uname").strip()
    if (share / "modprobe.failed").exists():
        err = " ".join(_read(share / "modprobe.err").split()) or "no message"
        if "not found" in err:
            raise VmError(f"the guest has no {MODULE} module ({err}): its modules come from the package "
                          f"linux-image-{release} (`apt-get install --no-install-recommends "
                          f"linux-image-{release}`, or {SETUP_HINT})", kernel=kernel.release)
        raise VmError(f"`{' '.join(['modprobe', MODULE, *params])}` failed in the guest: {err} "
                      "(check the module parameters)", kernel=kernel.release)
    if (share / "sysctl.failed").exists():
        raise VmError(f"the guest could not set {_read(share / 'sysctl.failed').strip()}: "
                      f"{' '.join(_read(share / 'modprobe.err').split()) or 'no message'}", kernel=kernel.release)
    if not (share / "rc").exists():
        raise VmError(f"the guest stopped before sipct finished (vng exited with {proc.returncode}); "
                      f"{_guest_tail(share)}; {_log_tail(log_path)}", kernel=kernel.release)
    exit_code = int(_read(share / "rc").strip() or "-1")
    stdout, stderr = _read(share / "result.json"), _read(share / "stderr")
    try:
        data = json.loads(_read(share / json_file) if json_file else stdout)
    except json.JSONDecodeError:
        what = f"wrote no JSON to {json_file}" if json_file else "printed no JSON"
        raise VmError(f"sipct in the guest {what} (exit status {exit_code}): "
                      f"{stderr.strip()[-2000:] or stdout.strip()[-2000:] or 'no output'}",
                      kernel=kernel.release) from None
    loaded = {}
    for line in _read(share / "params").splitlines():
        name, _, value = line.partition("=")
        loaded[name] = value
    times = {}
    for name in ("booted", "modules", "done"):
        try:
            times[name] = float(_read(share / f"t.{name}").split()[0])
        except (ValueError, IndexError):
            pass
    return VmResult(
        kernel=kernel, module_params={}, exit_code=exit_code, json=data, stdout=stdout, stderr=stderr,
        guest_release=release, guest_version=_read(share / "proc-version").strip(),
        loaded_params=loaded, missing_modules=_read(share / "missing-modules").split(),
        boot_seconds=booted - started, total_seconds=total, guest_times=times,
        vng_log=_read(log_path), command=command)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _log_tail(path: Path, lines: int = 15) -> str:
    text = [line for line in _read(path).splitlines() if line.strip()]
    return "vng said: " + (" | ".join(text[-lines:]) if text else "nothing")


def _guest_tail(share: Path) -> str:
    err = _read(share / "stderr").strip().splitlines()
    return "guest sipct stderr: " + (" | ".join(err[-10:]) if err else "empty")


def timeout_for(dialogs: Iterable[Any], per_dialog: float = 60.0) -> float:
    """A generous limit for one boot running these dialogs: boot and imports,
    plus each dialog's own waits and ``per_dialog`` seconds of slow TCG per
    dialog (a minute for `sipct run`; a generated dialog in a conformance run
    takes ~0.2 s in the guest)."""
    from sipct.spec.dialog import Wait

    total = DEFAULT_BOOT_TIMEOUT + 120.0
    for dialog in dialogs:
        total += per_dialog + sum(s.seconds for s in dialog.steps if isinstance(s, Wait))
    return total
