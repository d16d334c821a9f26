"""The kernel matrix: ``sipct conformance --kernel VMLINUZ`` / ``--kernels PRESET``.

The conformance suite runs in every kernel asked for, each booted with
virtme-ng (:mod:`sipct.harness.vm`), and on the running kernel unless
``--no-host``.  How the guest's cost is kept down (docs/conformance.rst,
"Kernel matrix", has the measurements):

* the generated dialogs are made once, on the host, by Hypothesis with the
  run's seed (:func:`~sipct.conformance.suite.generate_dialogs`), written as
  dialog files and given to every guest, which runs them with ``sipct
  conformance --dialog-files`` - the guest never imports Hypothesis - and
  the running kernel runs the same files: every row of the matrix ran the
  same dialogs;
* one boot per kernel runs everything with the module's default parameters;
  curated dialogs that need other load-time parameters (``params:``, e.g.
  ``sip_direct_media: 0``) run in one more boot per parameter set;
* the guest picks the spec profile from its own kernel version
  (``RunningKernel.detect()``) and writes a ``sipct.conformance/1`` report
  into the shared folder; the host merges the boots of a kernel into one.

A divergent generated dialog is not shrunk in the guest: its file is copied
to ``--out`` as it is, with a comment saying where it diverged.

``--jobs N`` boots N kernels at once (:mod:`sipct.conformance.fanout`); the
outputs are written by :mod:`sipct.conformance.publish`, and a matrix run in
parts is merged by ``sipct report merge`` (:mod:`sipct.conformance.shards`).
"""

from __future__ import annotations

import argparse
import datetime
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from sipct.conformance.coverage import coverage_rst, coverage_text, union_coverage
from sipct.conformance.reference_suite import REFERENCE_FOLDER
from sipct.conformance.report import JSON_FORMAT, stats_from_json, stats_json
from sipct.conformance.suite import PROBE_TAG, Stats
from sipct.spec.printable import printable

MATRIX_FORMAT = "sipct.conformance-matrix/1"
from sipct.spec.exitcodes import EXIT_ERROR
# Seconds a boot may spend per dialog (the limit, not the expectation: under
# TCG a generated dialog takes ~0.2 s in the guest and a curated one ~1-2 s
# plus its waits).
CURATED_SECONDS = 30.0
GENERATED_SECONDS = 3.0
GENERATED_FOLDER = "generated"  # the generated dialog files, as the guest sees them: in/generated


@dataclass
class Boot:
    """One boot of a kernel: a module-parameter group and its dialogs."""

    params: dict[str, int]
    dialogs: list[Any]  # the curated Dialogs of this group (the guest finds the default group's itself)
    seconds: dict[str, float | None] = field(default_factory=dict)
    exit_code: int | None = None
    loaded_params: dict[str, str] = field(default_factory=dict)
    missing_modules: list[str] = field(default_factory=list)
    files: int | None = None  # the count of curated files of a boot read back from a shard (no dialogs)

    def json(self) -> dict[str, Any]:
        files = self.files if self.files is not None else len(self.dialogs)
        return {"module_params": self.params, "curated_files": files if self.params else None,
                "loaded_params": self.loaded_params, "missing_modules": self.missing_modules,
                "exit_code": self.exit_code, "seconds": self.seconds}


