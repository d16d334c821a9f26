"""The SIP helper of one network namespace: conntracks in, verdicts out.

:class:`SipHelper` is the spec's entry point. It owns what the kernel keeps
per namespace - the conntracks that carry the helper (masters) and the
expectation table - and models ``sip_help_udp()`` / ``sip_help_tcp()``.
It is sans-I/O: packets, time (``now``, seconds on any monotonic scale) and the
routing answer for ``sip_external_media`` are all inputs.

Helper attachment follows the lab's nftables rules, not the module's
``ports`` parameter: since Linux 6.0 nothing assigns helpers automatically,
and ``ct helper set`` picks the helper by name, not by port. The spec attaches
the helper to a new conntrack whose first packet goes to one of
``params.ports`` - exactly the rule the harness installs.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from . import rules
from .expectation import IPPROTO_TCP, IPPROTO_UDP, Address, ConnTuple, Expectation, ExpectClass, ExpectTuple
from .handlers import PacketContext, SameInterface, Verdict, process_sip_msg
from .machines import CONNECTION, Runtime
from .master import Master
from .params import DEFAULT_PARAMS, ModuleParams
from .parse import SIP_HDR_CONTENT_LENGTH, SipMessage
from .profiles import DEFAULT_PROFILE, KernelProfile
from .rules import Rule
from .scan import simple_strtoul
from .natmap import NatTopology
from .natsip import NatUnpredictable, nat_sip_expected
from .table import Entry, ExpectationTable, TableEvent
from .trace import Firing, Trace
from .values import value

# Conntrack timeouts of the L4 trackers (nf_conntrack_proto_udp.c / _tcp.c
# defaults). They only decide when a conntrack without payload refresh dies.
UDP_TIMEOUT_UNREPLIED = 30
UDP_TIMEOUT_REPLIED = 120
TCP_TIMEOUT_SYN_SENT = 120
TCP_TIMEOUT_ESTABLISHED = 5 * 24 * 3600
TCP_TIMEOUT_CLOSE = 10


def _key(t: ConnTuple) -> tuple:
    return (t.src, t.dst, t.proto, t.sport, t.dport)


def _reply_key(t: ConnTuple) -> tuple:
    """_key(t.reply())"""
    return (t.dst, t.src, t.proto, t.dport, t.sport)


class SpecError(ValueError):
    """The caller asked something the kernel could never see (e.g. TCP data on
    a connection that was never opened)."""


@value
class Packet:
    src: Address
    sport: int
    dst: Address
    dport: int
    proto: int
    payload: bytes = b""

    @property
    def tuple(self) -> ConnTuple:
        return ConnTuple(self.src, self.dst, self.proto, self.sport, self.dport)


@dataclass(eq=False, slots=True)
class Conntrack:
    original: ConnTuple
    timeout_at: float
    master: Master | None = None  # helper data, when the SIP helper is attached
    expected_from: Expectation | None = None
    # ct->proto.udp.stream_ts (nf_conntrack_udp_packet): 2 s after the first packet.
    udp_stream_ts: float = float("-inf")
    connection: Runtime = field(default_factory=lambda: Runtime(CONNECTION))
    reply: ConnTuple | None = None  # ct->tuplehash[IP_CT_DIR_REPLY]; None: original.reply()
    local: bool = False  # bound to one of the router's own addresses: delivered to the router, not forwarded
    # struct nf_ct_seqadj per direction (original, reply): the summed NAT length changes so far.
    seq_offset: list[int] | None = None

    translated: bool = False  # IPS_NAT_MASK: the reply tuple is not the original's inverse

    def __post_init__(self) -> None:
        if self.reply is None:
            self.reply = self.original.reply()
        else:
            self.translated = self.reply != self.original.reply()

    def leaving(self, reply: bool) -> ConnTuple:
        """The tuple a packet of this direction leaves the router with: NAT
        makes it the inverse of the other direction's tuple."""
        other = self.original if reply else self.reply
        return other.reply()  # type: ignore[union-attr]

    @property
    def seen_reply(self) -> bool:
        """IPS_SEEN_REPLY"""
        return self.connection.state == "replied"


