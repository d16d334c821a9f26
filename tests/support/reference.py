"""A kernel in miniature for testing the reference helper's core without sockets.

`FakeKernel` plays what the kernel does around a userspace helper: conntracks
(created by a packet, matched against expectations, confirmed when the
verdict lets the first packet through, freed when it drops it), the
expectation table (ctnetlink create/delete/timeout with the kernel's
errors, NFQA_EXP attached by the verdict, expiry, events), the queue
(NFQNL_MSG_PACKET with NFQA_CT; NF_REPEAT queues the packet once more;
NFQA_PAYLOAD replaces the packet), TCP sequence adjustment (the seqadj
record per direction, set by the verdict's NFQA_CT - with the kernel's
ip_hdrlen() reading of an IPv6 packet - or by a ctnetlink conntrack update,
and applied to every segment that leaves, nf_ct_seq_adjust()) and the
router's NAT: a new conntrack's
binding from the dialog's nat chains (sipct.spec.natmap, the lab's ruleset)
or, for one that matched an expectation with expectfn "sip", from the
expectation as nf_nat_sip_expected() reads it; the helper sees the packet
after the nat hooks, at the confirm hook.
It follows nf_conntrack_core.c, nf_conntrack_expect.c, nf_conntrack_netlink.c
and nfnetlink_queue.c for the paths the SIP helper uses, nothing more.

It is a :class:`~sipct.reference.port.KernelPort`: the core's decisions run
through the daemon's own executor (``sipct.reference.execute``). And it
keeps expectations as the kernel does - a tuple and a mask of integers -
and compares them with its own nf_ct_tuple_mask_cmp(), expect_matches()
and expect_clash(), never with the spec's matching, so that a matching
mistake of the spec shows as a difference between the two tables.
"""

from __future__ import annotations

import dataclasses
import errno
import itertools
import socket
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pyroute2.netlink.exceptions import NetlinkError

from sipct.netlink.conntrack import (IP_CT_ESTABLISHED, IP_CT_IS_REPLY, IP_CT_NEW, IPS_CONFIRMED, IPS_DST_NAT,
                                     IPS_EXPECTED, IPS_NAT_MASK, IPS_SEEN_REPLY, IPS_SEQ_ADJUST, IPS_SRC_NAT,
                                     KernelConntrack, SeqAdj)
from sipct.netlink.ctexp import KernelExpectation, MasterTuple
from sipct.netlink.kernel import to_spec
from sipct.netlink.nfqueue import ETH_P_IP, ETH_P_IPV6, NF_DROP, NF_REPEAT, QueuedPacket
from sipct.reference.core import MAX_QUEUED, Decision, HelperCore
from sipct.reference.execute import execute
from sipct.reference.packet import TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, build_packet, parse_packet
from sipct.harness.wire import LAB_WIRE
from sipct.spec.dialog import Connect, DeleteConntrack, Dialog, Send, Wait
from sipct.spec.walk import Walker
from sipct.spec.expectation import (IPPROTO_TCP, SIP_EXPECT_POLICY, Address, ConnTuple, ExpectClass, Expectation,
                                    expectation_key)
from sipct.spec.helper import (TCP_TIMEOUT_CLOSE, TCP_TIMEOUT_ESTABLISHED, UDP_TIMEOUT_REPLIED,
                               UDP_TIMEOUT_UNREPLIED)
from sipct.spec.natmap import NatTopology
from sipct.spec.predict import dialled

# include/uapi/linux/netfilter/nf_conntrack_common.h
NF_CT_EXPECT_PERMANENT = 0x1
NF_CT_EXPECT_INACTIVE = 0x2
# The initial sequence numbers of a connection's two ends.
ISN = (1_000_000, 3_000_000_000)