@dataclass
class KernelReport:
    """One row of the matrix: the suite in one kernel, its boots merged."""

    kernel: str  # the release, as uname -r says
    version: str  # the Debian package version (6.1.192-2), else the upstream one
    stats: Stats | None
    host: bool = False
    vmlinuz: str | None = None
    expected_profile: str | None = None  # profile_for_kernel() of the image's version, on the host
    boots: list[Boot] = field(default_factory=list)
    seconds: float = 0.0  # host wall time, boots included
    error: str | None = None
    divergent_files: list[str] = field(default_factory=list)
    # --helper reference: the same dialogs through the userspace reference helper
    # (None: not asked for, or not available - the running kernel has no nfnetlink_cthelper)
    reference: Stats | None = None
    three_way: bool = False
    reference_logs: list[str] = field(default_factory=list)  # the kept reference-helper/ folders, a boot each

    @property
    def ok(self) -> bool:
        kernel_ok = self.error is None and self.stats is not None and self.stats.ok
        if self.three_way and not self.host:
            return kernel_ok and self.reference is not None and self.reference.ok
        return kernel_ok

    @property
    def profile(self) -> str:
        return self.stats.profile if self.stats else (self.expected_profile or "-")

    def json(self) -> dict[str, Any]:
        data = stats_json(self.stats) if self.stats else {
            "format": JSON_FORMAT, "kernel": self.kernel, "profile": self.expected_profile, "ok": False}
        data["error"] = self.error
        data["host"] = self.host
        data["version"] = self.version
        data["vm"] = None if self.host else {
            "vmlinuz": self.vmlinuz, "release": self.kernel, "version": self.version,
            "expected_profile": self.expected_profile, "boots": [b.json() for b in self.boots]}
        data["wall_seconds"] = round(self.seconds, 1)
        data["divergent_files"] = self.divergent_files
        if self.three_way:
            data["reference"] = stats_json(self.reference) if self.reference else None
            data["reference_logs"] = self.reference_logs
        return data

    def summary(self) -> dict[str, Any]:
        s = self.stats
        return {
            "kernel": self.kernel, "version": self.version, "host": self.host, "profile": self.profile,
            "ok": self.ok, "error": self.error,
            "dialogs": dict(s.dialogs) if s else {}, "agreeing": sum(s.agreeing.values()) if s else 0,
            "total": sum(s.dialogs.values()) if s else 0,
            "divergences": ({k: dict(v) for k, v in s.divergences_by_rule().items()} if s else {}),
            "boots": len(self.boots) or (1 if self.host else 0), "seconds": round(self.seconds, 1),
            **({"reference": _reference_summary(self.reference)} if self.three_way else {}),
        }


def _reference_summary(s: Stats | None) -> dict[str, Any] | None:
    if s is None:
        return None
    return {"ok": s.ok, "dialogs": dict(s.dialogs), "agreeing": sum(s.agreeing.values()),
            "total": sum(s.dialogs.values()), "elapsed": round(s.elapsed, 1),
            "divergences": {k: dict(v) for k, v in s.divergences_by_rule().items()}}


# -- planning --------------------------------------------------------------------------------------


def select_kernels(images: list[str], preset: str | None) -> list:
    """The VmKernels asked for (a preset's and single images), each image
    once, oldest version first."""
    from sipct.harness.vmkernels import VmKernel, kernel_preset

    kernels = kernel_preset(preset) if preset else []
    kernels += [VmKernel.from_path(image) for image in images]
    seen, out = set(), []
    for k in kernels:
        key = str(Path(k.vmlinuz).resolve())
        if key not in seen:
            seen.add(key)
            out.append(k)
    return sorted(out, key=lambda k: kernel_order(k.version))


def kernel_order(version: str) -> tuple[int, ...]:
    """The rows' order: by version, oldest first (6.1.170 before 6.1.192 before 6.12.57)."""
    return tuple(int(n) for n in re.findall(r"\d+", version))


def curated_dialogs(args: argparse.Namespace) -> tuple[list[Any], list[Any]]:
    """The curated dialogs of a matrix and those of its ``--scenarios``."""
    from sipct.conformance.cli import _collect
    from sipct.conformance.corpus import example_dialogs, rfc4475_dialogs, scenario_dialogs
    from sipct.conformance.suite import select_curated

    curated = [] if args.no_curated else [*example_dialogs(), *scenario_dialogs(), *rfc4475_dialogs()]
    return select_curated(curated, slow=args.slow), select_curated(_collect(args.scenarios), slow=args.slow)


def boot_groups(curated: list[Any]) -> list[Boot]:
    """The boots of one kernel: the default parameters first (always: the
    generated dialogs and the reproducers run there), then one per set of
    load-time parameters the curated dialogs need."""
    from sipct.harness.vmstage import group_by_module_params

    boots = [Boot({}, [])]
    for params, dialogs in group_by_module_params(curated):
        if params:
            boots.append(Boot(params, dialogs))
        else:
            boots[0].dialogs = dialogs
    return boots


def write_generated(dialogs: list[Any], folder: Path, seed: int, *, check: bool = True) -> list[Path]:
    """The generated dialogs as dialog files, named after seed and index.

    A dialog without steps (the generator makes a few) is not written: a
    dialog file needs at least one step, and it would test nothing. With
    ``check`` every file is loaded back, so that a file the guest could not
    read fails here and not after the boots."""
    from sipct.spec.dialog import dump_dialog, load_dialog

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, dialog in enumerate(dialogs):
        if not dialog.steps:
            continue
        name = f"generated-seed{seed}-{i:05d}"
        path = folder / f"{name}.yaml"
        path.write_text(dump_dialog(replace(dialog, name=name, source=str(path)), comment=(
            f"Dialog {i} generated by `sipct conformance --kernel ... --seed {seed}` (Hypothesis).")))
        if check:
            load_dialog(path)
        paths.append(path)
    return paths


