"""The reference helper's core: queued packets in, verdicts and expectation operations out.

Theory of operation
-------------------
The kernel helper decides and changes the expectation table in one go,
inside the kernel. A userspace helper sees a packet only after the kernel
queued it (``nfnl_userspace_cthelper()`` returns ``NF_QUEUE``), changes the
table over netlink, and lets the packet go with a verdict. This module is
the part of that which needs no socket (sans-I/O, like h11): the daemon
feeds it decoded packets and kernel reports, it answers with what to do,
and :func:`sipct.reference.execute.execute` does it through a
:class:`~sipct.reference.port.KernelPort` - netlink in the daemon, a fake
kernel in the tests.

*State.* One :class:`~sipct.spec.helper.SipHelper` - the spec - per network
namespace is the helper's memory (the *shadow*): its masters carry
``struct nf_ct_sip_master`` and its expectation table mirrors the kernel's
expectations of this helper. Every queued packet goes through the spec
exactly once; the spec's journal of that packet (``TableEvent``) is what
has to happen in the kernel's table. Nothing about SIP is decided here: the
journal says what changed, which changes the kernel makes by itself, which
RTP expectation goes with an RTCP one, and under which rule a refusal
drops; this module only translates it into kernel operations.

*Masters.* The kernel says which conntrack a packet belongs to (NFQA_CT):
its original tuple, id, IPS_EXPECTED, IPS_SEEN_REPLY, IPS_CONFIRMED,
timeout and our private data. A conntrack the shadow does not know (a
restart, a conntrack that outlived its shadow, the successor of a deleted
one on the same tuple: another id or, as the id is often recycled, not yet
confirmed, or no reply seen where the shadow's had one) is *adopted*
(``SipHelper.adopt``) with those facts, so the spec sees the packet's
ctinfo as the kernel does; a stale one is forgotten first, with its
expectations. Masters die in the shadow when the spec's own clock says so:
the helper writes the same timeout into the kernel's conntrack
(CTA_TIMEOUT, what nf_ct_refresh() does for the kernel helper), so both
clocks agree; a conntrack the kernel killed earlier (flush, conntrack -D)
is noticed by its expectations' destroy events and by the status or id of
the next conntrack on the tuple.

*Which journal entries become kernel operations.* Entries the helper causes
while handling the packet (insertion, replacement, eviction, the flushes,
taking back an RTP expectation whose RTCP twin failed) are replayed, in
order. Entries the kernel causes itself (``TableEvent.caused_by_kernel``)
are not: expiry, a connection matching an expectation, a master's death,
the drop of an unconfirmed first packet (its conntrack and everything it
expected vanish with it). ``refresh_signalling_expectation()`` changes an
expectation in place; the spec journals it as a ``refresh`` with the
expectation before and after, and the packet's refreshes of an expectation
still there at its end become one new timeout.

*How operations reach the kernel.* Media expectations, removals and new
timeouts go over ctnetlink (IPCTNL_MSG_EXP_NEW/_DELETE), which needs the
master in the conntrack hash - i.e. confirmed. A signalling expectation
goes in the verdict (NFQA_EXP): only ctnetlink_glue_attach_expect() takes
CTA_EXPECT_HELP_NAME, which makes the registrar's later connection to the
UA get this helper (process_register_request() sets ``assign_helper``), and
it works on an unconfirmed master too. ctnetlink cannot clear
NF_CT_EXPECT_INACTIVE in place, so activating a registration is delete +
NFQA_EXP + new timeout. When an operation must wait (ctnetlink on an
unconfirmed master, or anything after an NFQA_EXP) the verdict is
NF_REPEAT: nfqnl_reinject() confirms the conntrack (nf_confirm_cthelper()),
the hook runs again and queues the same packet once more; its second
arrival carries on where the first stopped. So every change is made before
the packet leaves, as the kernel helper does it.

*TCP sequence adjustment.* A rewrite that changes a TCP segment's length
must reach the conntrack's seqadj record (struct nf_ct_seqadj per
direction), which nf_confirm_cthelper() -> nf_ct_seq_adjust() applies to
the segment after the verdict and to every later one. The core keeps that
record per master as nf_ct_seqadj_set() changes it, seeded from the
kernel's (CTA_SEQ_ADJ_*) when it adopts a master. Over IPv4 the verdict's
NFQA_CT makes the kernel do it (nfqnl_recv_verdict() ->
ctnetlink_glue_seqadj()). Over IPv6 that path is wrong:
nf_ct_tcp_seqadj_set() looks for the TCP header at ip_hdrlen(skb), IPv4's
IHL, and records a correction position that is not the segment's. So for
IPv6 the record goes over ctnetlink first (IPCTNL_MSG_CT_NEW on the
conntrack, ctnetlink_change_conntrack(): CTA_SEQ_ADJ_<dir> with the
timeout and private data NFQA_CT would have carried) and the verdict goes
without NFQA_CT, so that nothing adjusts twice; an NFQA_EXP, which is read
only with NFQA_CT, then rides in a pass of its own before it.

*Kernel refusals* are read with the spec's meaning (see ``failed()``: the
rule from ``sipct.spec.table.refusal_rule()``, the RTP expectation to take
back from the RTCP one's ``TableEvent.pair``), and any surprise makes the
shadow resynchronise from a ctnetlink dump.
"""

