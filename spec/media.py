"""SDP to media expectations: ``process_sdp()`` and ``set_expected_rtp_rtcp()``.

The :class:`~sipct.spec.machines.InviteMachine` runs these as its actions
(``expect_media``): they read the SDP of one message and propose an RTP/RTCP
pair of expectations per media description; the
:class:`~sipct.spec.machines.ExpectationLifecycle` of each decides whether it
is linked. NAT's ``sdp_*`` hooks would run here, before each pair is proposed.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from . import natsip, rules
from .expectation import EALREADY, IPPROTO_UDP, Address, ExpectClass, ExpectFlag, ExpectTuple
from .rules import Rule
from .sdp import (SDP_HDR_CONNECTION, SDP_HDR_MEDIA, SDP_HDR_UNSPEC, SDP_HDR_VERSION, get_sdp_header,
                  parse_sdp_addr, sdp_media_type)

if TYPE_CHECKING:
    from .handlers import PacketContext

NO_FLAGS = ExpectFlag.NONE  # a module global: cheaper to read than the enum's attribute

Verdict = Rule | None  # None: NF_ACCEPT; a Rule: NF_DROP, for that reason

# The routing question sip_external_media asks (set_expected_rtp_rtcp): is the
# route to the media address through the device this packet leaves by? None
# when there is no route at all. Routing is the caller's: the spec is pure.
SameInterface = Callable[[Address, Address], "bool | None"]


@dataclass(slots=True)
class MediaPair:
    """What set_expected_rtp_rtcp() works on; the NatMachine's guards and
    actions read and change it (``*daddr`` is the caller's ``rtp_addr``)."""

    daddr: Address
    port: int
    klass: ExpectClass
    mediaoff: int
    medialen: int
    saddr: Address | None = None
    found: Any = None  # the expectation __nf_ct_expect_find() returned
    direct_rtp: bool = False
    skip_expect: bool = False

    @property
    def any_addr(self) -> Address:
        return ipaddress.ip_address("::" if self.daddr.version == 6 else "0.0.0.0")


def set_expected_rtp_rtcp(ctx: "PacketContext", media: MediaPair) -> Verdict:
    master, params, trace = ctx.master, ctx.params, ctx.trace
    if params.sip_direct_media:
        if media.daddr != master.tuple_for(ctx.reply).src:
            trace.fire(rules.MEDIA_NOT_DIRECT, "%s", media.daddr)
            return None
        media.saddr = master.tuple_for(not ctx.reply).src
    elif params.sip_external_media and ctx.same_interface is not None:
        if ctx.same_interface(media.daddr, ctx.packet_dst):
            trace.fire(rules.MEDIA_EXTERNAL_SAME_IF, "%s", media.daddr)
            return None

    # "RTP optimization": another master's expectation of this media; a
    # translated master follows a NATed one to its saved destination.
    family = master.family
    nat = master.nat
    while not media.skip_expect:
        existing = ctx.table.find(family, IPPROTO_UDP, media.saddr, media.daddr, media.port)
        if (existing is None or existing.master is master
                or existing.master.helper_key != master.helper_key or existing.klass != media.klass):
            break
        media.found = existing
        nat.send("media_found", ctx, media)
    if media.skip_expect:
        # The loop ends in skip_expect: always without NAT, and under NAT when
        # the saved destination direct_rtp moved to is expected already.
        trace.fire(rules.MEDIA_OTHER_MASTER, "%s:%s", media.daddr, media.port)

    media.port &= ~1
    if media.direct_rtp and not natsip.nf_nat_sdp_port(ctx, media.mediaoff, media.medialen, media.port):
        return _mangle_failed(ctx)
    if media.skip_expect:
        return None
    return nat.send("expect_media", ctx, media)


def _mangle_failed(ctx: "PacketContext") -> Verdict:
    ctx.trace.fire(rules.NAT_MANGLE_FAILED)
    return rules.NAT_MANGLE_FAILED


def expect_pair(ctx: "PacketContext", media: MediaPair) -> Verdict:
    """The pair without NAT: -EALREADY counts as success ("we pretend
    expectation was set up")."""
    master, table, now, trace = ctx.master, ctx.table, ctx.now, ctx.trace
    family, klass, base = master.family, media.klass, media.port
    rtp = ExpectTuple(family, IPPROTO_UDP, media.saddr, media.daddr, base)
    rtcp = ExpectTuple(family, IPPROTO_UDP, media.saddr, media.daddr, base + 1)
    errp, rtp_entry = table.related(master, rtp, klass, NO_FLAGS, now, trace, skip_master=True)
    if errp in (0, EALREADY):
        errcp, _ = table.related(master, rtcp, klass, NO_FLAGS, now, trace, skip_master=True,
                                 pair=rtp_entry if errp == 0 else None)
        if errcp in (0, EALREADY):
            if EALREADY in (errp, errcp):
                trace.fire(rules.MEDIA_ALREADY)
            trace.fire(rules.MEDIA_EXPECT, "%s %s %s/%s", klass.label, media.daddr, base, base + 1)
            return None
        if errp == 0:
            table.unexpect(master, rtp, klass, now, trace)
    # set_expected_rtp_rtcp() returns NF_DROP and process_sdp() logs "cannot add
    # expectation for voice": the rule decides the verdict, so it fires like
    # every other dropping rule (it was returned without being traced).
    trace.fire(rules.MEDIA_FAILED)
    return rules.MEDIA_FAILED


@dataclass(slots=True)
class SessionAddress:
    """What process_sdp() hands hooks->sdp_session."""

    sdpoff: int
    rtp_addr: Address | None


MAX_MEDIA = 3  # ARRAY_SIZE(sdp_media_types): the loop bound of process_sdp()


def process_sdp(ctx: "PacketContext", cseq: int) -> Verdict:
    msg, trace = ctx.msg, ctx.trace
    nat = ctx.master.nat
    ret, sdpoff, _ = get_sdp_header(msg, msg.start, SDP_HDR_VERSION, SDP_HDR_UNSPEC)
    if ret <= 0:
        trace.fire(rules.SDP_NONE)
        return None

    caddr: Address | None = None
    rtp_addr: Address | None = None
    ret, addr, _, _ = parse_sdp_addr(msg, sdpoff, SDP_HDR_CONNECTION, SDP_HDR_MEDIA)
    if ret > 0:
        caddr = rtp_addr = addr
        trace.fire(rules.SDP_SESSION_ADDR, "%s", addr)

    mediaoff = sdpoff
    processed = 0
    while processed < MAX_MEDIA:
        msg = ctx.msg  # a NAT hook may have rewritten it
        ret, mediaoff, medialen = get_sdp_header(msg, mediaoff, SDP_HDR_MEDIA, SDP_HDR_UNSPEC)
        if ret <= 0:
            break
        media_type = sdp_media_type(msg, mediaoff, medialen)
        if media_type is None:
            trace.fire(rules.SDP_MEDIA_UNKNOWN)
            mediaoff += medialen
            continue
        mediaoff += len(media_type.name)
        medialen -= len(media_type.name)
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
        media = MediaPair(rtp_addr, port, media_type.klass, mediaoff, medialen)
        verdict = set_expected_rtp_rtcp(ctx, media)
        if verdict is not None:
            return verdict
        rtp_addr = media.daddr
        if ret > 0:
            # "Update media connection address if present"
            verdict = nat.send("media_address", ctx, media)
            if verdict is not None:
                return verdict
        processed += 1
    else:
        if get_sdp_header(ctx.msg, mediaoff, SDP_HDR_MEDIA, SDP_HDR_UNSPEC)[0] > 0:
            trace.fire(rules.SDP_MEDIA_LIMIT)
    # "Update session connection and owner addresses"
    return nat.send("session_address", ctx, SessionAddress(sdpoff, rtp_addr))
