"""Every state machine of the spec, in one place.

Theory of operation
-------------------
The kernel helper keeps little state of its own - ``struct nf_ct_sip_master``
(``register_cseq``, ``invite_cseq``, ``forced_dport``) - and lets conntrack
carry the rest: whether a connection has seen a reply, and the expectation
table. Four machines say what that state is and how each message changes it:

* :class:`ConnectionMachine` - one per conntrack: ``nf_conntrack_in()``'s view
  (unreplied, replied: ``IPS_SEEN_REPLY``), which decides whether
  ``sip_help_tcp()`` looks at the data at all (the ctinfo gate) and, with the
  packet that created it still unconfirmed, what a dropped first packet
  takes with it.
* :class:`RegistrarMachine` - one per master: ``process_register_request()``
  and ``process_register_response()``; it holds the master's signalling
  expectation (``sip_exp_policy[]`` allows one) from its insertion through its
  activation by a 2xx to its removal.
* :class:`InviteMachine` - one per master: the offer/answer of
  INVITE/UPDATE/PRACK/ACK and their responses (``process_sdp()``),
  ``invite_cseq``, and the flushes of BYE, of a re-INVITE and of an error
  answer to the INVITE.
* :class:`ExpectationLifecycle` - one per expectation: ``nf_ct_expect_related()``
  (with its refusals -EALREADY, -EBUSY, -EMFILE), activation, and its end:
  matched, expired, flushed, replaced, evicted or unlinked with its master.

The handlers (:mod:`~sipct.spec.handlers`) parse and raise events; the
machines decide. Where the kernel makes a stateful choice there is a guard,
a named method (``cseq_matches_register``); every change is an action on a
transition (``expect_signalling``, ``flush_media``, ``store_invite_cseq``).
The rules of the table (first transition whose guards hold, actions in
order, a drop ends the transition in its source state) are in
:mod:`~sipct.spec.transitions`.

Following a REGISTER: ``process_register_request()`` parses the Contact into
a binding and sends ``register`` - ``master_was_expected`` refuses it on a
connection that was itself expected, ``contact_refused`` on a Contact the
kernel does not support, ``binding_unbinds`` (expires 0) only stores the
CSeq; otherwise ``expect_signalling`` proposes a PERMANENT|INACTIVE
expectation, whose :class:`ExpectationLifecycle` goes ``proposed -> inactive``
(or ``refused``), and the registrar is ``pending``. The 200 sends
``response``: ``cseq_matches_register`` lets only the answer to the last
REGISTER through, a 2xx ``walk_contacts``; each Contact is a ``contact``
event, and ``binding_has_expectation`` + ``refresh_signalling`` activate the
expectation (``inactive --activate--> active``): ``registered``.

Following an INVITE/200/BYE: ``invite`` flushes the master's media
expectations, expects the offer's media (each pair ``proposed -> active``)
and stores ``invite_cseq``; the 200 is an ``answer`` whose SDP adds the
answer's media; the BYE's ``bye`` flushes them all (``active --flush-->
flushed``); had the answer been an error, ``cseq_matches_invite`` would have
flushed them only if it answered the stored INVITE.

Extended state: the counters ``register_cseq`` / ``invite_cseq`` live on the
:class:`~sipct.spec.master.Master` (the reference helper reads and restores
them from the kernel); only these machines' actions write them.

NAT
---
``nf_nat_sip`` attaches to exactly these transitions: its message and SDP
rewrites (``nf_nat_sip_hooks``: ``msg``, ``sdp_addr``, ``sdp_port``,
``sdp_session``, ``sdp_media``) run inside ``expect_media`` /
``expect_signalling`` before the expectation is proposed, and a NAT
expectation (``expect``, with its saved tuple and direction) is a
``related`` of the lifecycle with its own guards. A NAT helper would add
actions to these transitions; no handler needs to change.

Rules: this file does not read packets - the handlers hand over what they
parsed; it does not know about sockets or clocks - ``now`` comes in the
context. Each event names the kernel function it stands for in
``EVENT_ORIGINS``; the docs render all of it (docs/machines.rst).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from statemachine import State, StateMachine

from . import rules
from .expectation import EALREADY, EBUSY, EMFILE, ExpectClass, ExpectFlag, ExpectTuple
from . import natsip
from .media import expect_pair, process_sdp
from .transitions import CONTINUE, CompiledMachine, IllegalTransition, Runtime, compile_machine

if TYPE_CHECKING:
    from .handlers import PacketContext

# Enum members read at every event: a module global is read in a tenth of
# the time ``ExpectFlag.INACTIVE`` takes (an attribute of an enum class).
INACTIVE = ExpectFlag.INACTIVE
PERMANENT = ExpectFlag.PERMANENT
SIGNALLING = ExpectClass.SIGNALLING
# The guards test a flag on the flags' int value: ``INACTIVE in flags`` and
# ``flags & INACTIVE`` are Python calls of enum.Flag (0.5 and 2 us), the int
# and is a tenth of that.
INACTIVE_BIT = INACTIVE.value
PERMANENT_BIT = PERMANENT.value

__all__ = ["CONTINUE", "IllegalTransition", "Runtime", "MACHINES", "EVENT_ORIGINS",
           "CONNECTION", "REGISTRAR", "INVITE", "EXPECTATION", "NAT"]


class ConnectionMachine(StateMachine):
    """A conntrack as nf_conntrack_in() hands it to the helper: its states are
    IPS_SEEN_REPLY. Whether it is confirmed is no state of its own: a
    conntrack is unconfirmed exactly while the packet that created it is on
    its way through the hooks (``__nf_conntrack_confirm()`` at their end), so
    that is a fact of the packet (``ctx.unconfirmed``), read by a guard."""

    unreplied = State("unreplied", initial=True)  # ctinfo IP_CT_NEW / IP_CT_RELATED in the original direction
    replied = State("replied")  # IPS_SEEN_REPLY: ctinfo IP_CT_ESTABLISHED(_REPLY)
    destroyed = State("destroyed", final=True)

    # nf_conntrack_in() sets IPS_SEEN_REPLY on the first reply, for good.
    reply = unreplied.to(replied) | replied.to.itself()
    # sip_help_tcp(): "if (ctinfo != IP_CT_ESTABLISHED && ctinfo !=
    # IP_CT_ESTABLISHED_REPLY) return NF_ACCEPT" - sip_help_udp() has no gate.
    # Data on an unreplied TCP conntrack is one picked up mid-stream
    # (nf_conntrack_tcp_loose): the handshake's SYN-ACK is a reply.
    payload = (unreplied.to.itself(cond="carries_tcp", on="skip_not_established")
               | unreplied.to.itself(on="help_message")
               | replied.to.itself(on="help_message"))
    # An NF_DROP of the packet that created the conntrack frees it unconfirmed
    # (nf_conntrack_in() -> nf_ct_put() of a conntrack never inserted), with
    # what its helper expected; a confirmed one lives on.
    drop = (unreplied.to(destroyed, cond="unconfirmed", on="free_unconfirmed")
            | unreplied.to.itself() | replied.to.itself())
    # Timeout, ctnetlink delete, a successor on the same tuple.
    destroy = unreplied.to(destroyed, on="remove_expectations") | replied.to(destroyed, on="remove_expectations")

    @staticmethod
    def carries_tcp(ctx: Any, arg: Any) -> bool:
        """sip_help_tcp() rather than sip_help_udp() is the helper's entry point."""
        return ctx.ct.original.proto == 6  # IPPROTO_TCP

    @staticmethod
    def unconfirmed(ctx: Any, arg: Any) -> bool:
        """!nf_ct_is_confirmed(ct): the packet that created the conntrack."""
        return ctx.unconfirmed

    @staticmethod
    def skip_not_established(ctx: Any, arg: Any) -> None:
        ctx.trace.fire(rules.TCP_NOT_ESTABLISHED)

    @staticmethod
    def help_message(ctx: Any, arg: Any) -> Any:
        """sip_help_udp() / sip_help_tcp() on the payload: the verdict of process_sip_msg()."""
        return ctx.helper.help(ctx)

    @staticmethod
    def free_unconfirmed(ctx: Any, arg: Any) -> None:
        ctx.trace.fire(rules.UNCONFIRMED_DROP)
        ctx.helper.unlink_conntrack(ctx.ct, rules.UNCONFIRMED_DROP, ctx.trace)

    @staticmethod
    def remove_expectations(ctx: Any, rule: rules.Rule) -> None:
        """nf_ct_remove_expectations() as the conntrack goes."""
        ctx.helper.unlink_conntrack(ctx.ct, rule, ctx.trace)