def guest_argv(args: argparse.Namespace, boot: Boot) -> tuple[list[str], dict[str, Path]]:
    """The `sipct conformance` arguments of one boot and the inputs it needs."""
    argv = ["--json", "report.json", "--out", "out", "--seed", str(args.seed)]
    inputs: dict[str, Path] = {}
    if args.profile != "auto":
        argv += ["--profile", args.profile]
    if getattr(args, "helper", "kernel") == "reference":
        argv += ["--helper", "reference", "--reference-log-level", getattr(args, "reference_log_level", "info")]
    if args.registry is not None:
        # The registry's reproducers are named relative to it: give the guest its folder.
        registry = Path(args.registry).resolve()
        inputs["registry"] = registry.parent
        argv += ["--registry", f"in/registry/{registry.name}"]
    if getattr(args, "slow", False):
        argv.append("--slow")
    if boot.params:
        argv += ["--no-curated", "--no-reproducers", "--examples", "0"]
        for dialog in boot.dialogs:
            argv += ["--scenarios", dialog.source]
        return argv, inputs
    if args.no_curated:
        argv.append("--no-curated")
    for path in args.scenarios:
        argv += ["--scenarios", str(path)]
    if args.no_reproducers:
        argv.append("--no-reproducers")
    argv += ["--dialog-files", f"in/{GENERATED_FOLDER}"]
    return argv, inputs


# -- running ---------------------------------------------------------------------------------------


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
                           json_file="report.json", timeout=args.vm_timeout or limit, env=_guest_env(),
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


def _guest_env() -> dict[str, str]:
    """The host's shared corpus (RFC 4475) for the guest: found next to the
    repository on the host, but not from an installed or copied package."""
    from sipct.conformance.corpus import shared_dir

    shared = shared_dir()
    return {"SIPCT_SHARED": str(shared.resolve())} if shared is not None else {}


# -- the command -----------------------------------------------------------------------------------


