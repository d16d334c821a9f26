"""The compiled transition tables against python-statemachine itself, and the
rules of :meth:`Runtime.send`.

compile_machine() flattens each class into {(state, event): (transition, ...)}
with guards and actions; the spec only ever consults that table. Here every
(state, event) pair of every machine, under every valuation of the guards it
involves, is sent to a real instance of the class (its guards replaced by
those values, its actions by no-ops) started in that state: the library must
take the transition the compiled table picks, or refuse exactly when the
table has none (h2's exhaustive check of its transition table).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest
from sipct.spec import rules
from sipct.spec.machines import CONTINUE, EVENT_ORIGINS, MACHINES, REGISTRAR, IllegalTransition, Runtime
from sipct.spec.transitions import CompiledMachine, compile_machine
from sipct.spec.trace import Trace
from statemachine import State, StateMachine
from statemachine.exceptions import TransitionNotAllowed

PAIRS = [(name, state, event) for name, m in MACHINES.items() for state in m.states for event in m.events]


def _guards(m: CompiledMachine, state: str, event: str) -> list[str]:
    return sorted({g for t in m.table.get((state, event), ()) for g, _ in t.guards})


def _probe(m: CompiledMachine, values: dict[str, bool]) -> type[StateMachine]:
    ns: dict[str, object] = {}
    for t in m.transitions():
        for g, _ in t.guards:
            ns[g] = staticmethod(lambda *a, g=g, **k: values[g])
        for a in t.actions:
            ns[a] = staticmethod(lambda *a, **k: None)
    return type("Probe" + m.name, (m.cls,), ns)


def _compiled_target(m: CompiledMachine, state: str, event: str, values: dict[str, bool]) -> str | None:
    for t in m.table.get((state, event), ()):
        if all(values[g] is want for g, want in t.guards):
            return t.target
    return None


@pytest.mark.parametrize("name, state, event", PAIRS, ids=["-".join(p) for p in PAIRS])
def test_pair_matches_the_library(name: str, state: str, event: str) -> None:
    m = MACHINES[name]
    guards = _guards(m, state, event)
    for combo in itertools.product([False, True], repeat=len(guards)):
        values = dict(zip(guards, combo))
        sm = _probe(m, values)(start_value=state)
        try:
            sm.send(event)
            library: str | None = sm.current_state_value
        except TransitionNotAllowed:
            library = None
        assert library == _compiled_target(m, state, event, values), values


def test_every_machine_is_complete() -> None:
    for m in MACHINES.values():
        assert set(m.states) == {s.id for s in m.cls.states}
        assert set(m.events) == {e.id for e in m.cls.events}
        assert m.initial == next(s.id for s in m.cls.states if s.initial)
        assert not [k for k in m.table if k[0] in m.finals]  # final states have no way out
        # every state but the initial one is entered by some transition
        entered = {t.target for t in m.transitions()}
        assert set(m.states) - {m.initial} <= entered, m.name
        # the last transition of every (state, event) has no guard: a guarded
        # choice always has its "else", so no event is silently unhandled
        for (state, event), candidates in m.table.items():
            assert not candidates[-1].guards, (m.name, state, event)


def test_compile_is_deterministic() -> None:
    for m in MACHINES.values():
        again = compile_machine(m.cls)
        assert again.targets() == m.targets()
        assert [(t.label, t.actions) for t in again.transitions()] == [(t.label, t.actions) for t in m.transitions()]


def test_an_unguarded_transition_must_come_last() -> None:
    class Broken(StateMachine):
        a = State(initial=True)
        b = State(final=True)
        go = a.to(b) | a.to.itself(cond="never")

        @staticmethod
        def never(ctx, arg) -> bool:
            return False

    with pytest.raises(ValueError, match="never taken"):
        compile_machine(Broken)


def test_event_origins_name_every_event() -> None:
    for name, m in MACHINES.items():
        assert set(EVENT_ORIGINS[name]) == set(m.events)
        assert all(EVENT_ORIGINS[name].values())


def test_registrar_table_written_out() -> None:
    # A REGISTER and its 200, as the docs tell it: the rows a reader follows.
    rows = {(t.source, t.label): (t.target, t.actions) for t in REGISTRAR.transitions()}
    assert rows[("unregistered", "register")] == ("pending", ("expect_signalling", "store_register_cseq"))
    assert rows[("pending", "response[!cseq_matches_register]")] == ("pending", ("ignore_stale",))
    assert rows[("pending", "response")] == ("pending", ("walk_contacts",))
    assert rows[("pending", "contact[binding_has_expectation]")] == ("registered", ("refresh_signalling",))
    assert rows[("pending", "response[!success]")] == ("unregistered", ("flush_on_failure",))
    assert rows[("registered", "contacts_end")] == ("unregistered", ("flush_unmatched",))


# --- Runtime.send ---------------------------------------------------------------------------------------
class Door(StateMachine):
    shut = State(initial=True)
    open = State()

    push = shut.to(open, cond="unlocked", on=["swing", "count"]) | shut.to.itself(on="rattle")
    slam = open.to(shut, on="jam")

    @staticmethod
    def unlocked(ctx, arg) -> bool:
        return ctx.unlocked

    @staticmethod
    def swing(ctx, arg) -> None:
        ctx.log.append("swing")

    @staticmethod
    def count(ctx, arg):
        ctx.log.append("count")
        return CONTINUE

    @staticmethod
    def rattle(ctx, arg) -> None:
        ctx.log.append("rattle")

    @staticmethod
    def jam(ctx, arg):
        ctx.log.append("jam")
        return rules.MEDIA_FAILED  # a drop


@dataclass
class Ctx:
    unlocked: bool
    trace: Trace = field(default_factory=Trace)
    log: list[str] = field(default_factory=list)


DOOR = compile_machine(Door)


def test_send_takes_the_first_transition_whose_guards_hold() -> None:
    rt, ctx = Runtime(DOOR), Ctx(unlocked=False)
    assert rt.send("push", ctx) is None and rt.state == "shut" and ctx.log == ["rattle"]
    ctx.unlocked = True
    assert rt.send("push", ctx) is CONTINUE and rt.state == "open" and ctx.log[1:] == ["swing", "count"]
    assert ctx.trace.transitions == [("Door", "shut", "push"), ("Door", "shut", "push[unlocked]")]


def test_a_drop_ends_the_transition_in_its_source_state() -> None:
    rt, ctx = Runtime(DOOR, "open"), Ctx(unlocked=True)
    assert rt.send("slam", ctx) is rules.MEDIA_FAILED
    assert rt.state == "open"


def test_an_event_without_a_transition_raises_and_changes_nothing() -> None:
    rt, ctx = Runtime(DOOR), Ctx(unlocked=True)
    with pytest.raises(IllegalTransition, match="slam"):
        rt.send("slam", ctx)
    assert rt.state == "shut" and ctx.trace.transitions == [] and ctx.log == []
    assert rt.can("push") and not rt.can("slam")
