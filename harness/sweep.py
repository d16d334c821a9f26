"""Labs and VM guests whose maker is gone: found by their names and markers,
removed with what runs in them.

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

A VM guest (vng, virtme-run and QEMU, in a session of their own: a SIGKILL
of sipct leaves them running until the guest's script ends) has a work
folder ``sipct-vm-*`` in the temporary folder with a marker, ``owner.json``:
the owning process's pid and start time, this boot's id, and the guest's
process group once started.  A guest whose owner is gone has its process
group ended (SIGTERM, then SIGKILL) and its work folder removed.  A group is
only ended when one of its processes is ours twice over: its program is vng,
virtme or QEMU, and its command line names this very share folder.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sipct.harness.labns import NETNS_PREFIX, LabName, lab_namespaces, process_start, process_stat
from sipct.netlink.netns import netns_path, remove_netns

__all__ = [
    "GUEST_OWNER",
    "GUEST_PREFIX",
    "StaleGuest",
    "StaleLab",
    "find_guests",
    "find_labs",
    "owner_state",
    "remove_stale_guests",
    "remove_stale_labs",
    "remove_stale_namespaces",
    "write_guest_owner",
]

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


def owner_state(pid: int, start: int | None) -> tuple[bool, str]:
    """(live, why) for the process with this pid and start time (clock ticks
    after boot; None: unknown) - the maker of a lab, the owner of a VM guest."""
    stat = process_stat(pid)
    if stat is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False, f"process {pid} is gone"
        except PermissionError:
            pass
        return True, f"process {pid} runs"  # /proc hides it, but it exists
    state, now_start = stat
    if start is not None and now_start != start:
        return False, f"process {pid} is gone (its pid now belongs to a later process)"
    if state == "Z":  # killed, not yet reaped by its parent: it will never clean up
        return False, f"process {pid} is gone (a zombie)"
    if start is None:
        return True, f"process {pid} runs (an old name without a start time: it may be a reused pid)"
    return True, f"process {pid} runs"


def _maker_state(name: LabName) -> tuple[bool, str]:
    """(live, why) for the process a lab name names."""
    return owner_state(name.pid, name.start)


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


# -- VM guests --------------------------------------------------------------------------------------

GUEST_PREFIX = "sipct-vm-"  # a guest's work folder (tempfile.mkdtemp), its share folder is share/ in it
GUEST_OWNER = "owner.json"  # the marker in the work folder (not in share/: the guest cannot write it)
GUEST_FORMAT = "sipct.vm-owner/1"
GUEST_GRACE = 5.0  # seconds a stale guest's group has between SIGTERM and SIGKILL (QEMU may take a while)
_GUEST_PROGRAMS = ("vng", "virtme-ng", "virtme-run")  # and qemu-system-*
_BOOT_ID = "/proc/sys/kernel/random/boot_id"


def _boot_id() -> str | None:
    try:
        with open(_BOOT_ID) as f:
            return f.read().strip()
    except OSError:
        return None


def write_guest_owner(workdir: Path, *, kernel: str, pgid: int | None = None) -> None:
    """Mark ``workdir`` (a guest's work folder, its share folder ``share/``)
    as this process's: written when the folder is made, again with the
    process group once the guest is started."""
    pid = os.getpid()
    data = {"format": GUEST_FORMAT, "pid": pid, "start": process_start(pid), "boot_id": _boot_id(),
            "kernel": kernel, "share": str(Path(workdir) / "share"), "pgid": pgid}
    new = Path(workdir) / f".{GUEST_OWNER}.new"
    new.write_text(json.dumps(data) + "\n")
    os.replace(new, Path(workdir) / GUEST_OWNER)  # a reader sees the old marker or the new one, whole


def _read_owner(workdir: str) -> dict | None:
    try:
        with open(os.path.join(workdir, GUEST_OWNER)) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != GUEST_FORMAT or not isinstance(data.get("pid"), int):
        return None
    return data


@dataclass
class StaleGuest:
    """One VM guest's work folder, and whether its owner runs."""

    workdir: str
    pid: int  # the owner
    kernel: str = ""
    pgid: int | None = None  # as the marker records it (None: the owner died before it knew)
    live: bool = False
    why: str = ""
    processes: list[int] = field(default_factory=list)  # its running processes (ours by program and share)
    programs: list[str] = field(default_factory=list)  # their program names, for people
    groups: list[int] = field(default_factory=list)  # the process groups to end
    error: str = ""  # what stopped its removal

    @property
    def name(self) -> str:
        return os.path.basename(self.workdir)


@dataclass(frozen=True)
class _GuestProcess:
    pid: int
    pgid: int
    program: str
    share: str


def _cmdline(pid: str) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0")[:-1]]


def _program(argv: list[str]) -> str | None:
    """vng, virtme-run or qemu-system-*, as the process's program or as the
    script its interpreter runs; None for anything else."""
    for arg in argv[:2]:
        base = os.path.basename(arg)
        if base in _GUEST_PROGRAMS or base.startswith("qemu-system-"):
            return base
    return None


def _shares(argv: list[str]) -> set[str]:
    """The host folders a vng/virtme command line shares: ``--rwdir=PATH``
    (or ``GUESTPATH=PATH``), QEMU's ``-fsdev local,...,path=PATH,...``."""
    found = set()
    for i, arg in enumerate(argv):
        if arg.startswith("--rwdir="):
            found.add(arg[len("--rwdir="):].rpartition("=")[2])
        elif arg == "--rwdir" and i + 1 < len(argv):
            found.add(argv[i + 1].rpartition("=")[2])
        elif arg.startswith("local,"):
            found.update(f[len("path="):] for f in arg.split(",") if f.startswith("path="))
    return {os.path.normpath(p) for p in found if p}


def _guest_processes() -> list[_GuestProcess]:
    """The running vng/virtme/QEMU processes and the folders they share."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        argv = _cmdline(entry)
        program = _program(argv)
        if program is None:
            continue
        stat = process_stat(int(entry))
        if stat is None or stat[0] == "Z":
            continue
        try:
            pgid = os.getpgid(int(entry))
        except OSError:
            continue
        out.extend(_GuestProcess(int(entry), pgid, program, share) for share in _shares(argv))
    return out


def find_guests(tmpdir: str | os.PathLike[str] | None = None) -> list[StaleGuest]:
    """Every VM guest work folder with a marker of this boot, live or stale,
    oldest owner first: the ``sipct-vm-*`` folders in ``tmpdir`` (default: the
    temporary folder) and, unless ``tmpdir`` is given, the folders that
    running vng/QEMU processes share, wherever they are."""
    root = tempfile.gettempdir() if tmpdir is None else os.fspath(tmpdir)
    workdirs = set()
    try:
        workdirs = {os.path.join(root, n) for n in os.listdir(root) if n.startswith(GUEST_PREFIX)}
    except OSError:
        pass
    running = _guest_processes()
    if tmpdir is None:
        workdirs |= {os.path.dirname(p.share) for p in running if os.path.basename(p.share) == "share"}
    boot = _boot_id()
    guests = []
    for workdir in workdirs:
        owner = _read_owner(workdir)
        if owner is None or owner.get("boot_id") != boot:
            continue  # not a sipct guest's marker, or another boot's (inside a guest: the host's /tmp)
        share = os.path.join(workdir, "share")
        if owner.get("share") != share or os.path.ismount(share):
            continue  # moved, or seen from inside the guest, where share/ is the host's (9p)
        start = owner.get("start")
        live, why = owner_state(owner["pid"], start if isinstance(start, int) else None)
        pgid = owner.get("pgid")
        ours = [p for p in running if p.share == share]
        guests.append(StaleGuest(
            workdir, owner["pid"], kernel=str(owner.get("kernel") or ""), pgid=pgid if isinstance(pgid, int) else None,
            live=live, why=why, processes=sorted({p.pid for p in ours}),
            programs=sorted({p.program for p in ours}), groups=sorted({p.pgid for p in ours})))
    return sorted(guests, key=lambda g: (g.pid, g.workdir))


def _group_members(pgids: set[int]) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getpgid(int(entry)) in pgids and _exists(int(entry)):
                members.append(int(entry))
        except OSError:
            continue
    return members


def _end_groups(pgids: list[int]) -> None:
    """SIGTERM to each group, SIGKILL to what is left of them after the grace."""
    left = set(pgids)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pgid in sorted(left):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + GUEST_GRACE
        while time.monotonic() < deadline:
            if not _group_members(left):
                return
            time.sleep(0.05)


def remove_stale_guests(*, dry_run: bool = False,
                        tmpdir: str | os.PathLike[str] | None = None) -> list[StaleGuest]:
    """End the VM guests whose owner is gone and remove their work folders
    (only list them with ``dry_run``); every guest found, live ones included,
    is returned.  Live guests are never touched."""
    guests = find_guests(tmpdir)
    if dry_run:
        return guests
    for guest in guests:
        if guest.live:
            continue
        try:
            if guest.groups:
                _end_groups(guest.groups)
        except PermissionError:
            guest.error = f"not allowed to end process group {' '.join(map(str, guest.groups))}"
            continue
        shutil.rmtree(guest.workdir, ignore_errors=True)
    return guests
