"""The kernel matrix in the terminal: a row per kernel (with ``--helper
reference`` the reference helper's columns too), then the divergences, the
coverage and the verdict.
"""

from __future__ import annotations

from collections import Counter

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from sipct.conformance.coverage import coverage_text, union_coverage
from sipct.conformance.matrixrow import KernelReport
from sipct.conformance.suite import Stats
from sipct.spec.printable import printable

__all__ = ["print_matrix"]


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