class RegistrarMachine(StateMachine):
    """A master's registration: the signalling expectation a REGISTER proposes and a 2xx activates."""

    unregistered = State("unregistered", initial=True)  # no signalling expectation
    pending = State("pending")  # a PERMANENT|INACTIVE one, waiting for its 2xx
    registered = State("registered")  # activated by a 2xx: a registrar's call can come in

    # process_register_request(), in the kernel's order. A master that was
    # itself expected never registers, so it is always unregistered.
    register = (unregistered.to.itself(cond="master_was_expected", on="ignore_expected_master")
                | unregistered.to.itself(cond="contact_refused", on="refuse_contact")
                | unregistered.to.itself(cond="binding_unbinds", on="store_unbind_cseq")
                | unregistered.to(pending, on=["expect_signalling", "store_register_cseq"])
                | pending.to.itself(cond="contact_refused", on="refuse_contact")
                | pending.to.itself(cond="binding_unbinds", on="store_unbind_cseq")
                | pending.to.itself(on=["expect_signalling", "store_register_cseq"])
                | registered.to.itself(cond="contact_refused", on="refuse_contact")
                | registered.to.itself(cond="binding_unbinds", on="store_unbind_cseq")
                | registered.to(pending, on=["expect_signalling", "store_register_cseq"]))
    # process_register_response(): the CSeq first, then the status class. An
    # error removes the signalling expectation (flush_expectations(ct, false));
    # unregistered there is none to remove, and only a 2xx to the last
    # REGISTER does anything: walk its Contacts (which may drop the packet).
    response = (unregistered.to.itself(cond=["cseq_matches_register", "success"], on="walk_contacts")
                | unregistered.to.itself(on="ignore_response")
                | pending.to.itself(unless="cseq_matches_register", on="ignore_stale")
                | pending.to.itself(cond="provisional", on="ignore_provisional")
                | pending.to(unregistered, unless="success", on="flush_on_failure")
                | pending.to.itself(on="walk_contacts")
                | registered.to.itself(unless="cseq_matches_register", on="ignore_stale")
                | registered.to.itself(cond="provisional", on="ignore_provisional")
                | registered.to(unregistered, unless="success", on="flush_on_failure")
                | registered.to.itself(on="walk_contacts"))
    # One Contact of the 2xx (of the master's own address and transport): an
    # expires of 0 ends the walk in a flush before any refresh is tried.
    contact = (unregistered.to.itself(cond="binding_unbinds", on="note_unbind")
               | unregistered.to.itself(on="next_contact")
               | pending.to(unregistered, cond="binding_unbinds", on="flush_on_unbind")
               | pending.to(registered, cond="binding_has_expectation", on="refresh_signalling")
               | pending.to.itself(on="next_contact")
               | registered.to(unregistered, cond="binding_unbinds", on="flush_on_unbind")
               | registered.to.itself(cond="binding_has_expectation", on="refresh_signalling")
               | registered.to.itself(on="next_contact"))
    # No Contact refreshed anything: "goto flush".
    contacts_end = (unregistered.to.itself(on="note_unmatched")
                    | pending.to(unregistered, on="flush_unmatched")
                    | registered.to(unregistered, on="flush_unmatched"))
    # The expectation timed out (its lifecycle's expire).
    signalling_gone = pending.to(unregistered, on="forget_expectation") \
        | registered.to(unregistered, on="forget_expectation")

    # --- guards -------------------------------------------------------------------
    @staticmethod
    def master_was_expected(ctx: "PacketContext", request: Any) -> bool:
        """IPS_EXPECTED: "We don't support third-party registrations" of a connection we expected."""
        return ctx.master.expected

    @staticmethod
    def contact_refused(ctx: "PacketContext", request: Any) -> bool:
        """The REGISTER's Contact is missing, unparsable, of a third party, of another transport."""
        return request.refusal is not None

    @staticmethod
    def binding_unbinds(ctx: "PacketContext", binding: Any) -> bool:
        """Expires (header or contact parameter) is 0."""
        return binding.expires == 0

    @staticmethod
    def cseq_matches_register(ctx: "PacketContext", response: tuple[int, int]) -> bool:
        """Some registrars answer retransmissions late: only the response to the last REGISTER counts."""
        return ctx.master.register_cseq == response[0]

    @staticmethod
    def provisional(ctx: "PacketContext", response: tuple[int, int]) -> bool:
        return 100 <= response[1] <= 199

    @staticmethod
    def success(ctx: "PacketContext", response: tuple[int, int]) -> bool:
        return 200 <= response[1] <= 299

    @staticmethod
    def binding_has_expectation(ctx: "PacketContext", binding: Any) -> bool:
        """refresh_signalling_expectation(): the master's signalling expectation is to this contact."""
        t = ctx.master.signalling.tuple
        return t.dst == binding.addr and t.proto == binding.proto and t.dport == binding.port

    # --- actions --------------------------------------------------------------------
    @staticmethod
    def ignore_expected_master(ctx: "PacketContext", request: Any) -> None:
        ctx.trace.fire(rules.REGISTER_EXPECTED_MASTER)

    @staticmethod
    def refuse_contact(ctx: "PacketContext", request: Any) -> rules.Rule | None:
        firing = request.refusal
        ctx.trace.firings.append(firing)
        return firing.rule if firing.rule.drop else None

    @staticmethod
    def store_unbind_cseq(ctx: "PacketContext", request: Any) -> None:
        ctx.trace.fire(rules.REGISTER_UNBIND)
        ctx.master.register_cseq = request.cseq

    @staticmethod
    def expect_signalling(ctx: "PacketContext", request: Any) -> rules.Rule | None:
        """Propose the PERMANENT|INACTIVE expectation for the contact; at most
        one per master, so a new one replaces or evicts the old one."""
        master, binding, trace = ctx.master, request.binding, ctx.trace
        refusal, entry = master.nat.send("signalling_expectation", ctx, request)
        if refusal is not None:
            return refusal
        master.signalling = entry
        trace.fire(rules.REGISTER_EXPECT, "%s:%s", binding.addr, binding.port)
        return None

    @staticmethod
    def store_register_cseq(ctx: "PacketContext", request: Any) -> None:
        ctx.master.register_cseq = request.cseq

    @staticmethod
    def ignore_stale(ctx: "PacketContext", response: Any) -> None:
        ctx.trace.fire(rules.REG_RESPONSE_STALE)

    @staticmethod
    def ignore_provisional(ctx: "PacketContext", response: Any) -> None:
        ctx.trace.fire(rules.REG_RESPONSE_PROVISIONAL)

    @staticmethod
    def ignore_response(ctx: "PacketContext", response: tuple[int, int]) -> None:
        """Unregistered, a stale, a provisional and an error response differ only in what the kernel's path logs."""
        cseq, code = response
        if ctx.master.register_cseq != cseq:
            ctx.trace.fire(rules.REG_RESPONSE_STALE)
        elif 100 <= code <= 199:
            ctx.trace.fire(rules.REG_RESPONSE_PROVISIONAL)
        else:
            ctx.trace.fire(rules.REG_RESPONSE_ERROR)

    @staticmethod
    def flush_on_failure(ctx: "PacketContext", response: Any) -> None:
        ctx.trace.fire(rules.REG_RESPONSE_ERROR)
        ctx.table.flush_signalling(ctx.master, rules.REG_RESPONSE_ERROR, ctx.now, ctx.trace)

    @staticmethod
    def walk_contacts(ctx: "PacketContext", response: Any) -> Any:
        return CONTINUE

    @staticmethod
    def next_contact(ctx: "PacketContext", binding: Any) -> Any:
        return CONTINUE

    @staticmethod
    def note_unbind(ctx: "PacketContext", binding: Any) -> None:
        ctx.trace.fire(rules.REG_RESPONSE_UNBIND)

    @staticmethod
    def flush_on_unbind(ctx: "PacketContext", binding: Any) -> None:
        ctx.trace.fire(rules.REG_RESPONSE_UNBIND)
        ctx.table.flush_signalling(ctx.master, rules.REG_RESPONSE_UNBIND, ctx.now, ctx.trace)

    @staticmethod
    def refresh_signalling(ctx: "PacketContext", binding: Any) -> None:
        """refresh_signalling_expectation(): timeout now + the contact's expires, INACTIVE cleared."""
        ctx.table.activate(ctx.master.signalling, binding.expires, ctx.now, ctx.trace)
        ctx.trace.fire(rules.REG_RESPONSE_REFRESH)

    @staticmethod
    def note_unmatched(ctx: "PacketContext", arg: Any) -> None:
        ctx.trace.fire(rules.REG_RESPONSE_NO_MATCH)

    @staticmethod
    def flush_unmatched(ctx: "PacketContext", arg: Any) -> None:
        ctx.trace.fire(rules.REG_RESPONSE_NO_MATCH)
        ctx.table.flush_signalling(ctx.master, rules.REG_RESPONSE_NO_MATCH, ctx.now, ctx.trace)

    @staticmethod
    def forget_expectation(ctx: Any, arg: Any) -> None:
        ctx.entry.master.signalling = None


