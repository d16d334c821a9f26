"""The compiled transition tables against python-statemachine itself.

machines.compile_machine() flattens each StateMachine class into
{(state, event): target}; the spec then only ever consults that table. Here
every (state, event) pair of every machine is sent to a real instance of the
class started in that state: the pair must be legal in the table exactly when
the library allows it, and lead to the same target.
"""

from __future__ import annotations

import itertools

import pytest
from sipct.spec.machines import (
    EVENT_ORIGINS,
    EXPECTATION,
    MACHINES,
    MEDIA,
    REGISTRAR,
    IllegalTransition,
    Runtime,
    compile_machine,
)
from sipct.spec.trace import Trace
from statemachine.exceptions import TransitionNotAllowed

PAIRS = [(name, state, event)
         for name, (cls, compiled) in MACHINES.items()
         for state in [s.id for s in cls.states]
         for event in sorted({e.id for e in cls.events})]


def library_target(cls, state: str, event: str) -> str | None:
    """What python-statemachine does with ``event`` in ``state``: the new state, or None if refused."""
    sm = cls(start_value=state)
    try:
        sm.send(event)
    except TransitionNotAllowed:
        return None
    return sm.current_state_value


@pytest.mark.parametrize("name, state, event", PAIRS, ids=["-".join(p) for p in PAIRS])
def test_pair_matches_the_library(name: str, state: str, event: str) -> None:
    cls, compiled = MACHINES[name]
    assert compiled.table.get((state, event)) == library_target(cls, state, event)


def test_pairs_cover_every_state_and_event() -> None:
    assert len(PAIRS) == 6 * 7 + 3 * 3 + 2 * 2
    for cls, compiled in MACHINES.values():
        assert set(compiled.states) == {s.id for s in cls.states}
        assert set(compiled.events) == {e.id for e in cls.events}
        assert compiled.initial == next(s.id for s in cls.states if s.initial)
        assert compiled.finals == {s.id for s in cls.states if s.final}
        # final states have no way out
        assert not [k for k in compiled.table if k[0] in compiled.finals]


def test_compile_is_deterministic() -> None:
    for cls, compiled in MACHINES.values():
        assert compile_machine(cls) == compiled


def test_expected_tables() -> None:
    # The lifecycle the spec relies on, written out.
    assert EXPECTATION.table == {
        ("proposed", "insert_inactive"): "inactive",
        ("proposed", "insert"): "active",
        ("inactive", "activate"): "active",
        ("active", "activate"): "active",
        ("active", "match"): "matched",
        ("active", "match_permanent"): "active",
        ("inactive", "expire"): "expired",
        ("active", "expire"): "expired",
        ("inactive", "unlink"): "unlinked",
        ("active", "unlink"): "unlinked",
    }
    assert REGISTRAR.table == {
        ("unregistered", "register"): "pending",
        ("pending", "refresh"): "registered",
        ("registered", "refresh"): "registered",
        ("pending", "deregister"): "unregistered",
        ("registered", "deregister"): "unregistered",
    }
    assert MEDIA.table == {
        ("idle", "expect"): "expecting",
        ("expecting", "expect"): "expecting",
        ("expecting", "drain"): "idle",
    }


def test_event_origins_name_every_event() -> None:
    for name, (_, compiled) in MACHINES.items():
        assert set(EVENT_ORIGINS[name]) == set(compiled.events)
        assert all(EVENT_ORIGINS[name].values())


@pytest.mark.parametrize("name", list(MACHINES))
def test_runtime_follows_the_table(name: str) -> None:
    _, compiled = MACHINES[name]
    for state, event in itertools.product(compiled.states, compiled.events):
        rt = Runtime(compiled)
        assert rt.state == compiled.initial
        rt.state = state
        target = compiled.table.get((state, event))
        assert rt.can(event) is (target is not None)
        if target is None:
            with pytest.raises(IllegalTransition, match=event):
                rt.fire(event)
            assert rt.state == state  # a refused event changes nothing
        else:
            trace = Trace()
            assert rt.fire(event, trace) == target
            assert rt.state == target
            assert trace.transitions == [(compiled.name, state, event)]


def test_runtime_walk() -> None:
    rt = Runtime(REGISTRAR)
    assert [rt.fire(e) for e in ("register", "refresh", "refresh", "deregister", "register")] == \
        ["pending", "registered", "registered", "unregistered", "pending"]
    with pytest.raises(IllegalTransition):
        rt.fire("register")