def cmd_matrix(args: argparse.Namespace) -> int:
    from sipct.conformance.cli import _collect, nat_share, run_here
    from sipct.conformance.fanout import run_kernels
    from sipct.conformance.publish import publish
    from sipct.conformance.shards import write_shards
    from sipct.conformance.registry import REGISTRY, RegistryError, load_registry
    from sipct.conformance.suite import generate_dialogs
    from sipct.harness.vmboot import find_vng
    from sipct.harness.vmkernels import VmError
    from sipct.spec.dialog import DialogError

    out, err = Console(), Console(stderr=True)
    if not out.is_terminal:
        out = Console(width=200)  # a log file: do not cut the table to 80 columns
    try:
        kernels = select_kernels(args.kernels, args.preset)
        find_vng()
        load_registry(args.registry or REGISTRY)
        curated, extras = curated_dialogs(args)
        files = _collect([args.dialog_files]) if args.dialog_files else None
    except (VmError, RegistryError, DialogError) as exc:
        err.print(Text.assemble(("cannot run:", "red"), f" {printable(str(exc))}"))
        return EXIT_ERROR

    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="sipct-matrix-"))
    try:
        generated = work / GENERATED_FOLDER
        if files is None:
            t = time.monotonic()
            made = generate_dialogs(args.examples, args.seed, nat=nat_share(args))
            if getattr(args, "helper", "kernel") == "reference" and nat_share(args) is not False:
                # The reference helper does no NAT yet (issue 14): both helpers run the seed's
                # dialogs without NAT, as many as asked for.
                made = [d for d in generate_dialogs(args.examples * 3, args.seed) if not d.nat][:args.examples]
            dialogs = write_generated(made, generated, args.seed)
            skipped = len(made) - len(dialogs)
            err.print(f"generated {len(made)} dialogs (seed {args.seed}) in {time.monotonic() - t:.1f} s"
                      + (f"; {skipped} without steps left out" if skipped else ""), highlight=False)
        else:
            dialogs = files
            shutil.copytree(args.dialog_files, generated)
        args.generated_sha256 = dialogs_digest(generated)
        boots = boot_groups(curated + extras)
        reports: list[KernelReport] = []
        if not args.no_host:
            err.print("the running kernel ...", highlight=False)
            t = time.monotonic()
            # The kernel helper only: the running kernel has no nfnetlink_cthelper (docs/reference.rst).
            stats = run_here(argparse.Namespace(**{**vars(args), "dialog_files": generated, "helper": "kernel"}),
                             quiet=True)
            if isinstance(stats, int):
                reports.append(KernelReport(_running_release(), _running_release(), None, host=True,
                                            error="the suite could not run on the running kernel (see above)"))
            else:
                stats.elapsed = time.monotonic() - t
                reports.append(KernelReport(stats.kernel, _running_version(), stats, host=True,
                                            seconds=stats.elapsed))
        reports += run_kernels(kernels, args, boots, generated, len(dialogs), len(boots[0].dialogs), err,
                               jobs=args.jobs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    elapsed = time.monotonic() - started

    status = publish(reports, args, elapsed, curated + extras, out, err)
    if args.shard_dir:
        for path in write_shards(reports, args, elapsed, args.shard_dir):
            err.print(f"wrote {path}", highlight=False)
    return status


def _running_release() -> str:
    import os

    return os.uname().release


def _running_version() -> str:
    from sipct.netlink.kernel import kernel_version

    return kernel_version(_running_release())


# The options that decide what a matrix ran, and so whether two shards are rows of one matrix
# (conformance/shards.py); --jobs, --out, --json and --junit only say how and where.
SUITE_OPTIONS = ("examples", "seed", "nat", "dialog_files", "no_curated", "slow", "no_reproducers", "scenarios",
                 "profile", "helper", "generated_sha256")


def dialogs_digest(folder: Path) -> str:
    """The SHA-256 of the generated dialog files, names and contents: the same
    seed on two machines makes other dialogs when their Hypothesis (or the
    modules it draws constants from) differ, and such shards must not merge."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*.yaml")):
        digest.update(f"{path.relative_to(folder)}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def run_options(args: argparse.Namespace) -> dict[str, Any]:
    """What :func:`_command_line` is made of, as data: a shard's merge rebuilds the command from it."""
    data = {name: getattr(args, name, None) for name in SUITE_OPTIONS}
    data["helper"] = data["helper"] or "kernel"
    data["scenarios"] = [str(p) for p in args.scenarios]
    data["dialog_files"] = str(args.dialog_files) if args.dialog_files else None
    return {**data, "kernels": [str(k) for k in args.kernels], "preset": args.preset, "no_host": args.no_host,
            "docs": str(args.docs) if args.docs else None}


def _command_line(args: argparse.Namespace) -> str:
    """The command that made this matrix (rebuilt from the options)."""
    argv = ["conformance"]
    if args.preset:
        argv += ["--kernels", args.preset]
    for image in args.kernels:
        argv += ["--kernel", str(image)]
    if args.dialog_files:
        argv += ["--dialog-files", str(args.dialog_files)]
    else:
        argv += ["--examples", str(args.examples)]
    argv += ["--seed", str(args.seed)]
    if (getattr(args, "nat", None) or "mixed") != "mixed" and not args.dialog_files:
        argv += ["--nat", args.nat]
    for flag in ("no_curated", "slow", "no_reproducers", "no_host"):
        if getattr(args, flag):
            argv.append("--" + flag.replace("_", "-"))
    for path in args.scenarios:
        argv += ["--scenarios", str(path)]
    if args.profile != "auto":
        argv += ["--profile", args.profile]
    if getattr(args, "helper", "kernel") != "kernel":
        argv += ["--helper", args.helper]
    if args.docs:
        argv += ["--docs", str(args.docs)]
    return "sipct " + shlex.join(argv)


# -- reports ---------------------------------------------------------------------------------------


def _by_rule(stats: Stats | None, kind: str, top: int = 3) -> str:
    if stats is None:
        return "-"
    counts: Counter = stats.divergences_by_rule()[kind]
    n = sum(1 for f in stats.findings if (f.known is None) == (kind == "unregistered"))
    if not n:
        return "0"
    return f"{n}: " + ", ".join(f"{r} {c}" for r, c in counts.most_common(top)) if counts else str(n)


def print_matrix(reports: list[KernelReport], console: Console, *, three_way: bool = False) -> None:
    """The matrix table; with ``three_way`` (--helper reference) the kernel
    helper's agreement and divergences, then the reference helper's."""
    table = Table(title="sipct conformance - kernel matrix" + (" (spec / kernel / reference)" if three_way else ""))
    columns = ["kernel", "release", "profile", "dialogs curated/generated",
               "kernel agreement" if three_way else "agreement", "unregistered divergences",
               "registered divergences"]
    if three_way:
        columns += ["reference agreement", "reference unregistered", "reference registered"]
    for column in (*columns, "time"):
        table.add_column(column)
    for r in reports:
        s = r.stats
        name = f"{r.kernel} (running)" if r.host else r.kernel
        if s is None:
            table.add_row(escape(name), r.version, r.profile, "-", "-", "[red]not run[/red]", "-",
                          *(["-", "-", "-"] if three_way else []), f"{r.seconds:.0f} s")
            continue
        total, agreeing = sum(s.dialogs.values()), sum(s.agreeing.values())
        colour = "green" if r.ok else "red"
        boots = f" ({len(r.boots)} boots)" if len(r.boots) > 1 else ""
        reference = []
        if three_way:
            ref = r.reference
            if ref is None:
                reference = ["n/a (no nfnetlink_cthelper)" if r.host else "[red]not run[/red]", "-", "-"]
            else:
                rc = "green" if ref.ok else "red"
                reference = [f"[{rc}]{sum(ref.agreeing.values())}/{sum(ref.dialogs.values())}[/{rc}]",
                             escape(_by_rule(ref, "unregistered")), escape(_by_rule(ref, "registered"))]
        table.add_row(escape(name), r.version, s.profile,
                      f"{s.dialogs.get('curated', 0)}/{s.dialogs.get('generated', 0)}",
                      f"[{colour}]{agreeing}/{total}[/{colour}]", escape(_by_rule(s, "unregistered")),
                      escape(_by_rule(s, "registered")), *reference, f"{r.seconds:.0f} s{boots}")
    console.print(table)

    # Dialog names, file names and what the helpers did come from dialog files and payloads: plain Text
    # (no markup, no emoji codes) through printable(); the styled part is ours.
    def say(styled: str, style: str, plain: str = "") -> None:
        console.print(Text.assemble((printable(styled), style), printable(plain)), soft_wrap=True)

    for r in reports:
        if r.error:
            say(f"✗ {r.kernel}:", "red", f" {r.error}")
        if r.stats is None:
            continue
        for f in r.stats.unregistered[:10]:
            say("✗", "red", f" {r.kernel}: {f.dialog} ({f.source}) step {f.step} line {f.line} {f.aspect}: "
                            f"spec {f.spec} | kernel {f.kernel}")
        for stale in r.stats.stale_entries:
            say(f"✗ {r.kernel}: stale registry entry", "red", f" {stale}")
        for item in r.stats.not_runnable:
            say(f"{r.kernel}: not runnable:", "yellow", f" {item}")
        for f in (r.reference.unregistered[:10] if r.reference else []):
            say("✗", "red", f" {r.kernel} reference helper: {f.dialog} ({f.source}) step {f.step} line {f.line} "
                            f"{f.aspect}: spec {f.spec} | reference {f.kernel}")
        for stale in (r.reference.stale_entries if r.reference else []):
            say(f"✗ {r.kernel} reference helper: stale registry entry", "red", f" {stale}")
        for path in r.divergent_files:
            say(f"{r.kernel}: divergent generated dialog:", "red", f" {path}")
        for path in r.reference_logs:
            say(f"{r.kernel}: the reference helper's config and log: {path}", "")
        if r.stats.minimal_dialog:
            say(f"{r.kernel}: minimal divergent dialog:", "red", f" {r.stats.minimal_dialog}")
    for line in coverage_text(union_coverage(r.stats for r in reports if r.stats)):
        console.print(escape(line), highlight=False, soft_wrap=True)
    ok = all(r.ok for r in reports)
    console.print("[green]conformance matrix: OK[/green]" if ok else "[red]conformance matrix: FAILED[/red]")


def source_commit() -> str:
    """The commit of the sipct tree that runs the matrix (``+`` when it has
    uncommitted changes): what a published matrix measured."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return head + ("+" if dirty else "")


def run_commit(args: argparse.Namespace) -> str:
    """The commit a matrix names: its shards' (``sipct report merge``) or this tree's."""
    return getattr(args, "commit", None) or source_commit()


def matrix_json(reports: list[KernelReport], args: argparse.Namespace, elapsed: float) -> dict[str, Any]:
    return {
        "format": MATRIX_FORMAT,
        "command": _command_line(args),
        "commit": run_commit(args),
        "options": run_options(args),
        "seed": args.seed,
        "ok": all(r.ok for r in reports),
        "elapsed": round(elapsed, 1),
        "kernels": [r.json() for r in reports],
        "matrix": {
            "rows": [r.summary() for r in reports],
            "probes": _probe_summary(reports),
            "coverage": union_coverage(r.stats for r in reports if r.stats),
        },
    }


def _probe_summary(reports: list[KernelReport]) -> dict[str, dict[str, bool]]:
    """Per version probe and kernel: did the kernel agree with the spec under its profile?"""
    out: dict[str, dict[str, bool]] = {}
    for r in reports:
        for p in (r.stats.probes if r.stats else []):
            out.setdefault(p["dialog"], {})[r.kernel] = bool(p.get("agree"))
    return out


# -- the behaviour-by-kernel page ------------------------------------------------------------------


def _rst_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("*", "\\*").replace("`", "\\`").replace("|", "\\|").replace("_", "\\_")


def _expectations_text(items: list[dict[str, Any]], timeouts: bool) -> str:
    if not items:
        return "no expectations"
    parts = []
    for e in items:
        text = e["text"]
        if timeouts and e.get("timeout") is not None:
            text += f" ({e['timeout']:.0f} s)"
        parts.append(text)
    return "; ".join(parts)


def _observed(step: dict[str, Any]) -> str:
    k = step["kernel"]
    verdict = "-" if k.get("delivered") is None else ("accept" if k["delivered"] else "drop")
    text = f"{verdict}; {_expectations_text(k.get('expectations', []), True)}"
    if step.get("agree"):
        return text + " - as the spec predicts"
    diffs = "; ".join(f"{d['aspect']}: spec {d['spec']}, kernel {d['kernel']}" for d in step.get("divergences", []))
    return text + f" - DIVERGES ({diffs})"


def _list_table(rows: list[list[str]], *, title: str = "", stub: bool = True, widths: str = "") -> list[str]:
    lines = [f".. list-table::{(' ' + title) if title else ''}", "   :header-rows: 1"]
    if stub:
        lines.append("   :stub-columns: 1")
    if widths:
        lines.append(f"   :widths: {widths}")
    lines.append("")
    for row in rows:
        for i, cell in enumerate(row):
            lines.append(("   * - " if i == 0 else "     - ") + (cell or "-"))
    lines.append("")
    return lines


def _count(reports: list[KernelReport], kind: str) -> str:
    counts = {r.stats.dialogs.get(kind, 0) for r in reports if r.stats}
    return "/".join(str(c) for c in sorted(counts)) or "0"


def matrix_docs(reports: list[KernelReport], args: argparse.Namespace, curated: list[Any]) -> str:
    """docs/matrix.rst: the measured matrix and the version probes side by side."""
    from sipct.spec.profiles import PROFILES, KernelProfile

    today = datetime.date.today().isoformat()
    command = _command_line(args)
    commit = run_commit(args)
    lines = [
        f".. Generated by ``{command}`` (conformance/matrix.py) at commit {commit} on {today}; do not edit by hand.",
        "",
        "Kernel matrix",
        "=============",
        "",
        "The conformance suite (:doc:`conformance`) in each kernel, measured with",
        "",
        ".. code-block:: sh",
        "",
        f"   {command}",
        "",
        f"at sipct commit ``{commit}`` on {today}: Debian kernels booted with virtme-ng under QEMU (TCG) and the",
        "machine's running",
        "kernel. Each guest chose the spec profile from its own kernel version; every kernel ran the same",
        (f"curated dialogs and the same {_count(reports, 'generated')} generated dialogs"
         f" (seed {args.seed}, generated on the host and run from files everywhere)."),
        "",
    ]
    rows = [["kernel", "release", "profile", "dialogs (curated / generated)", "agreement",
             "divergences (unregistered / registered)", "time"]]
    for r in reports:
        s = r.stats
        name = f"{r.kernel} (running kernel)" if r.host else r.kernel
        if s is None:
            rows.append([_rst_cell(name), r.version, r.profile, "-", "-", f"not run: {_rst_cell(r.error or '')}",
                         f"{r.seconds:.0f} s"])
            continue
        registered = len(s.findings) - len(s.unregistered)
        boots = f" ({len(r.boots)} boots)" if len(r.boots) > 1 else ""
        rows.append([_rst_cell(name), r.version, f"``{s.profile}``",
                     f"{s.dialogs.get('curated', 0)} / {s.dialogs.get('generated', 0)}",
                     f"{sum(s.agreeing.values())} / {sum(s.dialogs.values())}",
                     f"{len(s.unregistered)} / {registered}", f"{r.seconds:.0f} s{boots}"])
    lines += _list_table(rows, title="Measured results")

    used: dict[str, KernelProfile] = {}
    for r in reports:
        if r.stats and r.stats.profile in PROFILES:
            used.setdefault(r.stats.profile, PROFILES[r.stats.profile])
    lines += ["Profiles", "--------", "",
              "The :doc:`versions` profile of each kernel and its features:", ""]
    rows = [["feature", *[f"``{name}``" for name in used]]]
    rows.append(["kernels", *[", ".join(_rst_cell(r.kernel) for r in reports if r.stats and r.stats.profile == n)
                              for n in used]])
    for feature in KernelProfile.feature_names():
        rows.append([f"``{feature}``", *["yes" if getattr(p, feature) else "no" for p in used.values()]])
    lines += _list_table(rows)

    probes = [d for d in curated if PROBE_TAG in d.tags]
    lines += [
        "Behaviour by kernel",
        "-------------------",
        "",
        "The version probes (``conformance/scenarios/versions``) are dialogs whose outcome depends on the",
        "kernel version. They assert nothing that differs between profiles: the spec's prediction under",
        "each kernel's profile is what the kernel is compared with. Each cell shows what the kernel did",
        "after the step - the verdict and the expectation table with the remaining timeouts the kernel",
        "reported (whole seconds, rounded down) - and whether that is what the spec predicted for it. The",
        "last row of each table lists the spec rules that fired on some of the kernels but not on all.",
        "",
    ]
    if not probes:
        lines += ["No version probes ran (``--no-curated``).", ""]
    for probe in probes:
        title = probe.name
        lines += [title, "~" * len(title), "", " ".join(probe.description.split()), ""]
        per_kernel = []
        for r in reports:
            found = next((p for p in (r.stats.probes if r.stats else []) if p["dialog"] == probe.name), None)
            if found is not None:
                per_kernel.append((r, found))
        if not per_kernel:
            lines += ["Not run on any kernel.", ""]
            continue
        header = ["step", *[f"{_rst_cell(r.kernel)} (``{p['profile']}``)" for r, p in per_kernel]]
        rows = [header]
        steps = per_kernel[0][1]["steps"]
        differing: dict[str, list[str]] = {r.kernel: [] for r, _ in per_kernel}
        for i, step in enumerate(steps):
            if step["step"].startswith("wait") or step["step"].startswith("connect"):
                continue
            row = [f"{step['index']}: {_rst_cell(step['step'])}"]
            rule_sets = []
            for r, p in per_kernel:
                s = p["steps"][i] if i < len(p["steps"]) else None
                row.append(_rst_cell(_observed(s)) if s else "-")
                rule_sets.append(set(s["spec"]["rules"]) if s else set())
            rows.append(row)
            common = set.intersection(*rule_sets) if rule_sets else set()
            for (r, _), rules in zip(per_kernel, rule_sets):
                extra = sorted(rules - common)
                if extra:
                    differing[r.kernel].append(f"step {step['index']}: " + ", ".join(f":rule:`{x}`" for x in extra))
        rows.append(["spec rules that differ", *["; ".join(differing[r.kernel]) or "none" for r, _ in per_kernel]])
        lines += _list_table(rows)
    lines += coverage_rst(union_coverage(r.stats for r in reports if r.stats))
    lines += [
        "How to read a divergence",
        "------------------------",
        "",
        "A kernel that does not do what the spec predicts under its profile is a finding: either the",
        "profile boundary (``profile_for_kernel``) or the spec is wrong for that kernel. ``sipct run",
        "--kernel VMLINUZ DIALOG`` reproduces one dialog in one kernel.",
        "",
    ]
    return "\n".join(lines)