@dataclass(frozen=True, slots=True)
class Tuple:
    """What struct nf_conntrack_tuple holds: src.u3, src.u.all, src.l3num,
    dst.u3, dst.u.all, dst.protonum - an address as the integer of its
    u3.all[] words, a port as its u.all."""

    l3num: int
    src: int
    sport: int
    dst: int
    dport: int
    protonum: int

    @classmethod
    def of_connection(cls, t: ConnTuple) -> Tuple:
        """A connection's original tuple, as init_conntrack() looks it up."""
        return cls(socket.AF_INET if t.src.version == 4 else socket.AF_INET6, int(t.src), t.sport, int(t.dst),
                   t.dport, t.proto)

    @classmethod
    def of_request(cls, exp: KernelExpectation) -> Tuple:
        """CTA_EXPECT_TUPLE as ctnetlink_parse_tuple() reads it (a port left out is 0)."""
        t = exp.tuple
        return cls(exp.family, int(t.src), t.sport or 0, int(t.dst), t.dport or 0, exp.proto)


@dataclass(frozen=True, slots=True)
class Mask:
    """struct nf_conntrack_tuple_mask: the bits of the source address and port that count."""

    src: int
    sport: int

    @classmethod
    def of_request(cls, exp: KernelExpectation) -> Mask:
        return cls(int(exp.mask.src), exp.mask.sport or 0)


def tuple_mask_cmp(t: Tuple, tuple_: Tuple, mask: Mask) -> bool:
    """nf_ct_tuple_mask_cmp(): nf_ct_tuple_src_mask_cmp() - the source
    address and port equal where ``mask`` has bits, l3num and protocol
    equal - and __nf_ct_tuple_dst_equal()."""
    return (not (t.src ^ tuple_.src) & mask.src and not (t.sport ^ tuple_.sport) & mask.sport
            and t.l3num == tuple_.l3num and t.protonum == tuple_.protonum
            and t.dst == tuple_.dst and t.dport == tuple_.dport)


@dataclass
class FakeExpectation:
    """One struct nf_conntrack_expect: tuple and mask as ctnetlink wrote
    them (ctnetlink_alloc_expect() copies both), the master's original
    tuple and ``assign_helper`` (exp->helper, from CTA_EXPECT_HELP_NAME)."""

    tuple: Tuple
    mask: Mask
    master: ConnTuple
    klass: int
    flags: int
    expires: float
    assign_helper: str | None
    seq: int
    written: KernelExpectation = field(repr=False)  # the request, for what ctnetlink reports of it
    helper: str = "sip"  # the master's helper

    @classmethod
    def of(cls, exp: KernelExpectation, master: ConnTuple, expires: float, assign_helper: str | None, seq: int,
           helper: str = "sip") -> FakeExpectation:
        return cls(Tuple.of_request(exp), Mask.of_request(exp), master, exp.klass, exp.flag_bits, expires,
                   assign_helper, seq, exp, helper)

    def kernel(self, now: float) -> KernelExpectation:
        """As a ctnetlink dump or event reports it."""
        m = self.master
        return dataclasses.replace(self.written, master=MasterTuple(m.src, m.dst, m.sport, m.dport, m.proto),
                                   timeout=max(0, int(self.expires - now)), helper=self.helper, id=self.seq)

    @property
    def value(self) -> Expectation:
        """The spec's view of it, to hold the two tables side by side."""
        return dataclasses.replace(to_spec(self.kernel(0.0), 0.0), expires=self.expires)


def expect_matches(a: FakeExpectation, b: FakeExpectation) -> bool:
    """expect_matches(): nf_ct_tuple_equal() and nf_ct_tuple_mask_equal() (one namespace, one zone)."""
    return a.tuple == b.tuple and a.mask == b.mask


def expect_clash(a: FakeExpectation, b: FakeExpectation) -> bool:
    """expect_clash(): equal on the part both masks cover."""
    return tuple_mask_cmp(a.tuple, b.tuple, Mask(a.mask.src & b.mask.src, a.mask.sport & b.mask.sport))


