"""``sipct conformance``: the main job."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

EXIT_OK, EXIT_DIVERGED, EXIT_ERROR = 0, 1, 2
DEFAULT_EXAMPLES = 2000


def add_conformance_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("conformance", help="run curated and generated dialogs through spec and kernel")
    p.add_argument("--examples", type=int, default=DEFAULT_EXAMPLES,
                   help=f"generated dialogs (default {DEFAULT_EXAMPLES}; 0 for curated only)")
    p.add_argument("--seed", type=int, default=0, help="Hypothesis seed (default 0)")
    p.add_argument("--no-curated", action="store_true", help="skip the curated scenarios")
    p.add_argument("--scenarios", type=Path, action="append", default=[],
                   help="extra dialog files or folders to run as curated dialogs (repeatable)")
    p.add_argument("--profile", default="auto", help="spec profile (default: from the running kernel)")
    p.add_argument("--registry", type=Path, default=None, help="known-divergence registry file")
    p.add_argument("--out", type=Path, default=Path("conformance-out"),
                   help="where a minimal divergent dialog is written (default ./conformance-out)")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the report as JSON")
    p.add_argument("--junit", type=Path, metavar="FILE", help="write a JUnit XML report")
    p.set_defaults(func=cmd_conformance)


def _collect(paths: list[Path]) -> list:
    from sipct.spec.dialog import load_dialog

    dialogs = []
    for path in paths:
        files = sorted(path.rglob("*.yaml")) if path.is_dir() else [path]
        dialogs.extend(load_dialog(f) for f in files)
    return dialogs


def cmd_conformance(args: argparse.Namespace) -> int:
    from sipct.conformance.corpus import example_dialogs, rfc4475_dialogs, scenario_dialogs, shared_dir
    from sipct.conformance.registry import REGISTRY, RegistryError, load_registry
    from sipct.conformance.report import print_report, write_json, write_junit
    from sipct.conformance.suite import Suite
    from sipct.harness.kernel import KernelUnavailable, RunningKernel
    from sipct.harness.prereq import PrerequisiteError, check_prerequisites
    from sipct.spec.dialog import DialogError
    from sipct.spec.profiles import UnknownProfile, profile_named

    out, err = Console(), Console(stderr=True)
    try:
        registry = load_registry(args.registry or REGISTRY)
        curated = [] if args.no_curated else [*example_dialogs(), *scenario_dialogs(), *rfc4475_dialogs()]
        curated += _collect(args.scenarios)
        check_prerequisites()
        kernel = RunningKernel.detect()
        profile = kernel.profile if args.profile == "auto" else profile_named(args.profile)
    except (RegistryError, DialogError, PrerequisiteError, KernelUnavailable, UnknownProfile) as exc:
        err.print(f"[red]cannot run:[/red] {exc}", highlight=False)
        return EXIT_ERROR
    if not args.no_curated and shared_dir() is None:
        err.print("[yellow]note:[/yellow] ../shared/corpora/rfc4475 not found: the RFC 4475 dialogs are skipped",
                  highlight=False)

    started = time.monotonic()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True) as progress:
        tasks = {
            "curated": progress.add_task("curated dialogs", total=len(curated)),
            "reproducer": progress.add_task("known divergences", total=len(registry)),
            "generated": progress.add_task("generated dialogs", total=args.examples),
        }
        suite = Suite(kernel, profile, registry, on_dialog=lambda kind: progress.advance(tasks[kind]))
        try:
            suite.run_curated(curated)
            suite.run_reproducers()
            suite.run_generated(args.examples, args.seed, args.out)
        finally:
            suite.close()
    suite.stats.elapsed = time.monotonic() - started
    print_report(suite.stats, out)
    if args.json:
        write_json(suite.stats, args.json)
    if args.junit:
        write_junit(suite.stats, args.junit)
    return EXIT_OK if suite.stats.ok else EXIT_DIVERGED
