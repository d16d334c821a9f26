"""Presenting a prediction: rich terminal text for people, JSON for machines."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .dialog import Connect, DeleteConntrack, Dialog, Send, Wait
from .expectation import PROTO_NAMES, Expectation
from .predict import Prediction, StepPrediction
from .printable import printable
from .wire import Wire

JSON_FORMAT = "sipct.prediction/1"


def _latin1(data: bytes) -> str:
    return data.decode("latin-1")


def describe_step(dialog: Dialog, step: object, text: Callable[[bytes], str] = _latin1, *, wire: Wire) -> str:
    """One line for a step (``wire``: what carries it, which says how many
    segments a TCP write is); ``text`` turns the payload's first line into
    text: for JSON every byte as the code point of its value (exact), for a
    terminal :func:`printable`."""
    if isinstance(step, Wait):
        return f"wait {step.seconds:g}s"
    if isinstance(step, Connect):
        return f"connect tcp {step.src} -> {step.dst}"
    if isinstance(step, DeleteConntrack):
        return f"delete-conntrack {PROTO_NAMES[step.proto]} {step.src} -> {step.dst}"
    assert isinstance(step, Send)
    first_line = text(step.payload.split(b"\n", 1)[0].rstrip(b"\r")[:60])
    pieces = wire.segments(step, dialog.family)
    segs = f" ({len(pieces)} segments)" if len(pieces) > 1 else ""
    return f"{PROTO_NAMES[step.proto]} {step.src} -> {step.dst}: {first_line}{segs}"


def rewritten_lines(sent: bytes, got: bytes) -> list[str]:
    """The lines of ``got`` that differ from ``sent`` (nf_nat_sip's rewrites), printable."""
    import difflib

    a, b = sent.split(b"\r\n"), got.split(b"\r\n")
    changed = []
    for tag, _, _, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag != "equal":
            changed.append(" | ".join(printable(x.decode("latin-1")) for x in b[j1:j2]) or "(removed)")
    return changed


def rewrites(sent: bytes, got: bytes) -> str:
    """A short, readable account of how ``got`` differs from ``sent``."""
    if sent == got:
        return f"{len(got)} bytes as sent"
    return f"{len(got)} bytes; rewritten: " + "; ".join(rewritten_lines(sent, got))


def why_not_delivered(dialog: Dialog, s: StepPrediction) -> str | None:
    """Why a send step's packets do not reach its receiver, in a few words
    (None when they do): the helper's drop rule, the router's forward
    policy, the router itself, or the host NAT sends it to instead."""
    if s.delivered is not False:
        return None
    for packet, arrival in zip(s.packets, s.arrivals or (None,) * len(s.packets)):
        if packet.drop_rule is not None:
            return packet.drop_rule.id
        if packet.filtered:
            return "the router's forward policy (forward: drop)"
        if packet.local:
            return "addressed to the router itself: not forwarded"
        if arrival is not None and arrival.host != s.step.dst.host:
            return f"arrives at {arrival.host}" if arrival.host else "arrives at no host of the dialog"
    return None


def expectation_json(dialog: Dialog, e: Expectation, now: float) -> dict[str, Any]:
    t = e.tuple
    return {
        "text": dialog.symbolic(e),
        "family": f"ipv{t.family}",
        "proto": PROTO_NAMES.get(t.proto, t.proto),
        "src": None if t.src is None else str(t.src),
        "dst": str(t.dst),
        "dport": t.dport,
        "class": e.klass.label,
        "flags": e.flags.labels(),
        "helper": e.helper,
        "master": {"src": str(e.master.src), "sport": e.master.sport, "dst": str(e.master.dst),
                   "dport": e.master.dport, "proto": PROTO_NAMES.get(e.master.proto, e.master.proto)},
        "timeout": round(e.remaining(now), 3),
    }


def step_json(dialog: Dialog, s: StepPrediction, wire: Wire) -> dict[str, Any]:
    return {
        "index": s.index,
        "line": s.step.line,
        "time": s.time,
        "step": describe_step(dialog, s.step, wire=wire),
        "verdict": s.verdict,
        "drop_rule": next((p.drop_rule.id for p in s.packets if p.drop_rule), None),
        "why": why_not_delivered(dialog, s),
        **_received_json(s),
        "rules": [f.rule.id for f in s.firings],
        "expectations": [expectation_json(dialog, e, s.time) for e in s.expectations],
        "events": [{"kind": ev.kind, "rule": ev.rule, "expectation": dialog.symbolic(ev.expectation)}
                   for ev in s.events],
        "failures": list(s.failures),
    }


def _received_json(s: StepPrediction) -> dict[str, Any]:
    """What the receiver reads when the router rewrote it: every byte as the
    code point of its value (exact), and the changed lines."""
    got = s.received
    if not isinstance(s.step, Send) or got is None or got == s.step.payload:
        return {}
    return {"received": _latin1(got), "rewritten": rewritten_lines(s.step.payload, got)}


def prediction_json(prediction: Prediction) -> dict[str, Any]:
    d = prediction.dialog
    return {
        "format": JSON_FORMAT,
        "dialog": d.name,
        "source": d.source,
        "profile": prediction.profile.name,
        "params": prediction.params.as_mapping(),
        "hosts": {name: str(addr) for name, addr in d.hosts.items()},
        "steps": [step_json(d, s, prediction.wire) for s in prediction.steps],
        "warnings": [{"line": w.line, "message": w.message} for w in d.warnings],
        "ok": not prediction.failures,
    }


def print_warnings(dialog: Dialog, console: Console) -> None:
    """The loader's warnings about the dialog's file, a line each."""
    for warning in dialog.warnings:
        console.print(Text.assemble(("warning:", "yellow"), f" {warning}"), soft_wrap=True)


def print_prediction(prediction: Prediction, console: Console, *, verbose: bool = False) -> None:
    """The prediction as a table. What comes from the dialog file or the
    payload goes in as rich Text through printable(): no markup, no emoji
    codes, no control characters reach the terminal."""
    d = prediction.dialog
    console.print(Text.assemble((printable(d.name), "bold"), f"  ({printable(d.source)})  profile ",
                                (prediction.profile.name, "cyan")))
    table = Table(show_lines=True)
    table.add_column("#", justify="right")
    table.add_column("t", justify="right")
    table.add_column("step")
    table.add_column("verdict")
    table.add_column("expectations after the step")
    for s in prediction.steps:
        verdict = Text(s.verdict or "")
        why = why_not_delivered(d, s)
        if s.verdict == "drop" and why is not None:
            verdict = Text.assemble(("drop", "red"), f"\n{printable(why)}")
        elif s.verdict == "accept":
            verdict = Text("accept", "green")
        rows = "\n".join(f"{d.symbolic(e)}  ({e.remaining(s.time):.0f}s)" for e in s.expectations) or "-"
        step_text = Text(describe_step(d, s.step, printable, wire=prediction.wire))
        got = s.received
        if isinstance(s.step, Send) and got is not None and got != s.step.payload:
            step_text.append("\nrewritten: " + "; ".join(rewritten_lines(s.step.payload, got)), "dim")
        if verbose and s.firings:
            step_text.append("\n" + " ".join(f.rule.id for f in s.firings), "dim")
        if s.failures:
            step_text.append("\n✗ see below", "red")
        table.add_row(str(s.index), f"{s.time:g}", step_text, verdict, Text(rows))
    console.print(table)
    for s in prediction.steps:
        for failure in s.failures:
            console.print(Text.assemble(("✗", "red"), f" step {s.index} (line {s.step.line}): {printable(failure)}"),
                          soft_wrap=True)
