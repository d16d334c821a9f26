"""Dialogs through the reference helper: ``sipct helper`` in a lab's router namespace.

The kernel's ``nf_conntrack_sip`` and the reference helper run in the same
kernel, one after the other, each in a lab of its own. Both would be called
"sip", and a kernel keeps one helper per name and protocol
(``__nf_conntrack_helper_find()``; nfnl_cthelper_new() answers EBUSY), so the
reference helper registers as ``REFERENCE_HELPER`` ("sipct") and its lab's nft
``ct helper`` objects are of that type. What differs between the two runs is
then the helper alone; the expectations the reference creates carry its name
(``CTA_EXPECT_HELP_NAME``), which is mapped back to the kernel helper's before
the comparison with the spec.

One lab serves every dialog of a run (all their addresses, one host per
address), so the daemon - slow to start under QEMU's TCG - starts once; the
lab's reset between dialogs flushes conntracks and expectations, which the
daemon notices by the destroy events and the new conntrack ids
(sipct.reference.core).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path

from pyroute2.netlink.exceptions import NetlinkError

from sipct.netlink.interrupts import doing, shielded
from sipct.harness.lab import HostSpec, Lab
from sipct.harness.run import DialogRunner, KernelRun
from sipct.spec.dialog import Dialog
from sipct.spec.expectation import HELPER_NAME, Expectation
from sipct.spec.params import ModuleParams
from sipct.spec.profiles import KernelProfile

__all__ = ["REFERENCE_HELPER", "ReferenceDaemon", "ReferenceRunner", "ReferenceUnavailable", "check_kernel",
           "helper_config"]

REFERENCE_HELPER = "sipct"
READY_TIMEOUT = 300.0  # seconds until READY=1: under TCG the guest imports the venv slowly
# A queued packet takes a trip through Python before its verdict: under TCG
# tens of milliseconds, so a packet judged dropped is waited for longer than
# the kernel helper's (a late one still shows as a "timing" divergence).
DROP_TIMEOUT = 1.0
UNREGISTER_WAIT = 60.0  # the lab's nft objects hold the helper until cleanup_net() ran
SETUP_HINT = ("run it in a VM kernel that has them: `--kernel 6.1.0-56-amd64` (a Debian image installed by "
              "scripts/setup-kernels.sh)")


class ReferenceUnavailable(RuntimeError):
    """This kernel cannot run the reference helper; the message says why and what to do."""


def check_kernel() -> None:
    """Raise ReferenceUnavailable unless this kernel has nfnetlink_cthelper and
    queues packets with their conntrack (NFQA_CT)."""
    import errno

    from sipct.reference.netlink.socket import HelperSocket, netlink_text

    release = os.uname().release
    what = ("the reference helper needs nfnetlink_cthelper (CONFIG_NF_CT_NETLINK_HELPER) and conntrack "
            "attributes in queued packets (CONFIG_NETFILTER_NETLINK_GLUE_CT)")
    try:
        with HelperSocket() as sock:
            try:
                sock.helpers()
            except NetlinkError as exc:
                raise ReferenceUnavailable(f"kernel {release} has no nfnetlink_cthelper ({netlink_text(exc)}): "
                                           f"{what}; {SETUP_HINT}") from None
            code = sock.probe_queue(0)
    except OSError as exc:
        raise ReferenceUnavailable(f"kernel {release}: cannot open nfnetlink ({exc}): {what}; {SETUP_HINT}") from None
    if code == errno.EOPNOTSUPP:
        raise ReferenceUnavailable(f"kernel {release} queues packets without their conntrack (no "
                                   f"CONFIG_NETFILTER_NETLINK_GLUE_CT): {what}; {SETUP_HINT}")
    if code == errno.EINVAL:
        raise ReferenceUnavailable(f"kernel {release} has no nfnetlink_queue (CONFIG_NETFILTER_NETLINK_QUEUE): "
                                   f"{what}; {SETUP_HINT}")


def helper_config(params: ModuleParams, profile: KernelProfile, *, name: str = REFERENCE_HELPER,
                  queue: int = 0, log_level: str = "info", workers: int = 1) -> str:
    """The daemon's configuration (docs/reference.rst) for a run under ``params``
    and ``profile``: the kernel helper's module parameters, mirrored."""
    ports = ", ".join(str(p) for p in params.ports)
    return (
        "[helper]\n"
        f'name = "{name}"\n'
        f"queue = {queue}\n"
        f"workers = {workers}\n"
        'fail_policy = "open"\n'
        f'profile = "{profile.name}"\n'
        "[sip]\n"
        f"ports = [{ports}]\n"
        f"sip_timeout = {params.sip_timeout}\n"
        f"sip_direct_signalling = {str(params.sip_direct_signalling).lower()}\n"
        f"sip_direct_media = {str(params.sip_direct_media).lower()}\n"
        f"sip_external_media = {str(params.sip_external_media).lower()}\n"
        "[log]\n"
        f'level = "{log_level}"\n'
    )


