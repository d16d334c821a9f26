"""The kernel matrix as JSON (``sipct.conformance-matrix/1``): its rows,
the command and options that made it - what decides whether two shards are
rows of one matrix (conformance/shards.py) - and the commit that ran it.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
from pathlib import Path
from typing import Any

from sipct.conformance.coverage import union_coverage
from sipct.conformance.matrixrow import KernelReport

__all__ = ["MATRIX_FORMAT", "SUITE_OPTIONS", "command_line", "dialogs_digest", "matrix_json", "run_commit",
           "run_options", "source_commit"]

MATRIX_FORMAT = "sipct.conformance-matrix/1"

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
    """What :func:`command_line` is made of, as data: a shard's merge rebuilds the command from it."""
    data = {name: getattr(args, name, None) for name in SUITE_OPTIONS}
    data["helper"] = data["helper"] or "kernel"
    data["scenarios"] = [str(p) for p in args.scenarios]
    data["dialog_files"] = str(args.dialog_files) if args.dialog_files else None
    return {**data, "kernels": [str(k) for k in args.kernels], "preset": args.preset, "no_host": args.no_host,
            "docs": str(args.docs) if args.docs else None}


def command_line(args: argparse.Namespace) -> str:
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
        "command": command_line(args),
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
