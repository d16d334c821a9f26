"""Spec and kernel side by side, step by step.

Per step four things are compared: the verdict (was the packet delivered), the
bytes that arrived (the lab has no NAT, so they must be the bytes sent), the
expectation table after the step, and the expectation events of the step.
Remaining timeouts agree when they differ by at most ``1 s + drift``: ctnetlink
reports whole seconds rounded down, and ``drift`` is the wall-clock time the
run has spent beyond the dialog's own clock (packet round trips, dumps).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from sipct.harness.run import KernelRun, StepObservation
from sipct.spec.dialog import Dialog, Send
from sipct.spec.expectation import Expectation, expectation_key
from sipct.spec.predict import Prediction, StepPrediction
from sipct.spec.printable import printable
from sipct.spec.report import rewrites

TIMEOUT_TOLERANCE = 1.0


@dataclass(frozen=True, slots=True)
class Divergence:
    aspect: str  # verdict | payload | expectations | timeout | events
    spec: str
    kernel: str


@dataclass(frozen=True, slots=True)
class StepDiff:
    prediction: StepPrediction
    observation: StepObservation
    divergences: tuple[Divergence, ...]

    @property
    def agree(self) -> bool:
        return not self.divergences

    @property
    def index(self) -> int:
        return self.prediction.index


@dataclass(frozen=True)
class Comparison:
    dialog: Dialog
    kernel: str
    profile: str
    params: dict
    steps: tuple[StepDiff, ...] = field(default_factory=tuple)

    @property
    def agree(self) -> bool:
        return all(s.agree for s in self.steps)

    @property
    def divergent_rules(self) -> Counter[str]:
        """The spec rules that fired in divergent steps (a divergence points at them)."""
        counts: Counter[str] = Counter()
        for s in self.steps:
            if not s.agree:
                counts.update({f.rule.id for f in s.prediction.firings})
        return counts


def _row(e: Expectation) -> tuple:
    """The row (expectation_key) and what the comparison holds it to besides
    its timeout: the flags, the helper's name and the NAT part (exp->dir,
    saved address and port)."""
    nat = () if e.nat is None else (e.nat.dir, str(e.nat.addr), e.nat.port)
    return expectation_key(e), int(e.flags), e.helper, nat


def _compare_arrival(p: StepPrediction, o: StepObservation, elsewhere: bool = False):
    """Under NAT: the bytes the receiver read, and the ends it saw."""
    first = p.arrivals[0]
    want = (first.payload if first is not None else b"") if elsewhere else (p.received or b"")
    if o.data != want:
        yield Divergence("payload", rewrites(p.step.payload, want), rewrites(p.step.payload, o.data or b""))
    if first is not None and o.src is not None:
        spec = ((str(first.src), first.sport), (str(first.dst), first.dport))
        if (o.src, o.dst) != spec:
            yield Divergence("addresses", f"{_ep(*spec[0])} -> {_ep(*spec[1])}", f"{_ep(*o.src)} -> {_ep(*o.dst)}")


def _ep(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def compare(prediction: Prediction, run: KernelRun, kernel: str) -> Comparison:
    dialog = prediction.dialog
    steps = []
    spec_expired: set[tuple] = set()
    stalled: set[tuple] = set()  # masters with a dropped TCP segment being retransmitted
    for predicted, observed in zip(prediction.steps, run.steps):
        stalled |= _stalled_masters(dialog, predicted)
        steps.append(StepDiff(predicted, observed,
                              tuple(_compare_step(dialog, predicted, observed, spec_expired, stalled))))
        spec_expired |= {_row(ev.expectation) for ev in predicted.events if ev.rule == "expect.expire"}
    return Comparison(dialog, kernel, prediction.profile.name, prediction.params.as_mapping(), tuple(steps))


def _stalled_masters(dialog: Dialog, p: StepPrediction) -> set[frozenset]:
    """TCP masters whose segment the helper dropped in this step. TCP goes on
    retransmitting it and the helper processes every retransmission again, so
    the kernel repeats that message's changes (an INVITE's flush and
    re-creation of the same media, with fresh timeouts) at moments only the
    RTO timer decides: extra events and longer timeouts of that master's
    expectations are not divergences."""
    step = p.step
    if not isinstance(step, Send) or step.proto != 6 or all(pk.accepted for pk in p.packets):
        return set()
    hosts = dialog.hosts
    src, dst = (hosts[step.src.host], step.src.port), (hosts[step.dst.host], step.dst.port)
    # A master is named by its original tuple: under NAT the client dialled
    # the server's face, and the step may go either way.
    out = set()
    for (a, ap), (b, bp) in ((src, dst), (dst, src)):
        face = dialog.nat.face(a, b, bp, step.proto)
        out.add(frozenset({(str(a), ap), (str(face[0]), face[1])}))
    return out


def _of_stalled(e: Expectation, stalled: set[frozenset]) -> bool:
    m = e.master
    return frozenset({(str(m.src), m.sport), (str(m.dst), m.dport)}) in stalled


def _compare_step(dialog: Dialog, p: StepPrediction, o: StepObservation, spec_expired: set[tuple],
                  stalled: set[frozenset] = frozenset()):
    step = p.step
    if isinstance(step, Send):
        if p.delivered != o.delivered:
            rule = next((pk.drop_rule.id for pk in p.packets if pk.drop_rule), None)
            yield Divergence("verdict", p.verdict + (f" ({rule})" if rule else ""),
                             "delivered" if o.delivered else "not delivered")
        elif o.delivered and p.arrivals:
            yield from _compare_arrival(p, o)
        elif p.arrivals and p.arrivals[0] is not None and p.arrivals[0].host not in (None, step.dst.host):
            # The spec sends it to another host (NAT: an expectation's saved address).
            first = p.arrivals[0]
            if o.elsewhere != first.host:
                yield Divergence("addresses", f"arrives at {first.host} ({_ep(str(first.dst), first.dport)})",
                                 f"arrives at {o.elsewhere}" if o.elsewhere else "arrives at no host of the dialog")
            else:
                yield from _compare_arrival(p, o, elsewhere=True)
        elif o.delivered and o.data != step.payload:
            yield Divergence("payload", f"{len(step.payload)} bytes as sent",
                             f"{len(o.data or b'')} bytes, altered")

    if o.late:
        yield Divergence("timing", "-", f"{o.late} datagram(s) judged dropped arrived later: the drop timeout "
                                        f"is too short for this machine's load (the verdict above is unreliable)")
    spec_table = {_row(e): e for e in p.expectations}
    kernel_table = {_row(e): e for e in o.expectations}
    missing = [spec_table[k] for k in spec_table if k not in kernel_table]
    extra = [kernel_table[k] for k in kernel_table if k not in spec_table]
    if missing or extra:
        yield Divergence("expectations",
                         "; ".join(dialog.symbolic(e) for e in missing) or "-",
                         "; ".join(dialog.symbolic(e) for e in extra) or "-")
    drift = max(0.0, o.real_elapsed - o.time)
    for key in spec_table.keys() & kernel_table.keys():
        spec_left = spec_table[key].remaining(p.time)
        kernel_left = kernel_table[key].remaining(o.time)
        if _of_stalled(spec_table[key], stalled) and kernel_left >= spec_left:
            continue
        if abs(spec_left - kernel_left) > TIMEOUT_TOLERANCE + drift:
            yield Divergence("timeout", f"{dialog.symbolic(spec_table[key])}: {spec_left:.1f}s",
                             f"{kernel_left:.0f}s")

    retransmitted = {_row(ev.expectation) for ev in o.events if _of_stalled(ev.expectation, stalled)}
    spec_new = Counter(_row(ev.expectation) for ev in p.events if ev.kind == "new")
    kernel_new = Counter(_row(ev.expectation) for ev in o.events if ev.kind == "new")
    for key in retransmitted:
        kernel_new[key] = min(kernel_new[key], spec_new[key])
    if spec_new != kernel_new:
        yield Divergence("events", f"new: {_count(dialog, spec_new - kernel_new, p, o)}",
                         f"new: {_count(dialog, kernel_new - spec_new, p, o)}")
    spec_gone = Counter(_row(ev.expectation) for ev in p.events if ev.kind == "destroy")
    kernel_gone = Counter(_row(ev.expectation) for ev in o.events if ev.kind == "destroy")
    for key in retransmitted:
        kernel_gone[key] = min(kernel_gone[key], spec_gone[key])
    # Hardened kernels unlink expired expectations lazily: their destroy event
    # may come any time after the spec's expiry.
    unexplained = Counter({k: n for k, n in (kernel_gone - spec_gone).items() if k not in spec_expired})
    not_seen = Counter({k: n for k, n in (spec_gone - kernel_gone).items()
                        if not any(ev.rule == "expect.expire" and _row(ev.expectation) == k for ev in p.events)})
    if unexplained or not_seen:
        yield Divergence("events", f"destroy: {_count(dialog, not_seen, p, o)}",
                         f"destroy: {_count(dialog, unexplained, p, o)}")


def _count(dialog: Dialog, keys: Counter, p: StepPrediction, o: StepObservation) -> str:
    if not keys:
        return "-"
    names = {}
    for ev in (*p.events, *o.events):
        names[_row(ev.expectation)] = dialog.symbolic(ev.expectation)
    return "; ".join(f"{names.get(k, k)}" + (f" x{n}" if n > 1 else "") for k, n in keys.items())
