"""Coverage across runs: which spec rules and machine transitions no run
exercised, and why each of those rules is out of reach.

One run (:meth:`Stats.coverage`) judges a rule against its own kernel profile
and parameters. A kernel matrix unites its rows: the running kernel with the
module's defaults, every VM kernel with the boots of its parameter sets
(conformance/scenarios/params/). A rule no row exercised is listed with the
reason the rule catalogue gives (``needs``, ``needs_params``,
``only_profiles``), or as reachable but not exercised - the list that must be
empty for "every rule exercised".
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sipct.conformance.suite import Stats
from sipct.spec.machines import MACHINES
from sipct.spec.rules import RULES, Rule

NOT_EXERCISED = "reachable, but no dialog of the run exercised it"


def all_transitions() -> set[tuple[str, str, str]]:
    return {(name, state, event) for name, compiled in MACHINES.items() for (state, event) in compiled.targets()}


def transition_label(t: tuple[str, str, str]) -> str:
    machine, state, event = t
    return f"{machine}: {state} --{event}-->"


def why_not(rule: Rule, profiles: set[str]) -> str:
    """Why a rule that no run exercised may be out of their reach."""
    if rule.only_profiles and not profiles & set(rule.only_profiles):
        return f"only on profile {', '.join(rule.only_profiles)}, which no kernel of the run has"
    if rule.needs:
        return rule.needs
    if rule.needs_params:
        wanted = ", ".join(f"{name}={int(v) if isinstance(v, bool) else v}" for name, v in rule.needs_params)
        return f"needs {wanted} (conformance/scenarios/params/, a VM boot)"
    return NOT_EXERCISED


def union_coverage(runs: Iterable[Stats]) -> dict[str, Any]:
    """The coverage of several runs (the rows of a matrix) taken together."""
    runs = list(runs)
    profiles = {s.profile for s in runs}
    fired = {rid for s in runs for rid, n in s.rules.items() if n and rid in RULES}
    transitions = all_transitions()
    seen = set().union(*(s.transitions for s in runs)) if runs else set()
    never = {rid: why_not(RULES[rid], profiles) for rid in sorted(RULES) if rid not in fired}
    return {
        "rules_total": len(RULES),
        "rules_exercised": len(fired),
        "rules_never": never,
        "rules_reachable_never": sorted(rid for rid, why in never.items() if why == NOT_EXERCISED),
        "transitions_total": len(transitions),
        "transitions_never": sorted(transition_label(t) for t in transitions - seen),
    }


def coverage_text(cov: dict[str, Any]) -> list[str]:
    """Terminal lines: the rules and transitions no run exercised."""
    lines = [f"rules exercised by some kernel: {cov['rules_exercised']} of {cov['rules_total']}; "
             f"transitions: {cov['transitions_total'] - len(cov['transitions_never'])} of {cov['transitions_total']}"]
    for rid, why in cov["rules_never"].items():
        lines.append(f"rule no kernel exercised: {rid} ({why})")
    for label in cov["transitions_never"]:
        lines.append(f"transition no kernel exercised: {label}")
    return lines


def coverage_rst(cov: dict[str, Any]) -> list[str]:
    """The coverage section of docs/matrix.rst."""
    lines = ["Coverage", "--------", "",
             f"Rules exercised on some kernel of the matrix: {cov['rules_exercised']} of {cov['rules_total']};",
             f"machine transitions: {cov['transitions_total'] - len(cov['transitions_never'])} of "
             f"{cov['transitions_total']}.", ""]
    if cov["rules_never"]:
        lines += ["Rules no kernel exercised, and why:", ""]
        # :rule: links each to its row of the catalogue (and fails the build on an unknown id).
        lines += [f"* :rule:`{rid}`: {why}" for rid, why in cov["rules_never"].items()]
        lines.append("")
    if cov["transitions_never"]:
        lines += ["Transitions no kernel exercised:", ""]
        lines += [f"* ``{label}``" for label in cov["transitions_never"]]
        lines.append("")
    return lines