from __future__ import annotations

import errno
import socket
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from sipct.netlink.conntrack import IP_CT_IS_REPLY, IPS_SEQ_ADJUST, KernelConntrack, SeqAdj
from sipct.netlink.ctexp import ExpectMask, ExpectNat as KernelExpectNat, ExpectTuple as KernelExpectTuple
from sipct.netlink.ctexp import KernelExpectation, MasterTuple
from sipct.netlink.kernel import to_spec
from sipct.netlink.nfqueue import NF_ACCEPT, NF_DROP, NF_REPEAT, VERDICT_NAMES, QueuedPacket
from sipct.spec import rules
from sipct.spec.expectation import (IPPROTO_TCP, NAT_EXPECTFN, ConnTuple, ExpectClass, Expectation, ExpectTuple,
                                    expectation_key)
from sipct.spec.helper import Conntrack, Packet, PacketResult, SipHelper
from sipct.spec.master import Master
from sipct.spec.params import ModuleParams
from sipct.spec.profiles import KernelProfile
from sipct.spec.table import NEW, REFRESH, TableEvent, refusal_rule

from .master_state import MasterState
from .packet import TCP_RST, L4Packet, PacketError, parse_packet, rebuild_packet

__all__ = [
    "CTNETLINK",
    "VERDICT",
    "Decision",
    "ExpectOp",
    "Failure",
    "HelperCore",
    "Phase",
    "SeqAdjust",
    "plan",
]

CTNETLINK = "ctnetlink"
VERDICT = "verdict"  # NFQA_EXP in the verdict

# A destroy event of an expired expectation names the shadow's live one only
# if that one is about to expire too (ctnetlink reports whole seconds).
STALE_EVENT_MARGIN = 1.0
# How long a packet answered with NF_REPEAT may take to come back.
PENDING_TIMEOUT = 2.0
# NFQNL_MAX_COPY_RANGE (nfnetlink_queue.c: 0xffff - NLA_HDRLEN): the most of a
# packet the queue hands over, and the most an NFQA_PAYLOAD attribute holds.
MAX_QUEUED = 0xFFFF - 4


@dataclass(frozen=True, slots=True)
class ExpectOp:
    """One change to the kernel's expectation table.

    ``create``: insert ``expectation`` (ctnetlink, or NFQA_EXP when ``via`` is
    VERDICT, with ``helper`` for the expected connection); ``delete``: remove
    it; ``timeout``: give it ``timeout`` seconds from now. ``rule`` is the spec
    rule behind it; ``pair`` the RTP expectation to take back should this
    RTCP one be refused (the spec's ``TableEvent.pair``)."""

    kind: str
    expectation: Expectation
    via: str
    rule: str
    timeout: int | None = None
    helper: str | None = None
    pair: Expectation | None = None

    def kernel(self, helper_name: str, expectfn: str = NAT_EXPECTFN) -> KernelExpectation:
        """The expectation as ctnetlink writes it: masks from the spec's
        wildcards (no source address: any; source port: always any for SIP).
        Both ports are always present, in the tuple and in the mask:
        ctnetlink_parse_tuple() refuses a tuple without either (EINVAL from
        nf_ct_port_nlattr_to_tuple()). A NAT part goes as CTA_EXPECT_NAT with
        CTA_EXPECT_FN "sip": nf_nat_sip_expected(), which nf_nat_sip
        registers (nf_ct_helper_expectfn_register()) and which needs
        nothing of nf_conntrack_sip's - it reads the expectation and its
        master's other expectations (help->expectations) only; ``expectfn``
        names another where nf_nat_sip is missing (reference.natcheck)."""
        e = self.expectation
        t, m = e.tuple, e.master
        family = socket.AF_INET if t.family == 4 else socket.AF_INET6
        zero = t.dst.__class__(0)
        ones = t.dst.__class__((1 << t.dst.max_prefixlen) - 1)
        return KernelExpectation(
            family=family,
            proto=t.proto,
            master=MasterTuple(m.src, m.dst, m.sport, m.dport, m.proto),
            tuple=KernelExpectTuple(zero if t.src is None else t.src, t.dst,
                                    0 if t.sport is None else t.sport, t.dport),
            mask=ExpectMask(zero if t.src is None else ones, 0 if t.sport is None else 0xFFFF),
            timeout=self.timeout or 0,
            flags=int(e.flags),
            klass=int(e.klass),
            helper=helper_name,
            fn=None if e.nat is None else expectfn,
            nat=None if e.nat is None else KernelExpectNat(e.nat.dir, e.nat.addr, e.nat.port),
        )

    def __str__(self) -> str:
        e = self.expectation
        extra = f" timeout={self.timeout}s" if self.kind == "timeout" else ""
        flags = ",".join(e.flags.labels()) or "-"
        return f"{self.kind} {e.tuple} class={e.klass.label} flags={flags} via {self.via}{extra} ({self.rule})"