def _master_tuple(exp: KernelExpectation) -> ConnTuple:
    m = exp.master
    return ConnTuple(m.src, m.dst, m.proto, m.sport or 0, m.dport or 0)


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
    reply: ConnTuple = None  # type: ignore[assignment]  # ct->tuplehash[IP_CT_DIR_REPLY]: NAT's binding
    local: bool = False  # to the router itself (input, not forward: the nft helper rule never sees it)
    seq_adj: list[SeqAdj] = field(default_factory=lambda: [SeqAdj(), SeqAdj()])  # nf_conn_seqadj.seq[dir]
    next_seq: list[int] = field(default_factory=lambda: list(ISN))  # each end's next sequence number (TCP)

    def __post_init__(self) -> None:
        if self.reply is None:
            self.reply = self.original.reply()

    def bind(self, reply: ConnTuple) -> None:
        """The NAT binding; nf_nat_setup_info() sets the bit of each manip that changed the tuple."""
        self.reply = reply
        if reply.src != self.original.dst or reply.sport != self.original.dport:
            self.status |= IPS_DST_NAT
        if reply.dst != self.original.src or reply.dport != self.original.sport:
            self.status |= IPS_SRC_NAT

    def tuple_for(self, reply: bool) -> ConnTuple:
        return self.reply if reply else self.original

    def leaving(self, reply: bool) -> ConnTuple:
        """The packet's tuple after the nat hooks: the inverse of the other direction's."""
        return self.tuple_for(not reply).reply()

    def facts(self) -> KernelConntrack:
        return KernelConntrack(socket.AF_INET if self.original.family == 4 else socket.AF_INET6,
                               self.original, self.reply, self.id, self.status, 0, helper=self.helper,
                               helper_info=self.helper_info if self.helper else None, master=self.master,
                               seq_adj=tuple(self.seq_adj) if self.status & IPS_SEQ_ADJUST else None)

    def seq_adjust(self, reply: bool, data: bytes) -> tuple[bytes, int]:
        """nf_ct_seq_adjust(): the segment with its sequence number moved by
        this direction's record and its ACK back by the other's (no SACK:
        the lab's stacks send none here), and the shift."""
        l4 = parse_packet(data)
        if l4.proto != IPPROTO_TCP or not self.status & IPS_SEQ_ADJUST:
            return data, 0
        this, other = self.seq_adj[reply], self.seq_adj[not reply]
        shift = this.offset(l4.tcp_seq)
        ack = struct.unpack_from("!I", data, l4.l4_offset + 8)[0]
        ackoff = other.offset_after if _after(ack - other.offset_before, other.correction_pos) else other.offset_before
        out = bytearray(data)
        struct.pack_into("!II", out, l4.l4_offset + 4, (l4.tcp_seq + shift) & 0xFFFFFFFF, (ack - ackoff) & 0xFFFFFFFF)
        return bytes(out), shift


def _after(seq1: int, seq2: int) -> bool:
    """after() of include/net/tcp.h."""
    d = (seq2 - seq1) & 0xFFFFFFFF
    return d != 0 and d & 0x80000000 != 0


@dataclass
class StepOutcome:
    delivered: bool | None  # None for a wait step
    decisions: list[Decision] = field(default_factory=list)
    table: list[Expectation] = field(default_factory=list)  # the kernel's after the step
    shadow: list[Expectation] = field(default_factory=list)  # the helper's spec after the step
    left: list[bytes] = field(default_factory=list)  # the step's packets as they left the router
    shifts: list[int] = field(default_factory=list)  # TCP: what seqadj added to each one's sequence number


