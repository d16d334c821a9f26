"""The conformance report: terminal table, JSON, JUnit XML."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from rich.console import Console
from rich.table import Table
from rich.text import Text

from sipct.conformance.suite import Finding, Stats
from sipct.spec.params import ModuleParams
from sipct.spec.printable import printable

JSON_FORMAT = "sipct.conformance/1"


def stats_json(stats: Stats) -> dict[str, Any]:
    params = ModuleParams.from_mapping(stats.params)
    by_rule = stats.divergences_by_rule()
    return {
        "format": JSON_FORMAT,
        "kernel": stats.kernel,
        "profile": stats.profile,
        "params": stats.params,
        "seed": stats.seed,
        "examples": stats.examples,
        "ok": stats.ok,
        "dialogs": dict(stats.dialogs),
        "agreeing": dict(stats.agreeing),
        "nat": {"dialogs": dict(stats.nat), "agreeing": dict(stats.nat_agreeing),
                "unpredictable": dict(stats.unpredictable), "unpredictable_reasons": stats.unpredictable_reasons,
                "cut": dict(stats.nat_cut)},
        "steps": stats.steps,
        "messages": stats.messages,
        "elapsed": round(stats.elapsed, 2),
        "divergences": {
            "unregistered": len(stats.unregistered),
            "registered": len(stats.findings) - len(stats.unregistered),
            "by_rule": {k: dict(v) for k, v in by_rule.items()},
            "findings": [f.__dict__ for f in stats.findings],
        },
        "stale_registry_entries": stats.stale_entries,
        "not_runnable": stats.not_runnable,
        "failed_dialogs": stats.failed_dialogs,
        "minimal_dialog": str(stats.minimal_dialog) if stats.minimal_dialog else None,
        "coverage": stats.coverage(params),
        # The raw counts behind "coverage", so that reports of several runs
        # (the boots of a VM kernel) can be merged.
        "rule_firings": dict(sorted(stats.rules.items())),
        "transitions_exercised": sorted(list(t) for t in stats.transitions),
        "probes": stats.probes,
    }


def stats_from_json(data: dict[str, Any]) -> Stats:
    """The Stats behind a ``sipct.conformance/1`` object (e.g. what a VM
    guest wrote); the inverse of :func:`stats_json`."""
    from collections import Counter

    if not isinstance(data, dict) or data.get("format") != JSON_FORMAT:
        if not isinstance(data, dict):
            raise ValueError(f"not a {JSON_FORMAT} report (a JSON {type(data).__name__})")
        raise ValueError(f"not a {JSON_FORMAT} report (format {data.get('format')!r})")
    stats = Stats(data["profile"], data["kernel"], dict(data["params"]))
    stats.dialogs, stats.agreeing = Counter(data["dialogs"]), Counter(data["agreeing"])
    nat = data.get("nat", {})
    stats.nat, stats.nat_agreeing = Counter(nat.get("dialogs", {})), Counter(nat.get("agreeing", {}))
    stats.unpredictable = Counter(nat.get("unpredictable", {}))
    stats.unpredictable_reasons = list(nat.get("unpredictable_reasons", []))
    stats.nat_cut = Counter(nat.get("cut", {}))
    stats.steps, stats.messages = data["steps"], data["messages"]
    stats.findings = [Finding(**{**f, "rules": tuple(f["rules"])}) for f in data["divergences"]["findings"]]
    stats.rules = Counter(data.get("rule_firings", {}))
    stats.transitions = {tuple(t) for t in data.get("transitions_exercised", [])}
    stats.stale_entries = list(data["stale_registry_entries"])
    stats.not_runnable = list(data["not_runnable"])
    stats.failed_dialogs = list(data.get("failed_dialogs", []))
    stats.minimal_dialog = Path(data["minimal_dialog"]) if data.get("minimal_dialog") else None
    stats.seed, stats.examples, stats.elapsed = data["seed"], data["examples"], data["elapsed"]
    stats.probes = list(data.get("probes", []))
    return stats


def write_json(stats: Stats, path: Path) -> None:
    path.write_text(json.dumps(stats_json(stats), indent=2, default=str) + "\n")


def write_junit(stats: Stats, path: Path) -> None:
    ET.ElementTree(junit_suite(stats)).write(path, encoding="unicode", xml_declaration=True)


def junit_suite(stats: Stats, name: str = "sipct-conformance") -> ET.Element:
    """One JUnit <testsuite> for a run (a kernel matrix has one per kernel)."""
    suite = ET.Element("testsuite", name=name, time=f"{stats.elapsed:.2f}")
    cases = 0
    failures = 0
    by_dialog: dict[tuple[str, str], list] = {}
    for f in stats.findings:
        by_dialog.setdefault((f.kind, f.dialog), []).append(f)
    for kind, count in stats.dialogs.items():
        case = ET.SubElement(suite, "testcase", classname=f"conformance.{kind}",
                             name=f"{count} {kind} dialogs on {stats.kernel}")
        cases += 1
        bad = [f for (k, _), fs in by_dialog.items() if k == kind for f in fs if f.known is None]
        if bad:
            failures += 1
            failure = ET.SubElement(case, "failure", message=f"{len(bad)} unregistered divergences")
            failure.text = "\n".join(f"{f.dialog} step {f.step} {f.aspect}: spec {f.spec} | kernel {f.kernel}"
                                     for f in bad)
    for stale in stats.stale_entries:
        case = ET.SubElement(suite, "testcase", classname="conformance.registry", name=stale.split(":")[0])
        ET.SubElement(case, "failure", message=stale)
        cases += 1
        failures += 1
    if stats.minimal_dialog:
        case = ET.SubElement(suite, "testcase", classname="conformance.generated", name="minimal divergence")
        ET.SubElement(case, "failure", message=f"minimal dialog written to {stats.minimal_dialog}")
        cases += 1
        failures += 1
    suite.set("tests", str(cases))
    suite.set("failures", str(failures))
    return suite


def print_report(stats: Stats, console: Console) -> None:
    params = ModuleParams.from_mapping(stats.params)
    cov = stats.coverage(params)
    table = Table(title=f"sipct conformance - kernel {stats.kernel}, profile {stats.profile}", show_header=False)
    table.add_column("what")
    table.add_column("value")
    total = sum(stats.dialogs.values())
    agreeing = sum(stats.agreeing.values())
    table.add_row("dialogs", ", ".join(f"{n} {k}" for k, n in stats.dialogs.items()) + f" ({total} in all)")
    table.add_row("messages", f"{stats.messages} in {stats.steps} steps")
    table.add_row("agreement", f"{agreeing}/{total} dialogs agree completely" if total else "-")
    if stats.nat or stats.unpredictable:
        nat_total = sum(stats.nat.values())
        text = (f"{nat_total} dialogs behind NAT ({', '.join(f'{n} {k}' for k, n in stats.nat.items()) or 'none'}), "
                f"{sum(stats.nat_agreeing.values())} agree")
        if stats.nat_cut:
            text += (f"; {sum(stats.nat_cut.values())} generated ones end before a step the kernel would take a "
                     f"random port for")
        if stats.unpredictable:
            text += (f"; {sum(stats.unpredictable.values())} left out, the kernel would pick a random port ("
                     + ", ".join(f"{n} {k}" for k, n in stats.unpredictable.items()) + ")")
        table.add_row("NAT", text)
    by_rule = stats.divergences_by_rule()
    for kind in ("unregistered", "registered"):
        counts = by_rule[kind]
        n = sum(1 for f in stats.findings if (f.known is None) == (kind == "unregistered"))
        text = f"{n}" + (": " + ", ".join(f"{r} {c}" for r, c in counts.most_common(6)) if counts else "")
        table.add_row(f"{kind} divergences", text)
    table.add_row("rules exercised", f"{len(cov['rules_exercised'])} of {len(cov['rules_exercised']) + len(cov['rules_never'])}"
                  f" reachable; never: {', '.join(cov['rules_never']) or 'none'}")
    if cov["rules_excluded"]:
        table.add_row("rules out of reach", "; ".join(f"{r} ({why})" for r, why in cov["rules_excluded"].items()))
    table.add_row("transitions", Text(f"{cov['transitions_total'] - len(cov['transitions_never'])} of "  # labels
                                      f"{cov['transitions_total']}; never: "  # hold [guards]: no markup
                                      + (", ".join(cov["transitions_never"]) or "none")))
    if stats.seed is not None:
        table.add_row("generation", f"{stats.examples} examples, seed {stats.seed}")
    table.add_row("time", f"{stats.elapsed:.1f} s")
    console.print(table)
    # Dialog names, file names and what the helpers did come from dialog files and payloads: plain Text
    # (no markup, no emoji codes) through printable().
    for f in stats.unregistered[:20]:
        console.print(Text.assemble(("✗", "red"), printable(
            f" {f.dialog} ({f.source}) step {f.step} line {f.line} {f.aspect}: spec {f.spec} | kernel {f.kernel}")),
            soft_wrap=True)
    for stale in stats.stale_entries:
        console.print(Text.assemble(("✗ stale registry entry", "red"), " ", printable(stale)), soft_wrap=True)
    for item in stats.not_runnable:
        console.print(Text.assemble(("not runnable on this kernel:", "yellow"), " ", printable(item)), soft_wrap=True)
    if stats.minimal_dialog:
        path = printable(str(stats.minimal_dialog))
        console.print(Text.assemble(("minimal divergent dialog:", "red"), f" {path}  (reproduce: sipct run {path})"),
                      soft_wrap=True)
    console.print("[green]conformance: OK[/green]" if stats.ok else "[red]conformance: FAILED[/red]")