@dataclass(frozen=True, slots=True)
class Phase:
    """One pass of a packet through the queue: ctnetlink operations first,
    then the verdict (NF_REPEAT when another pass follows), which may carry
    one expectation in NFQA_EXP."""

    ops: tuple[ExpectOp, ...]
    exp: ExpectOp | None
    verdict: int


def plan(ops: Iterable[ExpectOp], verdict: int, confirmed: bool, ct_update: bool = False) -> list[Phase]:
    """Order operations into passes (see the module docstring).

    A dropped first packet needs nothing: its unconfirmed conntrack and all
    it expected die with it. Otherwise each NFQA_EXP ends a pass, ctnetlink
    operations on an unconfirmed master wait for the second pass, and the
    last pass carries the real verdict. ``ct_update``: the last pass changes
    the conntrack over ctnetlink and its verdict carries no NFQA_CT, hence
    no NFQA_EXP either; ctnetlink_new_conntrack() finds confirmed
    conntracks only (nf_conntrack_find_get())."""
    ops = list(ops)
    if not confirmed and verdict == NF_DROP:
        return [Phase((), None, NF_DROP)]
    phases: list[Phase] = []
    batch: list[ExpectOp] = []
    for op in ops:
        if op.via == VERDICT:
            phases.append(Phase(tuple(batch), op, NF_REPEAT))
            batch = []
        else:
            batch.append(op)
    if batch or not phases or (ct_update and phases[-1].exp is not None):
        phases.append(Phase(tuple(batch), None, NF_REPEAT))
    last = phases[-1]
    phases[-1] = Phase(last.ops, last.exp, verdict)
    if not confirmed and (phases[0].ops or (ct_update and len(phases) == 1)):
        phases.insert(0, Phase((), None, NF_REPEAT))
    return phases


def arrival(ct: KernelConntrack, reply: bool, l4: L4Packet) -> ConnTuple:
    """The tuple the packet came in with, which the spec reads. The queue
    has it later: the userspace helper runs from the confirm hook
    (nf_confirm() at NF_IP_PRI_CONNTRACK_CONFIRM, postrouting or input),
    after the nat hooks changed its addresses and ports
    (nf_nat_ipv4_out(), nf_nat_ipv4_in()). Conntrack's tuples are the
    arrival ones: the original tuple in its direction, the reply tuple in
    the other (nf_conntrack_in() looked the packet up by them)."""
    if reply and ct.reply is not None:
        return ct.reply
    if not reply:
        return ct.original
    return ConnTuple(l4.src, l4.dst, l4.proto, l4.sport, l4.dport)


def rewritten(queued: bytes, l4: L4Packet, result: PacketResult) -> bytes | None:
    """The queued packet as nf_nat_sip leaves it (None: unchanged): the
    spec's payload (nf_nat_mangle_udp_packet() / _tcp_packet()) and, for a
    reply to a master with a forced port, nf_nat_sip()'s destination port
    (``ct_sip_info->forced_dport``: the only header field the helper
    changes; the nat hooks did the rest before the packet was queued)."""
    payload = l4.payload if result.out_payload is None else result.out_payload
    dport = l4.dport if result.out_tuple is None else result.out_tuple.dport
    if payload == l4.payload and dport == l4.dport:
        return None
    return rebuild_packet(queued, payload, dport)


def too_long(packet: bytes | None) -> bool:
    """A rewritten packet no NFQA_PAYLOAD can hold (nla_len is 16 bits)."""
    return packet is not None and len(packet) > MAX_QUEUED


def next_port(refused: ExpectTuple, attempt: int) -> int | None:
    """The helper's draw where nf_nat_exp_find_port() draws at random: a
    REGISTER's NAT port another master's expectation holds (-EBUSY) moves up
    one at a time - one of the kernel's possible draws (``min +
    get_random_u32_below(USHRT_MAX - min)``), and one the shadow can repeat."""
    return refused.dport + 1 if refused.dport < 0xFFFE else None


