"""A kernel in miniature for testing the reference helper's core without sockets.

`FakeKernel` plays what the kernel does around a userspace helper: conntracks
(created by a packet, matched against expectations, confirmed when the
verdict lets the first packet through, freed when it drops it), the
expectation table (ctnetlink create/delete/timeout with the kernel's
errors, NFQA_EXP attached by the verdict, expiry, events) and the queue
(NFQNL_MSG_PACKET with NFQA_CT; NF_REPEAT queues the packet once more).
It follows nf_conntrack_core.c, nf_conntrack_expect.c, nf_conntrack_netlink.c
and nfnetlink_queue.c for the paths the SIP helper uses, nothing more.
"""

from __future__ import annotations

import errno
import itertools
import socket
from dataclasses import dataclass, field

from pyroute2.netlink.exceptions import NetlinkError

from sipct.netlink.ctexp import ExpectMask, ExpectTuple as KTuple, KernelExpectation, MasterTuple
from sipct.reference.core import CTNETLINK, Decision, ExpectOp, HelperCore
from sipct.netlink.conntrack import (IP_CT_ESTABLISHED, IP_CT_IS_REPLY, IP_CT_NEW, IPS_CONFIRMED,
                                               IPS_EXPECTED, IPS_SEEN_REPLY, KernelConntrack)
from sipct.netlink.nfqueue import ETH_P_IP, ETH_P_IPV6, NF_ACCEPT, NF_DROP, NF_REPEAT, QueuedPacket
from sipct.reference.packet import TCP_ACK, TCP_RST, TCP_SYN, build_packet
from sipct.spec.dialog import Connect, DeleteConntrack, Dialog, Send, Wait
from sipct.spec.helper import (TCP_TIMEOUT_CLOSE, TCP_TIMEOUT_ESTABLISHED, UDP_TIMEOUT_REPLIED,
                               UDP_TIMEOUT_UNREPLIED)
from sipct.spec.expectation import (IPPROTO_TCP, SIP_EXPECT_POLICY, ConnTuple, ExpectClass, Expectation,
                                    ExpectFlag, ExpectTuple, expectation_key)


@dataclass
class FakeConntrack:
    id: int
    original: ConnTuple
    status: int = 0
    helper: str | None = None
    helper_info: bytes = bytes(12)
    timeout_at: float = 0.0
    master: ConnTuple | None = None
    first_seen: float = 0.0

    def facts(self) -> KernelConntrack:
        return KernelConntrack(socket.AF_INET if self.original.family == 4 else socket.AF_INET6,
                               self.original, self.original.reply(), self.id, self.status, 0, helper=self.helper,
                               helper_info=self.helper_info if self.helper else None, master=self.master)


@dataclass
class FakeExpectation:
    value: Expectation  # tuple, klass, flags, master, expires
    assign_helper: str | None
    seq: int

    def kernel(self, now: float) -> KernelExpectation:
        op = ExpectOp("create", self.value, CTNETLINK, "-")
        k = op.kernel("sip")
        return KernelExpectation(k.family, k.proto, k.master, k.tuple, k.mask, max(0, int(self.value.expires - now)),
                                 k.flags, k.klass, "sip", self.seq)


@dataclass
class StepOutcome:
    delivered: bool | None  # None for a wait step
    decisions: list[Decision] = field(default_factory=list)
    table: list[Expectation] = field(default_factory=list)  # the kernel's after the step
    shadow: list[Expectation] = field(default_factory=list)  # the helper's spec after the step


