"""One kernel of the matrix: its boots one after another, each a guest
running `sipct conformance`, merged into one row; the guest's paths mapped
back to the host's, and the generated dialogs that diverged kept in
``--out``.
"""

from __future__ import annotations

import argparse
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from sipct.conformance.matrixplan import GENERATED_FOLDER, guest_argv, guest_env
from sipct.conformance.matrixrow import Boot, KernelReport
from sipct.conformance.reference_suite import REFERENCE_FOLDER
from sipct.conformance.report import JSON_FORMAT, stats_from_json
from sipct.conformance.suite import Stats
from sipct.spec.printable import printable

__all__ = ["merge_stats", "run_kernel"]

# Seconds a boot may spend per dialog (the limit, not the expectation: under
# TCG a generated dialog takes ~0.2 s in the guest and a curated one ~1-2 s
# plus its waits).
CURATED_SECONDS = 30.0
GENERATED_SECONDS = 3.0


def run_kernel(kernel: Any, args: argparse.Namespace, boots: list[Boot], generated: Path, n_generated: int,
               n_curated: int, log: Console, cancel: Any = None) -> KernelReport:
    """The suite in one kernel: its boots, merged into one report (``cancel``,
    a threading.Event, ends the boot under way: conformance/fanout.py)."""
    from sipct.harness.vm import run_in_vm
    from sipct.harness.vmkernels import VmError
    from sipct.spec.profiles import profile_for_kernel

    three_way = getattr(args, "helper", "kernel") == "reference"
    report = KernelReport(kernel.release, kernel.package_version or kernel.version, None,
                          vmlinuz=str(kernel.vmlinuz), expected_profile=profile_for_kernel(kernel.version).name,
                          three_way=three_way)
    started = time.monotonic()
    parts: list[Stats] = []
    reference_parts: list[Stats] = []
    elsewhere: set[str] = set()  # dialogs that ran in another boot
    for boot in boots:
        boot = replace(boot, dialogs=list(boot.dialogs))
        report.boots.append(boot)
        argv, inputs = guest_argv(args, boot)
        if not boot.params:
            inputs[GENERATED_FOLDER] = generated
            dialogs_here = n_curated + n_generated
            limit = 240.0 + 120.0 + CURATED_SECONDS * n_curated + GENERATED_SECONDS * n_generated
        else:
            dialogs_here = len(boot.dialogs)
            elsewhere.update(d.name for d in boot.dialogs)
            limit = 240.0 + 120.0 + CURATED_SECONDS * len(boot.dialogs)
        outputs = {}
        if three_way:
            # Every dialog twice, the reference's through a Python daemon, which first has to start.
            limit = 2 * limit + 300.0
            suffix = f"-{len(report.boots)}" if boot.params else ""
            outputs[f"out/{REFERENCE_FOLDER}"] = Path(args.out) / f"{kernel.release}-{REFERENCE_FOLDER}{suffix}"
        label = " ".join(f"{k}={v}" for k, v in boot.params.items()) or "default parameters"
        log.print(f"kernel {kernel}: booting {kernel.vmlinuz} ({label}), {dialogs_here} dialogs ...",
                  highlight=False)
        try:
            vm = run_in_vm(kernel, argv, module_params=boot.params, command=("conformance",), inputs=inputs,
                           json_file="report.json", timeout=args.vm_timeout or limit, env=guest_env(),
                           outputs=outputs, cancel=cancel)
        except VmError as exc:
            report.error = str(exc)
            log.print(Text(printable(f"kernel {kernel.release}: {exc}"), "red"))
            break
        finally:  # copied out of the VM also when the boot failed
            report.reference_logs += [str(p) for p in outputs.values() if (Path(p) / "helper.log").exists()]
        boot.seconds, boot.exit_code = vm.timing(), vm.exit_code
        boot.loaded_params, boot.missing_modules = vm.loaded_params, vm.missing_modules
        try:
            stats = stats_from_json(vm.json)
        except (ValueError, KeyError, TypeError) as exc:
            report.error = f"the guest's report is not {JSON_FORMAT}: {exc}"
            break
        _map_sources(stats, vm.host_path)
        parts.append(stats)
        t = vm.timing()
        log.print(f"  {kernel.release}: boot {t['boot']} s, sipct conformance in the guest {t['sipct']} s, "
                  f"total {t['total']} s; profile {stats.profile}, "
                  f"{sum(stats.agreeing.values())}/{sum(stats.dialogs.values())} agree", highlight=False)
        if three_way:
            if not isinstance(vm.json.get("reference"), dict):
                report.error = (f"the guest ran no reference helper (exit status {vm.exit_code}): "
                                f"{vm.stderr.strip()[-2000:] or 'no message'}")
                break
            reference = stats_from_json(vm.json["reference"])
            _map_sources(reference, vm.host_path)
            reference_parts.append(reference)
            log.print(f"  {kernel.release} reference helper: {sum(reference.agreeing.values())}/"
                      f"{sum(reference.dialogs.values())} agree in {reference.elapsed:.0f} s", highlight=False)
    report.seconds = time.monotonic() - started
    if parts:
        report.stats = merge_stats(parts, elsewhere)
        report.kernel = report.stats.kernel
        if args.profile == "auto" and report.stats.profile != report.expected_profile:
            report.error = (f"the guest chose profile {report.stats.profile}, the host expected "
                            f"{report.expected_profile} for {kernel.version}")
        report.divergent_files = _keep_divergent(report, Path(args.out), generated)
    if reference_parts:
        report.reference = merge_stats(reference_parts, elsewhere)
        report.divergent_files += _keep_divergent(report, Path(args.out), generated, reference=True)
    return report