class FakeKernel:
    """The kernel around the helper, and the helper's KernelPort."""

    def __init__(self, core: HelperCore, ports: tuple[int, ...] = (5060,), helper: str = "sip",
                 nat: NatTopology | None = None, router_owns: Callable[[Address], bool] | None = None) -> None:
        self.core = core
        self.ports = ports
        self.helper = helper
        self.nat = NatTopology() if nat is None else nat
        self.router_owns = router_owns  # the router's own addresses: a packet to one is delivered to it
        self.now = 0.0
        self.conntracks: dict[ConnTuple, tuple[FakeConntrack, bool]] = {}
        self.expectations: list[FakeExpectation] = []  # oldest first; the hash chains are walked newest first
        self.events: list[KernelExpectation] = []  # destroy events not yet delivered
        self._ids = itertools.count(1000)
        # nf_ct_get_id() hashes the nf_conn's address and original tuple; the
        # slab gives a freed conntrack's address to the next one, so the next
        # conntrack on a freed one's tuple gets its id again (False: never).
        self.recycle_ids = True
        self._freed_ids: dict[ConnTuple, int] = {}
        self._packet_ids = itertools.count(1)
        self._seq = itertools.count(1)
        self.refusals: list[tuple[KernelExpectation, int]] = []  # ctnetlink requests refused, with the errno
        self.passes = 0
        self.walker: Walker | None = None  # the walk of the dialog run_dialog() runs
        self.walked = 0  # its steps so far
        self.verdict_payloads: list[bytes | None] = []  # NFQA_PAYLOAD of each verdict
        self.verdict_cts: list[bool] = []  # whether each verdict carried NFQA_CT
        self.updates: list[tuple[ConnTuple, bool, SeqAdj]] = []  # ctnetlink conntrack updates with a seqadj
        self.refuse_updates: int | None = None  # the errno every conntrack update gets (None: none)

    # -- the table ---------------------------------------------------------------------------
    def table(self) -> list[Expectation]:
        return [e.value for e in self.expectations]

    def plant(self, exp: KernelExpectation, expires: float) -> None:
        """An expectation someone else made (another helper's master), taken as it is."""
        self.expectations.append(FakeExpectation.of(exp, _master_tuple(exp), expires, None, next(self._seq)))

    def _find(self, t: Tuple) -> FakeExpectation | None:
        """__nf_ct_expect_find(): the newest expectation whose masked tuple covers ``t``."""
        for e in reversed(self.expectations):
            if tuple_mask_cmp(t, e.tuple, e.mask):
                return e
        return None

    def _destroy(self, e: FakeExpectation) -> None:
        """nf_ct_unlink_expect(): IPEXP_DESTROY."""
        self.expectations.remove(e)
        self.events.append(e.kernel(self.now))

    def _related(self, exp: KernelExpectation, master: FakeConntrack, assign_helper: str | None) -> int:
        """nf_ct_expect_related_report(exp, ..., 0): 0 or the errno. Both
        ctnetlink_create_expect() and ctnetlink_glue_attach_expect() pass no
        NF_CT_EXP_F_SKIP_MASTER."""
        new = FakeExpectation.of(exp, master.original, 0.0, assign_helper, 0, master.helper or self.helper)
        # __nf_ct_expect_check(): the walk of the destination's hash chain, newest first.
        for i in reversed(self.expectations):
            if i.master == new.master and expect_matches(i, new):  # master_matches() && expect_matches()
                if i.klass != new.klass:
                    return errno.EALREADY
                self._destroy(i)
                break
            if expect_clash(i, new):
                return errno.EBUSY
        policy = SIP_EXPECT_POLICY[ExpectClass(new.klass)]  # what the daemon registers (sip_exp_policy[])
        expecting = [i for i in self.expectations if i.master == new.master and i.klass == new.klass]
        if policy.max_expected and len(expecting) >= policy.max_expected:
            self._destroy(expecting[0])  # evict_oldest_expect(): the last of help->expectations
        new.expires, new.seq = self.now + policy.timeout, next(self._seq)  # nf_ct_expect_insert()
        self.expectations.append(new)
        return 0

    def _answer(self, exp: KernelExpectation, err: int) -> None:
        """A netlink ACK: nothing, or the errno as NetlinkError."""
        if err:
            self.refusals.append((exp, err))
            raise NetlinkError(err, "fake kernel")

    # -- KernelPort: ctnetlink -------------------------------------------------------------------
    def create_expectation(self, exp: KernelExpectation) -> None:
        """ctnetlink_new_expect() with NLM_F_CREATE|NLM_F_EXCL: EEXIST when an
        expectation covers the tuple, else ctnetlink_create_expect(), whose
        nf_conntrack_find_get() sees confirmed conntracks only."""
        if self._find(Tuple.of_request(exp)) is not None:
            return self._answer(exp, errno.EEXIST)
        found = self.conntracks.get(_master_tuple(exp))
        if found is None or not found[0].status & IPS_CONFIRMED:
            return self._answer(exp, errno.ENOENT)
        return self._answer(exp, self._related(exp, found[0], None))

    def delete_expectation(self, exp: KernelExpectation) -> None:
        """ctnetlink_del_expect(): the one nf_ct_expect_find_get() finds for CTA_EXPECT_TUPLE."""
        found = self._find(Tuple.of_request(exp))
        if found is None:
            return self._answer(exp, errno.ENOENT)
        self._destroy(found)

    def set_expectation_timeout(self, exp: KernelExpectation, seconds: int) -> None:
        """ctnetlink_new_expect() without NLM_F_CREATE: ctnetlink_change_expect()."""
        found = self._find(Tuple.of_request(exp))
        if found is None:
            return self._answer(exp, errno.ENOENT)
        found.expires = self.now + seconds

    def dump_expectations(self) -> list[KernelExpectation]:
        """ctnetlink_exp_dump_table()"""
        return [e.kernel(self.now) for e in self.expectations]

    def get_conntracks(self, originals: Iterable[ConnTuple]) -> dict[ConnTuple, KernelConntrack]:
        """ctnetlink_get_conntrack() of each original tuple."""
        out = {}
        for o in originals:
            found = self.conntracks.get(o)
            if found is not None and not found[1]:
                out[o] = found[0].facts()
        return out

    def update_conntrack(self, packet: QueuedPacket, *, timeout: int | None, helper_info: bytes | None,
                         reply: bool, seq: SeqAdj) -> None:
        """ctnetlink_new_conntrack() without NLM_F_CREATE on the packet's
        conntrack: nf_conntrack_find_get() sees confirmed ones only (ENOENT),
        then ctnetlink_change_conntrack(): helper data, timeout, seqadj."""
        assert packet.ct is not None
        found = self.conntracks.get(packet.ct.original)
        if found is None or not found[0].status & IPS_CONFIRMED:
            raise NetlinkError(errno.ENOENT, "fake kernel")
        if self.refuse_updates is not None:
            raise NetlinkError(self.refuse_updates, "fake kernel")
        ct = found[0]
        if helper_info is not None and ct.master is None:
            ct.helper_info = helper_info
        if timeout is not None:
            ct.timeout_at = self.now + timeout
        ct.seq_adj[reply] = seq  # ctnetlink_change_seq_adj()
        ct.status |= IPS_SEQ_ADJUST
        self.updates.append((ct.original, reply, seq))

    # -- KernelPort: nfnetlink_queue ---------------------------------------------------------------
    def send_verdict(self, packet: QueuedPacket, verdict: int, *, ct_timeout: int | None = None,
                     helper_info: bytes | None = None, exp: KernelExpectation | None = None,
                     exp_helper: str | None = None, payload: bytes | None = None, conntrack: bool = True) -> None:
        """nfqnl_recv_verdict(): NFQA_CT first (ctnetlink_glue_parse_ct()),
        then NFQA_EXP (ctnetlink_glue_attach_expect(): its master is the
        packet's conntrack; its errors are not reported back; read only with
        NFQA_CT), then NFQA_PAYLOAD (nfqnl_mangle(): the packet that leaves)
        and, with NFQA_CT, its length change to seq_adjust."""
        assert packet.ct is not None
        self.verdict_payloads.append(payload)
        self.verdict_cts.append(conntrack)
        ct = self.conntracks[packet.ct.original][0]
        if not conntrack:
            return
        if ct_timeout is not None:
            ct.timeout_at = self.now + ct_timeout  # ctnetlink_change_timeout()
        if helper_info is not None and ct.master is None:
            ct.helper_info = helper_info  # nfnl_cthelper_from_nlattr(); not for expected conntracks
        if exp is not None:
            self._related(exp, ct, exp_helper)
        diff = 0 if payload is None else len(payload) - len(packet.payload)
        if diff and ct.status & IPS_NAT_MASK and ct.original.proto == IPPROTO_TCP:
            # ctnetlink_glue_seqadj() -> nf_ct_tcp_seqadj_set(): the TCP header
            # at skb_network_header() + ip_hdrlen(), which reads an IPv6
            # packet's traffic class as an IHL.
            th = (payload[0] & 0x0F) * 4
            seq = struct.unpack_from("!I", payload, th + 4)[0]
            reply = packet.ctinfo is not None and packet.ctinfo >= IP_CT_IS_REPLY
            ct.status |= IPS_SEQ_ADJUST
            ct.seq_adj[reply] = ct.seq_adj[reply].set(seq, diff)

    # -- time ---------------------------------------------------------------------------------
    def advance(self, seconds: float) -> None:
        self.now += seconds
        for e in [e for e in self.expectations if e.expires <= self.now]:
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
    def _conntrack_for(self, src, sport, dst, dport, proto) -> tuple[FakeConntrack, bool]:
        t = ConnTuple(src, dst, proto, sport, dport)
        found = self.conntracks.get(t)
        if found is not None:
            return found
        recycled = self._freed_ids.pop(t, None) if self.recycle_ids else None
        ct = FakeConntrack(next(self._ids) if recycled is None else recycled, t, first_seen=self.now)
        exp = self._find_expectation(Tuple.of_connection(t))
        if exp is not None:
            ct.status |= IPS_EXPECTED
            ct.master = exp.master
            ct.helper = exp.assign_helper
        ct.bind(self._bind(t, exp))
        ct.local = self.router_owns is not None and self.router_owns(ct.reply.src)
        if ct.helper is None and not ct.local and ct.reply.sport in self.ports:
            ct.helper = self.helper  # nft: ct helper set on the first packet, after prerouting's DNAT
        self.conntracks[t] = (ct, False)
        self.conntracks[ct.reply] = (ct, True)
        return ct, False

    def _bind(self, t: ConnTuple, exp: FakeExpectation | None) -> ConnTuple:
        """The reply tuple of a new conntrack: nf_nat_sip_expected() for one
        that matched an expectation with expectfn "sip" - DST to the saved
        address and port; for media, SRC to the tuple of the master's
        expectation whose saved address and port are the connection's source,
        else to where the master sends, when it comes from the master's
        peer - then the nat chains for the manip types left (nf_nat_inet_fn())."""
        dst = src = None
        written = None if exp is None else exp.written
        if written is not None and written.fn == "sip" and written.nat is not None:
            dst = (written.nat.src, written.nat.sport or 0)
            if exp.klass != int(ExpectClass.SIGNALLING):
                for pair in reversed(self.expectations):  # help->expectations: newest first
                    n = pair.written.nat
                    if pair.master == exp.master and pair.tuple.protonum == t.proto and n is not None \
                            and n.src == t.src and (n.sport or 0) == t.sport:
                        src = (pair.written.tuple.dst, pair.written.tuple.dport)
                        break
            master = self.conntracks[exp.master][0]
            if src is None and t.src == master.tuple_for(bool(written.nat.dir)).src:
                src = (master.tuple_for(not written.nat.dir).dst, None)
        if not self.nat and dst is None:
            return t.reply()
        keys = [(c.src, c.dst, c.proto, c.sport, c.dport) for c in self.conntracks]
        return self.nat.bind(t, dst=dst, src=src, in_use=keys)

    def _find_expectation(self, t: Tuple) -> FakeExpectation | None:
        """nf_ct_find_expectation() for init_conntrack(): the newest
        expectation that is not NF_CT_EXPECT_INACTIVE and whose masked tuple
        covers ``t``; none if its master is unconfirmed. It goes, unless
        NF_CT_EXPECT_PERMANENT."""
        for e in reversed(self.expectations):
            if not e.flags & NF_CT_EXPECT_INACTIVE and tuple_mask_cmp(t, e.tuple, e.mask):
                break
        else:
            return None
        master = self.conntracks.get(e.master)
        if master is None or not master[0].status & IPS_CONFIRMED:
            return None
        if not e.flags & NF_CT_EXPECT_PERMANENT:
            self._destroy(e)
        return e

    def send(self, src, sport, dst, dport, proto, payload: bytes = b"", flags: int = TCP_ACK) -> StepOutcome:
        """One packet through the router; True if it was let through."""
        ct, reply = self._conntrack_for(src, sport, dst, dport, proto)
        outcome = StepOutcome(True)
        self._l4_refresh(ct, reply, proto, flags)
        if reply:
            ct.status |= IPS_SEEN_REPLY
        if ct.local:
            ct.status |= IPS_CONFIRMED
            self.deliver_events()
            return StepOutcome(False)  # the router's own: no receiver gets it
        seq = ct.next_seq[reply]
        if proto == IPPROTO_TCP:
            ct.next_seq[reply] += len(payload) + bool(flags & TCP_SYN) + bool(flags & TCP_FIN)
        if ct.helper is None:
            ct.status |= IPS_CONFIRMED
            self.deliver_events()
            out = ct.leaving(reply)
            left, shift = ct.seq_adjust(reply, build_packet(out.src, out.sport, out.dst, out.dport, proto, payload,
                                                            flags, seq))
            outcome.left.append(left)
            outcome.shifts.append(shift)
            return outcome
        out = ct.leaving(reply)
        data = build_packet(out.src, out.sport, out.dst, out.dport, proto, payload, flags, seq)
        new = not ct.status & IPS_CONFIRMED
        ctinfo = (IP_CT_NEW if new else IP_CT_ESTABLISHED) + (IP_CT_IS_REPLY if reply else 0)
        while True:
            self.passes += 1
            # nfqnl_build_packet_message(): at most copy_range (NFQNL_MAX_COPY_RANGE) bytes, and the length.
            pkt = QueuedPacket(0, socket.AF_INET if src.version == 4 else socket.AF_INET6, next(self._packet_ids),
                               ETH_P_IP if src.version == 4 else ETH_P_IPV6, 4, data[:MAX_QUEUED], ct.facts(), ctinfo,
                               cap_len=len(data) if len(data) > MAX_QUEUED else None)
            decision = self.core.decide(pkt, self.now)
            outcome.decisions.append(decision)
            verdict = execute(self.core, self, pkt, decision)
            if verdict == NF_REPEAT:
                # nfqnl_reinject() -> nf_confirm_cthelper(): confirmed, and
                # adjusted before the hook queues it again.
                ct.status |= IPS_CONFIRMED
                data = self.verdict_payloads[-1] or data
                data = ct.seq_adjust(reply, data)[0]
                continue
            if verdict == NF_DROP:
                outcome.delivered = False
                if not ct.status & IPS_CONFIRMED:
                    self._free(ct)
            else:
                ct.status |= IPS_CONFIRMED
                left, _ = ct.seq_adjust(reply, self.verdict_payloads[-1] or data)
                outcome.left.append(left)
                outcome.shifts.append((parse_packet(left).tcp_seq - seq + 2**31) % 2**32 - 2**31
                                      if proto == IPPROTO_TCP else 0)
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

    def _free(self, ct: FakeConntrack) -> None:
        self._freed_ids[ct.original] = ct.id
        self.conntracks.pop(ct.original, None)
        self.conntracks.pop(ct.reply, None)
        for e in [e for e in self.expectations if e.master == ct.original]:
            self.expectations.remove(e)

    def kill(self, original: ConnTuple) -> None:
        """conntrack -D: the master and its expectations go (nf_ct_remove_expectations)."""
        found = self.conntracks.get(original)
        if found is not None:
            self._freed_ids[original] = found[0].id
            self.conntracks.pop(found[0].reply, None)
        self.conntracks.pop(original, None)
        for e in [e for e in self.expectations if e.master == original]:
            self._destroy(e)
        self.deliver_events()