class FakeKernel:
    def __init__(self, core: HelperCore, ports: tuple[int, ...] = (5060,), helper: str = "sip") -> None:
        self.core = core
        self.ports = ports
        self.helper = helper
        self.now = 0.0
        self.conntracks: dict[ConnTuple, tuple[FakeConntrack, bool]] = {}
        self.expectations: list[FakeExpectation] = []
        self.events: list[KernelExpectation] = []  # destroy events not yet delivered
        self._ids = itertools.count(1000)
        # nf_ct_get_id() hashes the nf_conn's address and original tuple; the
        # slab gives a freed conntrack's address to the next one, so the next
        # conntrack on a freed one's tuple gets its id again (False: never).
        self.recycle_ids = True
        self._freed_ids: dict[ConnTuple, int] = {}
        self._packet_ids = itertools.count(1)
        self._seq = itertools.count(1)
        self.refusals: list[tuple[ExpectOp, int]] = []
        self.passes = 0
        self.reset: set[frozenset] = set()  # TCP connections (endpoint pairs) the lab aborted

    # -- the table ---------------------------------------------------------------------------
    def table(self) -> list[Expectation]:
        return [e.value for e in self.expectations]

    def _find(self, t: ExpectTuple) -> FakeExpectation | None:
        """__nf_ct_expect_find(): an expectation whose masked tuple covers t
        (a tuple without source is the all-zero address)."""
        for e in self.expectations:
            et = e.value.tuple
            if (et.family, et.proto, et.dst, et.dport) == (t.family, t.proto, t.dst, t.dport) and \
                    (et.src is None or et.src == t.src):
                return e
        return None

    def _destroy(self, e: FakeExpectation) -> None:
        self.expectations.remove(e)
        self.events.append(e.kernel(self.now))

    def _insert(self, value: Expectation, assign_helper: str | None) -> int:
        master = self.conntracks.get(value.master)
        if master is None:
            return errno.ENOENT
        # __nf_ct_expect_check(): same master, tuple and class: replaced; clash: EBUSY.
        for e in list(self.expectations):
            if e.value.tuple == value.tuple:
                if e.value.master != value.master or e.value.klass != value.klass:
                    return errno.EALREADY
                self._destroy(e)
            elif e.value.tuple.clashes(value.tuple):
                return errno.EBUSY
        policy = SIP_EXPECT_POLICY[value.klass]
        same = [e for e in self.expectations if e.value.master == value.master and e.value.klass == value.klass]
        if policy.max_expected and len(same) >= policy.max_expected:
            self._destroy(same[0])
        fresh = Expectation(value.tuple, value.klass, value.flags, value.master, self.now + policy.timeout)
        self.expectations.append(FakeExpectation(fresh, assign_helper, next(self._seq)))
        return 0

    def apply(self, op: ExpectOp) -> int:
        """ctnetlink: 0 or the errno it answers."""
        e = op.expectation
        if op.kind == "create":
            master = self.conntracks.get(e.master)
            # ctnetlink_create_expect(): nf_conntrack_find_get() sees confirmed conntracks only.
            if master is None or not master[0].status & IPS_CONFIRMED:
                return errno.ENOENT
            if self._find(e.tuple) is not None:
                return errno.EEXIST  # ctnetlink_new_expect() with NLM_F_EXCL
            return self._insert(e, None)
        found = self._find(e.tuple)
        if found is None:
            return errno.ENOENT
        if op.kind == "delete":
            self._destroy(found)
        else:
            found.value = Expectation(found.value.tuple, found.value.klass, found.value.flags, found.value.master,
                                      self.now + (op.timeout or 0))
        return 0

    # -- time ---------------------------------------------------------------------------------
    def advance(self, seconds: float) -> None:
        self.now += seconds
        for e in [e for e in self.expectations if e.value.expires <= self.now]:
            self._destroy(e)
        for ct, reply in list(self.conntracks.values()):
            if not reply and ct.timeout_at <= self.now:
                self.kill(ct.original)
        self.deliver_events()

    def deliver_events(self) -> None:
        events, self.events = self.events, []
        for exp in events:
            self.core.expectation_destroyed(exp, self.now)

    # -- packets --------------------------------------------------------------------------------
    def _conntrack_for(self, src, sport, dst, dport, proto) -> tuple[FakeConntrack, bool] | None:
        t = ConnTuple(src, dst, proto, sport, dport)
        found = self.conntracks.get(t)
        if found is not None:
            return found
        recycled = self._freed_ids.pop(t, None) if self.recycle_ids else None
        ct = FakeConntrack(next(self._ids) if recycled is None else recycled, t, first_seen=self.now)
        # init_conntrack(): the newest active expectation covering the tuple.
        for e in reversed(self.expectations):
            if e.value.flags & ExpectFlag.INACTIVE:
                continue
            if e.value.tuple.matches(src, sport, dst, dport, proto):
                ct.status |= IPS_EXPECTED
                ct.master = e.value.master
                ct.helper = e.assign_helper
                if not e.value.flags & ExpectFlag.PERMANENT:
                    self.expectations.remove(e)
                    self.events.append(e.kernel(self.now))
                break
        if ct.helper is None and dport in self.ports:
            ct.helper = self.helper  # nft: ct helper set on the first packet
        self.conntracks[t] = (ct, False)
        self.conntracks[t.reply()] = (ct, True)
        return ct, False

    def send(self, src, sport, dst, dport, proto, payload: bytes = b"", flags: int = TCP_ACK) -> StepOutcome:
        """One packet through the router; True if it was let through."""
        ct, reply = self._conntracks_pkt(src, sport, dst, dport, proto)
        outcome = StepOutcome(True)
        self._l4_refresh(ct, reply, proto, flags)
        if reply:
            ct.status |= IPS_SEEN_REPLY
        if ct.helper is None:
            ct.status |= IPS_CONFIRMED
            self.deliver_events()
            return outcome
        data = build_packet(src, sport, dst, dport, proto, payload, flags)
        new = not ct.status & IPS_CONFIRMED
        ctinfo = (IP_CT_NEW if new else IP_CT_ESTABLISHED) + (IP_CT_IS_REPLY if reply else 0)
        while True:
            self.passes += 1
            pkt = QueuedPacket(0, socket.AF_INET if src.version == 4 else socket.AF_INET6, next(self._packet_ids),
                               ETH_P_IP if src.version == 4 else ETH_P_IPV6, 4, data, ct.facts(), ctinfo)
            decision = self.core.decide(pkt, self.now)
            outcome.decisions.append(decision)
            verdict = self.execute(decision, ct)
            if verdict == NF_REPEAT:
                ct.status |= IPS_CONFIRMED  # nfqnl_reinject() -> nf_confirm_cthelper()
                continue
            if verdict == NF_DROP:
                outcome.delivered = False
                if not ct.status & IPS_CONFIRMED:
                    self._free(ct)
            else:
                ct.status |= IPS_CONFIRMED
            break
        self.deliver_events()
        return outcome

    def _l4_refresh(self, ct: FakeConntrack, reply: bool, proto: int, flags: int) -> None:
        """nf_conntrack_udp_packet() / nf_conntrack_tcp_packet(), as the spec models them."""
        if proto == IPPROTO_TCP:
            ct.timeout_at = self.now + (TCP_TIMEOUT_CLOSE if flags & TCP_RST else TCP_TIMEOUT_ESTABLISHED)
        else:
            stream = bool(ct.status & IPS_SEEN_REPLY) and self.now > ct.first_seen + 2
            ct.timeout_at = self.now + (UDP_TIMEOUT_REPLIED if stream else UDP_TIMEOUT_UNREPLIED)

    def _conntracks_pkt(self, src, sport, dst, dport, proto):
        return self._conntrack_for(src, sport, dst, dport, proto)

    def _free(self, ct: FakeConntrack) -> None:
        self._freed_ids[ct.original] = ct.id
        self.conntracks.pop(ct.original, None)
        self.conntracks.pop(ct.original.reply(), None)
        for e in [e for e in self.expectations if e.value.master == ct.original]:
            self.expectations.remove(e)

    def kill(self, original: ConnTuple) -> None:
        """conntrack -D: the master and its expectations go (nf_ct_remove_expectations)."""
        found = self.conntracks.get(original)
        if found is not None:
            self._freed_ids[original] = found[0].id
        self.conntracks.pop(original, None)
        self.conntracks.pop(original.reply(), None)
        for e in [e for e in self.expectations if e.value.master == original]:
            self._destroy(e)
        self.deliver_events()

    def execute(self, decision: Decision, ct: FakeConntrack) -> int:
        """What the daemon does with a decision, against this kernel."""
        verdict, exp = decision.verdict, decision.exp
        for op in decision.ops:
            err = self.apply(op)
            if not err:
                self.core.applied(op)
                continue
            self.refusals.append((op, err))
            failure = self.core.failed(decision, op, err)
            for undo in failure.undo:
                if not self.apply(undo):
                    self.core.applied(undo)
            if failure.verdict is not None:
                verdict = failure.verdict
            if failure.stop:
                exp = None
                break
        if decision.ct_timeout is not None:
            ct.timeout_at = self.now + decision.ct_timeout  # ctnetlink_change_timeout()
        if decision.helper_info is not None and ct.master is None:
            ct.helper_info = decision.helper_info  # nfnl_cthelper_from_nlattr(); not for expected conntracks
        if exp is not None:
            # ctnetlink_glue_attach_expect(): errors are not reported back.
            if not self._insert(exp.expectation, exp.helper):
                self.core.applied(exp)
        return verdict

    # -- ctnetlink dumps (a restart) ---------------------------------------------------------------
    def dump(self) -> list[KernelExpectation]:
        return [e.kernel(self.now) for e in self.expectations]

    def masters(self, originals) -> dict[ConnTuple, KernelConntrack]:
        out = {}
        for o in originals:
            found = self.conntracks.get(o)
            if found is not None and not found[1]:
                out[o] = found[0].facts()
        return out


