"""Through the router: SIP signalling with no helper, the kernel's nf_conntrack_sip, and the reference helper.

Boots one VM kernel (default 6.1.192, /boot/vmlinuz-6.1.0-56-amd64) and, in
that one boot, sends the four-message call (INVITE+SDP, 200+SDP, ACK, BYE)
through a lab's router, every call on a fresh UA port (a new master), one
message at a time, in three labs one after the other:

  (a) no helper (the same ruleset minus the ct helper objects);
  (b) the kernel helper nf_conntrack_sip ("sip");
  (c) the reference helper: ``sipct helper`` in the router namespace,
      registered as "sipct" (sipct.harness.threeway), queue 0.

Per configuration: messages per second (one in flight: a request->delivery
round each) and the added latency of one round (p50/p99 of send -> read by
the receiver). Prints the ratios (kernel/none, reference/kernel) of numbers
measured in that one run. Under TCG (no KVM here) the absolute numbers are
those of an emulated CPU; the ratios are the result.
Needs root, virtme-ng and QEMU (scripts/setup-kernels.sh).
Usage: .venv/bin/python bench/router.py [--kernel 6.1.0-56-amd64] [--calls N] [--json FILE]
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
{python} {script} --in-guest "$R" --calls {calls} > "$R/result.json" 2> "$R/stderr"
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


def in_guest(out: Path, calls: int) -> dict:
    from common import call_dialog

    from sipct.harness.lab import Lab
    from sipct.harness.run import lab_hosts
    from sipct.harness.threeway import ReferenceRunner
    from sipct.spec.params import ModuleParams
    from sipct.spec.profiles import profile_for_kernel
    from sipct.netlink.kernel import kernel_version

    dialog = call_dialog()
    names = {"ua": "h0", "server": "h1"}
    result: dict = {"release": os.uname().release, "calls": calls}
    warm = max(2, calls // 20)
    for key, helper in (("none", False), ("kernel", True)):
        with Lab(lab_hosts(dialog), helper=helper) as lab:
            measure(lab, names, warm, 30000)
            result[key] = measure(lab, names, calls, 20000)
    profile = profile_for_kernel(kernel_version(os.uname().release))
    with ReferenceRunner([dialog], ModuleParams(), profile, workdir=out / "reference") as runner:
        ref_names = {host: name for name, spec in runner.lab.hosts.items()
                     for host, addr in dialog.hosts.items() if spec.addresses[0] == addr}
        result["reference_ready_seconds"] = round(runner.ready_seconds or 0, 1)
        measure(runner.lab, ref_names, warm, 30000)
        result["reference"] = measure(runner.lab, ref_names, calls, 20000)
        result["reference_alive"] = runner.daemon.alive()
    return result


# --- on the host ------------------------------------------------------------------------------------

def boot(kernel_name: str, calls: int, timeout: float) -> dict:
    from sipct.harness.vmboot import boot_script
    from sipct.harness.vmkernels import VmKernel

    kernel = VmKernel.from_path(kernel_name)
    work = Path(tempfile.mkdtemp(prefix="sipct-bench-router-", dir="/tmp"))
    share = work / "share"
    share.mkdir()
    try:
        (share / "guest.sh").write_text(GUEST_SCRIPT.format(
            share=shlex.quote(str(share)), modules=" ".join(GUEST_MODULES), python=shlex.quote(sys.executable),
            script=shlex.quote(str(HERE)), calls=calls))
        if not boot_script(kernel, share, timeout):
            raise SystemExit(f"the guest did not finish within {timeout:.0f} s: "
                             f"{(work / 'vng.log').read_text(errors='replace')[-2000:]}")
        try:
            return json.loads((share / "result.json").read_text())
        except json.JSONDecodeError:
            raise SystemExit(f"no result from the guest: {(share / 'stderr').read_text(errors='replace')[-3000:]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel", default="6.1.0-56-amd64", help="VM kernel (default 6.1.0-56-amd64 = 6.1.192)")
    parser.add_argument("--calls", type=int, default=100, help="calls per configuration (4 messages each)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds the boot may take")
    parser.add_argument("--json", type=Path, help="write the numbers as JSON")
    parser.add_argument("--in-guest", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_guest:
        json.dump(in_guest(args.in_guest, args.calls), sys.stdout)
        return
    r = boot(args.kernel, args.calls, args.timeout)
    if args.json:
        args.json.write_text(json.dumps(r, indent=1))
    print(f"router benchmark in {r['release']} (one boot, TCG), {r['calls']} calls = {r['none']['messages']} "
          f"messages per configuration, one message in flight:")
    for key, label in (("none", "no helper"), ("kernel", "nf_conntrack_sip"), ("reference", "reference helper")):
        m = r[key]
        print(f"  {label:18} {m['per_second']:9.1f} messages/s   round p50 {m['p50_ms']:8.2f} ms   "
              f"p99 {m['p99_ms']:8.2f} ms")
    n, k, ref = r["none"], r["kernel"], r["reference"]
    print(f"  ratios: messages/s kernel/none {k['per_second'] / n['per_second']:.2f}, reference/kernel "
          f"{ref['per_second'] / k['per_second']:.3f}; p50 latency reference/kernel {ref['p50_ms'] / k['p50_ms']:.1f}x, "
          f"added over no helper: kernel {k['p50_ms'] - n['p50_ms']:+.2f} ms, reference "
          f"{ref['p50_ms'] - n['p50_ms']:+.2f} ms (p50)")
    if not r.get("reference_alive", False):
        print("  the reference daemon was not alive at the end")


if __name__ == "__main__":
    main()
