"""``sipct run``: dialogs through the running kernel, compared with the spec."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console

EXIT_OK, EXIT_DIVERGED, EXIT_ERROR = 0, 1, 2


def add_run_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run dialogs through the running kernel and compare with the spec")
    p.add_argument("dialogs", nargs="*", type=Path, help="dialog files (default: the bundled examples)")
    p.add_argument("--profile", default="auto",
                   help="kernel version profile for the spec (default: chosen from the running kernel)")
    p.add_argument("--json", action="store_true", help="machine-readable output (format sipct.run/1)")
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from sipct.cli.main import examples_dir
    from sipct.harness.diff import compare
    from sipct.harness.kernel import KernelUnavailable, RunningKernel
    from sipct.harness.prereq import PrerequisiteError, check_prerequisites
    from sipct.harness.report import comparison_json, print_comparison
    from sipct.harness.run import DialogRunner
    from sipct.spec.dialog import DialogError, load_dialog
    from sipct.spec.predict import predict
    from sipct.spec.profiles import UnknownProfile, profile_named

    err = Console(stderr=True)
    out = Console()
    paths = list(args.dialogs) or sorted(examples_dir().glob("*.yaml"))
    try:
        dialogs = [load_dialog(p) for p in paths]
    except DialogError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        return EXIT_ERROR
    try:
        check_prerequisites()
        kernel = RunningKernel.detect()
        profile = kernel.profile if args.profile == "auto" else profile_named(args.profile)
    except (PrerequisiteError, KernelUnavailable, UnknownProfile) as exc:
        err.print(f"[red]cannot run:[/red] {exc}", highlight=False)
        return EXIT_ERROR

    status = EXIT_OK
    results = []
    with DialogRunner() as runner:
        for dialog in dialogs:
            if dialog.params is not None and (conflicts := kernel.conflicts(dialog.params)):
                err.print(f"[yellow]{dialog.name}: not runnable on this kernel[/yellow] - it needs "
                          f"{', '.join(conflicts)}; module parameters are set when the module is loaded, "
                          "so run it in a VM kernel (sipct conformance --kernel)", highlight=False)
                status = max(status, EXIT_ERROR)
                results.append({"dialog": dialog.name, "source": dialog.source, "runnable": False,
                                "needs": conflicts})
                continue
            params = kernel.params_for(dialog.params)
            prediction = predict(dialog, profile, params)
            run = runner.run(dialog, params.ports)
            comparison = compare(prediction, run, kernel.release)
            if not comparison.agree:
                status = max(status, EXIT_DIVERGED) if status != EXIT_ERROR else status
            if args.json:
                results.append(comparison_json(comparison))
            else:
                print_comparison(comparison, out)
    if args.json:
        json.dump(results[0] if len(results) == 1 else results, sys.stdout, indent=2)
        sys.stdout.write("\n")
    return status
