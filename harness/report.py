"""Presenting a comparison: agreements collapsed, divergences with both sides."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from sipct.harness.diff import Comparison
from sipct.harness.run import StepObservation
from sipct.spec.dialog import Dialog
from sipct.spec.printable import printable
from sipct.harness.wire import LAB_WIRE
from sipct.spec.report import describe_step, expectation_json

JSON_FORMAT = "sipct.run/1"


def comparison_json(c: Comparison) -> dict[str, Any]:
    d = c.dialog
    steps = []
    for s in c.steps:
        p, o = s.prediction, s.observation
        steps.append({
            "index": p.index,
            "line": p.step.line,
            "step": describe_step(d, p.step, wire=LAB_WIRE),
            "agree": s.agree,
            "spec": {"verdict": p.verdict, "rules": [f.rule.id for f in p.firings],
                     "expectations": [expectation_json(d, e, p.time) for e in p.expectations]},
            "kernel": _kernel_json(d, o),
            "divergences": [{"aspect": v.aspect, "spec": v.spec, "kernel": v.kernel} for v in s.divergences],
            # The dialog's own `expect:` assertions that the spec's prediction breaks (as `sipct spec`).
            "failures": list(p.failures),
        })
    return {"format": JSON_FORMAT, "dialog": d.name, "source": d.source, "kernel": c.kernel,
            "profile": c.profile, "params": c.params, "agree": c.agree,
            "warnings": [{"line": w.line, "message": w.message} for w in d.warnings],
            "expect_ok": not any(s.prediction.failures for s in c.steps), "steps": steps}


def observation_json(c: Comparison) -> list[dict[str, Any]]:
    """Per step: what the helper did (the ``kernel`` part of comparison_json)."""
    return [_kernel_json(c.dialog, s.observation) for s in c.steps]


def _kernel_json(d: Dialog, o: StepObservation) -> dict[str, Any]:
    out: dict[str, Any] = {"delivered": o.delivered, "elapsed": round(o.real_elapsed, 4)}
    if o.dropped is not None:
        out["dropped"] = o.dropped  # the kernel's logged reason (nf_ct_helper_log())
    out["expectations"] = [expectation_json(d, e, o.time) for e in o.expectations]
    out["events"] = [{"kind": ev.kind, "expectation": d.symbolic(ev.expectation)} for ev in o.events]
    return out


def add_reference(data: dict[str, Any], reference: Comparison, helper: str = "sipct") -> dict[str, Any]:
    """A ``sipct.run/1`` object (spec versus kernel) with the reference helper's
    run of the same dialog as a third column: per step ``reference`` (what it
    did, as ``kernel``) and ``reference_divergences`` (from the spec), and a
    top-level ``reference`` summary. ``agree`` keeps meaning spec versus kernel."""
    out = {**data, "helper": "reference",
           "reference": {"helper": helper, "agree": reference.agree, "kernel": reference.kernel}}
    steps = []
    for step, s, observed in zip(data["steps"], reference.steps, observation_json(reference)):
        steps.append({**step, "reference": observed,
                      "reference_divergences": [{"aspect": v.aspect, "spec": v.spec, "reference": v.kernel}
                                                for v in s.divergences]})
    out["steps"] = steps
    return out


def print_failures(steps: list[dict[str, Any]], console: Console) -> None:
    """The dialog's own ``expect:`` assertions that do not hold, as `sipct spec` prints them."""
    for s in steps:
        for failure in s.get("failures", []):
            console.print(Text.assemble("  ", ("✗", "red"), f" step {s['index']} (line {s.get('line', '?')}): "
                                        f"the dialog's expect: {printable(failure)}"), soft_wrap=True)


def _plain(value: object) -> Text:
    """Text from a dialog, a payload or a guest's JSON: shown as it is (no
    markup, no emoji codes), its control characters escaped."""
    return Text(printable(str(value)))


def _heading(name: object, source: object, rest: str, *status: tuple[str, str] | str) -> Text:
    return Text.assemble((printable(str(name)), "bold"), f" ({printable(str(source))}) {printable(rest)}", *status)


def _status(agree: bool | None) -> tuple[str, str]:
    return ("agree", "green") if agree else ("DIVERGE", "red")


def _expect_status(failed: bool) -> tuple[str, str]:
    """Spec and kernel may agree on what the dialog's own ``expect:`` says is wrong."""
    return ("; the dialog's expect: fails (below)", "red") if failed else ("", "")


