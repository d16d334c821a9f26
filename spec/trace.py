"""The rules that fired while the spec processed one packet."""

from __future__ import annotations

from dataclasses import dataclass, field

from .rules import Rule


@dataclass(slots=True)
class Firing:
    rule: Rule
    detail: str | None = None


@dataclass(slots=True)
class Trace:
    firings: list[Firing] = field(default_factory=list)
    transitions: list[tuple[str, str, str]] = field(default_factory=list)  # (machine, from state, event)

    def fire(self, rule: Rule, detail: str | None = None) -> None:
        self.firings.append(Firing(rule, detail))

    @property
    def rule_ids(self) -> list[str]:
        return [f.rule.id for f in self.firings]
