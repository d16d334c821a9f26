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
from .walk import Connection, Walker
from .wire import Wire


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
    wire: Wire  # what carried the dialog's packets
    steps: tuple[StepPrediction, ...] = field(default_factory=tuple)

    @property
    def failures(self) -> list[tuple[int, str]]:
        return [(s.index, f) for s in self.steps for f in s.failures]


class Unpredictable(DialogError):
    """The kernel decides at random at this step (a NAT port it picks): no
    spec can say the bytes, so the dialog is refused, naming the step."""


def predict(dialog: Dialog, profile: KernelProfile = DEFAULT_PROFILE,
            params: ModuleParams | None = None, *, wire: Wire) -> Prediction:
    """What the kernel's helper does with ``dialog`` carried by ``wire``."""
    try:
        return _predict(dialog, profile, params, wire)
    except (NatClash, NatUnpredictable) as exc:
        index = getattr(exc, "step_index", None)
        step = dialog.steps[index] if index is not None else None
        raise Unpredictable(dialog.source, step.line if step is not None else None,
                            f"steps[{index}]: {exc}; the spec predicts only what the kernel decides "
                            f"deterministically (docs/nat.rst)") from None


def _predict(dialog: Dialog, profile: KernelProfile, params: ModuleParams | None, wire: Wire) -> Prediction:
    params = params or dialog.effective_params
    routing = LabRouting(dialog.hosts.values())
    nat = dialog.nat
    # Where packets go is worth predicting when a step can go elsewhere than to its
    # receiver: NAT, a via: (without NAT too: say to the router's own address).
    faces = bool(nat) or any(getattr(s, "via", None) is not None for s in dialog.steps)
    helper = SipHelper(params, profile, routing.same_interface, nat, routing.router_owns if faces else None,
                       dialog.forward)
    walker = Walker(dialog, wire, _Predictor(dialog, helper, faces))
    out: list[StepPrediction] = []
    for index, step in enumerate(dialog.steps):
        try:
            out.append(walker.step(index, step))
        except (NatClash, NatUnpredictable) as exc:
            exc.step_index = index  # type: ignore[attr-defined]
            raise
    return Prediction(dialog, profile, params, wire, tuple(out))


class _Predictor:
    """The spec's :class:`~sipct.spec.walk.StepVisitor`: each step through one
    SipHelper. A TCP connection's handle is its wire tuple (the client's side)."""

    def __init__(self, dialog: Dialog, helper: SipHelper, faces: bool) -> None:
        self.dialog, self.helper = dialog, helper
        self.hosts = dialog.hosts
        self.by_address = {a: name for name, a in dialog.hosts.items()}
        self.show_arrivals = faces or dialog.forward != "accept"

    def wait(self, index: int, step: Wait, now: float) -> StepPrediction:
        start = len(self.helper.table.journal)
        timer = Trace()
        self.helper.advance(now, timer)
        return self._prediction(index, step, now, start, timer=timer)

    def delete_conntrack(self, index: int, step: DeleteConntrack, now: float) -> StepPrediction:
        helper, hosts = self.helper, self.hosts
        start = len(helper.table.journal)
        timer = Trace()
        # ctnetlink_del_conntrack() finds the conntrack by either direction's tuple.
        ct = helper.conntrack(ConnTuple(hosts[step.src.host], hosts[step.dst.host], step.proto,
                                        step.src.port, step.dst.port))
        if ct is not None:
            # The machines' transitions count for coverage; the removal's
            # rule (master.timeout) does not describe a ctnetlink delete.
            deleted = Trace()
            helper.forget(ct.original, now, deleted)
            timer.transitions.extend(deleted.transitions)
        return self._prediction(index, step, now, start, timer=timer)

    def connect(self, index: int, step: Connect, now: float) -> tuple[StepPrediction, ConnTuple]:
        start = len(self.helper.table.journal)
        dst, dport = dialled(self.dialog, step, IPPROTO_TCP)
        src = self.hosts[step.src.host]
        result = self.helper.tcp_connect(src, step.src.port, dst, dport, now)
        return (self._prediction(index, step, now, start, results=[result]),
                ConnTuple(src, dst, IPPROTO_TCP, step.src.port, dport))

    def send(self, index: int, step: Send, now: float, segments: tuple[bytes, ...],
             connection: Connection[ConnTuple] | None) -> tuple[StepPrediction, bool]:
        helper = self.helper
        start = len(helper.table.journal)
        wire = self._wire(step, connection)
        results: list[PacketResult] = []
        arrivals: list[Arrival | None] = []
        for segment in segments:
            results.append(helper.packet(Packet(wire.src, wire.sport, wire.dst, wire.dport, step.proto, segment),
                                         now))
            arrivals.append(_arrival(wire, segment, results[-1], self.by_address))
            if not results[-1].accepted:
                break
        self._send_start = start
        prediction = self._prediction(index, step, now, start, results=results, arrivals=arrivals)
        return prediction, bool(results) and not results[-1].accepted

    def abort(self, index: int, step: Send, now: float, connection: Connection[ConnTuple] | None,
              outcome: StepPrediction) -> StepPrediction:
        # The RST moves the conntrack to CLOSE within the step; the step's
        # table and events are read after it.
        wire = self._wire(step, connection)
        self.helper.tcp_reset(wire.src, wire.sport, wire.dst, wire.dport, now)
        return self._prediction(index, step, now, self._send_start, results=list(outcome.packets),
                                arrivals=[a for a in outcome.arrivals])

    def silent(self, index: int, step: Send, now: float) -> StepPrediction:
        return self._prediction(index, step, now, len(self.helper.table.journal))

    def _wire(self, step: Send, connection: Connection[ConnTuple] | None) -> ConnTuple:
        """The tuple the sender's packet has on the wire: the connection's in
        the sender's direction (TCP), else to the receiver's face."""
        if connection is not None:
            client = connection.handle
            if connection.from_client(step):
                return client
            ct = self.helper.conntrack(client)
            return ct.reply if ct is not None and ct.reply is not None else client.reply()
        dst, dport = dialled(self.dialog, step, step.proto)
        return ConnTuple(self.hosts[step.src.host], dst, step.proto, step.src.port, dport)

    def _prediction(self, index: int, step: Step, now: float, journal_start: int, *,
                    results: list[PacketResult] = (), arrivals: list[Arrival | None] = (),  # type: ignore[assignment]
                    timer: Trace | None = None) -> StepPrediction:
        helper = self.helper
        prediction = StepPrediction(index, step, now, tuple(results), tuple(helper.expectations()),
                                    helper.table.ctnetlink_events(journal_start),
                                    timer_firings=tuple(timer.firings) if timer else (),
                                    timer_transitions=tuple(timer.transitions) if timer else (),
                                    arrivals=tuple(arrivals) if self.show_arrivals else ())
        if isinstance(step, Send) and step.expect is not None:
            prediction = _check(prediction, step.expect, self.dialog)
        return prediction


def dialled(dialog: Dialog, step: Send | Connect, proto: int) -> tuple[Address, int]:
    """Where a step's sender addresses its packet: the step's ``via:``, else
    the receiver's face across the router's NAT (its own address and port
    without NAT). The lab sends there too."""
    if isinstance(step, Send) and step.via is not None:
        return step.via
    hosts = dialog.hosts
    return dialog.nat.face(hosts[step.src.host], hosts[step.dst.host], step.dst.port, proto)


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
