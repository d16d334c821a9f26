"""Kernel runs of dialogs in parallel labs: worker processes, each with labs of its own.

A dialog's run waits most of its time - for a datagram the helper dropped,
for a TCP close, for a wait step - so several labs side by side finish a
suite sooner; labs are independent namespaces, and the running kernel's
module parameters are the same for all of them (the suite runs only the
dialogs whose parameters the kernel has: RunningKernel.conflicts).

Processes, not threads: the caller's process keeps the spec's side (the
prediction, the comparison, Hypothesis's generation) and would otherwise share
one interpreter lock with the labs' sockets; and a worker's imports stay out
of the caller's process, where Hypothesis draws constants from the imported
modules (conformance.suite.generate_dialogs).

A worker (``python -m sipct.harness.labpool FD``) runs in a session of its
own (harness.groups): a Ctrl-C reaches the caller alone, who ends its workers
on the way out; a worker whose caller is gone reads end-of-file, closes its
labs and exits. Tasks go out in order and their KernelRuns come back in that
order, whichever worker ran them: a report built from them does not depend on
how many labs there were.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import traceback
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import NamedTuple

from sipct.harness.groups import start_group, stop_group
from sipct.harness.lab import HostSpec, Lab, LabError
from sipct.harness.run import DialogRunner, KernelRun
from sipct.spec.dialog import Dialog
from sipct.spec.predict import Arrival

# Tasks a worker holds at once: the one it runs and the next, so it never
# waits for the caller between two dialogs.
IN_FLIGHT = 2
# Labs of their dialogs' own hosts a worker keeps (the curated dialogs': a
# serial run builds ~40 for them).
OWN_LABS = 8
# Seconds a worker may take to close its labs after the last task.
CLOSE_TIMEOUT = 10.0


@dataclass(frozen=True)
class RunTask:
    """One dialog for a worker's DialogRunner.run: ``hosts`` names the shared
    lab it runs in (the generated dialogs'), None a lab of its own hosts."""

    dialog: Dialog
    ports: tuple[int, ...]
    expected: tuple[bool | None, ...]
    arrivals: tuple[tuple[Arrival | None, ...], ...]  # per step, from the prediction
    hosts: tuple[HostSpec, ...] | None
    drop_timeout: float


class _Plan(NamedTuple):
    """What DialogRunner reads of a step's prediction: where its packets arrive."""

    arrivals: tuple[Arrival | None, ...]


class LabWorkerError(LabError):
    """A worker's run raised: the worker's traceback, for the dialog in question."""


class LabPool:
    """``labs`` worker processes; :meth:`submit` tasks, :meth:`next_result`
    their KernelRuns in submission order."""

    def __init__(self, labs: int) -> None:
        if labs < 1:
            raise ValueError(f"{labs} labs: at least 1")
        self._workers: list[tuple[subprocess.Popen, Connection]] = []
        self._queue: deque[tuple[int, RunTask]] = deque()
        self._busy: dict[Connection, int] = {}  # tasks each worker holds
        self._done: dict[int, tuple[bool, KernelRun | str]] = {}  # by ticket: a run, or a worker's error
        self._submitted = 0
        self._next = 0  # the ticket next_result() takes next
        try:
            for _ in range(labs):
                self._workers.append(self._start())
        except BaseException:
            self.close()
            raise
        self._busy = {conn: 0 for _, conn in self._workers}

    @staticmethod
    def _start() -> tuple[subprocess.Popen, Connection]:
        ours, theirs = socket.socketpair()
        try:
            proc = start_group([sys.executable, "-m", "sipct.harness.labpool", str(theirs.fileno())],
                               pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        finally:
            theirs.close()
        return proc, Connection(ours.detach())

    def submit(self, task: RunTask) -> None:
        """Queue ``task`` for the next worker with room; never waits for one."""
        self._queue.append((self._submitted, task))
        self._submitted += 1
        self._pump(block=False)

    def next_result(self, *, block: bool = True) -> KernelRun | None:
        """The KernelRun of the oldest task not yet taken (None: without
        ``block``, not in yet). A worker's failure is raised in its place
        (LabWorkerError)."""
        if self._next >= self._submitted:
            raise IndexError("no task is waiting for its result")
        while self._next not in self._done:
            self._pump(block=block)
            if not block and self._next not in self._done:
                return None
        ok, value = self._done.pop(self._next)
        self._next += 1
        if not ok:
            raise LabWorkerError(value)
        assert isinstance(value, KernelRun)
        return value

    def _pump(self, *, block: bool) -> None:
        """Hand queued tasks to workers with room; take in what came back."""
        while True:
            for conn, held in self._busy.items():
                while held < IN_FLIGHT and self._queue:
                    conn.send(self._queue.popleft())
                    held += 1
                self._busy[conn] = held
            ready = wait([c for c, held in self._busy.items() if held], timeout=None if block else 0)
            for conn in ready:
                try:
                    ticket, ok, value = conn.recv()
                except EOFError:
                    raise LabWorkerError("a lab worker ended before its dialogs were done "
                                         "(its error is on stderr above)") from None
                self._done[ticket] = (ok, value)
                self._busy[conn] -= 1
            if not block or ready:
                return

    def close(self, *, graceful: bool = True) -> None:
        """Let the workers close their labs and exit (``graceful``: once done
        with their tasks); stop those that do not (SIGTERM: a worker's labs
        are closed on its way out, sipct.netlink.interrupts)."""
        if graceful:
            for proc, conn in self._workers:
                try:
                    conn.send(None)
                except OSError:
                    pass
            for proc, conn in self._workers:
                try:
                    proc.wait(timeout=CLOSE_TIMEOUT)
                except subprocess.TimeoutExpired:
                    pass
        for proc, conn in self._workers:
            stop_group(proc)
            conn.close()
        self._workers.clear()

    def __enter__(self) -> LabPool:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(graceful=exc_type is None)


def _serve(conn: Connection) -> None:
    """A worker: run tasks until the caller sends None or goes away."""
    runners: dict[tuple, DialogRunner] = {}
    labs: list[Lab] = []  # the shared ones: a DialogRunner closes only the labs it made
    try:
        while True:
            try:
                message = conn.recv()
            except EOFError:
                return
            if message is None:
                return
            ticket, task = message
            # A dialog with a lab of its own hosts keeps it for the next dialog
            # of those hosts, whichever dialogs this worker gets in between.
            key = (task.hosts, task.drop_timeout) if task.hosts is not None else \
                (frozenset(map(str, task.dialog.hosts.values())), task.ports, task.drop_timeout)
            try:
                runner = runners.pop(key, None)
                own = [k for k in runners if isinstance(k[0], frozenset)]  # least recently used first
                if runner is None and task.hosts is None and len(own) >= OWN_LABS:
                    runners.pop(own[0]).close()
                if runner is None:
                    lab = None
                    if task.hosts is not None:
                        lab = Lab(task.hosts, timeout=task.drop_timeout)
                        labs.append(lab)
                    runner = DialogRunner(lab, drop_timeout=task.drop_timeout)
                runners[key] = runner  # last: the dict's order is the order of use
                run = runner.run(task.dialog, task.ports, task.expected,
                                 predicted=[_Plan(a) for a in task.arrivals])
                reply = (ticket, True, run)
            except Exception as exc:  # noqa: BLE001 - the caller raises it in the dialog's place
                reply = (ticket, False, f"dialog {task.dialog.name} ({task.dialog.source}): "
                                        f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
            try:
                conn.send(reply)
            except OSError:
                return
    finally:
        for runner in runners.values():
            runner.close()
        for lab in labs:
            lab.close()


if __name__ == "__main__":
    from sipct.netlink.interrupts import Interrupted, install

    install()  # SIGTERM (LabPool.close) unwinds _serve, which closes the labs
    try:
        _serve(Connection(int(sys.argv[1])))
    except Interrupted as exc:
        sys.exit(exc.exit_status)
