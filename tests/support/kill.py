"""Start sipct commands, signal them at random moments, look for what they left.

Each command runs in a session of its own (so that the processes it starts
can be found by their group) with a marker in its environment (so that the
ones that left the group - vng's QEMU - can be found too).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from sipct.netlink.netns import remove_netns

SIPCT = str(Path(sys.executable).parent / "sipct")
REPO = Path(__file__).resolve().parents[2]
MARK = "SIPCT_KILL_TEST"
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

# Run by `python -S -c`: give the command the default dispositions, whatever
# the test runner ignores (a shell's background job starts with SIGINT
# ignored, nohup with SIGHUP ignored, and exec keeps an ignored signal so).
_DEFAULT_SIGNALS = (
    "import os, signal, sys\n"
    "for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP): signal.signal(s, signal.SIG_DFL)\n"
    "os.execv(sys.argv[1], sys.argv[1:])\n"
)


@dataclass
class Job:
    argv: list[str]
    signum: int
    to_group: bool  # killpg (a terminal's Ctrl-C, timeout(1)) or kill (kill PID)
    after_lab: bool  # the delay counts from the first namespace, not from the start
    delay: float
    mark: str
    proc: subprocess.Popen | None = None
    stderr_path: str = ""
    started: float = 0.0
    lab_seen: float | None = None
    signalled: float | None = None
    returncode: int | None = None
    stderr: str = ""
    leftovers: list[str] = field(default_factory=list)

    def start(self, env: dict[str, str]) -> None:
        fd, self.stderr_path = tempfile.mkstemp(prefix="sipct-kill-", suffix=".err")
        with os.fdopen(fd, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-S", "-c", _DEFAULT_SIGNALS, SIPCT, *self.argv],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, cwd=REPO,
                env={**env, MARK: self.mark}, start_new_session=True)
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def due(self, now: float, netns: set[str] | None) -> bool:
        """Time to send the signal?  ``netns``: the namespaces now, when needed."""
        if not self.after_lab:
            return now >= self.started + self.delay
        if self.lab_seen is None and netns is not None and any(n.startswith(f"sipct-{self.pid}-") for n in netns):
            self.lab_seen = now
        return self.lab_seen is not None and now >= self.lab_seen + self.delay

    def send(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            return  # finished first: nothing to interrupt
        self.signalled = time.monotonic()
        try:
            if self.to_group:
                os.killpg(self.pid, self.signum)
            else:
                os.kill(self.pid, self.signum)
        except ProcessLookupError:
            pass

    def finish(self) -> None:
        assert self.proc is not None
        self.returncode = self.proc.returncode
        self.stderr = Path(self.stderr_path).read_text(errors="replace")
        os.unlink(self.stderr_path)
        self.leftovers = leftovers(self.pid, self.mark)

    @property
    def interrupted(self) -> bool:
        """Ended by the signal: by our handler (128 + N) or, before it was
        installed, by the default action."""
        return self.returncode in (128 + self.signum, -self.signum)

    def phase(self) -> str:
        """Where the signal landed, from the line sipct printed."""
        if self.signalled is None:
            return "finished before the signal"
        if self.returncode == -self.signum:
            return "starting (before the handlers)"
        m = re.search(r"interrupted by SIG\w+ during: (.*)", self.stderr)
        if self.returncode != 128 + self.signum or m is None:
            return "finished before the signal"
        return classify(m.group(1))

    def describe(self) -> str:
        how = "killpg" if self.to_group else "kill"
        base = "the first namespace" if self.after_lab else "the start"
        return (f"`sipct {' '.join(self.argv)}`: {how} {signal.Signals(self.signum).name} "
                f"{self.delay:.3f} s after {base}, exit status {self.returncode}")


def classify(during: str) -> str:
    last = during.rsplit(" > ", 1)[-1]
    for needle, phase in (("removing the lab", "lab teardown"), ("building the lab", "lab build"),
                          ("stopping", "process teardown"), (": wait ", "wait step"),
                          (": connect tcp", "TCP connect"), (": tcp ", "TCP send"), (": udp ", "UDP send"),
                          (": delete-conntrack", "conntrack delete"), ("kernel ", "VM")):
        if needle in last:
            return phase
    if last.startswith("dialog "):
        return "dialog setup"
    if last.startswith("conformance"):
        return "conformance, between dialogs"
    return "other: " + last


def leftovers(pid: int, mark: str) -> list[str]:
    """What the command ``pid`` (marked ``mark``) left: lab namespaces named
    after it, processes of its group, processes carrying its marker."""
    out = [f"namespace {n}" for n in namespaces_of(pid)]
    try:
        os.killpg(pid, 0)
        out.append(f"processes of group {pid}")
    except ProcessLookupError:
        pass
    out += [f"process {p} ({cmdline(p)})" for p in marked(mark)]
    return out


def namespaces_of(pid: int) -> list[str]:
    try:
        return sorted(n for n in os.listdir("/run/netns") if n.startswith(f"sipct-{pid}-"))
    except FileNotFoundError:
        return []


def marked(mark: str) -> list[int]:
    needle = f"{MARK}={mark}\0".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if needle in f.read() + b"\0":
                        found.append(int(entry))
            except OSError:
                pass
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:120]
    except OSError:
        return "?"


def clean_up_after(job: Job) -> None:
    """Remove what a failed job left, so that the failure does not spread."""
    for pid in [*marked(job.mark)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.killpg(job.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for name in namespaces_of(job.pid):
        remove_netns(name)


def summary(jobs: list[Job], seconds: float) -> str:
    phases = Counter(job.phase() for job in jobs)
    leaks = [job for job in jobs if job.leftovers]
    lines = [f"{len(jobs)} runs, {sum(j.signalled is not None for j in jobs)} signalled while running, "
             f"{sum(j.interrupted for j in jobs)} ended by the signal, {len(leaks)} left something behind, "
             f"{seconds:.1f} s"]
    lines += [f"  {n:4} {phase}" for phase, n in phases.most_common()]
    return "\n".join(lines)
