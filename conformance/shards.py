"""Shards of a kernel matrix and ``sipct report merge``.

A shard is what ``sipct conformance --kernel ... --json FILE`` writes - a
``sipct.conformance-matrix/1`` document - for a part of the kernels, on one
machine (a CI job per kernel: .github/workflows/matrix.yml); ``--shard-dir
DIR`` writes one for each row of a run, as if each kernel had run alone.  Its
``"kernels"`` entries hold every row whole (the suite's report, the boots,
errors) and ``"options"`` what decides the dialogs that ran, so that shards
of one matrix - same seed, examples, curated dialogs, profile, helper - merge
into the report that one run over all their kernels gives: same table, same
JSON and docs page apart from times, same exit status.  Shards of different
matrices do not merge: their rows ran different dialogs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from sipct.conformance.matrixjson import MATRIX_FORMAT, SUITE_OPTIONS, matrix_json
from sipct.conformance.matrixplan import curated_dialogs, kernel_order
from sipct.conformance.matrixrow import Boot, KernelReport
from sipct.conformance.report import stats_from_json
from sipct.spec.exitcodes import EXIT_ERROR
from sipct.spec.printable import printable


class ShardError(ValueError):
    """A file that is no shard, or shards that are not of one matrix."""


def add_report_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="combine kernel matrix reports")
    commands = p.add_subparsers(dest="report_command", required=True)
    m = commands.add_parser("merge", help="merge the --json reports (shards) of a kernel matrix run in parts into "
                                          "the report of one run")
    m.add_argument("shards", nargs="+", type=Path, metavar="SHARD",
                   help="a `sipct conformance --kernel ... --json` file")
    m.add_argument("--json", type=Path, metavar="FILE", help="write the merged report as JSON")
    m.add_argument("--junit", type=Path, metavar="FILE", help="write a JUnit XML report")
    m.add_argument("--docs", type=Path, metavar="FILE", help="write the behaviour-by-kernel page (docs/matrix.rst)")
    m.set_defaults(func=cmd_report_merge)


def report_from_json(data: dict[str, Any]) -> KernelReport:
    """The KernelReport of one ``"kernels"`` entry; the inverse of :meth:`KernelReport.json`."""
    vm = data["vm"]
    return KernelReport(
        data["kernel"], data["version"], stats_from_json(data) if "dialogs" in data else None, host=data["host"],
        vmlinuz=vm["vmlinuz"] if vm else None, expected_profile=vm["expected_profile"] if vm else None,
        boots=[_boot_from_json(b) for b in vm["boots"]] if vm else [], seconds=data["wall_seconds"],
        error=data["error"], divergent_files=list(data["divergent_files"]),
        reference=stats_from_json(data["reference"]) if data.get("reference") else None,
        three_way="reference" in data, reference_logs=list(data.get("reference_logs", [])))


def _boot_from_json(data: dict[str, Any]) -> Boot:
    return Boot(dict(data["module_params"]), [], seconds=dict(data["seconds"]), exit_code=data["exit_code"],
                loaded_params=dict(data["loaded_params"]), missing_modules=list(data["missing_modules"]),
                files=data["curated_files"])


def write_shards(reports: list[KernelReport], args: argparse.Namespace, elapsed: float, folder: Path) -> list[Path]:
    """A shard per row in ``folder`` (``host-RELEASE.json``, ``RELEASE.json``):
    the report that the row's own ``--kernel`` option (none for the running
    kernel, ``--no-host`` for another) would have made."""
    from sipct.harness.vmkernels import VmError, VmKernel

    def made(option: str, vmlinuz: str | None) -> bool:
        try:
            return vmlinuz is not None and Path(VmKernel.from_path(option).vmlinuz).resolve() == Path(vmlinuz).resolve()
        except VmError:
            return False

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for r in reports:
        options = {"kernels": [] if r.host else [k for k in args.kernels if made(str(k), r.vmlinuz)],
                   "no_host": not r.host, "docs": None}
        path = folder / f"{'host-' if r.host else ''}{r.kernel}.json"
        path.write_text(json.dumps(matrix_json([r], argparse.Namespace(**{**vars(args), **options}), elapsed),
                                   indent=2, default=str) + "\n")
        paths.append(path)
    return paths


def load_shard(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ShardError(f"{path}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != MATRIX_FORMAT:
        raise ShardError(f"{path}: not a {MATRIX_FORMAT} report (written by `sipct conformance --kernel ... --json`)")
    if "options" not in data:
        raise ShardError(f"{path}: a report without its options (written before `sipct report merge` existed)")
    return data


def merge_shards(shards: list[tuple[Path, dict[str, Any]]],
                 outputs: argparse.Namespace) -> tuple[list[KernelReport], argparse.Namespace, float]:
    """The rows of one matrix, ordered as a run orders them (the running kernel,
    then oldest first), the options of that run (with ``outputs``' --json,
    --junit and --docs) and its time: the longest shard's, as the shards ran
    side by side."""
    (first_path, first), *others = shards
    options = first["options"]
    for path, data in others:
        for name in SUITE_OPTIONS:
            if data["options"].get(name) != options.get(name):
                raise ShardError(f"{path} is not of the matrix of {first_path}: {name} "
                                 f"{data['options'].get(name)!r}, not {options.get(name)!r}")
    presets = {d["options"]["preset"] for _, d in shards} - {None}
    if len(presets) > 1:
        raise ShardError(f"shards of different presets: {', '.join(sorted(presets))}")
    hosts, vms = [], []
    for path, data in shards:
        for entry in data["kernels"]:
            report = report_from_json(entry)
            (hosts if report.host else vms).append((path, report))
    if len(hosts) > 1:
        raise ShardError(f"the running kernel is in more than one shard: {', '.join(str(p) for p, _ in hosts)}")
    seen: dict[str, Path] = {}
    for path, report in vms:
        if report.kernel in seen:
            raise ShardError(f"kernel {report.kernel} is in {seen[report.kernel]} and in {path}")
        seen[report.kernel] = path
    vms.sort(key=lambda item: kernel_order(item[1].version))
    args = argparse.Namespace(
        **{name: options.get(name) for name in SUITE_OPTIONS},
        kernels=[k for _, d in shards for k in d["options"]["kernels"]], preset=presets.pop() if presets else None,
        no_host=all(d["options"]["no_host"] for _, d in shards), json=outputs.json, junit=outputs.junit,
        docs=outputs.docs)
    # The commit(s) that ran the shards, not the one that merges them.
    args.commit = ", ".join(sorted({d.get("commit") or "unknown" for _, d in shards}))
    args.scenarios = [Path(p) for p in args.scenarios]
    args.dialog_files = Path(args.dialog_files) if args.dialog_files else None
    elapsed = max(float(d.get("elapsed", 0.0)) for _, d in shards)
    return [r for _, r in hosts + vms], args, elapsed


def cmd_report_merge(args: argparse.Namespace) -> int:
    from sipct.conformance.publish import publish
    from sipct.conformance.registry import RegistryError
    from sipct.spec.dialog import DialogError

    out, err = Console(), Console(stderr=True)
    if not out.is_terminal:
        out = Console(width=200)  # as cmd_matrix: a log file gets the whole table
    try:
        reports, matrix, elapsed = merge_shards([(p, load_shard(p)) for p in args.shards], args)
        curated, extras = curated_dialogs(matrix)
    except (ShardError, DialogError, RegistryError, KeyError, TypeError) as exc:
        what = f"a field is missing: {exc}" if isinstance(exc, KeyError) else str(exc)
        err.print(Text.assemble(("cannot merge:", "red"), f" {printable(what)}"))
        return EXIT_ERROR
    return publish(reports, matrix, elapsed, curated + extras, out, err)
