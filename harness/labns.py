"""Lab namespaces: named after the process that makes them, removed when it ends.

A lab namespace is called ``sipct-<pid>-<start>-<token>-<role>``: the pid and
the start time (clock ticks after boot, field 22 of /proc/<pid>/stat) of the
process that made it, a random token per lab, and the role (``router``, a
host's name, ``probe``).  Pid and start time together name one process for
the whole uptime - a pid alone may be reused - so anyone can tell whether the
maker of a namespace is still running (sipct.harness.sweep).  Names of the
older form ``sipct-<pid>-<token>-<role>`` carry no start time.

This process's own namespaces are registered before they are created and
forgotten only once removed, so whatever is still registered at interpreter
exit - a lab no ``with`` block owned yet when a signal came - is removed then.
"""

from __future__ import annotations

import atexit
import os
import re
import threading
from dataclasses import dataclass

from sipct.netlink import interrupts
from sipct.netlink.netns import NETNS_RUN_DIR, create_netns, remove_netns

__all__ = [
    "NETNS_PREFIX",
    "LabName",
    "create_tracked_netns",
    "destroy_tracked_netns",
    "lab_namespaces",
    "lab_prefix",
    "process_start",
    "process_stat",
    "remove_all_tracked",
    "tracked_namespaces",
]

NETNS_PREFIX = "sipct-"
_NAME = re.compile(r"(?P<pid>\d+)-(?:(?P<start>\d+)-)?(?P<token>[0-9a-f]{8})-(?P<role>[a-z][a-z0-9_]*)")


def process_stat(pid: int) -> tuple[str, int] | None:
    """The state letter (R, S, Z, ...) and the start time, in clock ticks after
    boot, of process ``pid``; None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may hold spaces and parentheses: count from its end.
    fields = stat[stat.rfind(b")") + 2:].split()
    try:
        return fields[0].decode(), int(fields[19])
    except (IndexError, ValueError):
        return None


def process_start(pid: int) -> int | None:
    """The start time of process ``pid`` (clock ticks after boot), None if none."""
    stat = process_stat(pid)
    return None if stat is None else stat[1]


_own: tuple[int, int] | None = None


def lab_prefix(token: str) -> str:
    """``sipct-<pid>-<start>-<token>``: the names of one lab of this process
    are this and ``-<role>``."""
    global _own
    pid = os.getpid()
    if _own is None or _own[0] != pid:  # computed again in a forked child
        start = process_start(pid)
        if start is None:
            raise OSError(f"cannot read /proc/{pid}/stat: is /proc mounted?")
        _own = (pid, start)
    return f"{NETNS_PREFIX}{pid}-{_own[1]}-{token}"


@dataclass(frozen=True)
class LabName:
    """What a lab namespace's name says about it."""

    name: str
    pid: int
    start: int | None  # None in names of the older form
    token: str
    role: str

    @property
    def lab(self) -> str:
        """The name without the role: the same for every namespace of one lab."""
        return self.name[: -len(self.role) - 1]

    @classmethod
    def parse(cls, name: str, prefix: str = NETNS_PREFIX) -> LabName | None:
        if not name.startswith(prefix):
            return None
        m = _NAME.fullmatch(name[len(prefix):])
        if m is None:
            return None
        start = m.group("start")
        return cls(name, int(m.group("pid")), None if start is None else int(start), m.group("token"),
                   m.group("role"))


def lab_namespaces(prefix: str = NETNS_PREFIX) -> list[str]:
    """The names of all lab namespaces (any process's) that exist right now."""
    try:
        return sorted(n for n in os.listdir(NETNS_RUN_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


# -- this process's namespaces ------------------------------------------------

_lock = threading.RLock()
_tracked: set[str] = set()
_owner_pid: int | None = None


def _register_exit_hook() -> None:
    global _owner_pid
    with _lock:
        if _owner_pid == os.getpid():
            return
        # A forked child inherits the parent's registry: those are not its labs.
        _tracked.clear()
        _owner_pid = os.getpid()
        interrupts.install()
        atexit.register(remove_all_tracked)


def create_tracked_netns(name: str) -> None:
    """Create a namespace that interpreter exit removes unless
    :func:`destroy_tracked_netns` did first."""
    _register_exit_hook()
    # Registered before it exists: an interrupt between the two then leaves
    # nothing that the exit hook does not know about.
    with _lock:
        _tracked.add(name)
    create_netns(name)


def destroy_tracked_netns(name: str) -> None:
    """Remove a namespace made by create_tracked_netns (absent is fine)."""
    remove_netns(name)
    # Forgotten only once gone: an interrupt in between leaves it to the exit hook.
    with _lock:
        _tracked.discard(name)


def tracked_namespaces() -> list[str]:
    """This process's namespaces that are not removed yet."""
    with _lock:
        return sorted(_tracked) if _owner_pid == os.getpid() else []


def remove_all_tracked() -> None:
    """Remove every namespace this process made and still has (the exit hook)."""
    if _owner_pid != os.getpid():
        return
    # At exit a signal must not stop this half-way; there is nothing left to interrupt.
    with interrupts.shielded(deliver=False):
        for name in tracked_namespaces():
            try:
                destroy_tracked_netns(name)
            except OSError:
                pass