@dataclass(frozen=True, slots=True)
class SeqAdjust:
    """A rewrite changed the length of a TCP segment of direction ``reply``
    of the master ``original``: its seqadj record becomes ``seq``
    (nf_ct_seqadj_set() with the segment's sequence number). ``via``
    VERDICT: the verdict's NFQA_CT makes the kernel do it (IPv4);
    CTNETLINK: a conntrack update before a verdict without NFQA_CT (IPv6)."""

    original: ConnTuple
    reply: bool
    seq: SeqAdj
    via: str

    def __str__(self) -> str:
        s = self.seq
        return (f"seqadj {'reply' if self.reply else 'original'} of {self.original} via {self.via}: "
                f"correction_pos={s.correction_pos} offset {s.offset_before:+d} -> {s.offset_after:+d}")


@dataclass(frozen=True)
class Decision:
    """What to do with one queued packet now: run ``ops`` over ctnetlink in
    order, then send ``verdict`` with ``exp`` (NFQA_EXP), the conntrack timeout
    ``ct_timeout`` and the helper's private data ``helper_info`` (NFQA_CT),
    and ``packet``, the packet as nf_nat_sip would have rewritten it
    (NFQA_PAYLOAD; only with the last pass's verdict), whose length change
    ``seqadj`` records (TCP under NAT)."""

    verdict: int
    ops: tuple[ExpectOp, ...] = ()
    exp: ExpectOp | None = None
    ct_timeout: int | None = None
    helper_info: bytes | None = None
    reason: str = ""
    pass_no: int = 1
    events: tuple[TableEvent, ...] = ()
    result: PacketResult | None = None
    error: str | None = None
    key: tuple | None = field(default=None, repr=False)
    packet: bytes | None = field(default=None, repr=False)
    seqadj: SeqAdjust | None = None

    @property
    def ct_in_verdict(self) -> bool:
        """Whether the verdict carries NFQA_CT (not when the conntrack changes over ctnetlink)."""
        return self.seqadj is None or self.seqadj.via != CTNETLINK

    @property
    def verdict_name(self) -> str:
        return VERDICT_NAMES.get(self.verdict, str(self.verdict))

    @property
    def all_ops(self) -> tuple[ExpectOp, ...]:
        return self.ops + ((self.exp,) if self.exp is not None else ())


@dataclass(frozen=True, slots=True)
class Failure:
    """What a refused operation means: ``verdict`` replaces the decision's
    (None: carry on), ``undo`` runs next, ``stop`` skips the rest."""

    verdict: int | None
    undo: tuple[ExpectOp, ...] = ()
    stop: bool = False
    reason: str = ""


@dataclass
class _Pending:
    phases: list[Phase]
    deadline: float
    pass_no: int
    master: ConnTuple
    ct_timeout: int | None
    helper_info: bytes | None
    events: tuple[TableEvent, ...]
    packet: bytes | None = None
    seqadj: SeqAdjust | None = None


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    removed: int
    added: int
    adopted: int
    unknown_masters: int


