"""python-statemachine classes compiled into transition tables with guards and
actions (h2's ``_transitions``: a row is the side effects plus the target).

A machine class declares, per event, its transitions in order; each may carry
guards (``cond=`` must hold, ``unless=`` must not) and actions (``on=``), all
named methods of the class; a guard returns a ``bool``. :func:`compile_machine` flattens the class into
``{(state, event): (transition, ...)}``; :meth:`Runtime.send` takes the first
transition of the current state whose guards hold - python-statemachine's own
rule - runs its actions and moves to its target.

Guards and actions are static methods ``(ctx, arg)``: ``ctx`` is what the
sender has in hand (a packet's context, the expectation table's change) and
carries the ``trace``; ``arg`` is the event's data. A guard only reads. An
action changes state and returns what the kernel function it models returns:
``None`` (NF_ACCEPT), a :class:`~sipct.spec.rules.Rule` (NF_DROP, for that
reason), an errno, or :data:`CONTINUE` (the kernel function reads on). An
action that returns a drop ends the transition there: the later actions do not
run and the machine stays where it was, as the kernel returns NF_DROP before it
stores anything else (an INVITE whose SDP is dropped leaves ``invite_cseq``
alone).

An event with no transition whose guards hold is a spec bug: it raises
:class:`IllegalTransition` and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from .rules import Rule

if TYPE_CHECKING:
    from statemachine import StateMachine


class IllegalTransition(RuntimeError):
    """The spec sent an event its machines do not allow in that state: a spec bug."""


class _Continue:
    __slots__ = ()

    def __repr__(self) -> str:
        return "CONTINUE"


# What an action returns when the kernel function goes on after it (the walk
# over a 2xx's Contact headers in process_register_response()).
CONTINUE: Any = _Continue()

Guard = Callable[[Any, Any], bool]
Action = Callable[[Any, Any], Any]


@dataclass(frozen=True, slots=True, eq=False)
class CompiledTransition:
    machine: str
    source: str
    event: str
    target: str
    guards: tuple[tuple[str, bool], ...]  # (guard, the value it must have)
    actions: tuple[str, ...]
    label: str  # the event and its guards: what Trace and coverage record
    guard_calls: tuple[tuple[Guard, bool], ...]
    action_calls: tuple[Action, ...]
    record: tuple[str, str, str]  # (machine, source, label): the Trace entry, built once


@dataclass(frozen=True, slots=True, eq=False)
class CompiledMachine:
    name: str
    cls: "type[StateMachine]"
    initial: str
    states: tuple[str, ...]
    finals: frozenset[str]
    events: tuple[str, ...]
    table: dict[tuple[str, str], tuple[CompiledTransition, ...]]

    def transitions(self) -> list[CompiledTransition]:
        return [t for candidates in self.table.values() for t in candidates]

    def targets(self) -> dict[tuple[str, str], str]:
        """``{(state, label): target}``: the table without guards and actions."""
        return {(t.source, t.label): t.target for t in self.transitions()}


def transition_label(event: str, guards: tuple[tuple[str, bool], ...]) -> str:
    if not guards:
        return event
    return f"{event}[{','.join(g if want else '!' + g for g, want in guards)}]"


def compile_machine(cls: "type[StateMachine]") -> CompiledMachine:
    """Flatten a python-statemachine class into its transition table."""
    name = cls.__name__
    table: dict[tuple[str, str], list[CompiledTransition]] = {}
    for state in cls.states:
        for transition in state.transitions:
            guards = tuple((spec.attr_name, bool(spec.expected_value)) for spec in transition.cond)
            actions = tuple(spec.attr_name for spec in transition.on if not spec.is_convention)
            guard_calls = tuple((_callable(cls, g), want) for g, want in guards)
            action_calls = tuple(_callable(cls, a) for a in actions)
            for event in transition.events:
                event = str(event)
                candidates = table.setdefault((state.id, event), [])
                if candidates and not candidates[-1].guards:
                    raise ValueError(f"{name}: {state.id} --{event}--> after an unguarded transition is never taken")
                label = transition_label(event, guards)
                candidates.append(CompiledTransition(name, state.id, event, transition.target.id, guards, actions,
                                                     label, guard_calls, action_calls, (name, state.id, label)))
    initial = next(s.id for s in cls.states if s.initial)
    return CompiledMachine(
        name=name,
        cls=cls,
        initial=initial,
        states=tuple(s.id for s in cls.states),
        finals=frozenset(s.id for s in cls.states if s.final),
        events=tuple(dict.fromkeys(e for (_, e) in table)),
        table={key: tuple(candidates) for key, candidates in table.items()},
    )


def _callable(cls: type, name: str) -> Callable[[Any, Any], Any]:
    fn = getattr(cls, name, None)
    if not callable(fn):
        raise ValueError(f"{cls.__name__}: no guard or action named {name!r}")
    return fn


class Runtime:
    """One machine instance: its current state, changed only by :meth:`send`."""

    __slots__ = ("machine", "state", "_table")

    def __init__(self, machine: CompiledMachine, state: str | None = None) -> None:
        self.machine = machine
        self.state = machine.initial if state is None else state
        self._table = machine.table  # the same dict: a mutant changes it in place

    def can(self, event: str) -> bool:
        """Whether the current state has any transition for ``event`` (guards aside)."""
        return (self.state, event) in self._table

    def send(self, event: str, ctx: Any, arg: Any = None) -> Any:
        """Take the first transition for ``event`` whose guards hold; record it
        in ``ctx.trace``; return what its actions returned."""
        for transition in self._table.get((self.state, event), ()):
            for guard, want in transition.guard_calls:
                if guard(ctx, arg) is not want:  # guards return bool
                    break
            else:
                ctx.trace.transitions.append(transition.record)
                result = None
                for action in transition.action_calls:
                    result = action(ctx, arg)
                    if result.__class__ is Rule:
                        return result  # NF_DROP: the machine stays in its source state
                self.state = transition.target
                return result
        raise IllegalTransition(f"{self.machine.name}: no transition {event!r} from state {self.state!r}"
                                + (f" for {arg!r}" if arg is not None else ""))

    def __repr__(self) -> str:
        return f"<{self.machine.name} {self.state}>"
