"""The handlers of ``sip_handlers[]`` and everything they call.

Each function ports the kernel function of the same name. A handler returns
``None`` for NF_ACCEPT or the :class:`~sipct.spec.rules.Rule` that drops the
packet (NF_DROP).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import rules
from .expectation import IPPROTO_UDP, Address, ExpectClass, ExpectFlag, ExpectTuple
from .master import Master
from .params import ModuleParams
from .parse import (SIP_HDR_CONTACT, SIP_HDR_CSEQ, SIP_HDR_EXPIRES, SIP_HDR_VIA_UDP, SipMessage)
from .rules import Rule
from .scan import ALPHA, SP
from .sdp import (SDP_HDR_CONNECTION, SDP_HDR_MEDIA, SDP_HDR_UNSPEC, SDP_HDR_VERSION, get_sdp_header,
                  parse_sdp_addr, sdp_media_type)
from .table import EALREADY, ExpectationTable
from .trace import Trace

Verdict = Rule | None  # None: NF_ACCEPT; a Rule: NF_DROP, for that reason

# The routing question sip_external_media asks (set_expected_rtp_rtcp): is the
# route to the media address through the device this packet leaves by? None
# when there is no route at all. Routing is the caller's: the spec is pure.
SameInterface = Callable[[Address, Address], "bool | None"]


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


# --- media --------------------------------------------------------------------------
def set_expected_rtp_rtcp(ctx: PacketContext, daddr: Address, port: int, klass: ExpectClass) -> Verdict:
    master, params, trace = ctx.master, ctx.params, ctx.trace
    saddr: Address | None = None
    if params.sip_direct_media:
        if daddr != master.tuple_for(ctx.reply).src:
            trace.fire(rules.MEDIA_NOT_DIRECT, "%s", daddr)
            return None
        saddr = master.tuple_for(not ctx.reply).src
    elif params.sip_external_media and ctx.same_interface is not None:
        if ctx.same_interface(daddr, ctx.packet_dst):
            trace.fire(rules.MEDIA_EXTERNAL_SAME_IF, "%s", daddr)
            return None

    family = master.family
    existing = ctx.table.find(family, IPPROTO_UDP, saddr, daddr, port)
    if (existing is not None and existing.master is not master
            and existing.master.helper_key == master.helper_key and existing.klass == klass):
        # Without NAT the loop in set_expected_rtp_rtcp() ends in skip_expect.
        trace.fire(rules.MEDIA_OTHER_MASTER, "%s:%s", daddr, port)
        return None

    base = port & ~1
    rtp = ExpectTuple(family, IPPROTO_UDP, saddr, daddr, base)
    rtcp = ExpectTuple(family, IPPROTO_UDP, saddr, daddr, base + 1)
    table, now = ctx.table, ctx.now
    errp = table.related(master, rtp, klass, ExpectFlag.NONE, now, trace, skip_master=True)
    if errp in (0, EALREADY):
        errcp = table.related(master, rtcp, klass, ExpectFlag.NONE, now, trace, skip_master=True)
        if errcp in (0, EALREADY):
            if EALREADY in (errp, errcp):
                trace.fire(rules.MEDIA_ALREADY)
            trace.fire(rules.MEDIA_EXPECT, "%s %s %s/%s", klass.label, daddr, base, base + 1)
            return None
        if errp == 0:
            table.unexpect(master, rtp, klass, trace)
    # set_expected_rtp_rtcp() returns NF_DROP and process_sdp() logs "cannot add
    # expectation for voice": the rule decides the verdict, so it fires like
    # every other dropping rule (it was returned without being traced).
    trace.fire(rules.MEDIA_FAILED)
    return rules.MEDIA_FAILED


MAX_MEDIA = 3  # ARRAY_SIZE(sdp_media_types): the loop bound of process_sdp()


def process_sdp(ctx: PacketContext, cseq: int) -> Verdict:
    msg, trace = ctx.msg, ctx.trace
    ret, sdpoff, _ = get_sdp_header(msg, msg.start, SDP_HDR_VERSION, SDP_HDR_UNSPEC)
    if ret <= 0:
        trace.fire(rules.SDP_NONE)
        return None

    caddr: Address | None = None
    ret, addr, _, _ = parse_sdp_addr(msg, sdpoff, SDP_HDR_CONNECTION, SDP_HDR_MEDIA)
    if ret > 0:
        caddr = addr
        trace.fire(rules.SDP_SESSION_ADDR, "%s", addr)

    mediaoff = sdpoff
    processed = 0
    while processed < MAX_MEDIA:
        ret, mediaoff, medialen = get_sdp_header(msg, mediaoff, SDP_HDR_MEDIA, SDP_HDR_UNSPEC)
        if ret <= 0:
            break
        media_type = sdp_media_type(msg, mediaoff, medialen)
        if media_type is None:
            trace.fire(rules.SDP_MEDIA_UNKNOWN)
            mediaoff += medialen
            continue
        mediaoff += len(media_type.name)
        port, end = msg.parse_uint(mediaoff, msg.limit - mediaoff)
        if port == 0 or (msg.profile.bounded_numbers and end == mediaoff):
            trace.fire(rules.SDP_MEDIA_PORT_ZERO)
            continue
        if not 1024 <= port <= 65535:
            trace.fire(rules.SDP_MEDIA_PORT_RANGE, "wrong port %s", port)
            return rules.SDP_MEDIA_PORT_RANGE

        ret, maddr, _, _ = parse_sdp_addr(msg, mediaoff, SDP_HDR_CONNECTION, SDP_HDR_MEDIA)
        if ret > 0:
            rtp_addr = maddr
            trace.fire(rules.SDP_MEDIA_ADDR, "%s", maddr)
        elif caddr is not None:
            rtp_addr = caddr
        else:
            trace.fire(rules.SDP_NO_CONNECTION)
            return rules.SDP_NO_CONNECTION
        assert rtp_addr is not None
        verdict = set_expected_rtp_rtcp(ctx, rtp_addr, port, media_type.klass)
        if verdict is not None:
            return verdict
        processed += 1
    else:
        if get_sdp_header(msg, mediaoff, SDP_HDR_MEDIA, SDP_HDR_UNSPEC)[0] > 0:
            trace.fire(rules.SDP_MEDIA_LIMIT)
    return None


def process_sdp_request(ctx: PacketContext, cseq: int) -> Verdict:
    """sip_handlers[] maps UPDATE, ACK and PRACK requests straight to process_sdp()."""
    ctx.trace.fire(rules.SDP_REQUEST)
    return process_sdp(ctx, cseq)


def _flush_media(ctx: PacketContext, rule: Rule) -> None:
    ctx.trace.fire(rule)
    ctx.table.flush(ctx.master, True, rule, ctx.trace)


def process_invite_request(ctx: PacketContext, cseq: int) -> Verdict:
    _flush_media(ctx, rules.INVITE_FLUSH)
    verdict = process_sdp(ctx, cseq)
    if verdict is None:
        ctx.master.invite_cseq = cseq
        ctx.trace.fire(rules.INVITE_CSEQ, "%s", cseq)
    return verdict


def process_bye_request(ctx: PacketContext, cseq: int) -> Verdict:
    _flush_media(ctx, rules.BYE_FLUSH)
    return None


def process_offer_answer_response(ctx: PacketContext, cseq: int, code: int) -> Verdict:
    """process_invite_response(), process_update_response() and
    process_prack_response() are three identical copies in the kernel; all of
    them compare with invite_cseq."""
    if 100 <= code <= 299:
        ctx.trace.fire(rules.RESPONSE_SDP)
        return process_sdp(ctx, cseq)
    if ctx.master.invite_cseq == cseq:
        _flush_media(ctx, rules.RESPONSE_ERROR_FLUSH)
    else:
        ctx.trace.fire(rules.RESPONSE_ERROR_OTHER)
    return None


# --- REGISTER ---------------------------------------------------------------------------
def _header_number(ctx: PacketContext, kind: str) -> int:
    """The Expires header value, 0 when absent (no error check in the kernel)."""
    msg = ctx.msg
    ret, matchoff, _ = msg.get_header(msg.start, kind)
    if ret <= 0:
        return 0
    return msg.parse_uint(matchoff, msg.limit - matchoff)[0]


def process_register_request(ctx: PacketContext, cseq: int) -> Verdict:
    msg, master, trace = ctx.msg, ctx.master, ctx.trace
    if master.expected:
        trace.fire(rules.REGISTER_EXPECTED_MASTER)
        return None
    expires = _header_number(ctx, SIP_HDR_EXPIRES)

    ret, uri, _ = msg.parse_header_uri(msg.start, SIP_HDR_CONTACT)
    if ret < 0:
        trace.fire(rules.REGISTER_BAD_CONTACT)
        return rules.REGISTER_BAD_CONTACT
    if ret == 0 or uri is None:
        trace.fire(rules.REGISTER_NO_CONTACT)
        return None
    if uri.addr != master.tuple_for(ctx.reply).src:
        trace.fire(rules.REGISTER_THIRD_PARTY, "%s", uri.addr)
        return None
    after_uri = uri.matchoff + uri.matchlen
    proto = msg.parse_transport(after_uri)
    if not proto:
        trace.fire(rules.REGISTER_TRANSPORT)
        return None
    ret, value = msg.parse_numerical_param(after_uri, b"expires=")
    if ret < 0:
        trace.fire(rules.REGISTER_BAD_EXPIRES)
        return rules.REGISTER_BAD_EXPIRES
    if ret > 0:
        expires = value
    if expires == 0:
        trace.fire(rules.REGISTER_UNBIND)
        master.register_cseq = cseq
        return None

    saddr = master.tuple_for(not ctx.reply).src if ctx.params.sip_direct_signalling else None
    expect = ExpectTuple(master.family, proto, saddr, uri.addr, uri.port)
    err = ctx.table.related(master, expect, ExpectClass.SIGNALLING,
                            ExpectFlag.PERMANENT | ExpectFlag.INACTIVE, ctx.now, trace, skip_master=False)
    if err:
        trace.fire(rules.REGISTER_FAILED)
        return rules.REGISTER_FAILED
    trace.fire(rules.REGISTER_EXPECT, "%s:%s", uri.addr, uri.port)
    master.register_cseq = cseq
    return None


def process_register_response(ctx: PacketContext, cseq: int, code: int) -> Verdict:
    msg, master, trace = ctx.msg, ctx.master, ctx.trace
    # Some registrars answer retransmissions late: only the response to the
    # last accepted REGISTER counts.
    if master.register_cseq != cseq:
        trace.fire(rules.REG_RESPONSE_STALE)
        return None
    if 100 <= code <= 199:
        trace.fire(rules.REG_RESPONSE_PROVISIONAL)
        return None
    if not 200 <= code <= 299:
        trace.fire(rules.REG_RESPONSE_ERROR)
        ctx.table.flush(master, False, rules.REG_RESPONSE_ERROR, trace)
        return None

    expires = _header_number(ctx, SIP_HDR_EXPIRES)
    coff = msg.start
    in_contact: bool | None = False
    flush_rule = rules.REG_RESPONSE_NO_MATCH
    while True:
        c_expires = expires
        ret, uri, in_contact = msg.parse_header_uri(coff, SIP_HDR_CONTACT, in_contact)
        if ret < 0:
            trace.fire(rules.REG_RESPONSE_BAD_CONTACT)
            return rules.REG_RESPONSE_BAD_CONTACT
        if ret == 0 or uri is None:
            break
        coff = uri.dataoff
        if uri.addr != master.tuple_for(ctx.reply).dst:
            trace.fire(rules.REG_RESPONSE_SKIP_CONTACT, "%s", uri.addr)
            continue
        after_uri = uri.matchoff + uri.matchlen
        proto = msg.parse_transport(after_uri)
        if not proto:
            trace.fire(rules.REG_RESPONSE_SKIP_CONTACT, "transport")
            continue
        ret, value = msg.parse_numerical_param(after_uri, b"expires=")
        if ret < 0:
            trace.fire(rules.REG_RESPONSE_BAD_EXPIRES)
            return rules.REG_RESPONSE_BAD_EXPIRES
        if ret > 0:
            c_expires = value
        if c_expires == 0:
            flush_rule = rules.REG_RESPONSE_UNBIND
            break
        if ctx.table.refresh_signalling(master, uri.addr, proto, uri.port, c_expires, ctx.now, trace):
            return None
    trace.fire(flush_rule)
    ctx.table.flush(master, False, flush_rule, trace)
    return None


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
        return process_sip_response(ctx)
    return process_sip_request(ctx)
