"""Through the router: SIP signalling with no helper, the kernel's nf_conntrack_sip, and the reference helper.

Boots one VM kernel (default 6.1.192, /boot/vmlinuz-6.1.0-56-amd64) and, in
that one boot, sends the four-message call (INVITE+SDP, 200+SDP, ACK, BYE)
through a lab's router, every call on a fresh UA port (a new master), in
labs one after the other:

  (a) no helper (the same ruleset minus the ct helper objects);
  (b) the kernel helper nf_conntrack_sip ("sip");
  (c) the reference helper: ``sipct helper`` in the router namespace,
      registered as "sipct" (sipct.harness.threeway), queue 0;
  (d) the reference helper with ``workers = N`` (--workers): helpers
      "sipct-0".."sipct-<N-1>" on queues 0..N-1, new masters spread over
      them by the ruleset (``ct helper set jhash ... map``).

Two measures per configuration:

* one message in flight: messages per second (a request->delivery round
  each) and the round's latency (p50/p99 of send -> read by the receiver);
* --in-flight calls at once (default 16): each of the call's messages is
  sent for all of them before the deliveries are read, so a helper with
  several workers has work for each; messages per second. Calls in flight at
  once use media ports of their own (an expectation clash would drop).

Prints the ratios (kernel/none, reference/kernel, N workers/1 worker) of
numbers measured in that one run. Under TCG (no KVM here) the absolute
numbers are those of an emulated CPU; the ratios are the result.
Needs root, virtme-ng and QEMU (scripts/setup-kernels.sh).
Usage: .venv/bin/python bench/router.py [--kernel 6.1.0-56-amd64] [--calls N] [--in-flight K] [--workers N]
       [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))

GUEST_MODULES = ("nf_conntrack_sip", "nfnetlink_cthelper", "nfnetlink_queue", "nf_conntrack_netlink", "nft_ct")
GUEST_SCRIPT = """\
#!/bin/sh
R={share}
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH PYTHONDONTWRITEBYTECODE=1
for m in {modules}; do modprobe "$m" 2>> "$R/modprobe.err" || echo "$m" >> "$R/missing-modules"; done
{python} {script} --in-guest "$R" --calls {calls} --in-flight {in_flight} --workers {workers} {profile}\
    > "$R/result.json" 2> "$R/stderr"
echo $? > "$R/rc"
"""


# --- in the guest -----------------------------------------------------------------------------------

def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def measure(lab, names: dict[str, str], calls: int, first_port: int) -> dict:
    """``calls`` calls through ``lab``; every message waited for."""
    from common import call_dialog

    dialog = call_dialog()
    rounds: list[float] = []
    started = time.perf_counter()
    for call in range(calls):
        port = first_port + call
        for step in dialog.steps:
            sport = port if step.src.host == "ua" else step.src.port
            dport = port if step.dst.host == "ua" else step.dst.port
            t0 = time.perf_counter()
            d = lab.udp_send(names[step.src.host], sport, names[step.dst.host], dport, step.payload, timeout=10.0)
            rounds.append(time.perf_counter() - t0)
            if not d.delivered:
                raise RuntimeError(f"call {call}: a message was not delivered")
    elapsed = time.perf_counter() - started
    return {"messages": len(rounds), "seconds": round(elapsed, 3), "per_second": round(len(rounds) / elapsed, 2),
            "p50_ms": round(_percentile(rounds, 0.5) * 1000, 3), "p99_ms": round(_percentile(rounds, 0.99) * 1000, 3)}


def call_slot(step_payload: bytes, slot: int) -> bytes:
    """The call's message with media ports of in-flight slot ``slot`` (same
    number of digits: Content-Length stays right)."""
    return step_payload.replace(b"m=audio 49170 ", b"m=audio %d " % (40000 + 2 * slot)) \
        .replace(b"m=audio 3456 ", b"m=audio %d " % (3000 + 2 * slot))


def measure_in_flight(lab, names: dict[str, str], calls: int, in_flight: int, first_port: int) -> dict:
    """``calls`` calls, ``in_flight`` at a time: every message of a wave is
    sent before any is read; every one must arrive (10 s)."""
    import select

    from common import call_dialog

    dialog = call_dialog()
    if in_flight > 500:
        raise ValueError("at most 500 calls in flight (4-digit media ports)")
    payloads = [[call_slot(step.payload, slot) for step in dialog.steps] for slot in range(in_flight)]
    started = time.perf_counter()
    messages = 0
    for wave in range(0, calls, in_flight):
        ports = [first_port + c for c in range(wave, min(calls, wave + in_flight))]
        for index, step in enumerate(dialog.steps):
            src, dst = names[step.src.host], names[step.dst.host]
            receivers: dict[int, int] = {}  # fileno -> datagrams still to come
            socks = {}
            for slot, port in enumerate(ports):
                sport = port if step.src.host == "ua" else step.src.port
                dport = port if step.dst.host == "ua" else step.dst.port
                rx = lab.udp_socket(dst, dport)
                socks[rx.fileno()] = rx
                receivers[rx.fileno()] = receivers.get(rx.fileno(), 0) + 1
                lab.udp_socket(src, sport).sendto(payloads[slot][index], (str(lab.address(dst)), dport))
            poller = select.poll()
            for fd in receivers:
                poller.register(fd, select.POLLIN)
            deadline = time.monotonic() + 10.0
            while receivers:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"wave {wave}, step {index}: {sum(receivers.values())} message(s) not delivered")
                for fd, _ in poller.poll(left * 1000):
                    while receivers.get(fd):
                        try:
                            socks[fd].recvfrom(65535)
                        except BlockingIOError:
                            break
                        receivers[fd] -= 1
                        messages += 1
                        if not receivers[fd]:
                            del receivers[fd]
                            poller.unregister(fd)
    elapsed = time.perf_counter() - started
    return {"messages": messages, "in_flight": in_flight, "seconds": round(elapsed, 3),
            "per_second": round(messages / elapsed, 2)}


def masters_per_helper(netns: str) -> dict[str, int]:
    """How the ruleset's hash spread the masters: conntracks per helper name (`conntrack -L`)."""
    import re
    import subprocess

    listing = subprocess.run(["ip", "netns", "exec", netns, "conntrack", "-L"], capture_output=True, text=True)
    counts: dict[str, int] = {}
    for name in re.findall(r"helper=(\S+)", listing.stdout):
        counts[name] = counts.get(name, 0) + 1
    return counts


