"""``sipct run``: dialogs through the running kernel (or, with ``--kernel``,
through other kernels booted with virtme-ng), compared with the spec."""

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
    p.add_argument("--kernel", dest="kernels", action="append", metavar="VMLINUZ",
                   help="boot this kernel image (or release, e.g. 6.1.0-56-amd64) in QEMU with virtme-ng and "
                        "run the dialogs there, one boot per set of module parameters; repeatable "
                        "(install kernels with scripts/setup-kernels.sh)")
    p.add_argument("--vm-timeout", type=float, metavar="SECONDS",
                   help="with --kernel: seconds one boot may take (default: from the dialogs)")
    p.add_argument("--helper", choices=("kernel", "reference"), default="kernel",
                   help="kernel: the kernel's nf_conntrack_sip (default); reference: also the userspace "
                        "reference helper (sipct helper), three-way: spec, kernel, reference - needs "
                        "nfnetlink_cthelper, so usually with --kernel")
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from sipct.cli.main import examples_dir
    from sipct.harness.clean_cli import sweep_stale_labs
    from sipct.harness.diff import compare
    from sipct.harness.kernel import KernelUnavailable, RunningKernel
    from sipct.harness.prereq import PrerequisiteError, check_prerequisites
    from sipct.harness.report import comparison_json, print_comparison
    from sipct.harness.run import DialogRunner
    from sipct.spec.dialog import DialogError, load_dialog
    from sipct.spec.predict import predict
    from sipct.reference.lab import ReferenceUnavailable
    from sipct.reference.lab import check_kernel as reference_check
    from sipct.spec.profiles import UnknownProfile, profile_named

    err = Console(stderr=True)
    out = Console()
    paths = list(args.dialogs) or sorted(examples_dir().glob("*.yaml"))
    try:
        dialogs = [load_dialog(p) for p in paths]
    except DialogError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        return EXIT_ERROR
    if args.kernels:
        return run_in_kernels(args, list(zip(paths, dialogs)))
    sweep_stale_labs()
    try:
        check_prerequisites()
        kernel = RunningKernel.detect()
        profile = kernel.profile if args.profile == "auto" else profile_named(args.profile)
        if args.helper == "reference":
            reference_check()
    except (PrerequisiteError, KernelUnavailable, UnknownProfile, ReferenceUnavailable) as exc:
        err.print(f"[red]cannot run:[/red] {exc}", highlight=False)
        return EXIT_ERROR

    status = EXIT_OK
    results = []
    comparisons = []
    with DialogRunner() as runner:
        for dialog in dialogs:
            if dialog.params is not None and (conflicts := kernel.conflicts(dialog.params)):
                err.print(f"[yellow]{dialog.name}: not runnable on this kernel[/yellow] - it needs "
                          f"{', '.join(conflicts)}; module parameters are set when the module is loaded, "
                          "so run it in a VM kernel (sipct run --kernel VMLINUZ)", highlight=False)
                status = max(status, EXIT_ERROR)
                results.append({"dialog": dialog.name, "source": dialog.source, "runnable": False,
                                "needs": conflicts})
                continue
            params = kernel.params_for(dialog.params)
            prediction = predict(dialog, profile, params)
            run = runner.run(dialog, params.ports, [s.delivered for s in prediction.steps])
            comparison = compare(prediction, run, kernel.release)
            if not comparison.agree:
                status = max(status, EXIT_DIVERGED) if status != EXIT_ERROR else status
            if args.helper == "reference":
                comparisons.append((comparison, len(results)))
                results.append(comparison_json(comparison))
            elif args.json:
                results.append(comparison_json(comparison))
            else:
                print_comparison(comparison, out)
    if comparisons:
        from sipct.harness.report import add_reference, print_run_json
        from sipct.reference.lab import ReferenceRunner

        try:
            with ReferenceRunner([c.dialog for c, _ in comparisons], kernel.params, profile,
                                 log_level="debug") as reference:
                diverged = False
                for comparison, i in comparisons:
                    prediction = predict(comparison.dialog, profile, kernel.params_for(comparison.dialog.params))
                    run = reference.run(comparison.dialog, prediction.params.ports,
                                        [s.delivered for s in prediction.steps])
                    ref = compare(prediction, run, kernel.release)
                    results[i] = add_reference(results[i], ref)
                    if not ref.agree:
                        diverged = True
                        status = max(status, EXIT_DIVERGED) if status != EXIT_ERROR else status
                if diverged:
                    # What the helper decided, packet by packet: the divergence's first explanation.
                    err.print(f"the reference helper's log (debug):\n{reference.log_text()}", highlight=False,
                              markup=False)
        except (RuntimeError, OSError, ValueError) as exc:
            err.print(f"[red]the reference helper could not run:[/red] {exc}", highlight=False)
            return EXIT_ERROR
        if not args.json:
            for item in results:
                print_run_json(item, out)
    if args.json:
        json.dump(results[0] if len(results) == 1 else results, sys.stdout, indent=2)
        sys.stdout.write("\n")
    return status


