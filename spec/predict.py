"""Run a dialog through the spec: what the kernel helper should do, step by step."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .dialog import (Connect, DeleteConntrack, Dialog, DialogError, ExpectedExpectation, Send, Step, StepExpect, Wait,
                     expectation_key)
from .expectation import IPPROTO_TCP, Address, ConnTuple, Expectation
from .natmap import NatClash, NatTopology
from .natsip import NatUnpredictable
from .helper import Packet, PacketResult, SipHelper
from .params import ModuleParams
from .profiles import DEFAULT_PROFILE, KernelProfile
from .table import TableEvent
from .topology import LabRouting
from .trace import Firing, Trace


@dataclass(frozen=True, slots=True)
class Arrival:
    """What the receiver of one datagram or segment gets: the addresses as
    it sees them and the payload after the router's rewrites. ``host`` is
    the dialog host it reaches (None: the router itself, or nobody)."""

    host: str | None
    src: Address
    sport: int
    dst: Address
    dport: int
    payload: bytes
    seq_shift: int = 0  # TCP: what the router added to the segment's sequence number


@dataclass(frozen=True, slots=True)
class StepPrediction:
    index: int
    step: Step
    time: float
    packets: tuple[PacketResult, ...]  # one per datagram / TCP segment (none for wait)
    expectations: tuple[Expectation, ...]  # the table after the step
    events: tuple[TableEvent, ...]
    failures: tuple[str, ...] = ()  # the step's own `expect:` assertions that do not hold
    timer_firings: tuple[Firing, ...] = ()  # what time alone did (a wait step)
    timer_transitions: tuple[tuple[str, str, str], ...] = ()
    arrivals: tuple[Arrival | None, ...] = ()  # per packet: where it went (None: dropped by the helper)

    @property
    def delivered(self) -> bool | None:
        """Every packet of the step accepted and forwarded to the step's receiver."""
        if not isinstance(self.step, Send):
            return None
        if not self.packets or not all(p.accepted for p in self.packets):
            return False
        if self.arrivals:
            return all(a is not None and a.host == self.step.dst.host for a in self.arrivals)
        return True

    @property
    def received(self) -> bytes | None:
        """The bytes the receiver reads (None when nothing arrives)."""
        if not self.delivered:
            return None
        if self.arrivals:
            return b"".join(a.payload for a in self.arrivals if a is not None)
        assert isinstance(self.step, Send)
        return self.step.payload

    @property
    def verdict(self) -> str | None:
        d = self.delivered
        return None if d is None else ("accept" if d else "drop")

    @property
    def firings(self) -> tuple[Firing, ...]:
        return self.timer_firings + tuple(f for p in self.packets for f in p.firings)

    @property
    def transitions(self) -> tuple[tuple[str, str, str], ...]:
        return self.timer_transitions + tuple(t for p in self.packets for t in p.transitions)


@dataclass(frozen=True, slots=True)
class Prediction:
    dialog: Dialog
    profile: KernelProfile
    params: ModuleParams
    steps: tuple[StepPrediction, ...] = field(default_factory=tuple)

    @property
    def failures(self) -> list[tuple[int, str]]:
        return [(s.index, f) for s in self.steps for f in s.failures]


class Unpredictable(DialogError):
    """The kernel decides at random at this step (a NAT port it picks): no
    spec can say the bytes, so the dialog is refused, naming the step."""


def predict(dialog: Dialog, profile: KernelProfile = DEFAULT_PROFILE,
            params: ModuleParams | None = None) -> Prediction:
    try:
        return _predict(dialog, profile, params)
    except (NatClash, NatUnpredictable) as exc:
        index = getattr(exc, "step_index", None)
        step = dialog.steps[index] if index is not None else None
        raise Unpredictable(dialog.source, step.line if step is not None else None,
                            f"steps[{index}]: {exc}; the spec predicts only what the kernel decides "
                            f"deterministically (docs/nat.rst)") from None


def _predict(dialog: Dialog, profile: KernelProfile, params: ModuleParams | None) -> Prediction:
    params = params or dialog.effective_params
    routing = LabRouting(dialog.hosts.values())
    nat = dialog.nat
    # Where packets go is worth predicting when a step can go elsewhere than to its
    # receiver: NAT, a via: (without NAT too: say to the router's own address).
    faces = bool(nat) or any(getattr(s, "via", None) is not None for s in dialog.steps)
    helper = SipHelper(params, profile, routing.same_interface, nat, routing.router_owns if faces else None,
                       dialog.forward)
    hosts = dialog.hosts
    by_address = {a: name for name, a in hosts.items()}
    # The wire tuple of each TCP connection (the client's side), by its dialog endpoints.
    tcp: dict[tuple, ConnTuple] = {}
    now = 0.0
    out: list[StepPrediction] = []
    # TCP connections the lab reset after the helper dropped one of their
    # segments (see harness/drivers.py): nothing more is sent on them.
    reset: set[frozenset] = set()
    for index, step in enumerate(dialog.steps):
        try:
            out.append(_step(dialog, index, step, helper, hosts, faces, tcp, reset, by_address, now))
        except (NatClash, NatUnpredictable) as exc:
            exc.step_index = index  # type: ignore[attr-defined]
            raise
        now = out[-1].time
    return Prediction(dialog, profile, params, tuple(out))


