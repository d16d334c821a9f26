"""The handlers of ``sip_handlers[]`` and everything they call.

Each function ports the kernel function of the same name. A handler parses
and raises events on the master's machines (:mod:`~sipct.spec.machines`),
which make every stateful choice; it returns what they answer: ``None`` for
NF_ACCEPT or the :class:`~sipct.spec.rules.Rule` that drops the packet
(NF_DROP).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import rules
from .expectation import Address, ExpectTuple
from .master import Master
from .media import SameInterface, Verdict, process_sdp, set_expected_rtp_rtcp
from .params import ModuleParams
from .parse import (SIP_HDR_CONTACT, SIP_HDR_CSEQ, SIP_HDR_EXPIRES, SIP_HDR_VIA_UDP, SipMessage)
from .rules import Rule
from .scan import ALPHA, SP
from .table import ExpectationTable
from .trace import Firing, Trace
from .transitions import CONTINUE
from .values import value

__all__ = ["PacketContext", "SameInterface", "Verdict", "process_sdp", "set_expected_rtp_rtcp", "process_sip_msg",
           "SIP_HANDLERS"]


@dataclass(slots=True)
class PacketContext:
    """What the kernel reaches through ``skb`` and ``ct`` while handling one message."""

    msg: SipMessage
    master: Master
    reply: bool  # CTINFO2DIR(ctinfo) == IP_CT_DIR_REPLY
    params: ModuleParams
    table: ExpectationTable
    now: float
    trace: Trace
    same_interface: SameInterface | None
    packet_dst: Address
    forced_dport: int = 0  # the destination port nf_nat_sip() gave a reply (Cisco phones)
    # nf_nat_exp_find_port()'s random ports after -EBUSY (SipHelper.nat_port_choice).
    nat_port_choice: Callable[[ExpectTuple, int], int | None] | None = None

    def parse_cseq(self, no_cseq: Rule, bad_cseq: Rule) -> tuple[int, Verdict, int, int]:
        """The CSeq lookup shared by process_sip_request() and
        process_sip_response(): (cseq, verdict, matchoff, matchlen)."""
        msg = self.msg
        ret, matchoff, matchlen = msg.get_header(msg.start, SIP_HDR_CSEQ)
        if ret <= 0:
            return 0, no_cseq, 0, 0
        if msg.profile.bounded_numbers:
            cseq, end = msg.parse_uint(matchoff, msg.limit - matchoff)
            if end == matchoff:
                return 0, bad_cseq, 0, 0
        else:
            # 6.1.170: "!cseq && *(dptr + matchoff) != '0'" - only a value that
            # wrapped to 0 is refused.
            cseq, _ = msg.parse_uint(matchoff, msg.limit - matchoff)
            if cseq == 0 and msg.peek(matchoff) != 0x30:
                return 0, bad_cseq, 0, 0
        return cseq, None, matchoff, matchlen


# --- INVITE / UPDATE / PRACK / ACK / BYE: the InviteMachine decides --------------------
def process_invite_request(ctx: PacketContext, cseq: int) -> Verdict:
    return ctx.master.invite.send("invite", ctx, cseq)


def process_sdp_request(ctx: PacketContext, cseq: int) -> Verdict:
    """sip_handlers[] maps UPDATE, ACK and PRACK requests straight to process_sdp()."""
    return ctx.master.invite.send("offer", ctx, cseq)


def process_bye_request(ctx: PacketContext, cseq: int) -> Verdict:
    return ctx.master.invite.send("bye", ctx, cseq)


def process_offer_answer_response(ctx: PacketContext, cseq: int, code: int) -> Verdict:
    """process_invite_response(), process_update_response() and
    process_prack_response() are three identical copies in the kernel; all of
    them compare with invite_cseq."""
    return ctx.master.invite.send("answer", ctx, (cseq, code))


# --- REGISTER: the RegistrarMachine decides -------------------------------------------------
@value
class Binding:
    """A Contact of the master's own address and transport, with its expires."""

    addr: Address
    proto: int
    port: int
    expires: int
    saddr: Address | None = None  # the expectation's source (sip_direct_signalling: the registrar)


