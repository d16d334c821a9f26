"""``sipct conformance``: the main job."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from sipct.spec.printable import printable

from sipct.spec.exitcodes import EXIT_DIVERGED, EXIT_ERROR, EXIT_OK
DEFAULT_EXAMPLES = 2000
# --nat: the ``nat`` argument of conformance.generate.dialogs().
NAT_SHARES = {"mixed": None, "only": True, "none": False}


def add_conformance_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("conformance", help="run curated and generated dialogs through spec and kernel")
    p.add_argument("--examples", type=int, default=DEFAULT_EXAMPLES,
                   help=f"generated dialogs (default {DEFAULT_EXAMPLES}; 0 for curated only)")
    p.add_argument("--seed", type=int, default=0, help="Hypothesis seed (default 0)")
    p.add_argument("--no-curated", action="store_true", help="skip the curated scenarios")
    p.add_argument("--slow", action="store_true",
                   help="also run the curated dialogs tagged slow (minutes of waiting for expectation timeouts)")
    p.add_argument("--scenarios", type=Path, action="append", default=[],
                   help="extra dialog files or folders to run as curated dialogs (repeatable)")
    p.add_argument("--profile", default="auto", help="spec profile (default: from the running kernel)")
    p.add_argument("--registry", type=Path, default=None, help="known-divergence registry file")
    p.add_argument("--out", type=Path, default=Path("conformance-out"),
                   help="where a minimal divergent dialog is written, and with --helper reference the reference "
                        "helper's config and log, in reference-helper/ (default ./conformance-out)")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the report as JSON")
    p.add_argument("--junit", type=Path, metavar="FILE", help="write a JUnit XML report")
    p.add_argument("--no-reproducers", action="store_true",
                   help="skip the reproducers of the known-divergence registry")
    p.add_argument("--dialog-files", type=Path, metavar="DIR",
                   help="run the dialog files in DIR as the generated dialogs instead of generating them "
                        "(what the guest of --kernel does; no Hypothesis, no shrinking)")
    p.add_argument("--nat", choices=tuple(NAT_SHARES), default="mixed",
                   help="generated dialogs behind a NAT router: mixed (two in five, the default), only, none")
    p.add_argument("--labs", type=_jobs, default=DEFAULT_LABS, metavar="N",
                   help=f"run the dialogs in N labs at once, each in a worker process of its own (default "
                        f"{DEFAULT_LABS}; docs/conformance.rst, Parallel labs); the report does not depend on N")
    p.add_argument("--helper", choices=("kernel", "reference"), default="kernel",
                   help="kernel: the kernel's nf_conntrack_sip (default); reference: also the userspace reference "
                        "helper (sipct helper) over the same dialogs - needs nfnetlink_cthelper, so usually with "
                        "--kernel")
    p.add_argument("--reference-log-level", choices=("debug", "info", "warning"), default="info",
                   help="the reference helper's log level (debug: a line per packet, with its rules and "
                        "expectation operations)")
    m = p.add_argument_group("kernel matrix (other kernels booted with virtme-ng; scripts/setup-kernels.sh)")
    m.add_argument("--kernel", dest="kernels", action="append", default=[], metavar="VMLINUZ",
                   help="also run the suite in this kernel image (or release, e.g. 6.1.0-56-amd64); repeatable")
    m.add_argument("--kernels", dest="preset", metavar="PRESET", choices=("debian", "all-installed"),
                   help="also run it in a preset's kernels: debian (6.1.170, 6.1.192, the newest 6.12: "
                        "scripts/setup-kernels.sh's default) or all-installed")
    m.add_argument("--no-host", action="store_true", help="with --kernel/--kernels: not on the running kernel")
    m.add_argument("--docs", type=Path, metavar="FILE",
                   help="with --kernel/--kernels: write the behaviour-by-kernel page (e.g. docs/matrix.rst)")
    m.add_argument("--jobs", type=_jobs, default=1, metavar="N",
                   help="boot N kernels at once (default 1; each guest takes --cpus 2 and 2 GB; the report does "
                        "not depend on N)")
    m.add_argument("--shard-dir", type=Path, metavar="DIR",
                   help="also write each kernel's row as a report of its own (a shard) into DIR, for `sipct report "
                        "merge`")
    m.add_argument("--vm-timeout", type=float, metavar="SECONDS",
                   help="seconds one boot may take (default: from the number of dialogs)")
    p.set_defaults(func=cmd_conformance)


# Four labs: the sipct process generates and judges while the labs wait (a
# curated wait step sleeps seconds); bench/harness.py on 2 cores: 62.5 dialogs/s in 2
# labs, 74.5 in 3, 80.4 in 4, 27.5 in one. A VM guest runs one (matrixplan).
DEFAULT_LABS = 4


def _jobs(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n}: at least 1")
    return n


def _collect(paths: list[Path]) -> list:
    from sipct.spec.dialog import load_dialog

    dialogs = []
    for path in paths:
        files = sorted(path.rglob("*.yaml")) if path.is_dir() else [path]
        dialogs.extend(load_dialog(f) for f in files)
    return dialogs


def cmd_conformance(args: argparse.Namespace) -> int:
    if args.kernels or args.preset:
        from sipct.conformance.matrix import cmd_matrix
        from sipct.harness.clean_cli import sweep_stale_labs

        sweep_stale_labs()  # before the first boot: the guests (and labs) of SIGKILLed runs
        return cmd_matrix(args)
    if args.no_host or args.docs or args.vm_timeout or args.jobs != 1 or args.shard_dir:
        Console(stderr=True).print("[red]error:[/red] --no-host, --docs, --jobs, --shard-dir and --vm-timeout go "
                                   "with --kernel or "
                                   "--kernels", highlight=False)
        return EXIT_ERROR
    return run_here(args)


def nat_share(args: argparse.Namespace) -> bool | None:
    """The generator's ``nat`` for this run (--nat; an older shard's options have none: mixed)."""
    return NAT_SHARES[getattr(args, "nat", None) or "mixed"]


def run_here(args: argparse.Namespace, *, quiet: bool = False):
    """The suite on the running kernel; the exit status, or with ``quiet``
    (the host row of a matrix) the Stats without printing or writing them
    (an int when the run could not be made)."""
    from sipct.conformance.corpus import example_dialogs, rfc4475_dialogs, scenario_dialogs, shared_dir
    from sipct.conformance.registry import REGISTRY, RegistryError, for_helper, load_registry
    from sipct.conformance.report import print_report, write_json, write_junit
    from sipct.conformance.suite import Suite, select_curated
    from sipct.harness.clean_cli import sweep_stale_labs
    from sipct.netlink.interrupts import doing
    from sipct.netlink.kernel import KernelUnavailable, RunningKernel
    from sipct.harness.prereq import PrerequisiteError, check_prerequisites
    from sipct.harness.threeway import ReferenceUnavailable
    from sipct.harness.threeway import check_kernel as reference_check
    from sipct.spec.dialog import DialogError
    from sipct.spec.profiles import UnknownProfile, profile_named

    out, err = Console(), Console(stderr=True)
    try:
        registry = load_registry(args.registry or REGISTRY)
        curated = [] if args.no_curated else [*example_dialogs(), *scenario_dialogs(), *rfc4475_dialogs()]
        curated += _collect(args.scenarios)
        curated = select_curated(curated, slow=args.slow)
        files = _collect([args.dialog_files]) if args.dialog_files else None
        sweep_stale_labs()
        check_prerequisites()
        kernel = RunningKernel.detect()
        profile = kernel.profile if args.profile == "auto" else profile_named(args.profile)
        if getattr(args, "helper", "kernel") == "reference":
            reference_check()
    except (RegistryError, DialogError, PrerequisiteError, KernelUnavailable, UnknownProfile,
            ReferenceUnavailable) as exc:
        err.print(Text.assemble(("cannot run:", "red"), f" {printable(str(exc))}"))
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
            "generated": progress.add_task("generated dialogs",
                                           total=args.examples if files is None else len(files)),
        }
        suite = Suite(kernel, profile, for_helper(registry, "kernel"),
                      on_dialog=lambda kind: progress.advance(tasks[kind]),
                      labs=getattr(args, "labs", DEFAULT_LABS))
        try:
            with doing(f"conformance: {len(curated)} curated dialogs"):
                suite.run_curated(curated)
            if not args.no_reproducers:
                with doing("conformance: the known divergences' reproducers"):
                    suite.run_reproducers()
            with doing(f"conformance: generated dialogs (seed {args.seed})"):
                if files is None:
                    suite.run_generated(args.examples, args.seed, args.out, nat=nat_share(args))
                else:
                    suite.run_files(files, args.seed)
        finally:
            suite.close()
    suite.stats.elapsed = time.monotonic() - started
    if getattr(args, "helper", "kernel") == "reference":
        return _with_reference(args, suite.stats, kernel, profile, registry, curated, files, quiet, out, err)
    if quiet:
        return suite.stats
    print_report(suite.stats, out)
    if args.json:
        write_json(suite.stats, args.json)
    if args.junit:
        write_junit(suite.stats, args.junit)
    return EXIT_OK if suite.stats.ok else EXIT_DIVERGED


def _with_reference(args: argparse.Namespace, stats, kernel, profile, registry, curated: list, files: list | None,
                    quiet: bool, out: Console, err: Console):
    """The same dialogs through the reference helper; the report is the kernel
    helper's ``sipct.conformance/1`` object with the reference helper's under
    ``"reference"`` (the Stats pair with ``quiet``)."""
    import json
    from xml.etree import ElementTree as ET

    from sipct.conformance.reference_suite import REFERENCE_FOLDER, ReferenceSuite
    from sipct.conformance.report import junit_suite, print_report, stats_json
    from sipct.conformance.suite import generate_dialogs

    if files is None:
        # The kernel's generated dialogs were Hypothesis's, shrunk when one diverged: the reference runs
        # the same seed's dialogs as generate_dialogs() makes them.
        files = [d for d in generate_dialogs(args.examples, args.seed, nat=nat_share(args)) if d.steps]
    started = time.monotonic()
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=err, transient=True) as progress:
            task = progress.add_task("reference helper", total=len(curated) + len(files))
            suite = ReferenceSuite(kernel, profile, registry, [*curated, *files],
                                   on_dialog=lambda kind: progress.advance(task), workdir=args.out / REFERENCE_FOLDER,
                                   log_level=args.reference_log_level)
            try:
                suite.run_curated(curated)
                if not args.no_reproducers:
                    suite.run_reproducers()
                suite.run_files(files, args.seed)
            finally:
                suite.close()
    except (RuntimeError, OSError) as exc:
        err.print(f"[red]the reference helper could not run:[/red] {exc}", highlight=False)
        return EXIT_ERROR
    reference = suite.stats
    reference.elapsed = time.monotonic() - started
    if quiet:
        return stats, reference
    print_report(stats, out)
    print_report(reference, out)
    if args.json:
        data = stats_json(stats)
        data["reference"] = stats_json(reference)
        args.json.write_text(json.dumps(data, indent=2, default=str) + "\n")
    if args.junit:
        root = ET.Element("testsuites", name="sipct-conformance")
        root.append(junit_suite(stats))
        root.append(junit_suite(reference, "sipct-conformance reference"))
        ET.ElementTree(root).write(args.junit, encoding="unicode", xml_declaration=True)
    return EXIT_OK if stats.ok and reference.ok else EXIT_DIVERGED
