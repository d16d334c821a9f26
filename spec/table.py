"""The expectation table of one network namespace (nf_conntrack_expect.c).

Only what the SIP helper can reach is modelled: insertion with its checks
(``__nf_ct_expect_check``: replacement, -EALREADY, -EBUSY, eviction of the
oldest per class, the global limit), lookup (``__nf_ct_expect_find``), the
per-master flush and refresh the helper does itself, expiry, matching by a new
connection, and the death of a master.

Expiry is applied eagerly: an expectation is gone at the instant its timeout
passes. Hardened kernels (6.1.192) unlink expired entries lazily; the only
observable trace of that is a window in which ``refresh_signalling_expectation``
can revive an expired entry not yet collected - recorded as a known divergence.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import Iterator

from . import rules
from .expectation import (EALREADY, EBUSY, EMFILE, SIP_EXPECT_POLICY, Address, ExpectClass, Expectation,
                          ExpectFlag, ExpectNat, ExpectTuple)
from .machines import EXPECTATION, Runtime
from .master import Master
from .trace import Trace
from .values import value

SIGNALLING = ExpectClass.SIGNALLING  # a module global: cheaper to read than the enum's attribute

__all__ = ["DESTROY", "EALREADY", "EBUSY", "EMFILE", "KERNEL_CAUSED", "NEW", "REFRESH", "Change", "Entry",
           "ExpectationTable", "TableEvent", "refusal_rule"]


@dataclass(eq=False, slots=True)
class Entry:
    """An expectation: its value fields plus its lifecycle machine."""

    tuple: ExpectTuple
    klass: ExpectClass
    flags: ExpectFlag
    master: Master
    expires: float
    seq: int
    lifecycle: Runtime
    dst_key: tuple = field(repr=False)  # _dst_key(tuple): its hash chain's key, worked out once
    nat: ExpectNat | None = None
    pair: Expectation | None = field(default=None, repr=False)  # TableEvent.pair of its "new"
    _value: Expectation | None = field(default=None, repr=False)

    def value(self) -> Expectation:
        """The expectation as a value; the same object until its flags or
        timeout change (its "new" and "destroy" events usually share one)."""
        value = self._value
        if value is None or value.expires != self.expires or value.flags != self.flags:
            value = self._value = Expectation(self.tuple, self.klass, self.flags, self.master.original,
                                              self.expires, nat=self.nat)
        return value


@dataclass(eq=False, slots=True)
class Change:
    """What an :class:`~sipct.spec.machines.ExpectationLifecycle` event carries:
    the table, the expectation, and for ``related`` what the walk of the hash
    chain found (the guards decide on it)."""

    table: "ExpectationTable"
    entry: Entry
    trace: Trace
    now: float
    rule: rules.Rule | None = None  # the rule a removal is journalled with
    report: bool = True  # whether the removal fires that rule (a flush's handler fired it already)
    refusal: int = 0  # EALREADY / EBUSY: what __nf_ct_expect_check()'s walk stopped at
    replaces: Entry | None = None  # the equal expectation of the same master and class
    evicts: Entry | None = None  # the class's oldest, the master being at the policy maximum


NEW, DESTROY, REFRESH = "new", "destroy", "refresh"

# Removals the kernel makes by itself, with no helper asking: the
# expectation's timer (nf_ct_expectation_timed_out()), a new connection
# (nf_ct_find_expectation()), the master's death (nf_ct_remove_expectations()
# from nf_ct_delete() / destroy_conntrack()), the free of an unconfirmed
# conntrack whose first packet was dropped (nf_conntrack_free()).
KERNEL_CAUSED = frozenset({rules.EXPECT_EXPIRE.id, rules.EXPECT_MATCH.id, rules.MASTER_TIMEOUT.id,
                           rules.UNCONFIRMED_DROP.id})


@value
class TableEvent:
    """One change of the expectation table, in the order the spec made it.

    ``new`` and ``destroy`` are what ctnetlink's expectation events say
    (IPEXP_NEW / IPEXP_DESTROY). ``refresh`` is
    refresh_signalling_expectation() changing an expectation in place - a new
    timeout, NF_CT_EXPECT_INACTIVE cleared - which the kernel reports to no
    one (``ExpectationTable.ctnetlink_events()`` leaves it out); ``before``
    is the expectation as it was. ``pair``, on the ``new`` of an RTCP
    expectation, is the RTP one set_expected_rtp_rtcp() inserted just before
    it and takes back (nf_ct_unexpect_related()) if this one is refused."""

    kind: str  # NEW | DESTROY | REFRESH
    expectation: Expectation
    rule: str
    before: Expectation | None = None
    pair: Expectation | None = None

    @property
    def caused_by_kernel(self) -> bool:
        """Whether the kernel makes this change happen by itself (KERNEL_CAUSED):
        a helper that mirrors the spec in a kernel must not make it again."""
        return self.rule in KERNEL_CAUSED


def refusal_rule(klass: ExpectClass) -> rules.Rule:
    """The rule under which the helper drops the packet when
    nf_ct_expect_related() refuses an expectation of ``klass`` (without NAT):
    process_register_request() for the signalling one, set_expected_rtp_rtcp()
    for media."""
    return rules.REGISTER_FAILED if klass == SIGNALLING else rules.MEDIA_FAILED


class ExpectationTable:
    """The namespace's expectations, indexed the ways the kernel reaches them:
    by destination (the expectation hash: nf_ct_expect_dst_hash() hashes the
    destination part) and by master (help->expectations)."""

    def __init__(self, expect_max: int) -> None:
        self.expect_max = expect_max
        self._entries: dict[int, Entry] = {}  # by seq, oldest first
        self._by_dst: dict[tuple, list[Entry]] = {}  # oldest first
        self._by_master: dict[Master, list[Entry]] = {}  # oldest first
        self._deadlines: list[tuple[float, int, Entry]] = []  # a heap; stale items are skipped
        self._pushes = itertools.count()
        self._seq = 0
        self.journal: list[TableEvent] = []
        self.refreshed_at = -1  # the journal index of the newest REFRESH (-1: none since the start)

    # --- reading ------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[Entry]:
        return list(self._entries.values())

    def ctnetlink_events(self, start: int) -> tuple[TableEvent, ...]:
        """The journal from index ``start`` as ctnetlink's event listener
        sees it: every ``new`` and ``destroy``, no ``refresh``."""
        events = tuple(self.journal[start:])
        if self.refreshed_at < start:
            return events
        return tuple(ev for ev in events if ev.kind != REFRESH)

    def snapshot(self) -> list[Expectation]:
        return sorted((e.value() for e in self._entries.values()), key=_sort_key)

    def of_master(self, master: Master) -> Iterator[Entry]:
        """help->expectations: newest first (hlist_add_head in nf_ct_expect_insert)."""
        return reversed(list(self._by_master.get(master, ())))

    def _newest_of_master(self, master: Master) -> Iterator[Entry]:
        """of_master() without the copy: for loops that end at their first removal."""
        return reversed(self._by_master.get(master, ()))

    def _same_dst(self, family: int, proto: int, dst: Address, dport: int) -> Iterator[Entry]:
        """The hash chain of (family, proto, dst, dport), newest first. Not a
        copy: every caller ends its loop at its first removal."""
        return reversed(self._by_dst.get((family, proto, dst._ip, dport), ()))

    def find(self, family: int, proto: int, src: Address | None, dst: Address, dport: int) -> Entry | None:
        """__nf_ct_expect_find(): the newest live expectation whose masked tuple
        covers (src or 0.0.0.0, sport 0) -> (dst, dport)."""
        chain = self._by_dst.get((family, proto, dst._ip, dport))  # _same_dst() inline
        if chain:
            for entry in reversed(chain):
                if entry.tuple.matches(src, 0, dst, dport, proto):  # type: ignore[arg-type]
                    return entry
        return None

    # --- time -----------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        while self._deadlines:
            expires, _, entry = self._deadlines[0]
            seq = entry.seq
            if seq in self._entries and self._entries[seq] is entry and entry.expires == expires:
                return expires
            heapq.heappop(self._deadlines)
        return None

    def advance(self, now: float, trace: Trace) -> None:
        """Expire every expectation whose timeout has passed (nf_ct_exp_is_expired:
        ``timeout - now <= 0``)."""
        while (deadline := self.next_deadline()) is not None and deadline <= now:
            entry = heapq.heappop(self._deadlines)[2]
            self.end(entry, "expire", rules.EXPECT_EXPIRE, now, trace)

    def _schedule(self, entry: Entry) -> None:
        heapq.heappush(self._deadlines, (entry.expires, next(self._pushes), entry))
        if len(self._deadlines) > 64 + 4 * len(self._entries):
            # Refreshes and removals leave stale entries: rebuild from the live ones.
            self._deadlines = [(e.expires, next(self._pushes), e) for e in self._entries.values()]
            if entry.seq not in self._entries:
                self._deadlines.append((entry.expires, next(self._pushes), entry))
            heapq.heapify(self._deadlines)

    # --- changes: each one an event of an expectation's lifecycle ------------------------
    def related(self, master: Master, tuple: ExpectTuple, klass: ExpectClass, flags: ExpectFlag,
                now: float, trace: Trace, *, skip_master: bool, nat: ExpectNat | None = None,
                pair: Entry | None = None) -> tuple[int, Entry]:
        """nf_ct_expect_related_report(): propose an expectation; its lifecycle
        decides (``related``). Returns 0 or a negative errno, like the kernel,
        and the entry. ``nat`` is the NAT part nf_nat_sip's hooks gave it;
        ``pair`` the RTP expectation linked just before this RTCP one, which
        the caller takes back if this one is refused (journalled with it)."""
        policy = SIP_EXPECT_POLICY[klass]
        key = (tuple.family, tuple.proto, tuple.dst._ip, tuple.dport)  # _dst_key(tuple)
        entry = Entry(tuple, klass, flags, master, now + policy.timeout, 0, Runtime(EXPECTATION), key, nat,
                      None if pair is None else pair.value())
        change = Change(self, entry, trace, now)
        for other in reversed(self._by_dst.get(key, ())):  # _same_dst()
            t = other.tuple
            if (skip_master or other.master is master) and t == tuple and t.same_mask(tuple):
                if other.klass != klass or other.master is not master:
                    change.refusal = EALREADY
                else:
                    change.replaces = other
                break
            if t.clashes(tuple):
                change.refusal = EBUSY
                break
        if not change.refusal and len(self._by_master.get(master, ())) >= policy.max_expected:
            same_class = [e for e in self._newest_of_master(master) if e.klass == klass and e is not change.replaces]
            if len(same_class) >= policy.max_expected:
                change.evicts = same_class[-1]  # the last of the class in help->expectations
        return entry.lifecycle.send("related", change), entry

    def link(self, entry: Entry, trace: Trace) -> None:
        """nf_ct_expect_insert()"""
        self._seq += 1
        entry.seq = self._seq
        self._entries[entry.seq] = entry
        self._by_dst.setdefault(entry.dst_key, []).append(entry)
        self._by_master.setdefault(entry.master, []).append(entry)
        self._schedule(entry)
        trace.fire(rules.EXPECT_INSERT)
        self.journal.append(TableEvent(NEW, entry.value(), rules.EXPECT_INSERT.id, None, entry.pair))

    def unlink(self, entry: Entry, rule: rules.Rule, trace: Trace, *, report: bool) -> None:
        """nf_ct_unlink_expect()"""
        del self._entries[entry.seq]
        _unlist(self._by_dst, entry.dst_key, entry)
        _unlist(self._by_master, entry.master, entry)
        if report:
            trace.fire(rule)
        self.journal.append(TableEvent(DESTROY, entry.value(), rule.id))

    def end(self, entry: Entry, event: str, rule: rules.Rule, now: float, trace: Trace, *,
            report: bool = True) -> None:
        """Send one of the lifecycle's ending events (expire, flush, replace, evict, unlink, match)."""
        entry.lifecycle.send(event, Change(self, entry, trace, now, rule, report))

    def set_expires(self, entry: Entry, expires: float) -> None:
        entry.expires = expires
        self._schedule(entry)

    def activate(self, entry: Entry, expires: int, now: float, trace: Trace) -> None:
        """refresh_signalling_expectation() on the entry the registrar holds;
        journalled as a REFRESH with the expectation before and after."""
        before = entry.value()
        entry.lifecycle.send("activate", Change(self, entry, trace, now), expires)
        self.refreshed_at = len(self.journal)
        self.journal.append(TableEvent(REFRESH, entry.value(), rules.REG_RESPONSE_REFRESH.id, before))

    def unexpect(self, master: Master, tuple: ExpectTuple, klass: ExpectClass, now: float, trace: Trace,
                 rule: rules.Rule = rules.MEDIA_FAILED) -> None:
        """nf_ct_unexpect_related(): take back an expectation inserted moments ago."""
        for entry in self._newest_of_master(master):
            if entry.tuple == tuple and entry.klass == klass:
                self.end(entry, "unlink", rule, now, trace, report=False)
                return

    def flush_media(self, master: Master, rule: rules.Rule, now: float, trace: Trace) -> int:
        """flush_expectations(ct, true): every media expectation of the master
        (the handler fired ``rule``). Returns how many went."""
        removed = 0
        for entry in reversed(list(self._by_master.get(master, ()))):  # help->expectations, newest first
            if entry.klass != SIGNALLING:
                entry.lifecycle.send("flush", Change(self, entry, trace, now, rule, False))
                removed += 1
        return removed

    def flush_signalling(self, master: Master, rule: rules.Rule, now: float, trace: Trace) -> None:
        """flush_expectations(ct, false): the first signalling expectation of
        help->expectations - the one the registrar holds, as the policy allows
        one per master."""
        entry = master.signalling
        master.signalling = None
        self.end(entry, "flush", rule, now, trace, report=False)

    def match(self, src: Address, sport: int, dst: Address, dport: int, proto: int, now: float,
              trace: Trace) -> Entry | None:
        """nf_ct_find_expectation(): a new connection matches the newest
        expectation covering it that can match (INACTIVE ones cannot)."""
        for entry in self._same_dst(src.version, proto, dst, dport):
            if entry.lifecycle.can("match") and entry.tuple.matches(src, sport, dst, dport, proto):
                trace.fire(rules.EXPECT_MATCH)
                self.end(entry, "match", rules.EXPECT_MATCH, now, trace)
                return entry
        return None

    # --- a table that mirrors a kernel's (the userspace reference helper) -----------------
    def lookup(self, master: Master, tuple: ExpectTuple, klass: ExpectClass) -> Entry | None:
        """The master's linked expectation with this tuple (and mask) and class."""
        for entry in self._by_master.get(master, ()):
            if entry.tuple == tuple and entry.klass == klass:
                return entry
        return None

    def restore(self, master: Master, tuple: ExpectTuple, klass: ExpectClass, flags: ExpectFlag,
                expires: float, trace: Trace | None = None) -> Entry:
        """Take in an expectation the kernel already has - read back over
        ctnetlink when a userspace helper (re)starts - as the master's newest.

        Unlike :meth:`related` nothing is checked, evicted or journalled: the
        kernel's table does not change, the spec only learns about it, so the
        machines start where the kernel is (python-statemachine's
        ``start_value``) instead of taking transitions."""
        self._seq += 1
        inactive = ExpectFlag.INACTIVE in flags
        entry = Entry(tuple, klass, flags, master, expires, self._seq,
                      Runtime(EXPECTATION, "inactive" if inactive else "active"), _dst_key(tuple))
        self._entries[entry.seq] = entry
        self._by_dst.setdefault(entry.dst_key, []).append(entry)
        self._by_master.setdefault(master, []).append(entry)
        self._schedule(entry)
        if klass == ExpectClass.SIGNALLING:
            master.signalling = entry
            master.registrar.state = "pending" if inactive else "registered"
        return entry

    def gone(self, entry: Entry, now: float, trace: Trace | None = None) -> None:
        """The kernel reports ``entry`` gone for a reason the spec did not see
        (a connection it does not track matched it, it expired on the kernel's
        clock, its master died): unlink it as the likeliest of those would.
        Journalled like every removal."""
        trace = trace if trace is not None else Trace()
        if self._entries.get(entry.seq) is not entry:
            return
        if entry.expires <= now:
            self.end(entry, "expire", rules.EXPECT_EXPIRE, now, trace)
        elif entry.lifecycle.can("match") and ExpectFlag.PERMANENT not in entry.flags:
            self.end(entry, "match", rules.EXPECT_MATCH, now, trace)
        else:
            self.end(entry, "unlink", rules.MASTER_TIMEOUT, now, trace)
            master = entry.master
            if master.signalling is entry:  # the registrar starts over where the kernel is
                master.signalling = None
                master.registrar.state = "unregistered"

    def remove_master(self, master: Master, rule: rules.Rule, now: float, trace: Trace) -> None:
        """nf_ct_remove_expectations(): the master is destroyed."""
        for entry in list(self.of_master(master)):
            self.end(entry, "unlink", rule, now, trace)


def _dst_key(t: ExpectTuple) -> tuple:
    """The chain's key holds the address as its integer (``_ip``, which the
    family makes unambiguous): hashing an ipaddress object is a Python call
    (``hash(hex(int(self)))``), about ten times hashing an int, and the table
    hashes a key at every lookup, insertion and removal."""
    return (t.family, t.proto, t.dst._ip, t.dport)


def _unlist(index: dict, key: object, entry: Entry) -> None:
    chain = index[key]
    chain.remove(entry)
    if not chain:
        del index[key]


def _sort_key(e: Expectation) -> tuple:
    t = e.tuple
    return (t.family, t.proto, int(t.dst), t.dport, -1 if t.src is None else int(t.src), int(e.klass))
