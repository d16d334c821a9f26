"""Labs whose maker is gone: found by their names, removed with what runs in them.

Only SIGKILL (or a crash of the interpreter, or a power cut short of a
reboot - /run is a tmpfs) leaves a lab behind: every other end of a run
removes its namespaces (sipct.netlink.interrupts, sipct.harness.labns).
A lab's name says which process made it (pid and start time); it is stale
when no process has that pid any more, or when the process with that pid
started at another time (the pid was reused).  A name of the older form,
without a start time, is stale only when its pid is free.

What a stale lab still holds is removed with it: the processes left running
in its namespaces (a reference helper daemon, an ``ip netns exec`` child)
get SIGTERM, then SIGKILL; the names are unmounted, and the kernel frees
each namespace - its devices, its nftables table, its conntrack table - once
nothing refers to it.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from sipct.harness.labns import NETNS_PREFIX, LabName, lab_namespaces, process_stat
from sipct.netlink.netns import netns_path, remove_netns

__all__ = ["StaleLab", "find_labs", "remove_stale_labs", "remove_stale_namespaces"]

TERM_GRACE = 2.0  # seconds a process in a stale lab has between SIGTERM and SIGKILL


@dataclass
class StaleLab:
    """One lab (the namespaces of one token), and whether its maker runs."""

    lab: str  # sipct-<pid>-<start>-<token>
    pid: int
    namespaces: list[str] = field(default_factory=list)
    live: bool = False
    why: str = ""  # why it is stale or live, for people
    processes: list[int] = field(default_factory=list)  # pids running in its namespaces


def _maker_state(name: LabName) -> tuple[bool, str]:
    """(live, why) for the process a lab name names."""
    stat = process_stat(name.pid)
    if stat is None:
        try:
            os.kill(name.pid, 0)
        except ProcessLookupError:
            return False, f"process {name.pid} is gone"
        except PermissionError:
            pass
        return True, f"process {name.pid} runs"  # /proc hides it, but it exists
    state, start = stat
    if name.start is not None and start != name.start:
        return False, f"process {name.pid} is gone (its pid now belongs to a later process)"
    if state == "Z":  # killed, not yet reaped by its parent: it will never clean up
        return False, f"process {name.pid} is gone (a zombie)"
    if name.start is None:
        return True, f"process {name.pid} runs (an old name without a start time: it may be a reused pid)"
    return True, f"process {name.pid} runs"


def find_labs(prefix: str = NETNS_PREFIX) -> list[StaleLab]:
    """Every lab that has namespaces now, live or stale, oldest maker first."""
    labs: dict[str, StaleLab] = {}
    for ns in lab_namespaces(prefix):
        name = LabName.parse(ns, prefix)
        if name is None:
            continue  # not made by a lab (a test's own namespace, say)
        lab = labs.get(name.lab)
        if lab is None:
            live, why = _maker_state(name)
            lab = labs[name.lab] = StaleLab(name.lab, name.pid, live=live, why=why)
        lab.namespaces.append(ns)
    stale = [lab for lab in labs.values() if not lab.live]
    if stale:
        inside = _processes_in(ns for lab in stale for ns in lab.namespaces)
        for lab in stale:
            lab.processes = sorted({pid for ns in lab.namespaces for pid in inside.get(ns, ())})
    return sorted(labs.values(), key=lambda lab: (lab.pid, lab.lab))


def _processes_in(namespaces: Iterable[str]) -> dict[str, set[int]]:
    """The pids whose network namespace is one of these named ones."""
    by_inode: dict[tuple[int, int], str] = {}
    for ns in namespaces:
        try:
            st = os.stat(netns_path(ns))
        except OSError:
            continue
        by_inode[(st.st_dev, st.st_ino)] = ns
    found: dict[str, set[int]] = {}
    if not by_inode:
        return found
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        ns = by_inode.get((st.st_dev, st.st_ino))
        if ns is not None:
            found.setdefault(ns, set()).add(int(entry))
    return found


def _end_processes(pids: list[int]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + TERM_GRACE
        while pids and time.monotonic() < deadline:
            pids = [pid for pid in pids if _exists(pid)]
            if pids:
                time.sleep(0.05)
        if not pids:
            return


def _exists(pid: int) -> bool:
    stat = process_stat(pid)
    # A zombie has let go of its namespaces already.
    return stat is not None and stat[0] != "Z"


def remove_stale_labs(*, dry_run: bool = False, prefix: str = NETNS_PREFIX) -> list[StaleLab]:
    """Remove the labs whose maker is gone (only list them with ``dry_run``);
    every lab found, live ones included, is returned.  Live labs are never
    touched."""
    labs = find_labs(prefix)
    if not dry_run:
        for lab in labs:
            if lab.live:
                continue
            if lab.processes:
                _end_processes(list(lab.processes))
            for ns in lab.namespaces:
                remove_netns(ns)
    return labs


def remove_stale_namespaces() -> list[str]:
    """Remove the labs whose maker is gone; the namespaces removed."""
    return [ns for lab in remove_stale_labs() if not lab.live for ns in lab.namespaces]