class HelperCore:
    """The shadow of one network namespace and the rules that turn its
    journal into kernel operations. Time (``now``) is always an argument:
    seconds on a monotonic clock."""

    def __init__(self, params: ModuleParams, profile: KernelProfile, *, helper_name: str = "sip",
                 fail_open: bool = True, same_interface: Callable | None = None,
                 pending_timeout: float = PENDING_TIMEOUT, nat_expectfn: str = NAT_EXPECTFN) -> None:
        self.params = params
        self.profile = profile
        self.helper_name = helper_name
        self.nat_expectfn = nat_expectfn  # CTA_EXPECT_FN of NAT expectations (reference.natcheck.nat_expectfn)
        self.fail_open = fail_open
        self.pending_timeout = pending_timeout
        self.shadow = SipHelper(params, profile, same_interface, nat_port_choice=next_port)
        self._ids: dict[ConnTuple, int | None] = {}  # kernel conntrack id of each shadow master
        # struct nf_ct_seqadj of each TCP master whose segments a rewrite changed: (original, reply)
        self._seqadj: dict[ConnTuple, tuple[SeqAdj, SeqAdj]] = {}
        self._pending: dict[tuple, _Pending] = {}
        self._own_deletes: Counter[tuple] = Counter()  # destroy events we caused and still expect
        self.needs_resync = False
        self.stats: Counter[str] = Counter()

    # --- packets -------------------------------------------------------------------------
    @property
    def policy_verdict(self) -> int:
        return NF_ACCEPT if self.fail_open else NF_DROP

    def error_decision(self, reason: str) -> Decision:
        """The failure policy's verdict for a packet the helper could not handle."""
        self.stats["errors"] += 1
        return Decision(self.policy_verdict, reason=f"error: {reason}", error=reason)

    def decide(self, pkt: QueuedPacket, now: float) -> Decision:
        """The decision for one queued packet. Never raises: an internal error
        gives the failure policy's verdict and a resynchronisation."""
        self.stats["packets"] += 1
        try:
            return self._decide(pkt, now)
        except Exception as exc:  # the daemon must survive anything the spec or a packet does
            self.needs_resync = True
            return self.error_decision(f"{type(exc).__name__}: {exc}")

    def _decide(self, pkt: QueuedPacket, now: float) -> Decision:
        ct = pkt.ct
        if ct is None or pkt.ctinfo is None:
            return self.error_decision("no conntrack with the packet (NFQA_CFG_F_CONNTRACK off, or the kernel "
                                       "lacks CONFIG_NETFILTER_NETLINK_GLUE_CT)")
        try:
            l4 = parse_packet(pkt.payload)
        except PacketError as exc:
            return self.error_decision(f"unreadable packet: {exc}")
        reply = pkt.ctinfo >= IP_CT_IS_REPLY
        if l4.truncated and ct.reply is not None and ct.reply != ct.original.reply():
            # Longer than the queue hands over (NFQNL_MAX_COPY_RANGE): nf_nat_sip
            # would rewrite what the helper cannot see, and no verdict could
            # carry a packet this long back. Growing it fails in the kernel
            # too (enlarge_skb(): 65,535 bytes at most).
            self.stats["nat.too-long"] += 1
            return Decision(NF_DROP, reason=f"nat: a packet longer than {MAX_QUEUED} bytes cannot be rewritten "
                                            "from userspace")
        key = (ct.original if ct.id is None else ct.id, reply, l4.tcp_flags, l4.payload)
        pending = self._pending.pop(key, None)
        if pending is not None:
            return self._next_pass(key, pending)

        shadow = self.shadow
        # The journal only matters per packet here; a daemon must not keep it forever.
        shadow.table.journal.clear()
        shadow.advance(now)
        master = self._master_for(ct, now)
        start = len(shadow.table.journal)
        came = arrival(ct, reply, l4)
        result = shadow.packet(Packet(came.src, came.sport, came.dst, came.dport, l4.proto, l4.payload), now,
                               syn=l4.syn)
        if l4.tcp_flags & TCP_RST:
            # The kernel's TCP tracker moves the conntrack to CLOSE (10 s).
            shadow.tcp_reset(came.src, came.sport, came.dst, came.dport, now)
        events = tuple(shadow.table.journal[start:])
        verdict = NF_ACCEPT if result.accepted else NF_DROP
        reason = "accept" if result.accepted else (result.drop_rule.id if result.drop_rule else "drop")
        if verdict == NF_DROP and not ct.confirmed:
            # nf_conntrack_confirm() never runs for this packet: the kernel
            # frees the conntrack and what it expected (nf_ct_destroy).
            events += shadow.forget(ct.original, now)
            ops: list[ExpectOp] = []
        else:
            ops = self._ops(events, now)
        alive = shadow.conntrack(ct.original) is not None
        refreshed = any(f.rule is rules.REFRESH_MASTER for f in result.firings)
        ct_timeout = self.params.sip_timeout if refreshed and alive else None
        info = MasterState(master.register_cseq, master.invite_cseq, master.forced_dport).pack() if alive else None
        self.stats["verdict." + VERDICT_NAMES.get(verdict, str(verdict))] += 1
        new_packet = rewritten(pkt.payload, l4, result) if verdict == NF_ACCEPT else None
        seqadj = None
        if too_long(new_packet):
            # The kernel helper could still grow it up to 65,535 bytes.
            self.stats["nat.too-long"] += 1
            verdict, reason, new_packet = NF_DROP, f"nat: the rewritten packet exceeds {MAX_QUEUED} bytes", None
        elif new_packet is not None:
            self.stats["rewrites"] += 1
            seqadj = self._seq_adjust(ct, reply, l4, len(new_packet) - len(pkt.payload))
        phases = plan(ops, verdict, ct.confirmed, ct_update=seqadj is not None and seqadj.via == CTNETLINK)
        first, rest = phases[0], phases[1:]
        if rest and new_packet is None and verdict == NF_ACCEPT and l4.proto == IPPROTO_TCP \
                and not l4.truncated and (ct.status & IPS_SEQ_ADJUST or ct.original in self._seqadj):
            # Each NF_REPEAT adjusts the segment (nfqnl_reinject() ->
            # nf_confirm_cthelper() -> nf_ct_seq_adjust()) before the hook
            # queues it again, and the last verdict adjusts it once more: the
            # segment as it first came, in NFQA_PAYLOAD, is adjusted once.
            new_packet = pkt.payload
        if rest:
            self._pending[key] = _Pending(rest, now + self.pending_timeout, 2, ct.original, ct_timeout, info, events,
                                          new_packet, seqadj)
        return Decision(first.verdict, first.ops, first.exp, ct_timeout, info,
                        reason if not rest else f"repeat: {len(rest)} more pass(es), then {reason}",
                        1, events, result, key=key, packet=None if rest else new_packet,
                        seqadj=None if rest else seqadj)

    def _seq_adjust(self, ct: KernelConntrack, reply: bool, l4: L4Packet, diff: int) -> SeqAdjust | None:
        """The seqadj change of a rewrite ``diff`` bytes longer, as nfqnl_recv_verdict()
        -> ctnetlink_glue_seqadj() makes it: TCP, NATed conntracks only
        (IPS_NAT_MASK; nf_nat_setup_info() gives those the seqadj extension),
        at the sequence number of the segment the verdict sends, the first
        pass's (the kernel adjusts a repeated pass before it queues it again,
        nfqnl_reinject() -> nf_confirm_cthelper(); NFQA_PAYLOAD puts the
        first pass's header back)."""
        if l4.proto != IPPROTO_TCP or not diff or not ct.natted:
            return None
        record = self._seqadj.get(ct.original, (SeqAdj(), SeqAdj()))
        return SeqAdjust(ct.original, reply, record[reply].set(l4.tcp_seq, diff),
                         CTNETLINK if ct.family == socket.AF_INET6 else VERDICT)

    def _next_pass(self, key: tuple, pending: _Pending) -> Decision:
        phase = pending.phases.pop(0)
        pass_no = pending.pass_no
        if pending.phases:
            pending.pass_no += 1
            self._pending[key] = pending
        return Decision(phase.verdict, phase.ops, phase.exp, pending.ct_timeout, pending.helper_info,
                        f"pass {pass_no}", pass_no, pending.events, key=key,
                        packet=None if pending.phases else pending.packet,
                        seqadj=None if pending.phases else pending.seqadj)

    def _master_for(self, ct: KernelConntrack, now: float) -> Master:
        """The shadow's master for the kernel's conntrack, adopted if need be."""
        shadow = self.shadow
        original = ct.original
        found = shadow.conntrack(original)
        if found is not None and found.original == original and found.master is not None \
                and not self._succeeded(found, ct):
            self._ids[original] = ct.id
            return found.master
        if found is not None:
            # The kernel's conntrack on this tuple is another one: the old is gone.
            shadow.forget(found.original, now)
            self._ids.pop(found.original, None)
            self.stats["masters.replaced"] += 1
        return self._adopt(ct, now)

    def _succeeded(self, found: Conntrack, ct: KernelConntrack) -> bool:
        """Whether the kernel's conntrack ``ct`` is a successor of the shadow's
        ``found`` on the same tuple (the old one was deleted, flushed or
        dropped). The id alone cannot tell: nf_ct_get_id() hashes the nf_conn's
        address and original tuple, and the slab hands the freed conntrack's
        address to the next one, so a successor on the same tuple often has
        the same id (6.12.117, ``midstream-tcp-conntrack-deleted``). The
        conntrack's status can: IPS_CONFIRMED is missing only while its first
        packet is on its way (the later passes of a packet come back through
        ``_pending``), and IPS_SEEN_REPLY, once set by nf_conntrack_in(), is
        never cleared."""
        known = self._ids.get(ct.original)
        if known is not None and ct.id is not None and known != ct.id:
            return True
        return not ct.confirmed or (found.seen_reply and not ct.seen_reply)

    def _adopt(self, ct: KernelConntrack, now: float) -> Master:
        """The kernel's conntrack into the shadow: its status, timeout, NAT
        binding, our private data and its seqadj record (CTA_SEQ_ADJ_*, which
        survives a restart of the helper: the spec's seq_offset is each
        direction's offset_after, what the next segment moves by)."""
        seq = ct.seq_adj if ct.original.proto == IPPROTO_TCP else None
        master = self.shadow.adopt(ct.original, now, expected=ct.expected, seen_reply=ct.seen_reply,
                                   timeout=ct.timeout or None, reply=ct.reply,
                                   seq_offset=None if seq is None else (seq[0].offset_after, seq[1].offset_after))
        state = MasterState.unpack(ct.helper_info)
        if state is not None:
            master.restore(state.register_cseq, state.invite_cseq, state.forced_dport)
        if seq is not None:
            self._seqadj[ct.original] = seq
        else:
            self._seqadj.pop(ct.original, None)
        self._ids[ct.original] = ct.id
        self.stats["masters.adopted"] += 1
        return master

    def _ops(self, events: tuple[TableEvent, ...], now: float) -> list[ExpectOp]:
        """The spec's journal of one packet as kernel operations, in order.
        What the kernel does by itself (``caused_by_kernel``) is left to it.
        The refreshes of an expectation still there at the end become one
        new timeout, after a delete and an NFQA_EXP if NF_CT_EXPECT_INACTIVE
        was cleared: ctnetlink cannot clear the flag in place."""
        ops: list[ExpectOp] = []
        refreshed: dict[tuple, tuple[Expectation, Expectation]] = {}  # key -> (first before, last after)
        for ev in events:
            if ev.caused_by_kernel:
                continue
            e = ev.expectation
            if ev.kind == REFRESH:
                assert ev.before is not None
                key = expectation_key(e)
                refreshed[key] = (refreshed.get(key, (ev.before,))[0], e)
            elif ev.kind == NEW:
                signalling = e.klass == ExpectClass.SIGNALLING
                ops.append(ExpectOp("create", e, VERDICT if signalling else CTNETLINK, ev.rule,
                                    helper=self.helper_name if signalling else None, pair=ev.pair))
            else:
                ops.append(ExpectOp("delete", e, CTNETLINK, ev.rule))
                refreshed.pop(expectation_key(e), None)
        refresh = rules.REG_RESPONSE_REFRESH.id
        for before, after in refreshed.values():
            if after.flags == before.flags and after.expires == before.expires:
                continue
            if after.flags != before.flags:
                ops.append(ExpectOp("delete", before, CTNETLINK, refresh))
                ops.append(ExpectOp("create", after, VERDICT, refresh, helper=self.helper_name))
            ops.append(ExpectOp("timeout", after, CTNETLINK, refresh, timeout=max(1, round(after.expires - now))))
        return ops

    # --- what the kernel said about operations -------------------------------------------------
    def applied(self, op: ExpectOp) -> None:
        """The kernel did ``op``: a removal's destroy event is ours, not news."""
        self.stats[f"ops.{op.kind}"] += 1
        if op.kind == "delete":
            self._own_deletes[expectation_key(op.expectation)] += 1

    def seqadj_applied(self, change: SeqAdjust) -> None:
        """The kernel took the seqadj change (the conntrack update, or the verdict's NFQA_CT)."""
        record = list(self._seqadj.get(change.original, (SeqAdj(), SeqAdj())))
        record[change.reply] = change.seq
        self._seqadj[change.original] = (record[0], record[1])
        self.stats[f"seqadj.{change.via}"] += 1

    def seqadj(self, original: ConnTuple) -> tuple[SeqAdj, SeqAdj] | None:
        """The master's seqadj record as the core keeps it (None: no length change yet)."""
        return self._seqadj.get(original)

    def update_failed(self, decision: Decision, err: int) -> Failure:
        """The kernel refused the conntrack update that carries a seqadj change
        (ENOENT: the conntrack is gone or dying; EOPNOTSUPP/EBUSY from
        ctnetlink_change_helper(): not our helper; EINVAL: a malformed
        request). The rewritten segment cannot leave without it - its length
        change would reach no seqadj record and the two ends' sequence
        numbers would part - so the failure policy decides about the segment
        as it came, and the shadow resynchronises."""
        name = errno.errorcode.get(err, str(err))
        self.stats[f"refused.update.{name}"] += 1
        self.stats["errors"] += 1
        self.needs_resync = True
        self._cancel(decision)
        return Failure(self.policy_verdict, (), True, f"error: the kernel refused the conntrack update ({name})")

    def failed(self, decision: Decision, op: ExpectOp, err: int) -> Failure:
        """The kernel refused ``op`` with errno ``err``; what that means.

        ``delete`` ENOENT: already gone (a connection used it, it expired,
        its master died) - which is what was asked. ``timeout`` ENOENT: gone
        as well. ``create`` EEXIST: an expectation covering the tuple exists,
        for the spec "already expected" (media.already). ``create`` EBUSY
        (clash), EMFILE/ENOSPC (no room), ESHUTDOWN/ENOENT (master dying or
        gone), EALREADY: the expectation cannot be added, and the kernel
        helper then drops the packet (media.failed, register.failed) after
        taking back the RTP expectation of a failed RTCP one (the spec's
        ``refusal_rule()`` and the operation's ``pair``). Anything else
        is an internal error: the failure policy decides. Every refusal but
        the first means the shadow and the kernel disagree: resynchronise."""
        self.stats[f"refused.{op.kind}.{errno.errorcode.get(err, err)}"] += 1
        name = errno.errorcode.get(err, str(err))
        if op.kind in ("delete", "timeout") and err == errno.ENOENT:
            if op.kind == "timeout":
                self.needs_resync = True
            return Failure(None, reason=f"{op.kind}: already gone")
        self.needs_resync = True
        if op.kind == "create" and err == errno.EEXIST:
            return Failure(None, reason="create: already expected (EEXIST)")
        if op.kind == "create" and err in (errno.EBUSY, errno.EMFILE, errno.ENOSPC, errno.ESHUTDOWN,
                                           errno.ENOENT, errno.EALREADY):
            rule = refusal_rule(op.expectation.klass)
            undo = () if op.pair is None else (ExpectOp("delete", op.pair, CTNETLINK, rule.id),)
            self._cancel(decision)
            return Failure(NF_DROP, undo, True, f"{rule.id}: the kernel refused {op.kind} ({name})")
        self._cancel(decision)
        self.stats["errors"] += 1
        return Failure(self.policy_verdict, (), True, f"error: the kernel refused {op.kind} ({name})")

    def _cancel(self, decision: Decision) -> None:
        if decision.key is not None:
            self._pending.pop(decision.key, None)

    def expire_pending(self, now: float) -> int:
        """Forget passes whose packet never came back (the queue overflowed
        and, with the bypass flag, the kernel let it through). Returns how many."""
        gone = [k for k, p in self._pending.items() if p.deadline <= now]
        for k in gone:
            del self._pending[k]
        if gone:
            self.needs_resync = True
            self.stats["pending.expired"] += len(gone)
        return len(gone)

    @property
    def pending(self) -> int:
        return len(self._pending)

    # --- what the kernel reports on its own ------------------------------------------------------
    def expectation_destroyed(self, exp: KernelExpectation, now: float) -> bool:
        """An IPEXP_DESTROY event. Returns True when it told the shadow
        something new (a connection matched the expectation, it expired on
        the kernel's clock, its master died, someone deleted it)."""
        if exp.helper != self.helper_name:
            return False
        value = to_spec(exp, now)
        key = expectation_key(value)
        if self._own_deletes[key] > 0:
            self._own_deletes[key] -= 1
            if not self._own_deletes[key]:
                del self._own_deletes[key]
            return False
        self.shadow.table.journal.clear()
        self.shadow.advance(now)
        found = self.shadow.conntrack(value.master)
        if found is None or found.master is None or found.original != value.master:
            return False
        entry = self.shadow.table.lookup(found.master, value.tuple, value.klass)
        if entry is None:
            return False
        if exp.timeout <= 0 and entry.expires - now > STALE_EVENT_MARGIN:
            # Past its timeout on the kernel's clock while the shadow's is alive: a
            # predecessor the spec expired eagerly and a lazily-expiring kernel only
            # unlinked now, when the successor's insertion met it in its bucket
            # (__nf_ct_expect_check() on Debian 6.1.192 and 6.12) - not the successor.
            self.stats["events.stale"] += 1
            return False
        self.shadow.table.gone(entry, now)
        self.stats["events.destroy"] += 1
        return True

    def missing_masters(self, expectations: Iterable[KernelExpectation]) -> list[ConnTuple]:
        """Masters of these kernel expectations that the shadow lacks."""
        out = []
        for exp in expectations:
            if exp.helper != self.helper_name:
                continue
            m = exp.master
            original = ConnTuple(m.src, m.dst, m.proto, m.sport or 0, m.dport or 0)
            found = self.shadow.conntrack(original)
            if (found is None or found.master is None or found.original != original) and original not in out:
                out.append(original)
        return out

    def reconcile(self, expectations: Iterable[KernelExpectation], masters: Mapping[ConnTuple, KernelConntrack],
                  now: float) -> ReconcileReport:
        """Make the shadow's expectations the kernel's (a ctnetlink dump):
        at start (restart while calls are up), periodically, and after a
        surprise. ``masters`` holds the kernel's conntracks for
        missing_masters(). Masters with a packet between two passes are left alone."""
        shadow = self.shadow
        shadow.table.journal.clear()
        shadow.advance(now)
        busy = {p.master for p in self._pending.values()}
        kernel: dict[tuple, Expectation] = {}
        for exp in expectations:
            if exp.helper == self.helper_name:
                value = to_spec(exp, now)
                kernel[expectation_key(value)] = value
        removed = added = adopted = unknown = 0
        have = set()
        for entry in shadow.table.entries():
            value = entry.value()
            if value.master in busy:
                have.add(expectation_key(value))
                continue
            if expectation_key(value) in kernel:
                have.add(expectation_key(value))
            else:
                shadow.table.gone(entry, now)
                removed += 1
        # Oldest first (least time left), so that the shadow evicts what the kernel would.
        for key, value in sorted(kernel.items(), key=lambda kv: kv[1].expires):
            if key in have or value.master in busy:
                continue
            found = shadow.conntrack(value.master)
            if found is not None and found.master is not None and found.original == value.master:
                master = found.master
            else:
                facts = masters.get(value.master)
                if facts is None or facts.helper != self.helper_name:
                    unknown += 1
                    continue
                if found is not None:
                    shadow.forget(found.original, now)
                master = self._adopt(facts, now)
                adopted += 1
            shadow.table.restore(master, value.tuple, value.klass, value.flags, value.expires)
            added += 1
        self.needs_resync = False
        self.prune()
        self.stats["resyncs"] += 1
        return ReconcileReport(removed, added, adopted, unknown)

    def prune(self) -> None:
        """Drop bookkeeping of masters the shadow no longer has."""
        for original in [o for o in self._ids if self.shadow.conntrack(o) is None]:
            del self._ids[original]
        for original in [o for o in self._seqadj if self.shadow.conntrack(o) is None]:
            del self._seqadj[original]
