"""``sipct machines --mutations``: proof that the machines drive the spec.

Each mutant changes one row of one compiled machine (spec/machines.py):
*remove* drops a transition (its event then falls through to the next
transition whose guards hold, or the spec refuses it), *negate* inverts one
guard of one transition. Every mutant runs the bundled examples, the curated
scenarios and the RFC 4475 dialogs through the spec alone (predict); it is
killed by the first dialog whose verdicts, expectation table or table events
differ from the unmutated spec's at some step - or that the spec can no
longer run (an event without a transition). Which rules fired does not count:
a mutant must change what the kernel would be seen to do.

A machine whose mutants all die is load-bearing: no transition and no guard
of it can change without some dialog noticing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sipct.conformance.corpus import example_dialogs, rfc4475_dialogs, scenario_dialogs
from sipct.spec.dialog import Dialog
from sipct.spec.exitcodes import EXIT_DIVERGED, EXIT_OK
from sipct.spec.machines import MACHINES
from sipct.spec.predict import Prediction, predict
from sipct.spec.profiles import PROFILES, KernelProfile
from sipct.spec.transitions import CompiledMachine, CompiledTransition
from sipct.harness.wire import LAB_WIRE

# A surviving mutant is the divergence of this command (1), as sipct's other commands report theirs.
EXIT_SURVIVORS = EXIT_DIVERGED

# Survivors no dialog the lab can run kills, and why. A survivor not listed
# here fails the command (and tests/conformance/test_mutations.py).
UNREACHABLE: dict[str, str] = {}


@dataclass(frozen=True)
class Mutant:
    kind: str  # "remove" | "negate"
    transition: CompiledTransition
    guard: str | None = None

    @property
    def name(self) -> str:
        t = self.transition
        row = f"{t.machine}: {t.source} --{t.label}--> {t.target}"
        return f"{row}: removed" if self.kind == "remove" else f"{row}: {self.guard} negated"


@dataclass(frozen=True)
class Kill:
    mutant: Mutant
    dialog: str
    profile: str
    step: int
    how: str


def mutants(machines: Iterable[CompiledMachine] | None = None) -> list[Mutant]:
    out: list[Mutant] = []
    for m in machines if machines is not None else MACHINES.values():
        for t in m.transitions():
            out.append(Mutant("remove", t))
            out += [Mutant("negate", t, g) for g, _ in t.guards]
    return out


@contextmanager
def applied(mutant: Mutant) -> Iterator[None]:
    """The mutant in the live table (every Runtime reads it), undone on exit."""
    t = mutant.transition
    table = MACHINES[t.machine].table
    key = (t.source, t.event)
    original = table[key]
    saved = dict(table)  # its order too: a deleted key would come back last
    if mutant.kind == "remove":
        rest = tuple(c for c in original if c is not t)
        if rest:
            table[key] = rest
        else:
            del table[key]
    else:
        i = [g for g, _ in t.guards].index(mutant.guard)
        guards = tuple((g, not want) if n == i else (g, want) for n, (g, want) in enumerate(t.guards))
        calls = tuple((fn, not want) if n == i else (fn, want) for n, (fn, want) in enumerate(t.guard_calls))
        table[key] = tuple(dataclasses.replace(c, guards=guards, guard_calls=calls) if c is t else c
                           for c in original)
    try:
        yield
    finally:
        table.clear()
        table.update(saved)


# per step: (verdict, expectations, table events, arrivals), or ("raised", message); the
# arrivals (bytes and ends each receiver gets, TCP sequence shift) are what the lab compares under NAT.
Observation = list[tuple]


def observe(dialog: Dialog, profile: KernelProfile) -> Observation:
    """What the kernel would be seen to do, step by step, as the spec predicts it."""
    try:
        prediction: Prediction = predict(dialog, profile, wire=LAB_WIRE)
    except Exception as exc:  # a mutant may break the spec in any way; that is a kill
        return [("raised", f"{type(exc).__name__}: {exc}")]
    return [(s.verdict, s.expectations, tuple((e.kind, e.expectation) for e in s.events), s.arrivals)
            for s in prediction.steps]


def _difference(base: Observation, mutated: Observation) -> tuple[int, str] | None:
    for i, (b, m) in enumerate(zip(base, mutated)):
        if b == m:
            continue
        if m[0] == "raised":
            return i, m[1]
        if b[0] != m[0]:
            return i, f"verdict {b[0]} -> {m[0]}"
        if b[1] != m[1]:
            return i, f"expectations: {len(b[1])} -> {len(m[1])} rows, or other rows"
        if b[2] != m[2]:
            return i, "other table events"
        return i, "other bytes, ends or sequence shift at the receiver"
    if len(base) != len(mutated):
        return min(len(base), len(mutated)), "a different number of steps"
    return None


def dialogs(with_rfc4475: bool = True) -> list[Dialog]:
    """The examples, the curated scenarios and (when the corpus is there) the RFC 4475 dialogs."""
    return example_dialogs() + scenario_dialogs() + (rfc4475_dialogs() if with_rfc4475 else [])


def _runs(corpus: list[Dialog]) -> list[tuple[Dialog, KernelProfile]]:
    return [(d, p) for d in corpus for name, p in PROFILES.items() if not d.kernels or name in d.kernels]


def run(selected: list[Mutant] | None = None, corpus: list[Dialog] | None = None) -> tuple[list[Kill], list[Mutant]]:
    """Every mutant against the corpus: (kills, survivors)."""
    runs = _runs(corpus if corpus is not None else dialogs())
    base = [observe(d, p) for d, p in runs]
    kills: list[Kill] = []
    survivors: list[Mutant] = []
    for mutant in selected if selected is not None else mutants():
        with applied(mutant):
            for (dialog, profile), expected in zip(runs, base):
                found = _difference(expected, observe(dialog, profile))
                if found is not None:
                    kills.append(Kill(mutant, dialog.name, profile.name, *found))
                    break
            else:
                survivors.append(mutant)
    return kills, survivors


def report_json(kills: list[Kill], survivors: list[Mutant]) -> dict:
    return {
        "mutants": len(kills) + len(survivors),
        "killed": len(kills),
        "survivors": [m.name for m in survivors],
        "unreachable": {m.name: UNREACHABLE[m.name] for m in survivors if m.name in UNREACHABLE},
        "kills": [{"mutant": k.mutant.name, "dialog": k.dialog, "profile": k.profile, "step": k.step, "how": k.how}
                  for k in kills],
    }


def add_machines_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("machines", help="check that the spec's state machines drive it (mutation testing)")
    p.add_argument("--mutations", action="store_true", required=True,
                   help="remove each transition and negate each guard in turn; every mutant must be caught")
    p.add_argument("--machine", action="append", choices=sorted(MACHINES), default=[],
                   help="only this machine's mutants (repeatable; default all)")
    p.add_argument("--json", action="store_true", help='{"mutants": N, "killed": K, "survivors": [...]}')
    p.set_defaults(func=cmd_machines)


def cmd_machines(args: argparse.Namespace) -> int:
    started = time.monotonic()
    selected = mutants([MACHINES[n] for n in args.machine] if args.machine else None)
    kills, survivors = run(selected)
    if args.json:
        json.dump(report_json(kills, survivors), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for k in kills:
            print(f"killed   {k.mutant.name}\n         by {k.dialog} ({k.profile}) step {k.step}: {k.how}")
        for m in survivors:
            why = UNREACHABLE.get(m.name)
            print(f"SURVIVED {m.name}" + (f"\n         unreachable: {why}" if why else ""))
        print(f"{len(kills) + len(survivors)} mutants, {len(kills)} killed, {len(survivors)} survived "
              f"({time.monotonic() - started:.1f} s)")
    return EXIT_SURVIVORS if [m for m in survivors if m.name not in UNREACHABLE] else EXIT_OK