def profile_helper(out: Path) -> None:
    """Run every ``sipct helper`` of this process under cProfile: one stats
    file per process in ``out`` (a worker's too: the fork inherits it)."""
    import sipct.harness.threeway as threeway

    wrapper = out / "sipct-profiled"
    wrapper.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(HERE))} --profiled "
                       f"{shlex.quote(str(out))} \"$@\"\n")
    wrapper.chmod(0o755)
    threeway._sipct_command = lambda: str(wrapper)


def profiled(out: Path, argv: list[str]) -> int:
    """``sipct`` under cProfile; each process (workers included) writes
    ``helper-<pid>.prof`` when it ends."""
    import atexit
    import cProfile

    from sipct.cli.main import main as sipct_main

    profiler = cProfile.Profile()
    owner = os.getpid()

    def dump() -> None:
        profiler.disable()
        profiler.dump_stats(str(out / f"helper-{os.getpid()}.prof"))

    atexit.register(dump)  # the supervisor or a single helper
    real_exit = os._exit

    def exit_with_stats(status: int) -> None:  # a worker ends by os._exit (sipct.reference.workers)
        if os.getpid() != owner:
            dump()
        real_exit(status)

    os._exit = exit_with_stats
    profiler.enable()
    return sipct_main(argv)


def in_guest(out: Path, calls: int, in_flight: int, workers: int) -> dict:
    from common import call_dialog

    from sipct.harness.lab import Lab
    from sipct.harness.run import lab_hosts
    from sipct.harness.threeway import ReferenceRunner
    from sipct.spec.params import ModuleParams
    from sipct.spec.profiles import profile_for_kernel
    from sipct.netlink.kernel import kernel_version

    dialog = call_dialog()
    names = {"ua": "h0", "server": "h1"}
    result: dict = {"release": os.uname().release, "calls": calls, "workers": workers,
                    "cpus": os.cpu_count()}
    warm = max(2, calls // 20)
    for key, helper in (("none", False), ("kernel", True)):
        with Lab(lab_hosts(dialog), helper=helper) as lab:
            measure(lab, names, warm, 30000)
            result[key] = measure(lab, names, calls, 20000)
            result[f"{key}_in_flight"] = measure_in_flight(lab, names, calls, in_flight, 40000)
    profile = profile_for_kernel(kernel_version(os.uname().release))
    for key, count in (("reference", 1), (f"reference_{workers}", workers)):
        with ReferenceRunner([dialog], ModuleParams(), profile, workdir=out / key, workers=count) as runner:
            ref_names = {host: name for name, spec in runner.lab.hosts.items()
                         for host, addr in dialog.hosts.items() if spec.addresses[0] == addr}
            result[f"{key}_ready_seconds"] = round(runner.ready_seconds or 0, 1)
            measure(runner.lab, ref_names, warm, 30000)
            if count == 1:
                result[key] = measure(runner.lab, ref_names, calls, 20000)
            result[f"{key}_in_flight"] = measure_in_flight(runner.lab, ref_names, calls, in_flight, 40000)
            result[f"{key}_alive"] = runner.daemon.alive()
            log = runner.log_text()
            result[f"{key}_log_errors"] = sum(" ERROR " in line or "Traceback" in line for line in log.splitlines())
            if count > 1:
                result[f"{key}_masters"] = masters_per_helper(runner.lab.router_netns)
    return result


# --- on the host ------------------------------------------------------------------------------------

def boot(kernel_name: str, calls: int, in_flight: int, workers: int, timeout: float,
         profile: Path | None = None) -> dict:
    from sipct.harness.vmboot import boot_script
    from sipct.harness.vmkernels import VmKernel

    kernel = VmKernel.from_path(kernel_name)
    work = Path(tempfile.mkdtemp(prefix="sipct-bench-router-", dir="/tmp"))
    share = work / "share"
    share.mkdir()
    try:
        (share / "guest.sh").write_text(GUEST_SCRIPT.format(
            share=shlex.quote(str(share)), modules=" ".join(GUEST_MODULES), python=shlex.quote(sys.executable),
            script=shlex.quote(str(HERE)), calls=calls, in_flight=in_flight, workers=workers,
            profile=f"--profile {shlex.quote(str(share / 'profile'))} " if profile else ""))
        if not boot_script(kernel, share, timeout):
            raise SystemExit(f"the guest did not finish within {timeout:.0f} s: "
                             f"{(work / 'vng.log').read_text(errors='replace')[-2000:]}")
        if profile is not None:
            for stats in (share / "profile").glob("*.prof"):
                shutil.copy(stats, profile / stats.name)
        try:
            return json.loads((share / "result.json").read_text())
        except json.JSONDecodeError:
            raise SystemExit(f"no result from the guest: {(share / 'stderr').read_text(errors='replace')[-3000:]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--kernel", default="6.1.0-56-amd64", help="VM kernel (default 6.1.0-56-amd64 = 6.1.192)")
    parser.add_argument("--calls", type=int, default=100, help="calls per configuration (4 messages each)")
    parser.add_argument("--in-flight", type=int, default=16, help="calls at once in the pipelined measure")
    parser.add_argument("--workers", type=int, default=2, help="the reference helper's workers (helper.workers)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds the boot may take")
    parser.add_argument("--json", type=Path, help="write the numbers as JSON")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="run the reference helper under cProfile; its stats files go to DIR")
    parser.add_argument("--in-guest", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--profiled", type=Path, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.profiled:
        sys.exit(profiled(args.profiled, rest))
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.workers < 2:
        parser.error("--workers: 2 or more (1 worker is measured anyway)")
    if args.in_guest:
        if args.profile:
            args.profile.mkdir(exist_ok=True)
            profile_helper(args.profile)
        json.dump(in_guest(args.in_guest, args.calls, args.in_flight, args.workers), sys.stdout)
        return
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    r = boot(args.kernel, args.calls, args.in_flight, args.workers, args.timeout, args.profile)
    if args.json:
        args.json.write_text(json.dumps(r, indent=1))
    n, k, ref = r["none"], r["kernel"], r["reference"]
    print(f"router benchmark in {r['release']} (one boot, TCG, {r.get('cpus')} vCPUs), {r['calls']} calls = "
          f"{n['messages']} messages per configuration")
    print("one message in flight:")
    for key, label in (("none", "no helper"), ("kernel", "nf_conntrack_sip"), ("reference", "reference helper")):
        m = r[key]
        print(f"  {label:22} {m['per_second']:9.1f} messages/s   round p50 {m['p50_ms']:8.2f} ms   "
              f"p99 {m['p99_ms']:8.2f} ms")
    print(f"  ratios: messages/s kernel/none {k['per_second'] / n['per_second']:.2f}, reference/kernel "
          f"{ref['per_second'] / k['per_second']:.3f}; p50 latency reference/kernel {ref['p50_ms'] / k['p50_ms']:.1f}x, "
          f"added over no helper: kernel {k['p50_ms'] - n['p50_ms']:+.2f} ms, reference "
          f"{ref['p50_ms'] - n['p50_ms']:+.2f} ms (p50)")
    w = args.workers
    print(f"{r['kernel_in_flight']['in_flight']} calls in flight:")
    rows = (("none_in_flight", "no helper"), ("kernel_in_flight", "nf_conntrack_sip"),
            ("reference_in_flight", "reference, 1 worker"), (f"reference_{w}_in_flight", f"reference, {w} workers"))
    for key, label in rows:
        print(f"  {label:22} {r[key]['per_second']:9.1f} messages/s")
    kf, r1, rn = r["kernel_in_flight"], r["reference_in_flight"], r[f"reference_{w}_in_flight"]
    print(f"  ratios: reference/kernel {r1['per_second'] / kf['per_second']:.3f} (1 worker), "
          f"{rn['per_second'] / kf['per_second']:.3f} ({w} workers); {w} workers / 1 worker "
          f"{rn['per_second'] / r1['per_second']:.2f}; masters per worker helper "
          f"{r.get(f'reference_{w}_masters')}")
    for key in ("reference", f"reference_{w}"):
        if not r.get(f"{key}_alive", False):
            print(f"  the {key} daemon was not alive at the end")
        if r.get(f"{key}_log_errors"):
            print(f"  the {key} daemon logged {r[key + '_log_errors']} error line(s)")


if __name__ == "__main__":
    main()