@dataclass(eq=False, slots=True)
class ConntrackContext:
    """What a :class:`~sipct.spec.machines.ConnectionMachine` event carries."""

    helper: "SipHelper"
    ct: Conntrack
    reply: bool
    pkt: "Packet | None"
    now: float
    trace: Trace
    payload: bytes | None = None  # the payload as NAT rewrote it (None: untouched)
    forced_dport: int = 0  # nf_nat_sip()'s destination port of a reply
    seq_shift: int = 0  # the sequence-number shift of this segment (TCP under NAT)
    seq_adjust: bool = True  # sip_help_tcp() reaches its seq_adjust call
    unconfirmed: bool = False  # the packet created the conntrack: !nf_ct_is_confirmed(ct) until it is accepted


@value
class PacketResult:
    """What the helper did with one packet."""

    accepted: bool
    drop_rule: Rule | None
    firings: tuple[Firing, ...]
    events: tuple[TableEvent, ...]
    new_conntrack: bool
    helper_attached: bool
    related_to: Expectation | None = None
    transitions: tuple[tuple[str, str, str], ...] = ()
    # How the packet leaves the router when NAT changed it (None: as it came):
    # its tuple after NAT and its payload after nf_nat_sip's rewrites.
    out_tuple: ConnTuple | None = None
    out_payload: bytes | None = None
    seq_shift: int = 0  # TCP: what seqadj adds to this segment's sequence number
    local: bool = False  # addressed to the router itself: not forwarded
    filtered: bool = False  # dropped by the router's forward policy before the helper saw it

    @property
    def rule_ids(self) -> list[str]:
        return [f.rule.id for f in self.firings]


