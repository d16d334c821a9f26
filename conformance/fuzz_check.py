"""The spec's verdict on a fuzz run: replay the observed sequence, compare.

The spec (SipHelper with the guest kernel's profile and its
nf_conntrack_expect_max) gets the same packets in the same order at the
times they were sent. Per message:

* verdict: delivered exactly when the spec accepts;
* bytes: a delivered message arrives unchanged (the lab has no NAT);
* expectations: every IPEXP_NEW the kernel reported is one the spec
  creates for that message (``unexpected`` otherwise), and every one the
  spec creates was reported (``missing`` otherwise). Compared on tuple,
  mask, class, flags and master - not on the timeout. One allowance, and
  only where it belongs: when the spec activates a registration in place
  (refresh_signalling_expectation()), a userspace helper can only delete
  and re-create it (ctnetlink cannot clear NF_CT_EXPECT_INACTIVE), so a
  NEW event for an expectation the spec then holds for that master is
  expected.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from sipct.conformance.fuzz import FuzzMessage
from sipct.conformance.fuzz_run import SERVER, SIP_PORT, UA, expectation_key
from sipct.spec import rules
from sipct.spec.expectation import IPPROTO_TCP
from sipct.spec.helper import Packet, SipHelper
from sipct.spec.params import ModuleParams
from sipct.spec.profiles import KernelProfile

__all__ = ["FuzzReport", "Mismatch", "check"]

EXAMPLES = 20  # mismatches kept in full per kind


@dataclass(frozen=True, slots=True)
class Mismatch:
    kind: str  # verdict | bytes | unexpected | missing
    index: int
    seed: str
    mutations: tuple[str, ...]
    route: str
    spec: str
    kernel: str
    rules: tuple[str, ...]
    payload: bytes

    def json(self) -> dict:
        return {"kind": self.kind, "index": self.index, "seed": self.seed, "mutations": list(self.mutations),
                "route": self.route, "spec": self.spec, "kernel": self.kernel, "rules": list(self.rules),
                "payload": self.payload[:600].decode("latin-1")}


@dataclass
class FuzzReport:
    messages: int = 0
    delivered: int = 0
    dropped: int = 0
    tcp: int = 0
    ipv6: int = 0
    kernel_new: int = 0
    spec_new: int = 0
    counts: Counter = field(default_factory=Counter)
    examples: list[Mismatch] = field(default_factory=list)
    drop_rules: Counter = field(default_factory=Counter)
    late: int = 0  # judged dropped at first, delivered after all (counted as delivered)

    @property
    def mismatches(self) -> int:
        return sum(self.counts.values())

    def json(self) -> dict:
        return {"messages": self.messages, "delivered": self.delivered, "late": self.late, "dropped": self.dropped, "tcp": self.tcp,
                "ipv6": self.ipv6, "kernel_new_expectations": self.kernel_new,
                "spec_new_expectations": self.spec_new, "mismatches": dict(self.counts),
                "drop_rules": dict(self.drop_rules.most_common()), "examples": [m.json() for m in self.examples]}


def _show(keys) -> str:
    """Observation keys (fuzz_run.expectation_key: the spec's row key, then the flags) in words."""
    def address(family: int, n: int) -> str:
        return "*" if n < 0 else str(ipaddress.IPv4Address(n) if family == 4 else ipaddress.IPv6Address(n))

    return "; ".join(f"{address(k[0], k[2])}:{k[3]} src={address(k[0], k[4])} class={k[6]} flags={k[12]} "
                     f"master={address(k[0], k[7])}:{k[10]}" for k in sorted(keys)) or "-"


def check(messages: Sequence[FuzzMessage], observations: Sequence[dict], params: ModuleParams,
          profile: KernelProfile, report: FuzzReport | None = None, spec: SipHelper | None = None
          ) -> tuple[FuzzReport, SipHelper]:
    """Compare ``observations`` (fuzz_run.observe) with the spec; ``report``
    and ``spec`` carry on from an earlier slice of the same run."""
    report = report if report is not None else FuzzReport()
    spec = spec if spec is not None else SipHelper(params, profile)
    by_index = {m.index: m for m in messages}
    for obs in observations:
        msg = by_index[obs["index"]]
        f, proto, port = obs["family"], obs["proto"], obs["ua_port"]
        ua, server = UA[f], SERVER[f]
        if obs["connect_t"] is not None:
            spec.tcp_connect(ua, port, server, SIP_PORT, obs["connect_t"])
        if obs["response"]:
            pkt = Packet(server, SIP_PORT, ua, port, proto, msg.payload)
        else:
            pkt = Packet(ua, port, server, SIP_PORT, proto, msg.payload)
        result = spec.packet(pkt, obs["t"], syn=False)
        predicted = Counter(tuple(expectation_key(ev.expectation)) for ev in result.events if ev.kind == "new")
        allowed = set(predicted)
        if any(fi.rule is rules.REG_RESPONSE_REFRESH for fi in result.firings):
            ct = spec.conntrack(pkt.tuple)
            if ct is not None:
                allowed |= {tuple(expectation_key(e)) for e in spec.expectations() if e.master == ct.original}
        kernel = Counter(tuple(k) for k in obs["new"])
        if obs["reset_t"] is not None:
            spec.tcp_reset(ua, port, server, SIP_PORT, obs["reset_t"])

        report.messages += 1
        report.delivered += obs["delivered"]
        report.late += bool(obs.get("late"))
        report.dropped += not obs["delivered"]
        report.tcp += proto == IPPROTO_TCP
        report.ipv6 += f == 6
        report.kernel_new += sum(kernel.values())
        report.spec_new += sum(predicted.values())
        if not result.accepted and result.drop_rule is not None:
            report.drop_rules[result.drop_rule.id] += 1
        where = (f"{'tcp' if proto == IPPROTO_TCP else 'udp'}/ipv{f} "
                 f"{'server:5060 -> ua:' + str(port) if obs['response'] else 'ua:' + str(port) + ' -> server:5060'}"
                 f" t={obs['t']:.3f}")
        found: list[tuple[str, str, str]] = []
        if obs["delivered"] != result.accepted:
            found.append(("verdict", "accept" if result.accepted else f"drop ({result.drop_rule.id})",
                          "delivered" if obs["delivered"] else "not delivered"))
        if obs["delivered"] and not obs["exact"]:
            found.append(("bytes", "unchanged", "changed"))
        unexpected = [k for k in kernel if k not in allowed]
        if unexpected:
            found.append(("unexpected", _show(predicted), _show(unexpected)))
        missing = [k for k in predicted if k not in kernel]
        if missing:
            found.append(("missing", _show(missing), _show(kernel)))
        for kind, s, k in found:
            report.counts[kind] += 1
            if sum(1 for m in report.examples if m.kind == kind) < EXAMPLES:
                report.examples.append(Mismatch(kind, msg.index, msg.seed, msg.mutations, where, s, k,
                                                tuple(result.rule_ids), msg.payload))
    return report, spec