def print_comparison(c: Comparison, console: Console) -> None:
    d = c.dialog
    console.print(_heading(d.name, d.source, f"kernel {c.kernel}, profile {c.profile}: ", _status(c.agree),
                           _expect_status(any(s.prediction.failures for s in c.steps))))
    print_failures([{"index": s.prediction.index, "line": s.prediction.step.line,
                     "failures": s.prediction.failures} for s in c.steps], console)
    if c.agree:
        console.print(f"  {len(c.steps)} steps agree", highlight=False)
        return
    table = Table(show_lines=True)
    for column in ("#", "step", "aspect", "spec", "kernel", "spec rules"):
        table.add_column(column)
    run_start = None
    for s in c.steps:
        if s.agree:
            run_start = s.index if run_start is None else run_start
            continue
        if run_start is not None:
            table.add_row(f"{run_start}-{s.index - 1}" if run_start != s.index - 1 else str(run_start),
                          "[dim]agree[/dim]", "", "", "", "")
            run_start = None
        rules = " ".join(dict.fromkeys(f.rule.id for f in s.prediction.firings))
        for i, v in enumerate(s.divergences):
            table.add_row(str(s.index) if i == 0 else "",
                          Text(describe_step(d, s.prediction.step, printable, wire=LAB_WIRE)) if i == 0 else "",
                          v.aspect, _plain(v.spec), _plain(v.kernel), rules if i == 0 else "")
    if run_start is not None:
        table.add_row(f"{run_start}-", "[dim]agree[/dim]", "", "", "", "")
    console.print(table)


def print_run_json(data: dict[str, Any], console: Console) -> None:
    """Print one ``sipct.run/1`` object -- e.g. what a VM guest's `sipct run
    --json` wrote -- the way print_comparison prints a Comparison."""
    name, source = data.get("dialog", "?"), data.get("source", "?")
    if data.get("runnable") is False:
        console.print(Text.assemble((printable(str(name)), "bold"), f" ({printable(str(source))}): ",
                                    ("not runnable", "yellow"),
                                    printable(f" - it needs {', '.join(data.get('needs', []))}")))
        return
    if "reference" in data:
        _print_three_way(data, console)
        return
    steps = data.get("steps", [])
    console.print(_heading(name, source, f"kernel {data.get('kernel')}, profile {data.get('profile')}: ",
                           _status(data.get("agree")), _expect_status(any(s.get("failures") for s in steps))))
    print_failures(steps, console)
    if data.get("agree"):
        console.print(f"  {len(steps)} steps agree", highlight=False)
        return
    table = Table(show_lines=True)
    for column in ("#", "step", "aspect", "spec", "kernel", "spec rules"):
        table.add_column(column)
    run_start = None
    for s in steps:
        index = s["index"]
        if s.get("agree"):
            run_start = index if run_start is None else run_start
            continue
        if run_start is not None:
            table.add_row(f"{run_start}-{index - 1}" if run_start != index - 1 else str(run_start),
                          "[dim]agree[/dim]", "", "", "", "")
            run_start = None
        rules = " ".join(dict.fromkeys(s.get("spec", {}).get("rules", [])))
        for i, v in enumerate(s.get("divergences", [])):
            table.add_row(str(index) if i == 0 else "", _plain(s.get("step", "")) if i == 0 else "",
                          _plain(v["aspect"]), _plain(v["spec"]), _plain(v["kernel"]), _plain(rules) if i == 0 else "")
    if run_start is not None:
        table.add_row(f"{run_start}-", "[dim]agree[/dim]", "", "", "", "")
    console.print(table)


def _print_three_way(data: dict[str, Any], console: Console) -> None:
    """Spec, kernel helper and reference helper: one table row per divergent
    aspect of a step, with what each helper did."""
    name, source = data.get("dialog", "?"), data.get("source", "?")
    reference = data["reference"]
    console.print(_heading(name, source, f"kernel {data.get('kernel')}, profile {data.get('profile')}: kernel helper ",
                           _status(data.get("agree")), ", reference helper ", _status(reference.get("agree")),
                           _expect_status(any(s.get("failures") for s in data.get("steps", [])))))
    steps = data.get("steps", [])
    print_failures(steps, console)
    if data.get("agree") and reference.get("agree"):
        console.print(f"  {len(steps)} steps agree (spec = kernel = reference)", highlight=False)
        return
    table = Table(show_lines=True)
    for column in ("#", "step", "aspect", "spec", "kernel", "reference", "spec rules"):
        table.add_column(column)
    for s in steps:
        kernel = {v["aspect"]: v for v in s.get("divergences", [])}
        ref = {v["aspect"]: v for v in s.get("reference_divergences", [])}
        rules = " ".join(dict.fromkeys(s.get("spec", {}).get("rules", [])))
        for i, aspect in enumerate(dict.fromkeys([*kernel, *ref])):
            k, r = kernel.get(aspect), ref.get(aspect)
            table.add_row(str(s["index"]) if i == 0 else "", _plain(s.get("step", "")) if i == 0 else "",
                          _plain(aspect), _plain((k or r or {}).get("spec", "")),
                          _plain(k["kernel"]) if k else "[dim]as spec[/dim]",
                          _plain(r["reference"]) if r else "[dim]as spec[/dim]", _plain(rules) if i == 0 else "")
    console.print(table)