class _FakeKernelSteps:
    """The fake kernel's StepVisitor (sipct.spec.walk): each step as the
    packets the lab would send through the router. Senders address the
    receiver's face across the NAT (the lab's and the spec's ``dialled()``);
    a TCP connection's packets keep its tuples (the handle: the client's)."""

    def __init__(self, kernel: FakeKernel, dialog: Dialog) -> None:
        self.kernel, self.dialog, self.hosts = kernel, dialog, dialog.hosts

    def _send(self, t: ConnTuple, payload: bytes = b"", flags: int = TCP_ACK) -> StepOutcome:
        return self.kernel.send(t.src, t.sport, t.dst, t.dport, t.proto, payload, flags)

    def _back(self, t: ConnTuple) -> ConnTuple:
        """The other direction's tuple of the connection ``t`` travels on."""
        ct, reply = self.kernel.conntracks[t]
        return ct.tuple_for(not reply)

    def _wire(self, step: Send | Connect, connection) -> ConnTuple:
        proto = step.proto if isinstance(step, Send) else IPPROTO_TCP
        if connection is not None:
            return connection.handle if connection.from_client(step) else self._back(connection.handle)
        dst, dport = dialled(self.dialog, step, proto)
        return ConnTuple(self.hosts[step.src.host], dst, proto, step.src.port, dport)

    def wait(self, index, step: Wait, now: float) -> StepOutcome:
        self.kernel.advance(step.seconds)
        return StepOutcome(None)

    def delete_conntrack(self, index, step: DeleteConntrack, now: float) -> StepOutcome:
        kernel, hosts = self.kernel, self.hosts
        found = kernel.conntracks.get(ConnTuple(hosts[step.src.host], hosts[step.dst.host], step.proto,
                                                step.src.port, step.dst.port))
        if found is not None:
            kernel.kill(found[0].original)
            kernel.deliver_events()
        return StepOutcome(None)

    def connect(self, index, step: Connect, now: float) -> tuple[StepOutcome, ConnTuple]:
        t = self._wire(step, None)
        outcome = self._send(t, b"", TCP_SYN)
        self._send(self._back(t), b"", TCP_SYN | TCP_ACK)
        self._send(t, b"", TCP_ACK)
        return outcome, t

    def send(self, index, step: Send, now: float, segments, connection) -> tuple[StepOutcome, bool]:
        outcome = StepOutcome(True)
        t = self._wire(step, connection)
        for segment in segments:
            one = self._send(t, segment)
            outcome.decisions += one.decisions
            outcome.left += one.left
            outcome.shifts += one.shifts
            if not one.delivered:
                outcome.delivered = False
                break
        if any(parse_packet(p).dst != self.hosts[step.dst.host] for p in outcome.left):
            outcome.delivered = False  # NAT sent it to another host (an expectation's saved address)
        return outcome, not outcome.delivered

    def abort(self, index, step: Send, now: float, connection, outcome: StepOutcome) -> StepOutcome:
        # SO_LINGER 0: an RST from each end crosses the router (harness/drivers.py).
        t = self._wire(step, connection)
        self._send(self._back(t), b"", TCP_RST | TCP_ACK)
        self._send(t, b"", TCP_RST | TCP_ACK)
        return outcome

    def silent(self, index, step: Send, now: float) -> StepOutcome:
        return StepOutcome(False)


def run_dialog(kernel: FakeKernel, dialog: Dialog, steps=None) -> list[StepOutcome]:
    """Each step of the dialog through the fake kernel, with the tables after
    it; called again for the same dialog (after a restart) it goes on with
    the same walk."""
    if kernel.walker is None or kernel.walker.dialog is not dialog:
        kernel.walker, kernel.walked = Walker(dialog, LAB_WIRE, _FakeKernelSteps(kernel, dialog)), 0
    out: list[StepOutcome] = []
    for step in (dialog.steps if steps is None else steps):
        outcome = kernel.walker.step(kernel.walked, step)
        kernel.walked += 1
        outcome.table = kernel.table()
        outcome.shadow = kernel.core.shadow.expectations()
        out.append(outcome)
    return out


def identities(table) -> list[tuple]:
    """The rows of a table (the spec's expectation_key) with their flags, in order."""
    return sorted((expectation_key(e), int(e.flags)) for e in table)


__all__ = ["FakeConntrack", "FakeExpectation", "FakeKernel", "Mask", "StepOutcome", "Tuple", "identities", "run_dialog",
           "tuple_mask_cmp"]