@value
class RegisterRequest:
    cseq: int
    binding: Binding | None  # None when refused
    refusal: Firing | None = None  # why the kernel does not support the Contact
    matchoff: int = 0  # the Contact's host[:port] (nf_nat_sip_expect() rewrites it)
    matchlen: int = 0
    family: int = 4

    @property
    def expect(self) -> ExpectTuple:
        """The signalling expectation's tuple (nf_ct_expect_init() in process_register_request())."""
        b = self.binding
        return ExpectTuple(self.family, b.proto, b.saddr, b.addr, b.port)  # type: ignore[union-attr]

    @property
    def expires(self) -> int:
        return self.binding.expires  # type: ignore[union-attr]


def _header_number(ctx: PacketContext, kind: str) -> int:
    """The Expires header value, 0 when absent (no error check in the kernel)."""
    msg = ctx.msg
    ret, matchoff, _ = msg.get_header(msg.start, kind)
    if ret <= 0:
        return 0
    return msg.parse_uint(matchoff, msg.limit - matchoff)[0]


def parse_register(ctx: PacketContext, cseq: int) -> RegisterRequest:
    """The parsing half of process_register_request(): the binding the
    REGISTER asks for, or why the kernel refuses its Contact. Pure: the
    refusal's rule fires only if the registrar gets that far."""
    msg, master = ctx.msg, ctx.master
    expires = _header_number(ctx, SIP_HDR_EXPIRES)
    ret, uri, _ = msg.parse_header_uri(msg.start, SIP_HDR_CONTACT)
    if ret < 0:
        return RegisterRequest(cseq, None, Firing(rules.REGISTER_BAD_CONTACT))
    if ret == 0 or uri is None:
        return RegisterRequest(cseq, None, Firing(rules.REGISTER_NO_CONTACT))
    if uri.addr != master.tuple_for(ctx.reply).src:
        return RegisterRequest(cseq, None, Firing(rules.REGISTER_THIRD_PARTY, "%s", (uri.addr,)))
    after_uri = uri.matchoff + uri.matchlen
    proto = msg.parse_transport(after_uri)
    if not proto:
        return RegisterRequest(cseq, None, Firing(rules.REGISTER_TRANSPORT))
    ret, number = msg.parse_numerical_param(after_uri, b"expires=")
    if ret < 0:
        return RegisterRequest(cseq, None, Firing(rules.REGISTER_BAD_EXPIRES))
    if ret > 0:
        expires = number
    saddr = master.tuple_for(not ctx.reply).src if ctx.params.sip_direct_signalling else None
    return RegisterRequest(cseq, Binding(uri.addr, proto, uri.port, expires, saddr), None, uri.matchoff, uri.matchlen,
                           master.family)


def process_register_request(ctx: PacketContext, cseq: int) -> Verdict:
    return ctx.master.registrar.send("register", ctx, parse_register(ctx, cseq))


def process_register_response(ctx: PacketContext, cseq: int, code: int) -> Verdict:
    msg, master, trace = ctx.msg, ctx.master, ctx.trace
    registrar = master.registrar
    verdict = registrar.send("response", ctx, (cseq, code))
    if verdict is not CONTINUE:
        return verdict
    # A 2xx: the walk over its Contact headers, parsed as the kernel reaches them.
    expires = _header_number(ctx, SIP_HDR_EXPIRES)
    coff = msg.start
    in_contact: bool | None = False
    while True:
        c_expires = expires
        ret, uri, in_contact = msg.parse_header_uri(coff, SIP_HDR_CONTACT, in_contact)
        if ret < 0:
            trace.fire(rules.REG_RESPONSE_BAD_CONTACT)
            return rules.REG_RESPONSE_BAD_CONTACT
        if ret == 0 or uri is None:
            return registrar.send("contacts_end", ctx)
        coff = uri.dataoff
        if uri.addr != master.tuple_for(ctx.reply).dst:
            trace.fire(rules.REG_RESPONSE_SKIP_CONTACT, "%s", uri.addr)
            continue
        after_uri = uri.matchoff + uri.matchlen
        proto = msg.parse_transport(after_uri)
        if not proto:
            trace.fire(rules.REG_RESPONSE_SKIP_CONTACT, "transport")
            continue
        ret, number = msg.parse_numerical_param(after_uri, b"expires=")
        if ret < 0:
            trace.fire(rules.REG_RESPONSE_BAD_EXPIRES)
            return rules.REG_RESPONSE_BAD_EXPIRES
        if ret > 0:
            c_expires = number
        verdict = registrar.send("contact", ctx, Binding(uri.addr, proto, uri.port, c_expires))
        if verdict is not CONTINUE:
            return verdict


