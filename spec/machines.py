"""Every state machine of the spec, in one place.

Theory of operation
-------------------
The kernel helper keeps little state of its own - ``struct nf_ct_sip_master``
(``register_cseq``, ``invite_cseq``, ``forced_dport``) - and lets conntrack's
expectation table carry the rest. Three machines describe what that state means:

* :class:`ExpectationLifecycle` - one per expectation, from insertion by
  ``nf_ct_expect_related()`` to its end (matched, expired or unlinked).
* :class:`RegistrarMachine` - one per master: the signalling expectation that a
  REGISTER creates (``process_register_request``), that a 2xx activates
  (``process_register_response`` → ``refresh_signalling_expectation``) and that
  errors, unbinding and time remove.
* :class:`MediaMachine` - one per master: whether INVITE/UPDATE/PRACK/ACK offers
  and answers (``process_sdp``) have left media expectations, until BYE, an
  error answer to the INVITE, or time removes the last one.

The machines are written with python-statemachine so that they can be drawn
and checked, and they drive the spec: at import each class is compiled into a
transition table (``{(state, event): target}``) and every change the spec
makes goes through :meth:`Runtime.fire`, which refuses any transition that
is not in the table. Compiling keeps the per-packet cost to a dict lookup.

Rules: this file does not know about packets or bytes - the handlers decide
which event happens; this file only says which events are legal where. Each
event names the kernel function that causes it in ``EVENT_ORIGINS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from statemachine import State, StateMachine

if TYPE_CHECKING:
    from .trace import Trace


class ExpectationLifecycle(StateMachine):
    """Life of one expectation (nf_conntrack_expect.c)."""

    proposed = State("proposed", initial=True)
    inactive = State("inactive")
    active = State("active")
    matched = State("matched", final=True)
    expired = State("expired", final=True)
    unlinked = State("unlinked", final=True)

    insert_inactive = proposed.to(inactive)
    insert = proposed.to(active)
    activate = inactive.to(active) | active.to.itself()
    match = active.to(matched)
    match_permanent = active.to.itself()
    expire = inactive.to(expired) | active.to(expired)
    unlink = inactive.to(unlinked) | active.to(unlinked)


class RegistrarMachine(StateMachine):
    """A master's registration binding, as its signalling expectation shows it."""

    unregistered = State("unregistered", initial=True)
    pending = State("pending")
    registered = State("registered")

    # At most one signalling expectation per master (sip_exp_policy[] max_expected
    # = 1): a new REGISTER's expectation replaces or evicts the old one first.
    register = unregistered.to(pending)
    refresh = pending.to(registered) | registered.to.itself()
    deregister = pending.to(unregistered) | registered.to(unregistered)


class MediaMachine(StateMachine):
    """Whether a master's SDP left media expectations behind."""

    idle = State("idle", initial=True)
    expecting = State("expecting")

    expect = idle.to(expecting) | expecting.to.itself()
    drain = expecting.to(idle)


# Which kernel function causes each event (the rule catalogue cites the rules
# that fire them; this says where in the kernel the transition itself lives).
EVENT_ORIGINS: dict[str, dict[str, str]] = {
    "ExpectationLifecycle": {
        "insert_inactive": "nf_ct_expect_related() of a PERMANENT|INACTIVE expectation (process_register_request)",
        "insert": "nf_ct_expect_related() (set_expected_rtp_rtcp)",
        "activate": "refresh_signalling_expectation() clears NF_CT_EXPECT_INACTIVE",
        "match": "nf_ct_find_expectation(): a new connection matched; the expectation is unlinked",
        "match_permanent": "nf_ct_find_expectation(): a PERMANENT expectation stays after a match",
        "expire": "nf_ct_exp_is_expired() / the expectation timer",
        "unlink": "nf_ct_unlink_expect(): flush_expectations(), evict_oldest_expect(), replacement, master destroyed",
    },
    "RegistrarMachine": {
        "register": "process_register_request() inserted a signalling expectation",
        "refresh": "process_register_response() -> refresh_signalling_expectation()",
        "deregister": "the signalling expectation went away (flush_expectations(ct, false), expiry, eviction)",
    },
    "MediaMachine": {
        "expect": "set_expected_rtp_rtcp() inserted a media expectation",
        "drain": "the master's last media expectation went away (flush_expectations(ct, true), expiry, match)",
    },
}


class IllegalTransition(RuntimeError):
    """The spec tried a transition its machines do not allow: a spec bug."""


@dataclass(frozen=True, slots=True)
class CompiledMachine:
    name: str
    initial: str
    states: tuple[str, ...]
    finals: frozenset[str]
    events: tuple[str, ...]
    table: dict[tuple[str, str], str]


def compile_machine(cls: type[StateMachine]) -> CompiledMachine:
    """Flatten a python-statemachine class into its transition table."""
    table: dict[tuple[str, str], str] = {}
    for state in cls.states:
        for transition in state.transitions:
            for event in transition.events:
                key = (state.id, str(event))
                if key in table and table[key] != transition.target.id:
                    raise ValueError(f"{cls.__name__}: {key} is not deterministic")
                table[key] = transition.target.id
    initial = next(s.id for s in cls.states if s.initial)
    events = tuple(dict.fromkeys(e for (_, e) in table))
    return CompiledMachine(
        name=cls.__name__,
        initial=initial,
        states=tuple(s.id for s in cls.states),
        finals=frozenset(s.id for s in cls.states if s.final),
        events=events,
        table=table,
    )


EXPECTATION = compile_machine(ExpectationLifecycle)
REGISTRAR = compile_machine(RegistrarMachine)
MEDIA = compile_machine(MediaMachine)
MACHINES: dict[str, tuple[type[StateMachine], CompiledMachine]] = {
    "ExpectationLifecycle": (ExpectationLifecycle, EXPECTATION),
    "RegistrarMachine": (RegistrarMachine, REGISTRAR),
    "MediaMachine": (MediaMachine, MEDIA),
}


class Runtime:
    """The current state of one machine instance; every change is checked."""

    __slots__ = ("machine", "state")

    def __init__(self, machine: CompiledMachine) -> None:
        self.machine = machine
        self.state = machine.initial

    def can(self, event: str) -> bool:
        return (self.state, event) in self.machine.table

    def fire(self, event: str, trace: "Trace | None" = None) -> str:
        """Take the transition ``event`` from the current state; record it in
        ``trace`` (for coverage) when given."""
        try:
            target = self.machine.table[(self.state, event)]
        except KeyError:
            raise IllegalTransition(
                f"{self.machine.name}: no transition {event!r} from state {self.state!r}") from None
        if trace is not None:
            trace.transitions.append((self.machine.name, self.state, event))
        self.state = target
        return target

    def __repr__(self) -> str:
        return f"<{self.machine.name} {self.state}>"