def run_dialog(kernel: FakeKernel, dialog: Dialog, steps=None) -> list[StepOutcome]:
    """Each step of the dialog through the fake kernel, with the tables after it."""
    hosts = dialog.hosts
    out: list[StepOutcome] = []
    for step in (dialog.steps if steps is None else steps):
        if isinstance(step, Send) and step.proto == IPPROTO_TCP and frozenset((step.src, step.dst)) in kernel.reset:
            outcome = StepOutcome(False)  # the lab reset that connection: nothing is sent on it
        elif isinstance(step, Wait):
            kernel.advance(step.seconds)
            outcome = StepOutcome(None)
        elif isinstance(step, DeleteConntrack):
            found = kernel.conntracks.get(ConnTuple(hosts[step.src.host], hosts[step.dst.host], step.proto,
                                                    step.src.port, step.dst.port))
            if found is not None:
                kernel.kill(found[0].original)
                kernel.deliver_events()
            outcome = StepOutcome(None)
        elif isinstance(step, Connect):
            c, s = hosts[step.src.host], hosts[step.dst.host]
            outcome = kernel.send(c, step.src.port, s, step.dst.port, IPPROTO_TCP, b"", TCP_SYN)
            kernel.send(s, step.dst.port, c, step.src.port, IPPROTO_TCP, b"", TCP_SYN | TCP_ACK)
            kernel.send(c, step.src.port, s, step.dst.port, IPPROTO_TCP, b"", TCP_ACK)
        else:
            assert isinstance(step, Send)
            outcome = StepOutcome(True)
            for segment in step.on_wire(dialog.family):
                one = kernel.send(hosts[step.src.host], step.src.port, hosts[step.dst.host], step.dst.port,
                                  step.proto, segment)
                outcome.decisions += one.decisions
                if not one.delivered:
                    outcome.delivered = False
                    break
            if step.proto == IPPROTO_TCP and not outcome.delivered:
                # The lab aborts the connection after a dropped segment (SO_LINGER 0):
                # an RST from each end crosses the router (harness/drivers.py).
                a, b = hosts[step.src.host], hosts[step.dst.host]
                kernel.send(b, step.dst.port, a, step.src.port, IPPROTO_TCP, b"", TCP_RST | TCP_ACK)
                kernel.send(a, step.src.port, b, step.dst.port, IPPROTO_TCP, b"", TCP_RST | TCP_ACK)
                kernel.reset.add(frozenset((step.src, step.dst)))
        outcome.table = kernel.table()
        outcome.shadow = kernel.core.shadow.expectations()
        out.append(outcome)
    return out


def identities(table) -> list[tuple]:
    """The rows of a table (the spec's expectation_key) with their flags, in order."""
    return sorted((expectation_key(e), int(e.flags)) for e in table)


def kernel_errno(code: int) -> NetlinkError:
    return NetlinkError(code, "test")


__all__ = ["FakeKernel", "StepOutcome", "identities", "run_dialog", "kernel_errno", "ExpectMask", "KTuple",
           "MasterTuple", "ExpectClass", "NF_ACCEPT"]
