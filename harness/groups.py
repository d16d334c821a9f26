"""Child process groups that must not outlive this process: vng and its QEMU.

vng runs in a session of its own, so that the whole tree it starts
(virtme-run, QEMU) can be ended with one killpg - and so that a Ctrl-C at
the terminal reaches sipct alone, which then ends the tree itself.  The
other side of that: nobody but sipct ends it.  A group is recorded before
anything can interrupt its start (interrupts.shielded), stopped by the
caller's ``finally``, and whatever is still recorded at interpreter exit is
stopped then.  Only SIGKILL of sipct leaves a group running.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import threading
from collections.abc import Sequence
from typing import Any

from sipct.netlink.interrupts import doing, shielded

__all__ = ["start_group", "stop_group"]

_lock = threading.Lock()
_running: set[subprocess.Popen] = set()
_hook_pid: int | None = None


def start_group(command: Sequence[str], **popen: Any) -> subprocess.Popen:
    """``subprocess.Popen(command, **popen)`` as the leader of a new session,
    recorded for :func:`stop_group` and for the exit hook."""
    global _hook_pid
    with shielded():
        proc = subprocess.Popen(command, start_new_session=True, **popen)
        with _lock:
            _running.add(proc)
            if _hook_pid != os.getpid():
                _hook_pid = os.getpid()
                atexit.register(_stop_all)
    return proc


def stop_group(proc: subprocess.Popen) -> None:
    """End the session ``proc`` leads: SIGTERM, then SIGKILL; also once the
    leader has exited, since the others of its group may not have."""
    with shielded(), doing(f"stopping process group {proc.pid} ({os.path.basename(str(proc.args[0]))})"):
        _kill(proc)
        with _lock:
            _running.discard(proc)


def _kill(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; others of its group may not be.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return


def _stop_all() -> None:
    if _hook_pid != os.getpid():
        return
    with _lock:
        procs = list(_running)
    # At exit there is nothing left to interrupt: every group gets stopped.
    with shielded(deliver=False):
        for proc in procs:
            stop_group(proc)