# --- the handler table and the dispatch ---------------------------------------------------
RequestHandler = Callable[[PacketContext, int], Verdict]
ResponseHandler = Callable[[PacketContext, int, int], Verdict]


@dataclass(frozen=True, slots=True)
class SipHandler:
    """struct sip_handler; the method is stored lowercased (strncasecmp)."""

    method: bytes
    request: RequestHandler | None
    response: ResponseHandler | None


SIP_HANDLERS: tuple[SipHandler, ...] = (
    SipHandler(b"invite", process_invite_request, process_offer_answer_response),
    SipHandler(b"update", process_sdp_request, process_offer_answer_response),
    SipHandler(b"ack", process_sdp_request, None),
    SipHandler(b"prack", process_sdp_request, process_offer_answer_response),
    SipHandler(b"bye", process_bye_request, None),
    SipHandler(b"register", process_register_request, process_register_response),
)


def process_sip_request(ctx: PacketContext) -> Verdict:
    msg, master, trace = ctx.msg, ctx.master, ctx.trace
    trace.fire(rules.REQUEST)
    # Cisco phones send from a high port but listen on the Via port; nf_nat_sip
    # uses forced_dport to reach them.
    ret, via, _ = msg.parse_header_uri(msg.start, SIP_HDR_VIA_UDP)
    here = master.tuple_for(ctx.reply)
    if ret > 0 and via is not None and via.port != here.sport and via.addr == here.src:
        master.forced_dport = via.port
        trace.fire(rules.VIA_FORCED_DPORT, "%s", via.port)

    buf, start, datalen = msg.buf, msg.start, msg.datalen
    for handler in SIP_HANDLERS:
        if handler.request is None:
            continue
        n = len(handler.method)
        if datalen < n + 2 or not msg.lower.startswith(handler.method, start):
            continue
        if buf[start + n] != SP or buf[start + n + 1] not in ALPHA:
            continue
        cseq, verdict, _, _ = ctx.parse_cseq(rules.REQUEST_NO_CSEQ, rules.REQUEST_BAD_CSEQ)
        if verdict is not None:
            trace.fire(verdict)
            return verdict
        return handler.request(ctx, cseq)
    trace.fire(rules.UNHANDLED_METHOD)
    return None


STATUS_LINE_MIN = len(b"SIP/2.0 200")


def process_sip_response(ctx: PacketContext) -> Verdict:
    msg, trace = ctx.msg, ctx.trace
    trace.fire(rules.RESPONSE)
    if msg.datalen < STATUS_LINE_MIN:
        # Unreachable: sip_help_udp() refuses such payloads first, and every
        # message sip_help_tcp() frames holds a Content-Length header.
        return None
    code_at = msg.start + len(b"SIP/2.0 ")
    code, _ = msg.parse_uint(code_at, msg.limit - code_at)
    if not code:
        trace.fire(rules.RESPONSE_NO_CODE)
        return rules.RESPONSE_NO_CODE
    cseq, verdict, matchoff, matchlen = ctx.parse_cseq(rules.RESPONSE_NO_CSEQ, rules.RESPONSE_BAD_CSEQ)
    if verdict is not None:
        trace.fire(verdict)
        return verdict
    # The method is expected exactly one character after the number.
    matchend = matchoff + matchlen + 1
    for handler in SIP_HANDLERS:
        if handler.response is None:
            continue
        if msg.limit < matchend + len(handler.method) or not msg.lower.startswith(handler.method, matchend):
            continue
        return handler.response(ctx, cseq, code)
    trace.fire(rules.RESPONSE_UNHANDLED)
    return None


def process_sip_msg(ctx: PacketContext) -> Verdict:
    if ctx.msg.lower.startswith(b"sip/2.0 ", ctx.msg.start):
        verdict = process_sip_response(ctx)
    else:
        verdict = process_sip_request(ctx)
    if verdict is None:
        # "if (ret == NF_ACCEPT && ct->status & IPS_NAT_MASK)": hooks->msg
        verdict = ctx.master.nat.send("message", ctx)
    return verdict