class InviteMachine(StateMachine):
    """A master's offer/answer: the media its SDP expects and invite_cseq."""

    idle = State("idle", initial=True)  # invite_cseq is the 0 of the zeroed helper area
    invited = State("invited")  # invite_cseq is the CSeq of the last INVITE accepted

    # process_invite_request(): flush, then the offer; only an accepted INVITE stores its CSeq.
    invite = (idle.to(invited, on=["flush_before_offer", "expect_media", "store_invite_cseq"])
              | invited.to.itself(on=["flush_before_offer", "expect_media", "store_invite_cseq"]))
    # sip_handlers[]: UPDATE, ACK and PRACK requests go straight to process_sdp().
    offer = idle.to.itself(on="expect_media_of_request") | invited.to.itself(on="expect_media_of_request")
    # process_invite_response() / process_update_response() / process_prack_response().
    answer = (idle.to.itself(cond="provisional_or_success", on="expect_media_of_answer")
              | idle.to.itself(cond="cseq_matches_invite", on="flush_on_failure")
              | idle.to.itself(on="ignore_other_cseq")
              | invited.to.itself(cond="provisional_or_success", on="expect_media_of_answer")
              | invited.to.itself(cond="cseq_matches_invite", on="flush_on_failure")
              | invited.to.itself(on="ignore_other_cseq"))
    # process_bye_request()
    bye = idle.to.itself(on="flush_on_bye") | invited.to.itself(on="flush_on_bye")

    # --- guards -------------------------------------------------------------------
    @staticmethod
    def provisional_or_success(ctx: "PacketContext", response: tuple[int, int]) -> bool:
        return 100 <= response[1] <= 299

    @staticmethod
    def cseq_matches_invite(ctx: "PacketContext", response: tuple[int, int]) -> bool:
        """The error answers the INVITE whose CSeq is stored (0 before any: a "CSeq: 0" error matches)."""
        return ctx.master.invite_cseq == response[0]

    # --- actions --------------------------------------------------------------------
    @staticmethod
    def flush_before_offer(ctx: "PacketContext", cseq: int) -> None:
        ctx.trace.fire(rules.INVITE_FLUSH)
        ctx.table.flush_media(ctx.master, rules.INVITE_FLUSH, ctx.now, ctx.trace)

    @staticmethod
    def expect_media(ctx: "PacketContext", cseq: int) -> rules.Rule | None:
        return process_sdp(ctx, cseq)

    @staticmethod
    def store_invite_cseq(ctx: "PacketContext", cseq: int) -> None:
        ctx.master.invite_cseq = cseq
        ctx.trace.fire(rules.INVITE_CSEQ, "%s", cseq)

    @staticmethod
    def expect_media_of_request(ctx: "PacketContext", cseq: int) -> rules.Rule | None:
        ctx.trace.fire(rules.SDP_REQUEST)
        return process_sdp(ctx, cseq)

    @staticmethod
    def expect_media_of_answer(ctx: "PacketContext", response: tuple[int, int]) -> rules.Rule | None:
        ctx.trace.fire(rules.RESPONSE_SDP)
        return process_sdp(ctx, response[0])

    @staticmethod
    def flush_on_failure(ctx: "PacketContext", response: tuple[int, int]) -> None:
        ctx.trace.fire(rules.RESPONSE_ERROR_FLUSH)
        ctx.table.flush_media(ctx.master, rules.RESPONSE_ERROR_FLUSH, ctx.now, ctx.trace)

    @staticmethod
    def ignore_other_cseq(ctx: "PacketContext", response: tuple[int, int]) -> None:
        ctx.trace.fire(rules.RESPONSE_ERROR_OTHER)

    @staticmethod
    def flush_on_bye(ctx: "PacketContext", cseq: int) -> None:
        ctx.trace.fire(rules.BYE_FLUSH)
        ctx.table.flush_media(ctx.master, rules.BYE_FLUSH, ctx.now, ctx.trace)


