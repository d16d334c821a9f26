"""Runs inside a VM guest (root, the host's root filesystem): the reference helper end to end.

    python vm_guest.py OUT CONFIG DIALOG...

1. registers the userspace helper from the init namespace, so that the lab's
   nft ``ct helper`` objects of type "sip" find it (nf_conntrack_sip is kept
   from loading: it would take the name);
2. builds one lab for all dialogs and starts ``sipct helper`` in the router
   namespace (``ip netns exec``), waiting for its READY=1 (sd_notify);
3. runs each dialog with the harness (DialogRunner) and compares it with the
   spec (harness.diff.compare), as ``sipct run`` does for the kernel helper;
4. restarts the helper in the middle of a registration and checks that the
   new process takes the expectation over and finishes the registration;
5. stops the helper with SIGTERM and records its exit status, log and what
   the kernel's helper table says afterwards.

Everything is printed as one JSON object on stdout.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

READY_TIMEOUT = 300.0  # TCG: the guest imports the venv slowly
# sd_notify socket: not on the shared 9p folder, where AF_UNIX sockets cannot be bound.
NOTIFY = Path("/run/sipct-reference-notify")


def start_helper(netns: str, config: Path, log: Path, notify: Path) -> subprocess.Popen:
    if notify.exists():
        notify.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify))
    listener.settimeout(READY_TIMEOUT)
    env = dict(os.environ, NOTIFY_SOCKET=str(notify))
    sipct = str(Path(sys.executable).parent / "sipct")
    with open(log, "ab") as stderr:
        proc = subprocess.Popen(["ip", "netns", "exec", netns, sipct, "helper", "--config", str(config)],
                                stdout=subprocess.DEVNULL, stderr=stderr, env=env)
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            listener.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                message = listener.recv(4096).decode()
            except TimeoutError:
                raise RuntimeError(f"sipct helper sent no READY=1 within {READY_TIMEOUT:.0f} s: "
                                   f"{log.read_text()[-2000:]}") from None
            if "READY=1" in message:
                return proc
            if proc.poll() is not None:
                raise RuntimeError(f"sipct helper exited with {proc.returncode}: {log.read_text()[-2000:]}")
    finally:
        listener.close()


def stop_helper(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return -9


def main(out: Path, config_path: Path, dialog_paths: list[str]) -> dict:
    from sipct.harness.diff import compare
    from sipct.harness.kernel import kernel_version
    from sipct.harness.lab import HostSpec, Lab
    from sipct.harness.report import comparison_json
    from sipct.harness.run import DialogRunner
    from sipct.reference.config import load_config
    from sipct.reference.netlink.socket import HelperSocket
    from sipct.spec.dialog import load_dialog
    from sipct.spec.predict import predict
    from sipct.spec.profiles import profile_for_kernel

    result: dict = {"dialogs": [], "restart": {}, "log": ""}
    config = load_config(config_path)
    release = os.uname().release
    profile = profile_for_kernel(kernel_version(release))
    result["profile"] = profile.name
    with HelperSocket() as control:
        for helper in config.registrations():
            control.register(helper)
    dialogs = [load_dialog(p) for p in dialog_paths]
    addresses: dict = {}
    for d in dialogs:
        for addr in d.hosts.values():
            addresses.setdefault(addr, f"h{len(addresses)}")
    hosts = [HostSpec(name, (addr,)) for addr, name in addresses.items()]
    log = out / "helper.log"
    lab = Lab(hosts, sip_ports=config.params.ports)
    proc = None
    try:
        started = time.monotonic()
        proc = start_helper(lab.router_netns, config_path, log, NOTIFY)
        result["ready_seconds"] = round(time.monotonic() - started, 1)
        with DialogRunner(lab, drop_timeout=3.0) as runner:
            for dialog in dialogs:
                params = config.params
                run = runner.run(dialog, params.ports)
                comparison = compare(predict(dialog, profile, params), run, release)
                data = comparison_json(comparison)
                data["refresh_steps"] = [s.prediction.index for s in comparison.steps
                                         if any(f.rule.id == "register-response.refresh"
                                                for f in s.prediction.firings)]
                result["dialogs"].append(data)
        result["restart"] = restart_check(lab, config_path, log, out, dialogs, proc)
        proc = result["restart"].pop("_proc")
        result["exit_code"] = stop_helper(proc)
        proc = None
        with HelperSocket() as control:
            result["helpers_after_stop"] = [
                {"name": h.name, "l3": h.l3num, "l4": h.l4proto, "enabled": h.enabled} for h in control.helpers()]
    finally:
        if proc is not None:
            stop_helper(proc)
        lab.close()
    # The lab's nft objects go with its namespaces - asynchronously (cleanup_net()
    # runs from a workqueue): until then the kernel refuses with EBUSY.
    unregistered = []
    with HelperSocket() as control:
        for helper in config.registrations():
            deadline = time.monotonic() + 30
            while True:
                try:
                    control.unregister(helper)
                    unregistered.append(str(helper))
                    break
                except Exception as exc:
                    if time.monotonic() > deadline:
                        unregistered.append(f"{helper}: {exc}")
                        break
                    time.sleep(0.5)
    result["unregistered"] = unregistered
    result["log"] = log.read_text()[-20000:]
    return result


def restart_check(lab, config_path: Path, log: Path, out: Path, dialogs: list, proc: subprocess.Popen) -> dict:
    """A REGISTER, a helper restart, then its 200 OK and the unbinding
    REGISTER with its 200 OK: the new helper must take the registration over
    (the expectation from the ctnetlink dump, the REGISTER's CSeq from the
    master's private data - without it the 200 OK would be stale and the
    expectation would stay INACTIVE)."""
    from sipct.harness.netlink.socket import CtExpSocket

    register = next(d for d in dialogs if d.name == "register")
    names = {addr: host for host, spec in lab.hosts.items() for addr in spec.addresses}
    sends = [s for s in register.steps if hasattr(s, "segments")]
    lab.reset()
    ctexp = CtExpSocket(lab.router_netns)
    out_: dict = {"steps": []}
    try:
        ctexp.flush()

        def send(step) -> None:
            src, dst = register.hosts[step.src.host], register.hosts[step.dst.host]
            delivery = lab.udp_send(names[src], step.src.port, names[dst], step.dst.port, step.payload,
                                    timeout=3.0)
            table = [(str(e.tuple.dst), e.tuple.dport, sorted(e.flags), e.timeout) for e in ctexp.dump()]
            out_["steps"].append({"delivered": delivery.delivered, "table": table})

        send(sends[0])
        out_["first_exit"] = stop_helper(proc)
        out_["table_while_down"] = [(str(e.tuple.dst), e.tuple.dport, sorted(e.flags)) for e in ctexp.dump()]
        proc = start_helper(lab.router_netns, config_path, log, NOTIFY)
        for step in sends[1:4]:
            send(step)
    finally:
        ctexp.close()
    out_["_proc"] = proc
    return out_


if __name__ == "__main__":
    out_dir, config_file, *paths = sys.argv[1:]
    try:
        data = main(Path(out_dir), Path(config_file), paths)
    except Exception:
        data = {"error": traceback.format_exc()}
        log = Path(out_dir) / "helper.log"
        if log.exists():
            data["log"] = log.read_text()[-20000:]
    json.dump(data, sys.stdout, indent=1, default=str)