def run_in_kernels(args: argparse.Namespace, dialogs: list) -> int:
    """``sipct run --kernel``: per kernel, one boot per set of module parameters,
    the guest's comparisons printed (or collected as JSON with a ``vm`` part)."""
    from sipct.harness.report import print_run_json
    from sipct.harness.vm import MODULE, VmError, VmKernel, group_by_module_params, run_in_vm, timeout_for
    from sipct.spec.profiles import UnknownProfile, profile_named

    err = Console(stderr=True)
    out = Console()
    if args.profile != "auto":
        try:
            profile_named(args.profile)
        except UnknownProfile as exc:
            err.print(f"[red]cannot run:[/red] {exc}", highlight=False)
            return EXIT_ERROR
    extra = [] if args.profile == "auto" else ["--profile", args.profile]
    if args.helper == "reference":
        extra += ["--helper", "reference"]
    path_of = {id(d): p for p, d in dialogs}
    status = EXIT_OK
    results = []
    for image in args.kernels:
        try:
            kernel = VmKernel.from_path(image)
        except VmError as exc:
            err.print(f"[red]cannot run:[/red] {exc}", highlight=False)
            status = EXIT_ERROR
            continue
        for params, group in group_by_module_params(d for _, d in dialogs):
            label = " ".join(f"{k}={v}" for k, v in params.items()) or "(default parameters)"
            if not args.json:
                out.print(f"[bold]kernel {kernel}[/bold] {kernel.vmlinuz}: modprobe {MODULE} {label}, "
                          f"{len(group)} dialog(s)", highlight=False)
            try:
                vm = run_in_vm(kernel, extra + [str(path_of[id(d)]) for d in group], module_params=params,
                               timeout=args.vm_timeout or timeout_for(
                                   group, per_dialog=120.0 if args.helper == "reference" else 60.0))
            except VmError as exc:
                err.print(f"[red]cannot run:[/red] {exc}", highlight=False)
                status = EXIT_ERROR
                continue
            if vm.missing_modules:
                err.print(f"[yellow]kernel {kernel.release} could not load {' '.join(vm.missing_modules)}"
                          "[/yellow]", highlight=False)
            if vm.stderr.strip():
                err.print(vm.stderr.rstrip(), highlight=False, markup=False)
            vm_info = {"vmlinuz": str(kernel.vmlinuz), "release": vm.guest_release,
                       "version": kernel.package_version or kernel.version, "module_params": params,
                       "loaded_params": vm.loaded_params, "missing_modules": vm.missing_modules,
                       "seconds": vm.timing()}
            for item in vm.results:
                if args.json:
                    results.append({**item, "vm": vm_info})
                else:
                    print_run_json(item, out)
            if not args.json:
                t = vm.timing()
                out.print(f"  [dim]boot {t['boot']} s, sipct in the guest {t['sipct']} s, "
                          f"total {t['total']} s[/dim]", highlight=False)
            status = max(status, vm.exit_code if vm.exit_code in (EXIT_OK, EXIT_DIVERGED) else EXIT_ERROR)
    if args.json:
        json.dump(results[0] if len(results) == 1 else results, sys.stdout, indent=2)
        sys.stdout.write("\n")
    return status