class ExpectationLifecycle(StateMachine):
    """Life of one expectation (nf_conntrack_expect.c)."""

    proposed = State("proposed", initial=True)  # allocated by the helper, not in the table
    inactive = State("inactive")  # NF_CT_EXPECT_INACTIVE: in the table, matches nothing
    active = State("active")
    refused = State("refused", final=True)
    matched = State("matched", final=True)
    expired = State("expired", final=True)
    flushed = State("flushed", final=True)
    replaced = State("replaced", final=True)
    evicted = State("evicted", final=True)
    unlinked = State("unlinked", final=True)

    # nf_ct_expect_related() -> __nf_ct_expect_check(): the walk of the hash
    # chain stops at the first expectation that is equal (-EALREADY if another
    # master's or class's, else it is replaced) or clashes (-EBUSY); then a
    # class at its policy maximum loses its oldest (evict_oldest_expect) and a
    # full table refuses (-EMFILE) - never after a removal, which made room.
    related = (proposed.to(refused, cond="tuple_taken", on="refuse_already")
               | proposed.to(refused, cond="tuple_clashes", on="refuse_busy")
               | proposed.to(refused, cond="table_full", on="refuse_full")
               | proposed.to(inactive, cond="requested_inactive", on=["make_room", "insert"])
               | proposed.to(active, on=["make_room", "insert"]))
    # refresh_signalling_expectation(): a new timeout, and INACTIVE cleared.
    activate = inactive.to(active, on=["extend_timeout", "clear_inactive"]) | active.to.itself(on="extend_timeout")
    # nf_ct_find_expectation(): INACTIVE ones match nothing; a PERMANENT one stays.
    match = active.to.itself(cond="is_permanent") | active.to(matched, on="unlink_expect")
    # The expectation timer; the registrar must learn that its expectation went.
    # Only process_register_request() asks for INACTIVE: an inactive one is signalling.
    expire = (inactive.to(expired, on=["unlink_expect", "release_registrar"])
              | active.to(expired, cond="is_signalling", on=["unlink_expect", "release_registrar"])
              | active.to(expired, on="unlink_expect"))
    # flush_expectations() of the helper.
    flush = inactive.to(flushed, on="unlink_expect") | active.to(flushed, on="unlink_expect")
    # __nf_ct_expect_check(): the same master, class, tuple and mask again.
    replace = inactive.to(replaced, on="unlink_expect") | active.to(replaced, on="unlink_expect")
    # evict_oldest_expect()
    evict = inactive.to(evicted, on="unlink_expect") | active.to(evicted, on="unlink_expect")
    # nf_ct_remove_expectations() of a dying master; nf_ct_unexpect_related().
    unlink = inactive.to(unlinked, on="unlink_expect") | active.to(unlinked, on="unlink_expect")

    # --- guards -------------------------------------------------------------------
    @staticmethod
    def tuple_taken(change: Any, arg: Any) -> bool:
        """Equal tuple and mask, of another master or class."""
        return change.refusal == EALREADY

    @staticmethod
    def tuple_clashes(change: Any, arg: Any) -> bool:
        """expect_clash(): equal where both masks look."""
        return change.refusal == EBUSY

    @staticmethod
    def table_full(change: Any, arg: Any) -> bool:
        """nf_ct_expect_max expectations after the replacement and eviction this one makes."""
        table = change.table  # its dict's len(): len(table) would be a Python call of __len__
        return len(table._entries) - (change.replaces is not None) - (change.evicts is not None) >= table.expect_max

    @staticmethod
    def requested_inactive(change: Any, arg: Any) -> bool:
        return change.entry.flags._value_ & INACTIVE_BIT != 0

    @staticmethod
    def is_permanent(change: Any, arg: Any) -> bool:
        return change.entry.flags._value_ & PERMANENT_BIT != 0

    @staticmethod
    def is_signalling(change: Any, arg: Any) -> bool:
        return change.entry.klass == SIGNALLING

    # --- actions --------------------------------------------------------------------
    @staticmethod
    def refuse_already(change: Any, arg: Any) -> int:
        change.trace.fire(rules.EXPECT_ALREADY)
        return EALREADY

    @staticmethod
    def refuse_busy(change: Any, arg: Any) -> int:
        change.trace.fire(rules.EXPECT_CLASH)
        return EBUSY

    @staticmethod
    def refuse_full(change: Any, arg: Any) -> int:
        change.trace.fire(rules.EXPECT_TABLE_FULL)
        return EMFILE

    @staticmethod
    def make_room(change: Any, arg: Any) -> None:
        """Unlink the equal expectation found on the chain, then the class's oldest if it is at its maximum."""
        if change.replaces is not None:
            change.table.end(change.replaces, "replace", rules.EXPECT_REPLACE, change.now, change.trace)
        if change.evicts is not None:
            change.table.end(change.evicts, "evict", rules.EXPECT_EVICT, change.now, change.trace)

    @staticmethod
    def insert(change: Any, arg: Any) -> int:
        """nf_ct_expect_insert(): linked with the class policy's timeout; IPEXP_NEW."""
        change.table.link(change.entry, change.trace)
        return 0

    @staticmethod
    def extend_timeout(change: Any, expires: int) -> None:
        change.table.set_expires(change.entry, change.now + expires)

    @staticmethod
    def clear_inactive(change: Any, arg: Any) -> None:
        change.entry.flags &= ~INACTIVE

    @staticmethod
    def unlink_expect(change: Any, arg: Any) -> None:
        """nf_ct_unlink_expect(): out of the table; IPEXP_DESTROY."""
        change.table.unlink(change.entry, change.rule, change.trace, report=change.report)

    @staticmethod
    def release_registrar(change: Any, arg: Any) -> None:
        change.entry.master.registrar.send("signalling_gone", change)


