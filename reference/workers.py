"""``helper.workers = N``: N helper processes, one per queue, under one supervisor.

The kernel queues a conntrack's packets to the one queue of the helper it
carries (nfnl_userspace_cthelper() returns NF_QUEUE_NR(queue_num)), and a
conntrack gets its helper once, on its first packet (nft_ct_helper_obj_eval()
skips a confirmed one; an expected one keeps its expectation's helper:
nf_ct_ext_add() will not add the extension twice). So N workers are N
userspace helpers, ``<name>-0`` .. ``<name>-<N-1>``, each on its own queue,
and the ruleset spreads new masters over them (``ct helper set jhash ...
mod N map``, reference/examples/sipct-helper-workers.nft). Every packet of
one master reaches the same worker, which holds that master's state alone;
what masters share is the kernel's expectation table, and there the kernel
decides: a clash with another worker's expectation is refused (EBUSY) and
HelperCore.failed() answers it as the kernel helper answers a clash.

The supervisor forks the workers before it opens any socket, relays their
readiness to systemd once every worker said READY=1 (each names its pid in
the credentials of its datagram), passes SIGHUP on, restarts a worker that
dies (its successor takes the registration and the masters over, as a
restarted single helper does), and on SIGTERM/SIGINT stops them all. A
worker that cannot start ends the supervisor with the worker's status: the
configuration or the kernel is wrong for every one of them.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import socket
import struct
import time

from sipct.spec.exitcodes import EXIT_ERROR, EXIT_OK

from . import daemon
from .config import HelperConfig, load_config

__all__ = ["supervise"]

log = logging.getLogger("sipct.helper")
RESTART_DELAY = 1.0  # seconds before a dead worker is started again
STOP_TIMEOUT = 8.0  # seconds a worker may take to unregister after SIGTERM (the unit's TimeoutStopSec is 10)
_CRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class _Worker:
    __slots__ = ("config", "pid", "ready", "restart_at")

    def __init__(self, config: HelperConfig) -> None:
        self.config = config
        self.pid: int | None = None
        self.ready = False
        self.restart_at: float | None = None


def _start(worker: _Worker, netns: str | None, notify_address: str, inherited: tuple[int, ...]) -> None:
    pid = os.fork()
    if pid == 0:  # the worker
        status = EXIT_ERROR
        try:
            for fd in inherited:  # the supervisor's
                os.close(fd)
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
                signal.signal(signum, signal.SIG_DFL)
            signal.set_wakeup_fd(-1)
            os.environ["NOTIFY_SOCKET"] = notify_address
            status = daemon.run(worker.config, netns)
        except BaseException:  # noqa: BLE001 - a worker's error is logged, never a second supervisor
            logging.getLogger("sipct.helper").exception("worker %d: internal error",
                                                         worker.config.worker_index or 0)
        finally:
            logging.shutdown()
            os._exit(status)
    worker.pid, worker.ready, worker.restart_at = pid, False, None
    log.info("worker %d: started (pid %d, helper %s, queue(s) %s)", worker.config.worker_index, pid,
             worker.config.name, ",".join(map(str, worker.config.queues)))


def supervise(config: HelperConfig, netns: str | None = None) -> int:
    """Run ``config.workers`` workers until SIGTERM/SIGINT. Exit status 0,
    or a worker's status when it could not start."""
    daemon.setup_logging(config.log_level)
    workers = [_Worker(c) for c in config.worker_configs()]
    stop = reload = False
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    signal.set_wakeup_fd(w)

    def on_stop(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    def on_hup(signum: int, frame: object) -> None:
        nonlocal reload
        reload = True

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # only wakes the select()
    # The workers' sd_notify: an abstract socket of this process, credentials on.
    address = f"\0sipct-helper-{os.getpid()}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    listener.bind(address)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    listener.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(r, selectors.EVENT_READ, "signal")
    sel.register(listener, selectors.EVENT_READ, "notify")
    status = EXIT_OK
    announced = False
    log.info("%d workers: helpers %s", len(workers), ", ".join(x.config.name for x in workers))
    try:
        for worker in workers:
            _start(worker, netns, "@" + address[1:], (r, w, listener.fileno(), sel.fileno()))
        while not stop:
            now = time.monotonic()
            due = [x.restart_at for x in workers if x.restart_at is not None]
            timeout = max(0.0, min(due) - now) if due else None
            for key, _ in sel.select(timeout):
                if key.data == "signal":
                    _drain(r)
                else:
                    _read_notify(listener, workers)
            if reload:
                reload = False
                _reload_log_level(config)
                for worker in workers:
                    if worker.pid is not None:
                        os.kill(worker.pid, signal.SIGHUP)
            failed = _reap(workers, stop)
            if failed is not None:
                status = failed
                break
            now = time.monotonic()
            for worker in workers:
                if worker.restart_at is not None and worker.restart_at <= now and not stop:
                    _start(worker, netns, "@" + address[1:], (r, w, listener.fileno(), sel.fileno()))
            if not announced and all(x.ready for x in workers):
                announced = True
                queues = ",".join(map(str, config.queues))
                log.info("ready: %d workers on queue(s) %s", len(workers), queues)
                daemon.notify(f"READY=1\nSTATUS={len(workers)} workers ({', '.join(config.names)}) "
                              f"on queue(s) {queues}")
    finally:
        daemon.notify("STOPPING=1")
        _stop_all(workers)
        sel.close()
        listener.close()
        signal.set_wakeup_fd(-1)
        os.close(r)
        os.close(w)
    log.info("stopped")
    return status


def _reload_log_level(config: HelperConfig) -> None:
    """SIGHUP: the supervisor's own log level, as each worker re-reads its own."""
    if config.path is None:
        return
    try:
        daemon.setup_logging(load_config(config.path).log_level)
    except Exception as exc:  # noqa: BLE001 - a bad file keeps the running configuration
        log.error("SIGHUP: %s (keeping the running configuration)", exc)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _read_notify(listener: socket.socket, workers: list[_Worker]) -> None:
    while True:
        try:
            data, ancillary, _, _ = listener.recvmsg(4096, socket.CMSG_SPACE(_CRED.size))
        except BlockingIOError:
            return
        pid = next((_CRED.unpack(d[:_CRED.size])[0] for level, kind, d in ancillary
                    if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS), None)
        worker = next((x for x in workers if x.pid == pid), None)
        if worker is not None and b"READY=1" in data.split(b"\n"):
            worker.ready = True
            log.info("worker %d: ready", worker.config.worker_index)


def _reap(workers: list[_Worker], stopping: bool) -> int | None:
    """Collect dead workers; schedule a restart of one that had served.
    Returns the exit status to end with when one could not start."""
    while True:
        try:
            pid, wait_status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return None
        if pid == 0:
            return None
        worker = next((x for x in workers if x.pid == pid), None)
        if worker is None:
            continue
        code = os.waitstatus_to_exitcode(wait_status)
        worker.pid = None
        how = _ending(code)
        if stopping:
            continue
        if not worker.ready and code >= 0:
            log.error("worker %d could not start (%s): stopping every worker", worker.config.worker_index, how)
            return code or EXIT_ERROR
        log.error("worker %d (pid %d) ended (%s): restarting it in %.0f s (its successor takes its "
                  "registration and masters over)", worker.config.worker_index, pid, how, RESTART_DELAY)
        worker.restart_at = time.monotonic() + RESTART_DELAY


def _ending(code: int) -> str:
    """os.waitstatus_to_exitcode()'s value in words."""
    return f"exit status {code}" if code >= 0 else f"signal {signal.Signals(-code).name}"


def _stop_all(workers: list[_Worker]) -> None:
    """SIGTERM to every worker (each unbinds and unregisters), SIGKILL after STOP_TIMEOUT."""
    alive = [x for x in workers if x.pid is not None]
    for worker in alive:
        try:
            os.kill(worker.pid, signal.SIGTERM)  # type: ignore[arg-type]
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + STOP_TIMEOUT
    for worker in alive:
        while worker.pid is not None:
            try:
                pid, wait_status = os.waitpid(worker.pid, os.WNOHANG)
            except ChildProcessError:
                worker.pid = None
                break
            if pid:
                code = os.waitstatus_to_exitcode(wait_status)
                if code:
                    log.warning("worker %d stopped with %s", worker.config.worker_index, _ending(code))
                worker.pid = None
            elif time.monotonic() > deadline:
                log.error("worker %d did not stop within %.0f s: killed", worker.config.worker_index, STOP_TIMEOUT)
                os.kill(worker.pid, signal.SIGKILL)
                os.waitpid(worker.pid, 0)
                worker.pid = None
            else:
                time.sleep(0.05)