def _sipct_command() -> str:
    own = Path(sys.executable).parent / "sipct"
    found = str(own) if own.exists() else shutil.which("sipct")
    if found is None:
        raise ReferenceUnavailable("no sipct command next to this Python or on PATH: run scripts/setup.sh")
    return found


class ReferenceDaemon:
    """One ``sipct helper`` process in a network namespace, started once it
    said READY=1 (sd_notify)."""

    def __init__(self, netns: str, config: Path, log: Path) -> None:
        self.netns, self.config, self.log = netns, config, log
        self.proc: subprocess.Popen | None = None
        self.ready_seconds: float | None = None

    def start(self, timeout: float = READY_TIMEOUT) -> None:
        # Not in the run's folder: AF_UNIX sockets cannot be bound on a VM's 9p share.
        notify = Path(tempfile.gettempdir() if not Path("/run").is_dir() else "/run") / \
            f"sipct-notify-{os.getpid()}-{id(self):x}"
        notify.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        started = time.monotonic()
        try:
            listener.bind(str(notify))
            env = dict(os.environ, NOTIFY_SOCKET=str(notify))
            # Shielded: a signal during the start is raised once self.proc is set, for the stop below.
            with open(self.log, "ab") as stderr, shielded():
                self.proc = subprocess.Popen(
                    ["ip", "netns", "exec", self.netns, _sipct_command(), "helper", "--config", str(self.config)],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
            deadline = started + timeout
            while True:
                listener.settimeout(max(0.1, min(1.0, deadline - time.monotonic())))
                try:
                    if "READY=1" in listener.recv(4096).decode(errors="replace"):
                        break
                except TimeoutError:
                    pass
                if self.proc.poll() is not None:
                    raise RuntimeError(f"sipct helper exited with {self.proc.returncode} before READY=1: "
                                       f"{self.log_tail()}")
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"sipct helper sent no READY=1 within {timeout:.0f} s: {self.log_tail()}")
        except BaseException:
            if self.proc is not None and self.proc.poll() is None:
                self.stop()
            raise
        finally:
            listener.close()
            notify.unlink(missing_ok=True)
        self.ready_seconds = time.monotonic() - started

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        """SIGTERM (the daemon unbinds and unregisters), SIGKILL after a minute;
        its exit status."""
        with shielded(), doing(f"stopping the reference helper (pid {self.proc and self.proc.pid})"):
            proc, self.proc = self.proc, None
            if proc is None:
                return None
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                return proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
                return -signal.SIGKILL

    def log_tail(self, chars: int = 3000) -> str:
        return _tail(self.log, chars)


def _tail(path: Path, chars: int) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def lab_hosts(dialogs: Iterable[Dialog]) -> list[HostSpec]:
    """One host per address of the dialogs (a dialog names hosts by address, so
    dialogs with clashing host names still share the lab)."""
    addresses: dict[str, None] = {}
    for dialog in dialogs:
        for addr in dialog.hosts.values():
            addresses.setdefault(str(addr), None)
    return [HostSpec(f"r{i}", (addr,)) for i, addr in enumerate(addresses)]