def _map_sources(stats: Stats, host_path: Any) -> None:
    """Guest paths of staged files back to the host's."""
    stats.findings = [replace(f, source=host_path(f.source)) for f in stats.findings]
    stats.failed_dialogs = [re.sub(r"\(([^()]*)\)$", lambda m: f"({host_path(m.group(1))})", text)
                            for text in stats.failed_dialogs]
    for probe in stats.probes:
        probe["source"] = host_path(str(probe.get("source", "")))


def merge_stats(parts: list[Stats], elsewhere: set[str] = frozenset()) -> Stats:
    """The boots of one kernel as one run: counts added, coverage united;
    "not runnable" entries of dialogs that ran in another boot dropped."""
    first = parts[0]
    out = Stats(first.profile, first.kernel, dict(first.params))
    out.seed, out.examples = first.seed, first.examples
    for s in parts:
        out.dialogs.update(s.dialogs)
        out.agreeing.update(s.agreeing)
        out.nat.update(s.nat)
        out.nat_agreeing.update(s.nat_agreeing)
        out.unpredictable.update(s.unpredictable)
        out.nat_cut.update(s.nat_cut)
        out.unpredictable_reasons.extend(s.unpredictable_reasons)
        out.steps += s.steps
        out.messages += s.messages
        out.findings.extend(s.findings)
        out.rules.update(s.rules)
        out.transitions |= s.transitions
        out.stale_entries.extend(s.stale_entries)
        out.not_runnable.extend(n for n in s.not_runnable if n.split(":", 1)[0] not in elsewhere)
        out.failed_dialogs.extend(s.failed_dialogs)
        out.probes.extend(s.probes)
        out.elapsed += s.elapsed
        out.minimal_dialog = out.minimal_dialog or s.minimal_dialog
    return out


def _keep_divergent(report: KernelReport, out_dir: Path, generated: Path, *, reference: bool = False) -> list[str]:
    """Copy the generated dialog files that diverged (unregistered) to
    ``out_dir``, with a comment; the findings then name the copies.
    ``reference``: those of the reference helper's run."""
    stats = report.reference if reference else report.stats
    assert stats is not None
    helper = "reference" if reference else "kernel"
    copies: dict[str, str] = {}
    for f in stats.findings:
        if f.known is not None or f.kind != "generated" or f.source in copies:
            continue
        source = Path(f.source)
        if not source.is_file() or generated.resolve() not in source.resolve().parents:
            continue
        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / f"{report.kernel}-{'reference-' if reference else ''}{source.name}"
        lines = [f"step {g.step} (line {g.line}) {g.aspect}: spec {g.spec} / {helper} {g.kernel}"
                 for g in stats.findings if g.source == f.source and g.known is None]
        header = "".join(f"# {line}\n" for line in [
            f"Diverged ({helper} helper) on kernel {report.kernel} (profile {stats.profile}) in `sipct conformance "
            "--kernel`;", "not shrunk (generated on the host, run in the VM as it is).",
            f"Reproduce: sipct run {'--helper reference ' if reference else ''}--kernel {report.vmlinuz} {target}",
            *lines])
        target.write_text(header + source.read_text())
        copies[f.source] = str(target)
    if copies:
        stats.findings = [replace(f, source=copies.get(f.source, f.source)) for f in stats.findings]
        stats.failed_dialogs = [re.sub(r"\(([^()]*)\)$", lambda m: f"({copies.get(m.group(1), m.group(1))})", t)
                                for t in stats.failed_dialogs]
    return sorted(copies.values())