def _step(dialog: Dialog, index: int, step: Step, helper: SipHelper, hosts: dict, faces: bool, tcp: dict,
          reset: set, by_address: dict, now: float) -> StepPrediction:
    journal_start = len(helper.table.journal)
    results: list[PacketResult] = []
    arrivals: list[Arrival | None] = []
    timer = Trace()
    if isinstance(step, Wait):
        now += step.seconds
        helper.advance(now, timer)
    elif isinstance(step, Connect):
        dst, dport = dialled(dialog, step, IPPROTO_TCP)
        results.append(helper.tcp_connect(hosts[step.src.host], step.src.port, dst, dport, now))
        wire = ConnTuple(hosts[step.src.host], dst, IPPROTO_TCP, step.src.port, dport)
        tcp[(step.src, step.dst)] = wire
        tcp[(step.dst, step.src)] = wire
    elif isinstance(step, DeleteConntrack):
        # ctnetlink_del_conntrack() finds the conntrack by either direction's tuple.
        ct = helper.conntrack(ConnTuple(hosts[step.src.host], hosts[step.dst.host], step.proto,
                                        step.src.port, step.dst.port))
        if ct is not None:
            # The machines' transitions count for coverage; the removal's
            # rule (master.timeout) does not describe a ctnetlink delete.
            deleted = Trace()
            helper.forget(ct.original, now, deleted)
            timer.transitions.extend(deleted.transitions)
    elif step.proto == IPPROTO_TCP and frozenset((step.src, step.dst)) in reset:
        pass  # the connection is gone: nothing is sent, nothing arrives
    else:
        wire = _wire(dialog, step, tcp, helper)
        for segment in step.on_wire(dialog.family):
            results.append(helper.packet(Packet(wire.src, wire.sport, wire.dst, wire.dport, step.proto, segment),
                                         now))
            arrivals.append(_arrival(wire, segment, results[-1], by_address))
            if not results[-1].accepted:
                break
        if step.proto == IPPROTO_TCP and not results[-1].accepted:
            # A dropped TCP segment would be retransmitted (and processed)
            # again and again; the lab resets the connection instead.
            reset.add(frozenset((step.src, step.dst)))
            helper.tcp_reset(wire.src, wire.sport, wire.dst, wire.dport, now)
    table = tuple(helper.expectations())
    prediction = StepPrediction(index, step, now, tuple(results), table,
                                helper.table.ctnetlink_events(journal_start),
                                timer_firings=tuple(timer.firings), timer_transitions=tuple(timer.transitions),
                                arrivals=tuple(arrivals) if faces or dialog.forward != "accept" else ())
    if isinstance(step, Send) and step.expect is not None:
        prediction = _check(prediction, step.expect, dialog)
    return prediction


def dialled(dialog: Dialog, step: Send | Connect, proto: int) -> tuple[Address, int]:
    """Where a step's sender addresses its packet: the step's ``via:``, else
    the receiver's face across the router's NAT (its own address and port
    without NAT). The lab sends there too."""
    if isinstance(step, Send) and step.via is not None:
        return step.via
    hosts = dialog.hosts
    return dialog.nat.face(hosts[step.src.host], hosts[step.dst.host], step.dst.port, proto)


def _wire(dialog: Dialog, step: Send, tcp: dict, helper: SipHelper) -> ConnTuple:
    """The tuple the sender's packet has on the wire: to the receiver's face
    (UDP), or the connection's tuple in the sender's direction (TCP)."""
    src = dialog.hosts[step.src.host]
    if step.proto == IPPROTO_TCP and (step.src, step.dst) in tcp:
        client = tcp[(step.src, step.dst)]
        if client.src == src and client.sport == step.src.port:
            return client
        ct = helper.conntrack(client)
        return ct.reply if ct is not None and ct.reply is not None else client.reply()
    dst, dport = dialled(dialog, step, step.proto)
    return ConnTuple(src, dst, step.proto, step.src.port, dport)


def _arrival(wire: ConnTuple, segment: bytes, result: PacketResult, by_address: dict) -> Arrival | None:
    if not result.accepted:
        return None
    out = result.out_tuple or wire
    payload = result.out_payload if result.out_payload is not None else segment
    host = None if result.local or result.filtered else by_address.get(out.dst)
    return Arrival(host, out.src, out.sport, out.dst, out.dport, payload, result.seq_shift)


def _check(prediction: StepPrediction, expect: StepExpect, dialog: Dialog) -> StepPrediction:
    failures: list[str] = []
    if expect.verdict is not None and expect.verdict != prediction.verdict:
        failures.append(f"verdict {prediction.verdict}, the dialog expects {expect.verdict}")
    if expect.expectations is not None:
        with_nat = any(e.nat is not None for e in expect.expectations)
        want = sorted((e.resolve(dialog.hosts, with_nat) for e in expect.expectations), key=repr)
        have = sorted((expectation_key(e, with_nat) for e in prediction.expectations), key=repr)
        if want != have:
            failures.append("expectations differ: the dialog expects ["
                            + "; ".join(str(e) for e in expect.expectations) + "], the spec has ["
                            + "; ".join(dialog.symbolic(e) for e in prediction.expectations) + "]")
    fired = {f.rule.id for f in prediction.firings}
    for rule_id in expect.rules:
        if rule_id not in fired:
            failures.append(f"rule {rule_id} did not fire")
    return dataclasses.replace(prediction, failures=tuple(failures))


def _key(e: ExpectedExpectation, dialog: Dialog) -> tuple:
    return e.resolve(dialog.hosts)
