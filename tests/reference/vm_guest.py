"""Runs inside a VM guest (root, the host's root filesystem): the reference
helper's lifecycle, which ``sipct run --helper reference`` does not exercise.

    python vm_guest.py OUT

With sipct.harness.threeway's ReferenceRunner (the helper registered as
"sipct" next to nf_conntrack_sip, ``sipct helper`` in the lab's router
namespace):

1. restarts the helper in the middle of a registration and checks that the
   new process takes the expectation over and finishes the registration;
2. stops the helper with SIGTERM and records its exit status, log and what
   the kernel's helper table says afterwards (the lab's nft objects still
   refer to it) and once the runner removed the lab;
3. restarts it in the middle of a TCP call through NAT66
   (nat/ipv6-tcp-seq-adjust: after the INVITE changed the phone's stream's
   length), so the new process must take the conntrack's seqadj record over
   (CTA_SEQ_ADJ_*) before it writes the PBX's and rewrites the ACK and BYE;
   the whole dialog is compared with the spec;
4. runs it with ``helper.workers = 2``: curated dialogs through both
   workers, one worker killed and restarted by the supervisor, the dialogs
   again, SIGTERM.

Everything is printed as one JSON object on stdout.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path


def main(out: Path) -> dict:
    from sipct.cli.main import examples_dir
    from sipct.netlink.kernel import RunningKernel
    from sipct.netlink.socket import CtExpSocket
    from sipct.harness.threeway import REFERENCE_HELPER, ReferenceDaemon, ReferenceRunner
    from sipct.reference.netlink.socket import HelperSocket
    from sipct.spec.dialog import load_dialog

    kernel = RunningKernel.detect()
    register = load_dialog(examples_dir() / "register.yaml")
    result: dict = {"profile": kernel.profile.name, "steps": []}
    with ReferenceRunner([register], kernel.params, kernel.profile, workdir=out) as runner:
        lab = runner.lab
        assert lab is not None and runner.daemon is not None
        result["ready_seconds"] = round(runner.ready_seconds or 0.0, 1)
        names = {addr: host for host, spec in lab.hosts.items() for addr in spec.addresses}
        sends = [s for s in register.steps if hasattr(s, "segments")]
        lab.reset()
        ctexp = CtExpSocket(lab.router_netns)
        try:
            ctexp.flush()

            def send(step) -> None:
                src, dst = register.hosts[step.src.host], register.hosts[step.dst.host]
                delivery = lab.udp_send(names[src], step.src.port, names[dst], step.dst.port, step.payload,
                                        timeout=3.0)
                table = [(str(e.tuple.dst), e.tuple.dport, sorted(e.flags), e.timeout, e.helper)
                         for e in ctexp.dump()]
                result["steps"].append({"delivered": delivery.delivered, "table": table})

            send(sends[0])
            result["first_exit"] = runner.daemon.stop()
            result["table_while_down"] = [(str(e.tuple.dst), e.tuple.dport, sorted(e.flags)) for e in ctexp.dump()]
            runner.daemon = ReferenceDaemon(lab.router_netns, runner.workdir / "helper.toml", runner.log)
            runner.daemon.start()
            for step in sends[1:4]:
                send(step)
        finally:
            ctexp.close()
        result["exit_code"] = runner.daemon.stop()
        with HelperSocket() as control:
            result["helpers_after_stop"] = [{"name": h.name, "enabled": h.enabled} for h in control.helpers()]
        result["log"] = runner.log.read_text()[-20000:]
    with HelperSocket() as control:
        result["helpers_after_close"] = [h.name for h in control.helpers() if h.name == REFERENCE_HELPER]
    result["tcp_nat_restart"] = tcp_nat_restart(kernel, out / "tcp-nat")
    result["workers"] = workers(kernel, out / "workers")
    return result


WORKER_DIALOGS = ("register.yaml", "invite-audio-video.yaml", "invite-cancel.yaml", "tcp-coalesced-split.yaml",
                  "invite-bad-media-port.yaml", "ipv6-invite.yaml", "compact-folded-headers.yaml")


def workers(kernel, workdir: Path) -> dict:
    """Part 4: helper.workers = 2. Curated dialogs through the two workers
    (the ruleset's hash spreads their masters), each compared with the spec;
    worker 0 killed (SIGKILL) and restarted by the supervisor, the dialogs
    again; SIGTERM."""
    import re
    import signal
    import subprocess
    import time

    from sipct.cli.main import examples_dir
    from sipct.conformance.registry import load_registry
    from sipct.harness.diff import compare
    from sipct.harness.threeway import ReferenceRunner
    from sipct.harness.wire import LAB_WIRE
    from sipct.reference.netlink.socket import HelperSocket
    from sipct.spec.dialog import load_dialog
    from sipct.spec.predict import predict

    activation = next(e for e in load_registry() if e.id == "reference-activation-replaces-the-expectation")
    dialogs = [load_dialog(examples_dir() / name) for name in WORKER_DIALOGS]
    out: dict = {"rounds": []}

    def round_of(runner) -> list[dict]:
        done = []
        for dialog in dialogs:
            params = kernel.params_for(dialog.params)
            prediction = predict(dialog, kernel.profile, params, wire=LAB_WIRE)
            run = runner.run(dialog, params.ports, [s.delivered for s in prediction.steps],
                             predicted=prediction.steps)
            listing = subprocess.run(["ip", "netns", "exec", runner.lab.router_netns, "conntrack", "-L"],
                                     capture_output=True, text=True).stdout
            diff = compare(prediction, run, kernel.release)
            # The registry's activation entry (test_vm_helper.py) is allowed, as the suite allows it.
            allowed = [f"step {s.index}: {d}" for s in diff.steps for d in s.divergences
                       if activation.matches(kernel.profile.name, d.aspect,
                                             {f.rule.id for f in s.prediction.firings})]
            done.append({"dialog": dialog.name, "helpers": sorted(set(re.findall(r"helper=(\S+)", listing))),
                         "activation_events": len(allowed),
                         "divergences": [f"step {s.index}: {d}" for s in diff.steps for d in s.divergences
                                         if f"step {s.index}: {d}" not in allowed]})
        return done

    with ReferenceRunner(dialogs, kernel.params, kernel.profile, workdir=workdir, workers=2) as runner:
        out["names"] = list(runner.config.names)
        out["rounds"].append(round_of(runner))
        supervisor = runner.daemon.proc.pid
        children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
        out["children"] = len(children)
        victim = int(children[0])
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and runner.log.read_text().count("worker 0: ready") < 2:
            time.sleep(0.2)
        out["restarted"] = runner.log.read_text().count("worker 0: ready") >= 2
        out["rounds"].append(round_of(runner))
        out["supervisor_alive"] = runner.daemon.alive()
        out["exit_code"] = runner.daemon.stop()
        with HelperSocket() as control:
            out["helpers_after_stop"] = sorted(h.name for h in control.helpers() if h.enabled)
        out["log"] = runner.log.read_text()[-20000:]
    return out


def tcp_nat_restart(kernel, workdir: Path) -> dict:
    """Part 3: the NAT66 TCP dialog with a new daemon from step RESTART_AT on."""
    from sipct.conformance.corpus import SCENARIOS
    from sipct.harness.diff import compare
    from sipct.harness.threeway import ReferenceDaemon, ReferenceRunner
    from sipct.harness.wire import LAB_WIRE
    from sipct.spec.dialog import load_dialog
    from sipct.spec.predict import predict

    dialog = load_dialog(SCENARIOS / "nat" / "ipv6-tcp-seq-adjust.yaml")
    params = kernel.params_for(dialog.params)
    prediction = predict(dialog, kernel.profile, params, wire=LAB_WIRE)
    out: dict = {}
    with ReferenceRunner([dialog], params, kernel.profile, workdir=workdir) as runner:
        def restart(lab, index: int) -> None:
            if index == RESTART_AT:
                out["first_exit"] = runner.daemon.stop()
                runner.daemon = ReferenceDaemon(lab.router_netns, runner.workdir / "helper.toml", runner.log)
                runner.daemon.start()

        run = runner.run(dialog, params.ports, [s.delivered for s in prediction.steps],
                         predicted=prediction.steps, on_step=restart)
        out["exit_code"] = runner.daemon.stop()
        out["log"] = runner.log.read_text()[-20000:]
    diff = compare(prediction, run, kernel.release)
    out["agree"] = diff.agree
    out["divergences"] = [f"step {s.index}: {d}" for s in diff.steps for d in s.divergences]
    out["shifts"] = [[a.seq_shift for a in s.arrivals] for s in prediction.steps]
    return out


# Before the PBX's 200 OK (step 0 is the connect): the new process rewrites it and records the PBX's
# stream, and the ACK and BYE after it move by the phone's offset, which only the adopted record knows.
RESTART_AT = 2


if __name__ == "__main__":
    out_dir = Path(sys.argv[1])
    try:
        data = main(out_dir)
    except Exception:
        data = {"error": traceback.format_exc()}
        log = out_dir / "helper.log"
        if log.exists():
            data["log"] = log.read_text()[-20000:]
    json.dump(data, sys.stdout, indent=1, default=str)