class ReferenceRunner:
    """Runs dialogs through the reference helper, as DialogRunner does through
    the kernel's: ``run()`` has its arguments and returns a KernelRun.

    The lab holds every address of ``dialogs`` (the dialogs it will be asked
    to run) and attaches the helper on ``params.ports``; the helper is
    registered before the lab's ruleset names it, then ``sipct helper`` starts
    in the router namespace with ``params`` and ``profile``. ``close()`` stops
    it, removes the lab and unregisters the helper."""

    def __init__(self, dialogs: Sequence[Dialog], params: ModuleParams, profile: KernelProfile, *,
                 drop_timeout: float = DROP_TIMEOUT, workdir: Path | None = None, log_level: str = "info",
                 workers: int = 1) -> None:
        from sipct.reference.config import load_config
        from sipct.reference.netlink.socket import HelperSocket

        self.params, self.profile = params, profile
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="sipct-reference-")) if workdir is None else workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        config_path = self.workdir / "helper.toml"
        config_path.write_text(helper_config(params, profile, log_level=log_level, workers=workers))
        self.config = load_config(config_path)
        self.log = self.workdir / "helper.log"
        self.log.write_bytes(b"")  # a kept workdir: this runner's daemon only
        self.lab: Lab | None = None
        self.daemon: ReferenceDaemon | None = None
        self._runner: DialogRunner | None = None
        self._registered = False
        try:
            # nft resolves a ct helper object's type when the ruleset loads: register first.
            with HelperSocket() as control:
                for helper in self.config.registrations():
                    control.register(helper)
            self._registered = True
            self.lab = Lab(lab_hosts(dialogs), sip_ports=params.ports, timeout=drop_timeout,
                           helper_type=self.config.names)
            self.daemon = ReferenceDaemon(self.lab.router_netns, config_path, self.log)
            self.daemon.start()
            self._runner = DialogRunner(self.lab, drop_timeout=drop_timeout)
        except BaseException:
            self.close()
            raise

    @property
    def ready_seconds(self) -> float | None:
        return self.daemon.ready_seconds if self.daemon else None

    def log_text(self, chars: int = 200_000) -> str:
        """The end of the daemon's log (all of its runs in this runner)."""
        return _tail(self.log, chars)

    def run(self, dialog: Dialog, ports: tuple[int, ...],
            expected: Sequence[bool | None] | None = None, predicted: Sequence | None = None,
            on_step: Callable[[Lab, int], None] | None = None) -> KernelRun:
        assert self._runner is not None and self.lab is not None and self.daemon is not None, "closed"
        if tuple(ports) != self.lab.sip_ports:
            raise ValueError(f"{dialog.source}: the reference helper's lab attaches it on ports "
                             f"{','.join(map(str, self.lab.sip_ports))}, the dialog wants {','.join(map(str, ports))}")
        if not self.daemon.alive():
            raise RuntimeError(f"sipct helper is gone (exit status {self.daemon.proc and self.daemon.proc.returncode}): "
                               f"{self.daemon.log_tail()}")
        run = self._runner.run(dialog, ports, expected, predicted=predicted, on_step=on_step)
        return as_kernel_helper(run, self.config.names)

    def close(self) -> None:
        """Stop the daemon, remove the lab, unregister the helper (retried:
        the lab's nft objects refer to it until the kernel's cleanup_net()
        has run, asynchronously)."""
        with shielded(), doing("removing the reference helper's lab"):
            self._close()

    def _close(self) -> None:
        from sipct.reference.netlink.socket import HelperSocket

        if self.daemon is not None:
            self.daemon.stop()
        if self._runner is not None:
            self._runner.close()
            self._runner = None
        if self.lab is not None:
            self.lab.close()
            self.lab = None
        if self._registered:
            deadline = time.monotonic() + UNREGISTER_WAIT
            with HelperSocket() as control:
                for helper in self.config.registrations():
                    while True:
                        try:
                            control.unregister(helper)
                            break
                        except NetlinkError as exc:
                            if getattr(exc, "code", None) == 2 or time.monotonic() > deadline:  # ENOENT: gone
                                break
                            time.sleep(0.5)
            self._registered = False
        if self._own_workdir and not os.environ.get("SIPCT_KEEP_REFERENCE"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "ReferenceRunner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _renamed(e: Expectation, names: tuple[str, ...]) -> Expectation:
    return replace(e, helper=HELPER_NAME) if e.helper in names else e


def as_kernel_helper(run: KernelRun, name: str | tuple[str, ...]) -> KernelRun:
    """``run`` with the reference helper's name (or its workers' names) in its
    expectations replaced by the kernel helper's ("sip"), the name the spec predicts."""
    name = (name,) if isinstance(name, str) else name
    steps = [replace(s, expectations=tuple(_renamed(e, name) for e in s.expectations),
                     events=tuple(replace(ev, expectation=_renamed(ev.expectation, name)) for ev in s.events))
             for s in run.steps]
    return replace(run, steps=steps)