class NatMachine(StateMachine):
    """A master's address translation as nf_conntrack_sip sees it.

    ``ct->status & IPS_NAT_MASK`` decides every call through
    ``nf_nat_sip_hooks``: this machine's state is that bit, and the hooks
    (:mod:`~sipct.spec.natsip`) are its actions. The binding itself is made
    by NAT (:mod:`~sipct.spec.natmap`) for the master's first packet."""

    plain = State("plain", initial=True)  # no translation (or one that changed nothing)
    translated = State("translated")  # IPS_SRC_NAT and/or IPS_DST_NAT

    # nf_nat_setup_info(): the status bits are set only when the tuple changes.
    bind = plain.to(translated, cond="binding_translates") | plain.to.itself()
    # process_sip_msg(): an accepted message goes through hooks->msg.
    message = translated.to.itself(on="mangle_message") | plain.to.itself()
    # sip_help_tcp(): after the segment's messages, hooks->seq_adjust with their summed length change.
    segment = translated.to.itself(on="adjust_sequence") | plain.to.itself()
    # process_register_request(): hooks->expect instead of nf_ct_expect_related().
    signalling_expectation = (translated.to.itself(on="nat_expect_signalling")
                              | plain.to.itself(on="expect_signalling_plainly"))
    # set_expected_rtp_rtcp()'s search for another master's expectation of the same media.
    media_found = (translated.to.itself(cond="found_translated", unless="direct_rtp", on="redirect_to_saved")
                   | translated.to.itself(on="skip_expect")
                   | plain.to.itself(on="skip_expect"))
    # set_expected_rtp_rtcp(): hooks->sdp_media, unless the media goes direct.
    expect_media = (translated.to.itself(unless="direct_rtp", on="nat_expect_media")
                    | translated.to.itself(on="expect_media_pair")
                    | plain.to.itself(on="expect_media_pair"))
    # process_sdp(): hooks->sdp_addr for a media-level c=, hooks->sdp_session at the end.
    media_address = translated.to.itself(on="mangle_media_address") | plain.to.itself()
    session_address = translated.to.itself(cond="has_rtp_addr", on="mangle_session") | translated.to.itself() \
        | plain.to.itself()

    # --- guards -------------------------------------------------------------------
    @staticmethod
    def binding_translates(ctx: Any, reply: Any) -> bool:
        """The reply tuple is not the inverse of the original one."""
        return reply != ctx.ct.original.reply()

    @staticmethod
    def found_translated(ctx: Any, media: Any) -> bool:
        """The expectation found has a NAT part that differs from its tuple
        (one without NAT has a zero saved address: it differs too)."""
        entry = media.found
        nat, t = entry.nat, entry.tuple
        if nat is None:
            return True
        return nat.addr != t.dst or nat.port != t.dport

    @staticmethod
    def direct_rtp(ctx: Any, media: Any) -> bool:
        return media.direct_rtp

    @staticmethod
    def has_rtp_addr(ctx: Any, sdp: Any) -> bool:
        """6.1.192 / 6.18: only with an address (CVE-2026-31427); before, always."""
        return sdp.rtp_addr is not None or not ctx.msg.profile.sdp_session_needs_address

    # --- actions --------------------------------------------------------------------
    @staticmethod
    def mangle_message(ctx: Any, arg: Any) -> Any:
        return natsip.nf_nat_sip(ctx)

    @staticmethod
    def adjust_sequence(ctx: Any, tdiff: int) -> None:
        if tdiff:
            ctx.trace.fire(rules.NAT_SEQ_ADJUST, "%+d", tdiff)
            ctx.helper.seq_adjust(ctx.ct, ctx.reply, tdiff)

    @staticmethod
    def nat_expect_signalling(ctx: Any, request: Any) -> Any:
        """(the rule that drops, or None; the entry)"""
        return natsip.nf_nat_sip_expect(ctx, request.expect, request.matchoff, request.matchlen, SIGNALLING,
                                        PERMANENT | INACTIVE)

    @staticmethod
    def expect_signalling_plainly(ctx: Any, request: Any) -> Any:
        err, entry = ctx.table.related(ctx.master, request.expect, SIGNALLING, PERMANENT | INACTIVE, ctx.now,
                                       ctx.trace, skip_master=False)
        if err:
            ctx.trace.fire(rules.REGISTER_FAILED)
            return rules.REGISTER_FAILED, entry
        return None, entry

    @staticmethod
    def redirect_to_saved(ctx: Any, media: Any) -> None:
        nat = media.found.nat
        addr, port = (nat.addr, nat.port) if nat is not None else (media.any_addr, 0)
        ctx.trace.fire(rules.NAT_DIRECT_RTP, "%s:%s", addr, port)
        media.daddr, media.port, media.direct_rtp = addr, port, True

    @staticmethod
    def skip_expect(ctx: Any, media: Any) -> None:
        media.skip_expect = True

    @staticmethod
    def nat_expect_media(ctx: Any, media: Any) -> Any:
        verdict, media.daddr = natsip.nf_nat_sdp_media(ctx, media.daddr, media.port, media.klass, media.mediaoff,
                                                       media.medialen, media.saddr)
        return verdict

    @staticmethod
    def expect_media_pair(ctx: Any, media: Any) -> Any:
        return expect_pair(ctx, media)

    @staticmethod
    def mangle_media_address(ctx: Any, media: Any) -> Any:
        if not natsip.nf_nat_sdp_addr(ctx, media.mediaoff, media.daddr):
            ctx.trace.fire(rules.NAT_MANGLE_FAILED)
            return rules.NAT_MANGLE_FAILED
        return None

    @staticmethod
    def mangle_session(ctx: Any, sdp: Any) -> Any:
        return natsip.nf_nat_sdp_session(ctx, sdp.sdpoff, sdp.rtp_addr)


