"""``sipct run``: dialogs through the running kernel (or, with ``--kernel``,
through other kernels booted with virtme-ng), compared with the spec."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.text import Text

from sipct.spec.printable import printable
from sipct.cli.batch import BadFile, load_batch, say
from sipct.spec.exitcodes import EXIT_DIVERGED, EXIT_ERROR, EXIT_OK, worst
from sipct.harness.wire import LAB_WIRE


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
    p.add_argument("--pcap", type=Path, metavar="DIR",
                   help="write each dialog's traffic at the router (both sides) to DIR/NAME.pcapng, each step's "
                        "packets commented with the spec's verdict, rules and expectation table")
    from sipct.capture.cli import add_capture_options
    add_capture_options(p)
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from sipct.capture.cli import capture_options
    from sipct.capture.runpcap import StepCapture, pcap_name, write_run_pcap
    from sipct.cli.main import examples_dir
    from sipct.harness.clean_cli import sweep_stale_labs
    from sipct.harness.diff import compare
    from sipct.netlink.kernel import KernelUnavailable, RunningKernel
    from sipct.harness.prereq import PrerequisiteError, check_prerequisites
    from sipct.harness.report import comparison_json, print_comparison
    from sipct.harness.run import DialogRunner
    from sipct.harness.lab import LabError
    from sipct.spec.dialog import DialogError
    from sipct.spec.predict import predict
    from sipct.spec.report import print_warnings
    from sipct.harness.threeway import ReferenceUnavailable
    from sipct.harness.threeway import check_kernel as reference_check
    from sipct.spec.profiles import UnknownProfile, profile_named

    err = Console(stderr=True)
    out = Console()
    if args.pcap is not None:
        if args.kernels:
            say(err, "cannot run:", "red", "--pcap captures in the lab on this kernel; not with --kernel")
            return EXIT_ERROR
        try:
            args.pcap.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            say(err, "cannot run:", "red", f"--pcap {args.pcap}: {exc.strerror}")
            return EXIT_ERROR
    paths = list(args.dialogs) or sorted(examples_dir().glob("*.yaml"))
    batch = load_batch(paths, capture_options(args))
    status = EXIT_OK
    for _, item in batch:
        if isinstance(item, BadFile):
            item.print(err)
            status = EXIT_ERROR
        elif not args.json:  # JSON output has them in each comparison
            print_warnings(item, err)
    if args.kernels:
        sweep_stale_labs()  # the guests of SIGKILLed runs too
        return worst(status, run_in_kernels(args, batch))
    if all(isinstance(item, BadFile) for _, item in batch):
        _dump_json(args, [item.json() for _, item in batch])
        return status
    sweep_stale_labs()
    try:
        check_prerequisites()
        kernel = RunningKernel.detect()
        profile = kernel.profile if args.profile == "auto" else profile_named(args.profile)
        if args.helper == "reference":
            reference_check()
    except (PrerequisiteError, KernelUnavailable, UnknownProfile, ReferenceUnavailable) as exc:
        say(err, "cannot run:", "red", exc)
        # Still a whole document: every dialog, with why it did not run.
        _dump_json(args, [item.json() if isinstance(item, BadFile) else
                          BadFile(item.source, f"{item.source}: cannot run: {exc}").json() for _, item in batch])
        return EXIT_ERROR

    results = []
    comparisons = []
    with DialogRunner() as runner:
        for _, dialog in batch:
            if isinstance(dialog, BadFile):
                results.append(dialog.json())
                continue
            if dialog.params is not None and (conflicts := kernel.conflicts(dialog.params)):
                say(err, f"{printable(dialog.name)}: not runnable on this kernel", "yellow",
                    f"- it needs {', '.join(conflicts)}; module parameters are set when the module is loaded, "
                    "so run it in a VM kernel (sipct run --kernel VMLINUZ)")
                status = worst(status, EXIT_ERROR)
                results.append({"dialog": dialog.name, "source": dialog.source, "runnable": False,
                                "needs": conflicts})
                continue
            if dialog.kernels and profile.name not in dialog.kernels:
                say(err, f"{printable(dialog.name)}: not run", "yellow",
                    f"- it is meant for the profiles {', '.join(dialog.kernels)}; this kernel's is {profile.name}")
                results.append({"dialog": dialog.name, "source": dialog.source, "runnable": False,
                                "kernels": list(dialog.kernels)})
                continue
            params = kernel.params_for(dialog.params)
            try:
                prediction = predict(dialog, profile, params, wire=LAB_WIRE)
            except DialogError as exc:  # Unpredictable: the kernel would decide at random
                bad = BadFile(dialog.source, str(exc))
                bad.print(err)
                results.append(bad.json())
                status = worst(status, EXIT_ERROR)
                continue
            hook = StepCapture() if args.pcap else None
            try:
                try:
                    run = runner.run(dialog, params.ports, [s.delivered for s in prediction.steps], on_step=hook,
                                     predicted=prediction.steps)
                finally:
                    captured = hook.finish() if hook else []
            except (LabError, OSError) as exc:
                failed = BadFile(dialog.source, f"{dialog.source}: the lab could not run the dialog: {exc}")
                failed.print(err)
                results.append(failed.json())
                status = worst(status, EXIT_ERROR)
                continue
            comparison = compare(prediction, run, kernel.release)
            if hook is not None:
                pcap = args.pcap / f"{pcap_name(dialog.name)}.pcapng"
                count = write_run_pcap(pcap, hook, captured, prediction, comparison.steps, kernel.release)
                say(err, "capture:", "", f"{pcap} ({count} packets at the router)")
            if not comparison.agree or prediction.failures:
                status = worst(status, EXIT_DIVERGED)
            if args.helper == "reference":
                comparisons.append((comparison, len(results)))
                results.append(comparison_json(comparison))
            elif args.json:
                results.append(comparison_json(comparison))
            else:
                print_comparison(comparison, out)
    if comparisons:
        from sipct.harness.report import add_reference, print_run_json
        from sipct.harness.threeway import ReferenceRunner

        try:
            with ReferenceRunner([c.dialog for c, _ in comparisons], kernel.params, profile,
                                 log_level="debug") as reference:
                diverged = False
                for comparison, i in comparisons:
                    prediction = predict(comparison.dialog, profile, kernel.params_for(comparison.dialog.params),
                                         wire=LAB_WIRE)
                    run = reference.run(comparison.dialog, prediction.params.ports,
                                        [s.delivered for s in prediction.steps], predicted=prediction.steps)
                    ref = compare(prediction, run, kernel.release)
                    results[i] = add_reference(results[i], ref)
                    if not ref.agree:
                        diverged = True
                        status = worst(status, EXIT_DIVERGED)
                if diverged:
                    # What the helper decided, packet by packet: the divergence's first explanation.
                    say(err, "the reference helper's log (debug):", "", f"\n{reference.log_text()}")
        except (RuntimeError, OSError, ValueError) as exc:
            # The kernel helper's results stand; the dialogs the reference did not run stay two-way.
            say(err, "the reference helper could not run:", "red", exc)
            status = EXIT_ERROR
        if not args.json:
            for item in results:
                if "error" not in item:
                    print_run_json(item, out)
    _dump_json(args, results)
    return status


def _dump_json(args: argparse.Namespace, results: list[dict]) -> None:
    """The ``--json`` document: one object for one dialog, else a list; a dialog
    that could not be loaded or run is an ``error`` entry in its place."""
    if args.json:
        json.dump(results[0] if len(results) == 1 else results, sys.stdout, indent=2)
        sys.stdout.write("\n")


def run_in_kernels(args: argparse.Namespace, batch: list[tuple[Path, object]]) -> int:
    """``sipct run --kernel``: per kernel, one boot per set of module parameters,
    the guest's comparisons printed (or collected as JSON with a ``vm`` part);
    the files that did not load are ``error`` entries and boot nowhere."""
    from sipct.harness.report import print_run_json
    from sipct.harness.vm import run_in_vm
    from sipct.harness.vmboot import timeout_for
    from sipct.harness.vmkernels import MODULE, VmError, VmKernel
    from sipct.harness.vmstage import group_by_module_params
    from sipct.spec.profiles import UnknownProfile, profile_named

    err = Console(stderr=True)
    out = Console()
    if args.profile != "auto":
        try:
            profile_named(args.profile)
        except UnknownProfile as exc:
            say(err, "cannot run:", "red", exc)
            return EXIT_ERROR
    extra = [] if args.profile == "auto" else ["--profile", args.profile]
    if args.helper == "reference":
        extra += ["--helper", "reference"]
    dialogs = [(p, d) for p, d in batch if not isinstance(d, BadFile)]
    path_of = {id(d): p for p, d in dialogs}
    status = EXIT_OK
    results = [d.json() for _, d in batch if isinstance(d, BadFile)]
    for image in args.kernels:
        try:
            kernel = VmKernel.from_path(image)
        except VmError as exc:
            say(err, "cannot run:", "red", exc)
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
                say(err, "cannot run:", "red", exc)
                status = EXIT_ERROR
                continue
            if vm.missing_modules:
                err.print(f"[yellow]kernel {kernel.release} could not load {' '.join(vm.missing_modules)}"
                          "[/yellow]", highlight=False)
            if vm.stderr.strip():
                err.print(Text(printable(vm.stderr.rstrip())))
            vm_info = {"vmlinuz": str(kernel.vmlinuz), "release": vm.guest_release,
                       "version": kernel.package_version or kernel.version, "module_params": params,
                       "loaded_params": vm.loaded_params, "missing_modules": vm.missing_modules,
                       "seconds": vm.timing()}
            for item in vm.results:
                if args.json:
                    results.append({**item, "vm": vm_info})
                elif "error" not in item:  # the guest's stderr, above, said why
                    print_run_json(item, out)
            if not args.json:
                t = vm.timing()
                out.print(f"  [dim]boot {t['boot']} s, sipct in the guest {t['sipct']} s, "
                          f"total {t['total']} s[/dim]", highlight=False)
            status = worst(status, vm.exit_code if vm.exit_code in (EXIT_OK, EXIT_DIVERGED) else EXIT_ERROR)
    _dump_json(args, results)
    return status
