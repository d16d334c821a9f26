"""``sipct observe``: SIPp calls through the lab, each call's packets
predicted by the spec and compared with the kernel."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from rich.console import Console
from rich.text import Text

from sipct.cli.batch import say
from sipct.spec.exitcodes import EXIT_DIVERGED, EXIT_ERROR, EXIT_OK, worst
from sipct.spec.printable import printable


def add_observe_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("observe", help="real user agents (SIPp) in the lab: the capture predicted by the spec "
                                       "and compared with the kernel, call by call")
    p.add_argument("--calls", type=int, default=3, help="calls per transport and family (default 3; "
                                                        "e.g. --calls 500 for a long run)")
    p.add_argument("--transport", dest="transports", action="append", choices=("udp", "tcp"),
                   help="repeatable (default: both)")
    p.add_argument("--family", dest="families", action="append", type=int, choices=(4, 6),
                   help="repeatable (default: both)")
    p.add_argument("--out", type=Path, help="keep the captures (pcapng) and dialogs here (default: a temporary "
                                            "folder, removed afterwards)")
    p.add_argument("-v", "--verbose", action="store_true", help="every call, not only those that diverge")
    p.set_defaults(func=cmd_observe)


def cmd_observe(args: argparse.Namespace) -> int:
    from sipct.netlink.kernel import KernelUnavailable, RunningKernel
    from sipct.harness.prereq import PrerequisiteError, check_prerequisites

    from .observe import observe
    from .sipp import SippUnavailable, sipp_path

    out, err = Console(), Console(stderr=True)
    if args.calls < 1:
        say(err, "cannot run:", "red", "--calls must be at least 1")
        return EXIT_ERROR
    try:
        check_prerequisites()
        sipp_path()
        kernel = RunningKernel.detect()
    except (PrerequisiteError, KernelUnavailable, SippUnavailable) as exc:
        say(err, "cannot run:", "red", exc)
        return EXIT_ERROR
    status = EXIT_OK
    with tempfile.TemporaryDirectory(prefix="sipct-observe-") as scratch:
        folder = args.out or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        for transport in args.transports or ["udp", "tcp"]:
            for family in args.families or [4, 6]:
                try:
                    run = observe(transport, family, args.calls, folder, kernel)
                except (SippUnavailable, OSError, ValueError) as exc:
                    say(err, f"{transport} IPv{family}:", "red", f"could not observe: {exc}")
                    status = worst(status, EXIT_ERROR)
                    continue
                _print(run, out, kernel.release, args.verbose, keep=args.out is not None)
                if not run.agree:
                    status = worst(status, EXIT_DIVERGED)
    return status


def _print(run, out: Console, release: str, verbose: bool, keep: bool) -> None:
    agreeing = sum(r.agree for r in run.reports)
    steps = sum(len(r.steps) for r in run.reports)
    verdict = ("agree", "green") if run.agree else ("DIVERGE", "red")
    out.print(Text.assemble((f"SIPp {run.transport} IPv{run.family}", "bold"),
                            f": {run.calls} calls (SIPp exit {run.sipp.returncode}), {steps} SIP packets, "
                            f"kernel {release}, profile {run.prediction.profile.name}: ", verdict,
                            f" - {agreeing} of {len(run.reports)} calls agree"))
    if keep:
        out.print(Text(f"  {run.pcap}  {run.dialog}", style="dim"))
    for r in run.reports:
        if verbose or not r.agree:
            mark = ("✓", "green") if r.agree else ("✗", "red")
            out.print(Text.assemble("  ", mark, f" call {printable(r.call_id)}: {len(r.steps)} packets; drops spec "
                                    f"{r.spec_drops or 'none'}, kernel {r.kernel_drops or 'none'}; expectations "
                                    f"created: spec {len(r.spec_expectations)}, kernel {len(r.kernel_expectations)}"
                                    + (f"; only the spec: {', '.join(r.spec_only)}" if r.spec_only else "")))
    for e in run.kernel_only:
        out.print(Text.assemble("  ", ("✗", "red"), f" only the kernel created {e}"))
    if run.sipp.returncode != 0:
        out.print(Text(f"  SIPp: {printable(run.sipp.output.strip()[-400:])}", style="yellow"))
