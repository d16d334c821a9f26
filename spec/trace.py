"""The rules that fired while the spec processed one packet."""

from __future__ import annotations

from dataclasses import dataclass, field

from .rules import Rule
from .values import value


@value
class Firing:
    rule: Rule
    template: str | None = None  # the detail, or its %-format when there are args
    args: tuple[object, ...] = ()

    @property
    def detail(self) -> str | None:
        """Formatted when read, not when the rule fires: most traces are only
        counted, and formatting addresses costs more than deciding the rule."""
        return self.template % self.args if self.args else self.template


# A firing without detail is the same value every time: one per rule, shared
# by every trace (most rules fire without detail, several times per packet).
_PLAIN: dict[str, Firing] = {}


@dataclass(slots=True)
class Trace:
    firings: list[Firing] = field(default_factory=list)
    transitions: list[tuple[str, str, str]] = field(default_factory=list)  # (machine, from state, event)

    def fire(self, rule: Rule, template: str | None = None, *args: object) -> None:
        """``template % args`` is the detail, like a logging call's message."""
        if template is None:
            firing = _PLAIN.get(rule.id)
            if firing is None or firing.rule is not rule:
                firing = _PLAIN[rule.id] = Firing(rule)
        else:
            firing = Firing(rule, template, args)
        self.firings.append(firing)

    @property
    def rule_ids(self) -> list[str]:
        return [f.rule.id for f in self.firings]
