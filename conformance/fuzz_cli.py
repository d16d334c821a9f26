"""``sipct fuzz``: the RFC 4475 corpus and fuzzed messages through the
reference helper, compared with the spec.

    sipct fuzz --kernel 6.1.0-56-amd64 --messages 2000 --seed 7
    sipct fuzz --kernel 6.1.0-56-amd64 --messages 100000 --slices 8 --json fuzz.json

With ``--kernel`` each slice boots that kernel (virtme-ng), runs
``sipct fuzz`` there with ``--observations-only`` and checks what came back
on this side; without it the run uses this machine's kernel, which must have
nfnetlink_cthelper. Exit status: 0 the daemon survived and every message
agreed with the spec, 1 a mismatch or an unhealthy daemon, 2 no run.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from sipct.conformance.fuzz import FuzzMessage, Mutator, default_seeds
from sipct.spec.printable import printable

from sipct.spec.exitcodes import EXIT_DIVERGED, EXIT_ERROR, EXIT_OK
# Guest seconds per message under TCG, measured on 6.1.192 (sizes the VM timeout).
GUEST_SECONDS_PER_MESSAGE = 0.5
# What the daemon's log must not say, and what it may say but is counted.
LOG_PATTERNS = {
    "tracebacks": r"Traceback \(most recent call last\)",
    "internal_errors": r"internal error",
    "policy_verdicts": r"packet \d+: error: ",
    "kernel_refusals": r"the kernel refused",
    "resyncs": r"resynchronised \(",
    "lost_repeats": r"did not come back",
    "queue_overflows": r"queue socket overflowed",
}
NAT_SHARE = 0.3
FATAL = ("tracebacks", "internal_errors", "policy_verdicts", "lost_repeats", "queue_overflows")


def add_fuzz_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fuzz", help="fuzz the reference helper (sipct helper) and compare with the spec")
    p.add_argument("--helper", choices=("reference",), default="reference",
                   help="the helper under test (only the userspace reference helper: the kernel's own cannot "
                        "crash in a way a process could see)")
    p.add_argument("--kernel", metavar="VMLINUZ",
                   help="boot this kernel (image or release, e.g. 6.1.0-56-amd64) with virtme-ng and fuzz there")
    p.add_argument("--messages", type=int, default=2000, help="fuzzed messages after the corpus (default 2000)")
    p.add_argument("--seed", type=int, default=7, help="the run's seed (default 7)")
    p.add_argument("--no-corpus", action="store_true", help="skip the seeds themselves (RFC 4475, examples, SDP)")
    p.add_argument("--start", type=int, default=0, metavar="K",
                   help="continue a run: skip the corpus and the first K fuzzed messages of this seed")
    p.add_argument("--slices", type=int, default=1, help="with --kernel: boots to spread the run over")
    p.add_argument("--tcp-share", type=float, default=0.05, help="share of messages sent over TCP (default 0.05)")
    p.add_argument("--ipv6-share", type=float, default=0.15, help="share of messages sent over IPv6 (default 0.15)")
    p.add_argument("--nat-share", type=float, default=NAT_SHARE,
                   help=f"share of the UDP messages sent on masters the router masquerades, so that nf_nat_sip's "
                        f"rewrites and NAT expectations are fuzzed too (default {NAT_SHARE}; 0: no NAT)")
    p.add_argument("--timeout", type=float, help="with --kernel: seconds one boot may take (default: estimated)")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the report as JSON")
    p.add_argument("--observations", type=Path, metavar="FILE",
                   help="also write every message's observation (JSON lines: what was sent, when, what the kernel did)")
    p.add_argument("--observations-only", type=Path, metavar="FILE", help=argparse.SUPPRESS)
    p.add_argument("--messages-from", type=Path, metavar="FILE", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_fuzz)


def _range(args: argparse.Namespace, corpus_size: int) -> tuple[int, int]:
    """Message indexes: the corpus, then the fuzzed ones (message i is a
    function of the seed and i, so --start K continues a shorter run)."""
    if args.start:
        return corpus_size + args.start, corpus_size + args.start + args.messages
    return 0, corpus_size + args.messages


def cmd_fuzz(args: argparse.Namespace) -> int:
    if args.messages < 0 or args.slices < 1 or args.start < 0:
        print("error: --messages and --start must be >= 0, --slices >= 1", file=sys.stderr)
        return EXIT_ERROR
    if not all(0.0 <= share <= 1.0 for share in (args.tcp_share, args.ipv6_share, args.nat_share)):
        print("error: --tcp-share, --ipv6-share and --nat-share are shares: between 0 and 1", file=sys.stderr)
        return EXIT_ERROR
    if args.messages_from is not None:
        with open(args.messages_from, "rb") as f:
            messages = [FuzzMessage(*m) for m in pickle.load(f)]
    else:
        mutator = Mutator(default_seeds(), args.seed, corpus=not args.no_corpus)
        messages = mutator.messages(*_range(args, mutator.corpus_size))
    if args.kernel:
        return fuzz_in_vm(args, messages)
    try:
        data = fuzz_here(args, messages)
    except Exception as exc:  # noqa: BLE001 - reported with what to do
        print(printable(f"error: {exc}"), file=sys.stderr)
        return EXIT_ERROR
    if args.observations_only is not None:
        args.observations_only.write_text(json.dumps(data))
        return EXIT_OK
    return finish(args, [data], messages)


def fuzz_here(args: argparse.Namespace, messages: list[FuzzMessage]) -> dict:
    """The run in this kernel: lab, daemon, messages; the observations."""
    from sipct.conformance.fuzz_run import fuzz_hosts, observe, route
    from sipct.harness.clean_cli import sweep_stale_labs
    from sipct.netlink.kernel import kernel_version
    from sipct.harness.threeway import ReferenceRunner, check_kernel
    from sipct.spec.params import ModuleParams
    from sipct.spec.profiles import profile_for_kernel

    sweep_stale_labs()
    check_kernel()
    release = os.uname().release
    profile = profile_for_kernel(kernel_version(release))
    expect_max = int(Path("/proc/sys/net/netfilter/nf_conntrack_expect_max").read_text())
    params = ModuleParams(expect_max=expect_max)
    routes = [route(args.seed, m, ipv6_share=args.ipv6_share, tcp_share=args.tcp_share, nat_share=args.nat_share)
              for m in messages]

    def progress(index: int, seconds: float) -> None:
        print(f"fuzz: message {index} after {seconds:.0f} s", file=sys.stderr, flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="sipct-fuzz-"))
    runner = ReferenceRunner(fuzz_hosts(), params, profile, workdir=workdir)
    exit_code = None
    try:
        result = observe(messages, routes, runner, progress=progress)
        exit_code = runner.daemon.stop()
        log = runner.log.read_text(errors="replace")
    finally:
        runner.close()
    result.update(kernel=release, profile=profile.name, expect_max=expect_max, exit_code=exit_code,
                  ready_seconds=runner.ready_seconds, log_counts=log_counts(log),
                  log_tail=log[-6000:], log_lines=[line for line in log.splitlines() if _notable(line)][:200])
    return result


def log_counts(log: str) -> dict[str, int]:
    return {name: len(re.findall(pattern, log)) for name, pattern in LOG_PATTERNS.items()}


def _notable(line: str) -> bool:
    return any(re.search(LOG_PATTERNS[k], line) for k in FATAL + ("kernel_refusals",)) or " ERROR " in line


def fuzz_in_vm(args: argparse.Namespace, messages: list[FuzzMessage]) -> int:
    from sipct.harness.vm import run_in_vm
    from sipct.harness.vmkernels import VmError

    per = -(-len(messages) // args.slices)
    results = []
    with tempfile.TemporaryDirectory(prefix="sipct-fuzz-") as tmp:
        for n in range(args.slices):
            part = messages[n * per:(n + 1) * per]
            if not part:
                break
            path = Path(tmp) / "messages.pickle"
            with open(path, "wb") as f:
                pickle.dump([(m.index, m.seed, m.mutations, m.payload) for m in part], f)
            argv = ["--seed", str(args.seed), "--tcp-share", str(args.tcp_share), "--ipv6-share",
                    str(args.ipv6_share), "--nat-share", str(args.nat_share), "--messages-from", "in/messages.pickle",
                    "--observations-only", "observations.json"]
            timeout = args.timeout or 400.0 + GUEST_SECONDS_PER_MESSAGE * len(part)
            started = time.monotonic()
            print(f"fuzz: slice {n + 1}/{args.slices}: messages {part[0].index}-{part[-1].index} in "
                  f"{args.kernel} (limit {timeout:.0f} s)", file=sys.stderr, flush=True)
            try:
                vm = run_in_vm(args.kernel, argv, command=("fuzz",), inputs={"messages.pickle": path},
                               json_file="observations.json", timeout=timeout)
            except VmError as exc:
                print(printable(f"error: {exc}"), file=sys.stderr)
                return EXIT_ERROR
            data = vm.json
            data["boot_seconds"] = round(time.monotonic() - started, 1)
            data["messages"] = (part[0].index, part[-1].index)
            results.append(data)
            print(f"fuzz: slice {n + 1}: {len(data['observations'])} messages in {data['seconds']} s "
                  f"in the guest ({data['boot_seconds']} s with the boot)", file=sys.stderr, flush=True)
    return finish(args, results, messages)


def finish(args: argparse.Namespace, slices: list[dict], messages: list[FuzzMessage]) -> int:
    """Check every slice against a fresh spec (each slice is a fresh kernel), report."""
    from sipct.conformance.fuzz_check import FuzzReport, check
    from sipct.spec.params import ModuleParams
    from sipct.spec.profiles import profile_named

    if args.observations:  # first: what the guests saw is kept whatever the check makes of it
        with open(args.observations, "w") as f:
            for data in slices:
                for obs in data["observations"]:
                    f.write(json.dumps(obs) + "\n")
    report = FuzzReport()
    health: Counter = Counter()
    problems: list[str] = []
    sent = 0
    for data in slices:
        params = ModuleParams(expect_max=data["expect_max"])
        where = f"messages {data['observations'][0]['index'] if data['observations'] else '-'}..."
        checked = report.messages
        try:
            check(messages, data["observations"], params, profile_named(data["profile"]), report)
        except Exception as exc:  # noqa: BLE001 - the run's other slices and its report are kept
            problems.append(f"{where}: the spec could not replay the slice after {report.messages - checked} "
                            f"message(s) ({type(exc).__name__}: {exc}); the rest of it is not compared")
        health.update(data["log_counts"])
        sent += sum(1 for obs in data["observations"] if obs.get("payload") is None)  # not the warm-ups
        if not data["alive"]:
            problems.append(f"{where}: the daemon died: {data['log_tail'][-2000:]}")
        if data["exit_code"] != 0:
            problems.append(f"{where}: the daemon exited with {data['exit_code']}")
        if data["queue"]["dropped"] or data["queue"]["user_dropped"]:
            problems.append(f"{where}: the queue dropped packets ({data['queue']})")
    expected = len(messages)
    if sent != expected:
        problems.append(f"{expected - sent} message(s) were not sent (the run stopped early)")
    problems += [f"daemon log: {health[k]} {k.replace('_', ' ')}" for k in FATAL if health[k]]
    out = {"format": "sipct.fuzz/1", "seed": args.seed, "nat_share": args.nat_share, "kernel": slices[0]["kernel"] if slices else None,
           "profile": slices[0]["profile"] if slices else None, "report": report.json(),
           "daemon": dict(health), "problems": problems,
           "slices": [{k: v for k, v in d.items() if k != "observations"} for d in slices],
           "guest_seconds": round(sum(d["seconds"] for d in slices), 1)}
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))
    r = report
    print(f"sipct fuzz: {r.messages} messages (seed {args.seed}; {r.tcp} TCP, {r.ipv6} IPv6) through the reference "
          f"helper on {out['kernel']} (profile {out['profile']}) in {out['guest_seconds']} s: "
          f"{r.delivered} delivered ({r.late} late), {r.dropped} dropped; {r.kernel_new} expectations created "
          f"(spec: {r.spec_new})")
    if r.nat:
        print(f"behind NAT: {r.nat} messages ({r.warm_ups} warm-ups before), {r.rewritten} delivered rewritten; "
              f"{r.unobservable} replies sent to a port no receiver listens on, {r.stale} stale datagrams, "
              f"{r.drawn_ports} REGISTER port(s) the helper drew after -EBUSY")
    print(f"daemon: {', '.join(f'{k} {v}' for k, v in sorted(health.items()))}")
    print(f"mismatches: {r.mismatches} " + (f"({', '.join(f'{k} {v}' for k, v in r.counts.items())})"
                                           if r.mismatches else ""))
    # Seed names come from corpus files, problems quote the daemon's log: printable() keeps their control
    # characters off the terminal (the JSON report has them as they were).
    for m in r.examples[:10]:
        print(printable(f"  #{m.index} {m.kind} [{m.seed} {'+'.join(m.mutations) or 'as is'}] {m.route}: "
                        f"spec {m.spec}; kernel {m.kernel}"))
    for p in problems:
        print(printable(f"problem: {p}"))
    return EXIT_OK if not problems and not r.mismatches else EXIT_DIVERGED
