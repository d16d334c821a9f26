"""The spec's verdict on a fuzz run: replay the observed sequence, compare.

The spec (SipHelper with the guest kernel's profile and its
nf_conntrack_expect_max) gets the same packets in the same order at the
times they were sent. Per message:

* verdict: delivered exactly when the spec accepts;
* bytes: a delivered message arrives unchanged - or, through the
  masquerade (fuzz_run's NAT routes), as nf_nat_sip rewrites it, from the
  address and port NAT gives its sender and at the port the spec sends it
  to (``forced_dport``); a reply the spec sends to a port no receiver
  listens on cannot be seen and is counted (``unobservable``), as are
  datagrams an earlier message left behind (``stale``: a late delivery
  that cannot be told from a drop is a mismatch);
* expectations: every IPEXP_NEW the kernel reported is one the spec
  creates for that message (``unexpected`` otherwise), and every one the
  spec creates was reported (``missing`` otherwise). Compared on tuple,
  mask, class, flags, master and NAT part - not on the timeout. One allowance, and
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
from sipct.conformance.fuzz_run import NAT_PORTS, SERVER, SIP_PORT, UA, expectation_key, fuzz_nat, nat_face
from sipct.spec import rules
from sipct.spec.expectation import IPPROTO_TCP, ExpectClass
from sipct.spec.helper import Packet, SipHelper
from sipct.spec.params import ModuleParams
from sipct.spec.profiles import KernelProfile
from sipct.spec.topology import LabRouting

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
    nat: int = 0  # messages through the masquerade (warm-ups not counted)
    rewritten: int = 0  # of those, delivered with bytes nf_nat_sip changed
    warm_ups: int = 0
    unobservable: int = 0  # replies the spec sends to a port nobody listens on
    stale: int = 0
    drawn_ports: int = 0  # REGISTER NAT ports nf_nat_exp_find_port() drew at random (-EBUSY)
    short_lived: int = 0  # expectations of a dropped first packet a userspace helper does not create

    @property
    def mismatches(self) -> int:
        return sum(self.counts.values())

    def json(self) -> dict:
        return {"messages": self.messages, "delivered": self.delivered, "late": self.late, "dropped": self.dropped, "tcp": self.tcp,
                "ipv6": self.ipv6, "nat": self.nat, "rewritten": self.rewritten, "warm_ups": self.warm_ups,
                "unobservable": self.unobservable, "stale": self.stale, "drawn_ports": self.drawn_ports, "short_lived": self.short_lived, "kernel_new_expectations": self.kernel_new,
                "spec_new_expectations": self.spec_new, "mismatches": dict(self.counts),
                "drop_rules": dict(self.drop_rules.most_common()), "examples": [m.json() for m in self.examples]}


def _show(keys) -> str:
    """Observation keys (fuzz_run.expectation_key: the spec's row key, then the flags) in words."""
    def address(family: int, n: int) -> str:
        return "*" if n < 0 else str(ipaddress.IPv4Address(n) if family == 4 else ipaddress.IPv6Address(n))

    def nat(k) -> str:
        return "" if k[13] < 0 else f" nat dir={k[13]} {address(k[0], k[14])}:{k[15]}"

    return "; ".join(f"{address(k[0], k[2])}:{k[3]} src={address(k[0], k[4])} class={k[6]} flags={k[12]} "
                     f"master={address(k[0], k[7])}:{k[10]}{nat(k)}" for k in sorted(keys)) or "-"


def check(messages: Sequence[FuzzMessage], observations: Sequence[dict], params: ModuleParams,
          profile: KernelProfile, report: FuzzReport | None = None, spec: SipHelper | None = None
          ) -> tuple[FuzzReport, SipHelper]:
    """Compare ``observations`` (fuzz_run.observe) with the spec; ``report``
    and ``spec`` carry on from an earlier slice of the same run."""
    report = report if report is not None else FuzzReport()
    late: dict[tuple, list[_Awaited]] = {}  # NAT messages not seen yet, by receiver (family, response)
    if spec is None:
        routing = LabRouting([*UA.values(), *SERVER.values()])
        spec = SipHelper(params, profile, routing.same_interface, fuzz_nat(), routing.router_owns)
    by_index = {m.index: m for m in messages}
    for obs in observations:
        msg = by_index[obs["index"]]
        payload = msg.payload if obs.get("payload") is None else obs["payload"].encode("latin-1")
        f, proto, port = obs["family"], obs["proto"], obs["ua_port"]
        ua, server = UA[f], SERVER[f]
        if obs["connect_t"] is not None:
            spec.tcp_connect(ua, port, server, SIP_PORT, obs["connect_t"])
        if obs["response"]:
            to = nat_face(f, port) if obs.get("nat") else (ua, port)
            pkt = Packet(server, SIP_PORT, to[0], to[1], proto, payload)
        else:
            pkt = Packet(ua, port, server, SIP_PORT, proto, payload)
        kernel = Counter(tuple(k) for k in obs["new"])
        spec.nat_port_choice = _drawn_by_kernel(kernel, report)
        result = spec.packet(pkt, obs["t"], syn=False)
        predicted = Counter(tuple(expectation_key(ev.expectation)) for ev in result.events if ev.kind == "new")
        allowed = set(predicted)
        if any(fi.rule is rules.REG_RESPONSE_REFRESH for fi in result.firings):
            ct = spec.conntrack(pkt.tuple)
            if ct is not None:
                allowed |= {tuple(expectation_key(e)) for e in spec.expectations() if e.master == ct.original}
        if obs["reset_t"] is not None:
            spec.tcp_reset(ua, port, server, SIP_PORT, obs["reset_t"])

        if obs.get("payload") is not None:
            report.warm_ups += 1  # checked as any datagram, counted apart
        else:
            report.messages += 1
            report.nat += bool(obs.get("nat"))
            report.delivered += obs["delivered"]
            report.late += bool(obs.get("late"))
            report.dropped += not obs["delivered"]
            report.tcp += proto == IPPROTO_TCP
            report.ipv6 += f == 6
        report.kernel_new += sum(kernel.values())
        report.spec_new += sum(predicted.values())
        if not result.accepted and result.drop_rule is not None:
            report.drop_rules[result.drop_rule.id] += 1
        where = (f"{'nat ' if obs.get('nat') else ''}{'warm-up ' if obs.get('payload') is not None else ''}"
                 f"{'tcp' if proto == IPPROTO_TCP else 'udp'}/ipv{f} "
                 f"{'server:5060 -> ua:' + str(port) if obs['response'] else 'ua:' + str(port) + ' -> server:5060'}"
                 f" t={obs['t']:.3f}")
        found: list[tuple[str, str, str]] = []
        if obs.get("nat"):
            found += _nat_delivery(obs, result, payload, report, late,
                                   _Awaited(msg, where, tuple(result.rule_ids), payload, obs.get("payload") is None))
        else:
            if obs["delivered"] != result.accepted:
                found.append(("verdict", _verdict(result), "delivered" if obs["delivered"] else "not delivered"))
            if obs["delivered"] and not obs["exact"]:
                found.append(("bytes", "unchanged", "changed"))
        unexpected = [k for k in kernel if k not in allowed]
        if unexpected:
            found.append(("unexpected", _show(predicted), _show(unexpected)))
        missing = [k for k in predicted if k not in kernel]
        if missing and not result.accepted and result.new_conntrack:
            # The packet that created the master is dropped: its expectations die with the
            # unconfirmed conntrack, and a userspace helper does not create them at all
            # (reference.core.plan(); the registry's reference-drops-a-first-packet-without-expecting).
            report.short_lived += len(missing)
            missing = []
        if missing:
            found.append(("missing", _show(missing), _show(kernel)))
        for kind, s, k in found:
            report.counts[kind] += 1
            if sum(1 for m in report.examples if m.kind == kind) < EXAMPLES:
                report.examples.append(Mismatch(kind, msg.index, msg.seed, msg.mutations, where, s, k,
                                                tuple(result.rule_ids), payload))
    for waiting in late.values():  # the end of the slice: what never arrived was not delivered
        for pending in waiting:
            _record(report, pending, "verdict", "accept", "not delivered")
    return report, spec


@dataclass
class _Awaited:
    """A NAT message the spec forwards whose datagram had not arrived when its
    wait ended: a drop, or a slow delivery that a later wait will see."""

    msg: FuzzMessage
    where: str
    rules: tuple[str, ...]
    payload: bytes
    counted: bool = True  # a message of the run, not a warm-up (FuzzReport's counters)
    expected: bytes = b""


def _record(report: FuzzReport, m: _Awaited, kind: str, spec: str, kernel: str) -> None:
    report.counts[kind] += 1
    if sum(1 for x in report.examples if x.kind == kind) < EXAMPLES:
        report.examples.append(Mismatch(kind, m.msg.index, m.msg.seed, m.msg.mutations, m.where, spec, kernel,
                                        m.rules, m.payload))


def _arrived_late(data: bytes, waiting: list[_Awaited], report: FuzzReport) -> bool:
    """``data`` is the datagram of an earlier message still waiting: delivered after all."""
    for pending in waiting:
        if pending.expected == data:
            waiting.remove(pending)
            if pending.counted:
                report.late += 1
                report.delivered += 1
                report.dropped -= 1
            return True
    return False


def _drawn_by_kernel(kernel: Counter, report: FuzzReport):
    """nf_nat_exp_find_port()'s random draws, as the helper made them: the
    ports of the signalling expectations it created at that address
    (SipHelper.nat_port_choice); none left, no more draws."""
    def choice(refused, attempt: int) -> int | None:
        ports = sorted(k[3] for k in kernel if k[6] == int(ExpectClass.SIGNALLING) and k[2] == int(refused.dst)
                       and k[3] != refused.dport)
        if attempt > len(ports):
            return None
        report.drawn_ports += 1
        return ports[attempt - 1]

    return choice


def _verdict(result) -> str:
    return "accept" if result.accepted else f"drop ({result.drop_rule.id if result.drop_rule else 'not forwarded'})"


def _nat_delivery(obs: dict, result, payload: bytes, report: FuzzReport, late: dict[tuple, list[_Awaited]],
                  this: _Awaited) -> list[tuple[str, str, str]]:
    """A masqueraded master's datagram: where and what the spec says arrives,
    against what did (fuzz_run._send_nat). The receiver took the first
    datagram that came: one of an earlier message that was slow (under TCG
    the softirq that carries a reinjected packet can lag) is matched by its
    bytes to that message, which is then delivered ``late``, and this one's
    own datagram is waited for in the same way."""
    out_tuple = result.out_tuple
    forwarded = result.accepted and not result.local and not result.filtered
    expected = result.out_payload if result.out_payload is not None else payload
    waiting = late.setdefault((obs["family"], obs["response"]), [])
    found = []
    for stale in obs.get("stale_data", ()):
        if not _arrived_late(stale.encode("latin-1"), waiting, report):
            report.stale += 1
            found.append(("stale", "-", f"a datagram no earlier message explains: {_show_bytes(stale.encode('latin-1'))}"))
    if obs.get("stale") and "stale_data" not in obs:  # an observation of a run before the bytes were kept
        report.stale += obs["stale"]
        found.append(("stale", "-", f"{obs['stale']} datagram(s) of an earlier message arrived late"))
    rport = out_tuple.dport if out_tuple is not None else obs["ua_port"] if obs["response"] else SIP_PORT
    if forwarded and obs["response"] and rport not in NAT_PORTS:
        report.unobservable += 1  # the UA listens on NAT_PORTS only
        if obs["delivered"]:
            found.append(("verdict", f"to port {rport}", "delivered at a listening port"))
        return found
    data = None if not obs["delivered"] else \
        payload if obs.get("received") is None else obs["received"].encode("latin-1")
    if data is not None and data != expected and _arrived_late(data, waiting, report):
        data = None  # what came was an earlier message's: this one's may come later
        if this.counted:
            report.delivered -= 1
            report.dropped += 1
    if forwarded and data is None:
        this.expected = expected
        waiting.append(this)
        return found
    if (data is not None) != forwarded:
        found.append(("verdict", _verdict(result), "delivered" if data is not None else "not delivered"))
        return found
    if data is None:
        return found
    report.rewritten += data != payload
    if data != expected:
        found.append(("bytes", _show_bytes(expected), _show_bytes(data)))
    if out_tuple is not None:
        src, sport, seen_port = obs["seen"]
        if (src, sport, seen_port) != (str(out_tuple.src), out_tuple.sport, out_tuple.dport):
            found.append(("address", f"from {out_tuple.src}:{out_tuple.sport} at port {out_tuple.dport}",
                          f"from {src}:{sport} at port {seen_port}"))
    return found


def _show_bytes(data: bytes) -> str:
    return repr(data[:300])
