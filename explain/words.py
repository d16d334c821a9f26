"""What the helper did with each step, in plain words: accepted or dropped
(with the kernel's own log line), the expectations it created, refreshed and
removed (and for how long), and the rules that fired with the kernel
functions they model."""

from __future__ import annotations

from dataclasses import dataclass

from sipct.spec.dialog import Connect, DeleteConntrack, Dialog, Send, Wait
from sipct.spec.expectation import Expectation
from sipct.spec.predict import Prediction, StepPrediction
from sipct.spec.report import describe_step, why_not_delivered
from sipct.spec.rules import RULES, Rule

# nf_ct_helper_log() hands its text to nf_log_packet() with this prefix; a
# logger must be bound to the family (nf_log_syslog and the sysctl
# net.netfilter.nf_log.2/10) for it to reach the kernel log.
KERNEL_LOG = "nf_ct_sip: dropping packet: {} "


@dataclass(frozen=True, slots=True)
class Change:
    expectation: str  # as dialog files write it
    timeout: float  # seconds it has left after the step
    rule: Rule | None = None
    before: float | None = None  # refreshed: the seconds it had left before


@dataclass(frozen=True, slots=True)
class StepExplanation:
    index: int
    where: str  # "line 12", "frame 7"
    step: str
    verdict: str | None
    drop: Rule | None
    kernel_log: str | None
    happened: tuple[str, ...]  # what else happened: a new master, a related connection, time passing
    created: tuple[Change, ...]
    refreshed: tuple[Change, ...]
    removed: tuple[Change, ...]
    rules: tuple[tuple[Rule, str | None], ...]  # with each firing's detail
    table: tuple[str, ...]
    why: str | None = None  # not delivered without a helper drop: the router's firewall, NAT, the router itself

    def lines(self) -> list[str]:
        out = [f"{self.index}. {self.where}: {self.step}"]
        if self.verdict == "accept":
            out.append("   The helper accepted it.")
        elif self.verdict == "drop" and self.drop is None:
            out.append(f"   It does not reach its receiver: {self.why or 'not forwarded'}. The helper did not drop it.")
        elif self.verdict == "drop":
            out.append(f"   The helper DROPPED it: {self.drop.summary} ({self.drop.id}, {self.drop.function}).")
            out.append(f"   The kernel logs: \"{self.kernel_log.rstrip()}\"" if self.kernel_log else
                       "   The kernel logs nothing for this drop.")
        out += [f"   {line}" for line in self.happened]
        for label, changes in (("Created", self.created), ("Refreshed", self.refreshed), ("Removed", self.removed)):
            for c in changes:
                why = f" - {c.rule.id} ({c.rule.function})" if c.rule else ""
                if label == "Created":
                    out.append(f"   {label} expectation {c.expectation}, for {c.timeout:.0f} s{why}")
                elif label == "Refreshed":
                    out.append(f"   {label} expectation {c.expectation}: {c.timeout:.0f} s left "
                               f"(had {c.before:.0f} s){why}")
                else:
                    out.append(f"   {label} expectation {c.expectation}{why}")
        if self.rules:
            out.append("   Rules: " + "; ".join(f"{r.id} ({r.function})" + (f": {d}" if d else "")
                                                 for r, d in self.rules))
        if self.table or self.verdict is not None:
            out.append("   Expectations now: " + ("; ".join(self.table) if self.table else "none"))
        return out


def _identity(e: Expectation) -> tuple:
    return (e.tuple, e.klass, e.master)


def explain(prediction: Prediction, where: list[str] | None = None) -> list[StepExplanation]:
    """``where``: per step, how to point at it (default: its line in the dialog file)."""
    d = prediction.dialog
    before: dict[tuple, Expectation] = {}
    before_time = 0.0
    out = []
    for s in prediction.steps:
        after = {_identity(e): e for e in s.expectations}
        new = {_identity(ev.expectation): ev for ev in s.events if ev.kind == "new"}
        gone = [ev for ev in s.events if ev.kind == "destroy"]
        created = tuple(Change(d.symbolic(after[k]), after[k].remaining(s.time), RULES.get(_creator(s)))
                        for k in new if k in after)
        refreshed = tuple(Change(d.symbolic(e), e.remaining(s.time), _refresher(s), before[k].remaining(before_time))
                          for k, e in after.items()
                          if k in before and k not in new and (e.expires != before[k].expires
                                                               or e.flags != before[k].flags))
        removed = tuple(Change(d.symbolic(ev.expectation), 0.0, RULES.get(ev.rule)) for ev in gone
                        if _identity(ev.expectation) not in after or _identity(ev.expectation) in new)
        drop = next((p.drop_rule for p in s.packets if p.drop_rule), None)
        out.append(StepExplanation(
            s.index, where[s.index] if where else f"line {s.step.line}", describe_step(d, s.step, wire=prediction.wire),
            s.verdict, drop,
            KERNEL_LOG.format(drop.log) if drop is not None and drop.log else None, tuple(_happened(d, s)),
            created, refreshed, removed, tuple((f.rule, f.detail) for f in s.firings),
            tuple(f"{d.symbolic(e)} ({e.remaining(s.time):.0f} s)" for e in s.expectations),
            why_not_delivered(d, s)))
        before, before_time = after, s.time
    return out


def _creator(s: StepPrediction) -> str:
    """The rule that asked for the expectations (the table's insert is expect.insert)."""
    for f in s.firings:
        if f.rule.id in ("media.expect", "register.expect"):
            return f.rule.id
    return "expect.insert"


def _refresher(s: StepPrediction) -> Rule | None:
    return next((f.rule for f in s.firings if f.rule.id == "register-response.refresh"), None)


def _happened(d: Dialog, s: StepPrediction) -> list[str]:
    out = []
    step = s.step
    if isinstance(step, Wait):
        out.append(f"{step.seconds:g} s pass (now {s.time:g} s into the dialog).")
        out += [f"{f.rule.id} ({f.rule.function}): {f.rule.summary}" for f in s.timer_firings]
    elif isinstance(step, DeleteConntrack):
        out.append("The router's conntrack of this connection is deleted, and its expectations with it.")
    first = "The handshake" if isinstance(step, Connect) else "The packet"
    for p in s.packets:
        if p.related_to is not None:
            out.append(f"{first} starts a RELATED connection: it matched {d.symbolic(p.related_to)} (expect.match).")
        elif p.new_conntrack:
            out.append(f"{first} starts a new master: the helper is attached (its destination port is a SIP port)."
                       if p.helper_attached else
                       f"{first} starts a new connection the helper is not attached to (not to a SIP port).")
    if isinstance(step, Connect) and s.packets and not s.packets[0].helper_attached:
        out.append("Nothing the helper sees is sent on it.")
    if isinstance(step, Send) and not s.packets:
        out.append("Nothing is sent: the lab reset this TCP connection after a dropped segment.")
    return out