@dataclass
class SipHelper:
    params: ModuleParams = DEFAULT_PARAMS
    profile: KernelProfile = DEFAULT_PROFILE
    same_interface: SameInterface | None = None
    nat: NatTopology = field(default_factory=NatTopology)
    # Whether an address is the router's own (routing is the caller's: the spec is pure).
    router_owns: Callable[[Address], bool] | None = None
    # The router's forward policy: "accept", or "drop" - then only packets of
    # established and related connections, to the SIP ports, or port-forwarded
    # pass (the lab's nft chain; the helper never sees what it drops).
    forward_policy: str = "accept"
    # nf_nat_exp_find_port() tries random ports once a REGISTER's NAT port is
    # taken (-EBUSY): ``choice(expectation, attempt)`` is the kernel's draw
    # (attempt 1..128), or None for no more. The caller's, as time is: a fuzz
    # check knows it from the kernel's event, a userspace helper makes it;
    # without one the spec says NatUnpredictable.
    nat_port_choice: Callable[[ExpectTuple, int], int | None] | None = None
    table: ExpectationTable = field(init=False)
    # Both directions of every conntrack, keyed by the tuple's fields (see
    # _key): building a ConnTuple per packet just to look it up costs more
    # than the lookup.
    _conntracks: dict[tuple, tuple[Conntrack, bool]] = field(init=False, default_factory=dict)
    _now: float = field(init=False, default=float("-inf"))
    _deadlines: list[tuple[float, int, Conntrack]] = field(init=False, default_factory=list)  # a heap
    _pushes: Iterator[int] = field(init=False, default_factory=itertools.count)

    def __post_init__(self) -> None:
        self.table = ExpectationTable(self.params.expect_max)

    # --- reading -----------------------------------------------------------------
    def expectations(self) -> list[Expectation]:
        return self.table.snapshot()

    def masters(self) -> list[Master]:
        seen: dict[int, Master] = {}
        for ct, _ in self._conntracks.values():
            if ct.master is not None:
                seen[id(ct.master)] = ct.master
        return list(seen.values())

    def conntrack(self, tuple_: ConnTuple) -> Conntrack | None:
        found = self._conntracks.get(_key(tuple_))
        return found[0] if found else None

    # --- time ----------------------------------------------------------------------
    def advance(self, now: float, trace: Trace | None = None) -> Trace:
        """Let time pass: expired expectations and conntracks go."""
        trace = trace if trace is not None else Trace()
        if now < self._now:
            raise SpecError(f"time went backwards: {now} < {self._now}")
        self._now = now
        self.table.advance(now, trace)
        while self._deadlines and self._deadlines[0][0] <= now:
            timeout_at, _, ct = heapq.heappop(self._deadlines)
            if ct.timeout_at == timeout_at and self._conntracks.get(_key(ct.original), (None,))[0] is ct:
                self._destroy(ct, rules.MASTER_TIMEOUT, now, trace)
        return trace

    def _set_timeout(self, ct: Conntrack, timeout_at: float) -> None:
        ct.timeout_at = timeout_at
        heapq.heappush(self._deadlines, (timeout_at, next(self._pushes), ct))
        if len(self._deadlines) > 64 + 4 * len(self._conntracks):
            # Every refresh leaves a stale entry behind; rebuild from the live
            # conntracks before they outnumber them (a long-running reference
            # helper refreshes on every message).
            live = {id(c): c for c, _ in self._conntracks.values()}
            live[id(ct)] = ct
            self._deadlines = [(c.timeout_at, next(self._pushes), c) for c in live.values()]
            heapq.heapify(self._deadlines)

    # --- packets ---------------------------------------------------------------------
    def tcp_connect(self, client: Address, cport: int, server: Address, sport: int, now: float) -> PacketResult:
        """The three-way handshake: the SYN creates the conntrack (and may match
        an expectation), the SYN-ACK is the reply that makes it ESTABLISHED; no
        payload, so the helper itself does nothing."""
        result = self.packet(Packet(client, cport, server, sport, IPPROTO_TCP), now, syn=True)
        found = self._conntracks.get((client, server, IPPROTO_TCP, cport, sport))
        back = found[0].reply if found is not None else ConnTuple(server, client, IPPROTO_TCP, sport, cport)
        assert back is not None
        self.packet(Packet(back.src, back.sport, back.dst, back.dport, IPPROTO_TCP), now, syn=True)
        return result

    def tcp_reset(self, a: Address, aport: int, b: Address, bport: int, now: float) -> Trace:
        """An RST crosses the conntrack of a TCP connection: it moves to CLOSE and
        dies 10 s later (tcp_timeouts[TCP_CONNTRACK_CLOSE]), with its expectations."""
        trace = self.advance(now)
        found = self._conntracks.get((a, b, IPPROTO_TCP, aport, bport))
        if found is not None:
            self._set_timeout(found[0], now + TCP_TIMEOUT_CLOSE)
        return trace

    def packet(self, pkt: Packet, now: float, *, syn: bool = False) -> PacketResult:
        trace = self.advance(now)
        journal_start = len(self.table.journal)
        found = self._conntracks.get((pkt.src, pkt.dst, pkt.proto, pkt.sport, pkt.dport))
        new = found is None
        if found is None:
            # TCP data without a conntrack (it timed out or was flushed while the
            # connection lived) is picked up mid-stream (nf_conntrack_tcp_loose).
            ct = self._create(pkt, now, trace)
            reply = False
        else:
            ct, reply = found
        self._l4_refresh(ct, pkt, now, syn)
        ctx = ConntrackContext(self, ct, reply, pkt, now, trace, unconfirmed=new)
        connection = ct.connection
        if reply:
            # nf_conntrack_in() sets IPS_SEEN_REPLY only after the L4 tracker has
            # run (nf_conntrack_core.c: "if (set_reply && !test_and_set_bit(
            # IPS_SEEN_REPLY_BIT, ...))" follows nf_conntrack_handle_packet()):
            # the first reply still gets the unreplied timeout.
            connection.send("reply", ctx)
        verdict: Verdict = None
        if ct.local:
            return self._result(ctx, None, trace, journal_start, new, local=True)
        if self.forward_policy == "drop" and not self._forwarded(ct, reply):
            if new:
                # Dropped before the confirm hook: the conntrack never lives.
                self.unlink_conntrack(ct, rules.UNCONFIRMED_DROP, Trace())
            return self._result(ctx, None, trace, journal_start, new, filtered=True)
        # sip_help_tcp() keeps no stream state: after it dropped a segment, the
        # later segments of that direction (and each retransmission of the
        # dropped one) are helped on their own, although the receiver's TCP
        # holds them back behind the missing bytes.
        if ct.master is not None and pkt.payload:
            verdict = connection.send("payload", ctx)
            if verdict is not None:
                connection.send("drop", ctx)
        elif ct.master is not None:
            trace.fire(rules.NO_PAYLOAD)
        return self._result(ctx, verdict, trace, journal_start, new)

    def _forwarded(self, ct: Conntrack, reply: bool) -> bool:
        """The forward chain under policy drop: ``ct state established,related``
        (ctinfo: a reply, a reply seen, or expected), the SIP ports after
        destination NAT (``th dport``), ``ct status dnat``."""
        if reply or ct.seen_reply or ct.expected_from is not None:
            return True
        assert ct.reply is not None
        return ct.reply.sport in self.params.ports or ct.reply.src != ct.original.dst

    def _result(self, ctx: ConntrackContext, verdict: Verdict, trace: Trace, journal_start: int, new: bool, *,
                local: bool = False, filtered: bool = False) -> PacketResult:
        ct, pkt, table = ctx.ct, ctx.pkt, self.table
        assert pkt is not None
        out_tuple = None
        if ct.translated or ctx.forced_dport:
            out_tuple = ct.leaving(ctx.reply)
            if ctx.forced_dport:
                out_tuple = ConnTuple(out_tuple.src, out_tuple.dst, out_tuple.proto, out_tuple.sport,
                                      ctx.forced_dport)
        return PacketResult(
            accepted=verdict is None,
            drop_rule=verdict,
            firings=tuple(trace.firings),
            # ctnetlink_events() inline where no refresh needs leaving out: a
            # call per packet cost 0.8% of bench/spec_core.py's instructions (callgrind).
            events=table.ctnetlink_events(journal_start) if table.refreshed_at >= journal_start
            else tuple(table.journal[journal_start:]),
            new_conntrack=new,
            helper_attached=ct.master is not None,
            related_to=ct.expected_from if new else None,
            transitions=tuple(trace.transitions),
            out_tuple=out_tuple,
            out_payload=ctx.payload,
            seq_shift=ctx.seq_shift,
            local=local,
            filtered=filtered,
        )

    # --- conntracks the kernel knows and the spec did not see --------------------------------
    def adopt(self, original: ConnTuple, now: float, *, expected: bool = False, seen_reply: bool = False,
              timeout: float | None = None, reply: ConnTuple | None = None,
              seq_offset: tuple[int, int] | None = None) -> Master:
        """A conntrack the kernel tracks with this helper attached although the
        spec did not see it being created: a userspace helper learns of its
        masters from the packets the kernel queues to it and from ctnetlink.

        Returns the conntrack's master. One the spec already has with that
        original tuple is kept as it is; any other conntrack holding either
        direction of the tuple is gone in the kernel and goes here too.
        ``timeout`` is the kernel's remaining conntrack timeout in seconds
        (default: the L4 tracker's unreplied/replied one). ``reply`` is the
        kernel's reply tuple (CTA_TUPLE_REPLY): NAT's binding, which
        nf_nat_sip's hooks follow (default: the inverse of ``original``).
        ``seq_offset`` is the kernel's TCP sequence adjustment per direction
        (original, reply): struct nf_ct_seqadj's offset_after, what later
        segments move by (default: none)."""
        self.advance(now)
        found = self._conntracks.get(_key(original))
        if found is not None and not found[1] and found[0].master is not None:
            return found[0].master
        trace = Trace()
        reply = original.reply() if reply is None else reply
        for key in (_key(original), _reply_key(original), _key(reply)):
            stale = self._conntracks.get(key)
            if stale is not None:
                self._destroy(stale[0], rules.MASTER_TIMEOUT, now, trace)
        ct = Conntrack(original, now, udp_stream_ts=float("-inf") if seen_reply else now + 2,
                       connection=Runtime(CONNECTION, "replied" if seen_reply else "unreplied"), reply=reply,
                       seq_offset=None if seq_offset is None else list(seq_offset))
        ct.master = Master(original, created=now, timeout_at=now, expected=expected, reply=reply)
        ct.master.nat.send("bind", ConntrackContext(self, ct, False, None, now, trace), reply)
        self._conntracks[_key(original)] = (ct, False)
        self._conntracks[_key(reply)] = (ct, True)
        if not timeout or timeout <= 0:
            if original.proto == IPPROTO_TCP:
                timeout = TCP_TIMEOUT_ESTABLISHED
            else:
                timeout = UDP_TIMEOUT_REPLIED if seen_reply else UDP_TIMEOUT_UNREPLIED
        self._set_timeout(ct, now + timeout)
        return ct.master

    def forget(self, original: ConnTuple, now: float, trace: Trace | None = None) -> tuple[TableEvent, ...]:
        """The kernel's conntrack ``original`` is gone (or was replaced by a new
        one with the same tuple): it goes, and its expectations with it
        (nf_ct_remove_expectations). Returns the journal events that caused;
        ``trace`` (when given) records the rules and transitions."""
        self.advance(now)
        start = len(self.table.journal)
        found = self._conntracks.get(_key(original))
        if found is not None and found[0].original == original:
            self._destroy(found[0], rules.MASTER_TIMEOUT, now, trace if trace is not None else Trace())
        return tuple(self.table.journal[start:])

    # --- conntrack bookkeeping -------------------------------------------------------------
    def _create(self, pkt: Packet, now: float, trace: Trace) -> Conntrack:
        """init_conntrack(): match an expectation, then the nft ``ct helper set``
        rule attaches the helper if the conntrack has none yet."""
        original = pkt.tuple
        entry = self.table.match(pkt.src, pkt.sport, pkt.dst, pkt.dport, pkt.proto, now, trace)
        ct = Conntrack(original, now, udp_stream_ts=now + 2, reply=self._bind(original, entry, trace))
        reply = ct.reply
        assert reply is not None
        # The nft `ct helper set` rule is in the forward chain: a packet for the
        # router itself never meets it.
        ct.local = self.router_owns is not None and self.router_owns(reply.src)
        helper = False
        if entry is not None:
            ct.expected_from = entry.value()
            # Only REGISTER's expectations carry assign_helper (the "sip" helper).
            helper = entry.klass == ExpectClass.SIGNALLING
        # The lab's `udp/tcp dport {ports} ct helper set` rule is in the forward
        # chain, which sees the packet after prerouting's destination NAT
        # rewrote it (nf_nat_inet_fn() -> nf_nat_packet(), nf_nat_core.c):
        # the port it matches is the translated one, the reply tuple's source
        # port; nft_ct_helper_obj_eval() (nft_ct.c) then attaches the helper
        # to the still unconfirmed conntrack.
        if not helper and not ct.local and pkt.proto in (IPPROTO_UDP, IPPROTO_TCP) and reply.sport in self.params.ports:
            helper = True
        if helper:
            ct.master = Master(original, created=now, timeout_at=now, expected=entry is not None, reply=reply)
            ct.master.nat.send("bind", ConntrackContext(self, ct, False, pkt, now, trace), reply)
        self._conntracks[_key(original)] = (ct, False)
        self._conntracks[_key(reply)] = (ct, True)
        return ct

    def _bind(self, original: ConnTuple, entry: Entry | None, trace: Trace) -> ConnTuple:
        """The conntrack's NAT binding: nf_nat_sip_expected() for a connection
        that matched a NAT expectation, the router's nat chains for the rest."""
        dst = src = None
        if entry is not None and entry.nat is not None:
            pairs = [(e.tuple, e.nat) for e in reversed(list(self.table.of_master(entry.master))) if e.nat]
            dst, src = nat_sip_expected(original.src, original.sport, original.proto, entry.klass, entry.nat,
                                        entry.master, pairs, trace)
        if not self.nat and dst is None:
            return None  # type: ignore[return-value]  # no NAT: Conntrack makes original.reply()
        return self.nat.bind(original, dst=dst, src=src, in_use=self._conntracks.keys())

    def seq_adjust(self, ct: Conntrack, reply: bool, tdiff: int) -> None:
        """nf_ct_seqadj_set(): later segments of this direction move by tdiff."""
        if ct.seq_offset is None:
            ct.seq_offset = [0, 0]
        ct.seq_offset[reply] += tdiff

    def _l4_refresh(self, ct: Conntrack, pkt: Packet, now: float, syn: bool) -> None:
        if pkt.proto == IPPROTO_TCP:
            # tcp_connect() stands for the whole three-way handshake: its final
            # ACK moves the conntrack SYN_RECV -> ESTABLISHED, whose timeout is
            # tcp_timeouts[TCP_CONNTRACK_ESTABLISHED] (5 days), not SYN_SENT's 2
            # minutes (nf_conntrack_proto_tcp.c: nf_conntrack_tcp_packet()).
            self._set_timeout(ct, now + TCP_TIMEOUT_ESTABLISHED)
        else:
            # nf_conntrack_udp_packet(): UDP_CT_REPLIED only once IPS_SEEN_REPLY is
            # set and the flow is still active 2 s after its first packet
            # (time_after(jiffies, ct->proto.udp.stream_ts)).
            stream = ct.seen_reply and now > ct.udp_stream_ts
            self._set_timeout(ct, now + (UDP_TIMEOUT_REPLIED if stream else UDP_TIMEOUT_UNREPLIED))

    def _destroy(self, ct: Conntrack, rule: Rule, now: float, trace: Trace) -> None:
        ct.connection.send("destroy", ConntrackContext(self, ct, False, None, now, trace), rule)

    def unlink_conntrack(self, ct: Conntrack, rule: Rule, trace: Trace) -> None:
        """The conntrack leaves the table, with its expectations (nf_ct_remove_expectations)."""
        self._conntracks.pop(_key(ct.original), None)
        self._conntracks.pop(_key(ct.reply), None)  # type: ignore[arg-type]
        if ct.master is not None:
            self.table.remove_master(ct.master, rule, self._now, trace)

    # --- sip_help_udp() / sip_help_tcp() ------------------------------------------------------
    def help(self, ctx: ConntrackContext) -> Verdict:
        """The ConnectionMachine's ``help_message``: the helper on one packet's payload."""
        ct, pkt, now, trace = ctx.ct, ctx.pkt, ctx.now, ctx.trace
        assert pkt is not None
        master = ct.master
        assert master is not None
        master.timeout_at = now + self.params.sip_timeout
        self._set_timeout(ct, master.timeout_at)
        trace.fire(rules.REFRESH_MASTER)
        buf = pkt.payload
        verdict: Verdict = None
        if pkt.proto == IPPROTO_TCP and ct.seq_offset is not None:
            # nf_confirm() -> nf_ct_seq_adjust() moves every segment of an
            # IPS_SEQ_ADJUST conntrack, whatever the helper made of it.
            ctx.seq_shift = ct.seq_offset[ctx.reply]
        if len(buf) < len(b"SIP/2.0 200"):
            trace.fire(rules.SHORT_PAYLOAD)
        elif pkt.proto == IPPROTO_UDP:
            msg = SipMessage(buf, 0, len(buf), master.family, pkt.proto, self.profile)
            pctx = PacketContext(msg, master, ctx.reply, self.params, self.table, now, trace, self.same_interface,
                                 pkt.dst if master.nat.state == "plain" else ct.leaving(ctx.reply).dst,
                                 nat_port_choice=self.nat_port_choice)
            verdict = process_sip_msg(pctx)
            if pctx.msg.buf is not buf:
                ctx.payload = pctx.msg.buf
            ctx.forced_dport = pctx.forced_dport
            return verdict
        else:
            verdict = self._help_tcp(master, ctx, pkt, now, trace)
            if verdict is None:
                tdiff = len(ctx.payload) - len(buf) if ctx.payload is not None else 0
                if ctx.seq_adjust:
                    master.nat.send("segment", ctx, tdiff)
                elif tdiff:
                    # The segment left the router longer or shorter than it
                    # came, and seqadj was not told: the two ends' sequence
                    # numbers no longer match, and what the TCP stacks then
                    # do (retransmissions, challenge ACKs, resets) is beyond the helper.
                    raise NatUnpredictable(f"{pkt.tuple}: sip_help_tcp() returned before seq_adjust after "
                                           f"rewrites that changed the segment by {tdiff:+d} bytes")
        if pkt.proto == IPPROTO_TCP and verdict is None:
            # The peer's ACK follows at once; a pure ACK gets the
            # tracker's ESTABLISHED timeout, not sip_timeout.
            self._set_timeout(ct, now + TCP_TIMEOUT_ESTABLISHED)
        return verdict

    def _help_tcp(self, master: Master, cctx: ConntrackContext, pkt: Packet, now: float, trace: Trace) -> Verdict:
        reply = cctx.reply
        buf = pkt.payload
        limit = len(buf)
        start = 0
        while start < limit:
            # The Content-Length lookup and the CRLFCRLF search both run over
            # the rest of the segment, not over one message.
            rest = SipMessage(buf, start, limit, master.family, pkt.proto, self.profile)
            ret, off, _ = rest.get_header(start, SIP_HDR_CONTENT_LENGTH)
            if ret <= 0:
                trace.fire(rules.TCP_NO_CONTENT_LENGTH)
                return None
            if self.profile.bounded_numbers:
                clen, end = rest.parse_uint(off, limit - off)
            else:
                clen, end = simple_strtoul(buf, off, 10, bits=64)  # clen is an unsigned long
            if end == off:
                trace.fire(rules.TCP_BAD_CONTENT_LENGTH)
                return None
            if clen > limit - start:
                trace.fire(rules.TCP_CONTENT_LENGTH_TOO_BIG)
                return None
            blank = buf.find(b"\r\n\r\n", end, limit)
            if blank < 0:
                trace.fire(rules.TCP_NO_BLANK_LINE)
                return None
            msg_end = blank + 4 + clen
            if msg_end > limit:
                # "if (msglen > datalen) return NF_ACCEPT;" - a return, not a
                # break: the seq_adjust hook after the loop is not called for
                # what the messages before it changed.
                trace.fire(rules.TCP_PAST_SEGMENT)
                cctx.seq_adjust = False
                return None
            trace.fire(rules.TCP_MESSAGE)
            msg = SipMessage(buf, start, msg_end, master.family, pkt.proto, self.profile)
            pctx = PacketContext(msg, master, reply, self.params, self.table, now, trace, self.same_interface,
                                 pkt.dst if master.nat.state == "plain" else cctx.ct.leaving(reply).dst,
                                 nat_port_choice=self.nat_port_choice)
            verdict = process_sip_msg(pctx)
            if verdict is not None:
                return verdict
            if pctx.msg.buf is not buf:
                # The rest of the segment moved with the rewrite ("dataoff += msglen").
                diff = len(pctx.msg.buf) - len(buf)
                buf = pctx.msg.buf
                msg_end += diff
                limit += diff
                cctx.payload = buf
            start = msg_end
        return None