# Which kernel function each event stands for (the rule catalogue cites the
# rules that fire on the way; this says where the transition itself lives).
EVENT_ORIGINS: dict[str, dict[str, str]] = {
    "ConnectionMachine": {
        "reply": "nf_conntrack_in(): a packet in the reply direction sets IPS_SEEN_REPLY",
        "payload": "sip_help_udp() / sip_help_tcp(): a packet with payload on a conntrack with the helper",
        "drop": "the helper returned NF_DROP (an unconfirmed conntrack is never inserted: nf_ct_put() frees it)",
        "destroy": "nf_ct_delete(): timeout, ctnetlink delete, a successor on the same tuple",
    },
    "RegistrarMachine": {
        "register": "process_register_request()",
        "response": "process_register_response(): CSeq and status code",
        "contact": "process_register_response(): one Contact of a 2xx with the master's address and transport",
        "contacts_end": "process_register_response(): no Contact refreshed an expectation (goto flush)",
        "signalling_gone": "the signalling expectation's timer (nf_ct_expectation_timed_out)",
    },
    "InviteMachine": {
        "invite": "process_invite_request()",
        "offer": "sip_handlers[]: UPDATE / ACK / PRACK -> process_sdp()",
        "answer": "process_invite_response() / process_update_response() / process_prack_response()",
        "bye": "process_bye_request()",
    },
    "ExpectationLifecycle": {
        "related": "nf_ct_expect_related_report() -> __nf_ct_expect_check() + nf_ct_expect_insert()",
        "activate": "refresh_signalling_expectation()",
        "match": "nf_ct_find_expectation(): a new connection matched",
        "expire": "nf_ct_expectation_timed_out() / nf_ct_exp_is_expired()",
        "flush": "flush_expectations()",
        "replace": "__nf_ct_expect_check(): an equal expectation of the same master and class",
        "evict": "evict_oldest_expect()",
        "unlink": "nf_ct_remove_expectations() (master destroyed), nf_ct_unexpect_related()",
    },
    "NatMachine": {
        "bind": "nf_nat_setup_info(): the master's first packet is bound (IPS_SRC_NAT / IPS_DST_NAT if translated)",
        "message": "process_sip_msg(): hooks->msg (nf_nat_sip) on an accepted message",
        "segment": "sip_help_tcp(): hooks->seq_adjust (nf_nat_sip_seq_adjust) after the segment",
        "signalling_expectation": "process_register_request(): hooks->expect (nf_nat_sip_expect) or nf_ct_expect_related()",
        "media_found": "set_expected_rtp_rtcp(): __nf_ct_expect_find() found another master's expectation",
        "expect_media": "set_expected_rtp_rtcp(): hooks->sdp_media (nf_nat_sdp_media) or the plain pair",
        "media_address": "process_sdp(): hooks->sdp_addr (nf_nat_sdp_addr) for a media-level c=",
        "session_address": "process_sdp(): hooks->sdp_session (nf_nat_sdp_session)",
    },
}

NAT = compile_machine(NatMachine)
CONNECTION = compile_machine(ConnectionMachine)
REGISTRAR = compile_machine(RegistrarMachine)
INVITE = compile_machine(InviteMachine)
EXPECTATION = compile_machine(ExpectationLifecycle)
MACHINES: dict[str, CompiledMachine] = {m.name: m for m in (CONNECTION, REGISTRAR, INVITE, EXPECTATION, NAT)}
