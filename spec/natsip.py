"""``nf_nat_sip.c``: what the SIP NAT helper rewrites, and its expectations.

nf_conntrack_sip calls these through ``nf_nat_sip_hooks`` only on a master
NAT translated (``ct->status & IPS_NAT_MASK``); the
:class:`~sipct.spec.machines.NatMachine` of the master makes that choice and
runs them as its actions. Each function ports the kernel function it is
named after. A rewrite replaces bytes of the message the handlers are
reading (``mangle_packet()``: ``*dptr`` and ``*datalen`` follow), so
``mangle()`` swaps ``ctx.msg`` for the rewritten message and everything
parsed afterwards sees the new bytes, as in the kernel.

Both ends of a master's view are ``ct->tuplehash[dir]`` (``here``: as this
packet arrived) and ``ct->tuplehash[!dir]`` (``there``: how the other side
sees the connection).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import rules
from .expectation import (EBUSY, IP_CT_DIR_ORIGINAL, IP_CT_DIR_REPLY, IPPROTO_TCP, IPPROTO_UDP, Address,
                          ExpectClass, ExpectFlag, ExpectNat, ExpectTuple)
from .parse import (SIP_HDR_CONTACT, SIP_HDR_CONTENT_LENGTH, SIP_HDR_FROM, SIP_HDR_TO, SIP_HDR_VIA_TCP,
                    SIP_HDR_VIA_UDP, SipMessage)
from .rules import Rule
from .scan import sip_strtouint, string_len
from .sdp import SDP_HDR_CONNECTION, SDP_HDR_MEDIA, SDP_HDR_OWNER, SDP_HDR_UNSPEC, SDP_HDR_VERSION, get_sdp_header

if TYPE_CHECKING:
    from .handlers import PacketContext
    from .master import Master

Verdict = Rule | None
NO_FLAGS = ExpectFlag.NONE

# The largest packet enlarge_skb() makes (nf_nat_helper.c: "if (skb->len +
# extra > 65535) return false"); the IP and transport headers count.
IP_MAX = 65535
HEADERS = {(4, IPPROTO_UDP): 20 + 8, (6, IPPROTO_UDP): 40 + 8, (4, IPPROTO_TCP): 20 + 32, (6, IPPROTO_TCP): 40 + 32}


# --- mangle_packet() ------------------------------------------------------------------------------
def mangle(ctx: "PacketContext", matchoff: int, matchlen: int, text: bytes) -> bool:
    """mangle_packet(): replace ``matchlen`` bytes at ``matchoff`` of the
    payload; the message grows or shrinks with it. False if the kernel
    could not (the packet would pass 65535 bytes)."""
    msg = ctx.msg
    grow = len(text) - matchlen
    if grow > 0 and len(msg.buf) + grow + HEADERS[(msg.family, msg.proto)] > IP_MAX:
        return False
    buf = msg.buf[:matchoff] + text + msg.buf[matchoff + matchlen:]
    ctx.msg = SipMessage(buf, msg.start, msg.limit + grow, msg.family, msg.proto, msg.profile)
    return True


def sprintf_addr(addr: Address, delim: bool) -> bytes:
    """sip_sprintf_addr(): %pI4, or %pI6c (compressed) in brackets when ``delim``."""
    if addr.version == 4:
        return str(addr).encode()
    return f"[{addr}]".encode() if delim else str(addr).encode()


def sprintf_addr_port(addr: Address, port: int) -> bytes:
    """sip_sprintf_addr_port(): IPv6 always in brackets."""
    return (f"{addr}:{port}" if addr.version == 4 else f"[{addr}]:{port}").encode()


# --- the msg hook: nf_nat_sip() ---------------------------------------------------------------------
def map_addr(ctx: "PacketContext", matchoff: int, matchlen: int, addr: Address, port: int,
             rule: Rule | None = None) -> bool:
    """map_addr(): an address:port that is one end of the connection as this
    packet sees it becomes that end as the other side sees it."""
    master = ctx.master
    here, there = master.tuple_for(ctx.reply), master.tuple_for(not ctx.reply)
    if addr == here.src and port == here.sport:
        newaddr, newport = there.dst, there.dport
    elif addr == here.dst and port == here.dport:
        newaddr, newport = there.src, master.forced_dport or there.sport
    else:
        return True
    if newaddr == addr and newport == port:
        return True
    if rule is not None:
        ctx.trace.fire(rule, "%s:%s -> %s:%s", addr, port, newaddr, newport)
    return mangle(ctx, matchoff, matchlen, sprintf_addr_port(newaddr, newport))


def map_sip_addr(ctx: "PacketContext", kind: str) -> bool:
    msg = ctx.msg
    ret, uri, _ = msg.parse_header_uri(msg.start, kind)
    if ret <= 0 or uri is None:
        return True
    return map_addr(ctx, uri.matchoff, uri.matchlen, uri.addr, uri.port, rules.NAT_FROM_TO)


def nf_nat_sip(ctx: "PacketContext") -> Verdict:
    """The ``msg`` hook: every address of the connection in the SIP headers."""
    master, trace = ctx.master, ctx.trace
    here, there = master.tuple_for(ctx.reply), master.tuple_for(not ctx.reply)
    trace.fire(rules.NAT_MESSAGE)
    msg = ctx.msg
    request = not msg.lower.startswith(b"sip/2.0", msg.start)
    if request:
        ret, off, length, addr, port = parse_request(msg)
        if ret > 0 and not map_addr(ctx, off, length, addr, port, rules.NAT_REQUEST_URI):
            return _failed(ctx)

    msg = ctx.msg
    via_kind = SIP_HDR_VIA_TCP if master.proto == IPPROTO_TCP else SIP_HDR_VIA_UDP
    ret, via, _ = msg.parse_header_uri(msg.start, via_kind)
    if ret > 0 and via is not None:
        end = here.src if request else here.dst
        end_port = here.sport if request else here.dport
        # "We're only interested in headers related to this connection"
        if via.addr == end and via.port == end_port:
            olen = msg.limit
            if not map_addr(ctx, via.matchoff, via.matchlen, via.addr, via.port, rules.NAT_VIA):
                return _failed(ctx)
            matchend = via.matchoff + via.matchlen + ctx.msg.limit - olen
            # maddr= (RFC 2361) says where to send the reply.
            ret, poff, plen, addr = parse_address_param(ctx.msg, matchend, b"maddr=", True)
            if ret > 0 and addr == here.src and addr != there.dst:
                trace.fire(rules.NAT_VIA_MADDR, "%s -> %s", addr, there.dst)
                if not mangle(ctx, poff, plen, sprintf_addr(there.dst, True)):
                    return _failed(ctx)
            # received= (RFC 2361): the address the server received the request from.
            ret, poff, plen, addr = parse_address_param(ctx.msg, matchend, b"received=", False)
            if ret > 0 and addr == here.dst and addr != there.src:
                trace.fire(rules.NAT_VIA_RECEIVED, "%s -> %s", addr, there.src)
                if not mangle(ctx, poff, plen, sprintf_addr(there.src, False)):
                    return _failed(ctx)
            # rport= (RFC 3581): the port the server received the request from.
            ret, poff, plen, n = parse_numerical_param(ctx.msg, matchend, b"rport=")
            if ret > 0 and (1024 <= n <= 65535 or not msg.profile.nat_rport_range) \
                    and n == here.dport and n != there.sport:
                trace.fire(rules.NAT_VIA_RPORT, "%s -> %s", n, there.sport)
                if not mangle(ctx, poff, plen, str(there.sport).encode()):
                    return _failed(ctx)

    # Every Contact header and every URI in it.
    coff = ctx.msg.start
    in_header: bool | None = False
    while True:
        ret, uri, in_header = ctx.msg.parse_header_uri(coff, SIP_HDR_CONTACT, in_header)
        if ret <= 0 or uri is None:
            break
        before = ctx.msg.limit
        if not map_addr(ctx, uri.matchoff, uri.matchlen, uri.addr, uri.port, rules.NAT_CONTACT):
            return _failed(ctx)
        # "coff += delta" only where the profile's nf_nat_sip() has it.
        coff = uri.dataoff + (ctx.msg.limit - before if ctx.msg.profile.nat_contact_offset_follows else 0)

    if not map_sip_addr(ctx, SIP_HDR_FROM) or not map_sip_addr(ctx, SIP_HDR_TO):
        return _failed(ctx)

    # "Mangle destination port for Cisco phones"
    if ctx.reply and master.forced_dport:
        if master.proto != IPPROTO_UDP:
            if not msg.profile.nat_forced_dport_udp_only:
                raise NatUnpredictable("6.1.170's nf_nat_sip() writes a UDP destination port and checksum into a "
                                       "TCP header (forced_dport on a TCP master)")
            trace.fire(rules.NAT_FORCED_DPORT_TCP)
            return rules.NAT_FORCED_DPORT_TCP
        trace.fire(rules.NAT_FORCED_DPORT, "%s", master.forced_dport)
        ctx.forced_dport = master.forced_dport
    return None


def _failed(ctx: "PacketContext") -> Rule:
    ctx.trace.fire(rules.NAT_MANGLE_FAILED)
    return rules.NAT_MANGLE_FAILED


# --- parsers only nf_nat_sip uses (exported by nf_conntrack_sip.c) ------------------------------------
def parse_request(msg: SipMessage) -> tuple[int, int, int, Address | None, int]:
    """ct_sip_parse_request(): the host[:port] of the Request-URI as
    (ret, matchoff, matchlen, addr, port)."""
    buf, limit = msg.buf, msg.limit
    pos = msg.start
    # "Skip method and following whitespace": string_len() counts letters
    # only (isalpha), so a message that starts with anything else - a TCP
    # segment that begins inside a header - has no Request-URI.
    mlen = string_len(buf, pos, limit)
    if not mlen:
        return 0, 0, 0, None, 0
    pos += mlen + 1
    if pos >= limit:
        return 0, 0, 0, None, 0
    while pos < limit - 4:
        if buf[pos] in (0x0D, 0x0A):
            return -1, 0, 0, None, 0
        if msg.lower.startswith(b"sip:", pos):
            pos += 4
            break
        pos += 1
    # skp_epaddr_len(): skip a user part up to '@' on this line
    at = pos
    while at < limit and buf[at] not in (0x40, 0x0D, 0x0A):
        at += 1
    start = at + 1 if at < limit and buf[at] == 0x40 else pos
    if not msg.epaddr_len(start)[0]:
        return 0, 0, 0, None, 0
    addr, end = msg.parse_addr(start, limit, True)
    if addr is None:
        return -1, 0, 0, None, 0
    ok, port, end = msg.parse_port(end, limit)
    if not ok:
        return -1, 0, 0, None, 0
    if end == start:
        return 0, 0, 0, None, 0
    return 1, start, end - start, addr, port


def parse_address_param(msg: SipMessage, dataoff: int, name: bytes,
                        delim: bool) -> tuple[int, int, int, Address | None]:
    """ct_sip_parse_address_param(): (ret, matchoff, matchlen, addr)."""
    limit = msg._param_limit(dataoff)
    start = msg.header_search(dataoff, limit, name)
    if start is None:
        return 0, 0, 0, None
    start += len(name)
    addr, end = msg.parse_addr(start, limit, delim)
    if addr is None:
        return 0, 0, 0, None
    return 1, start, end - start, addr


def parse_numerical_param(msg: SipMessage, dataoff: int, name: bytes) -> tuple[int, int, int, int]:
    """ct_sip_parse_numerical_param() with its offsets: (ret, matchoff, matchlen, value)."""
    limit = msg._param_limit(dataoff)
    start = msg.header_search(dataoff, limit, name)
    if start is None:
        return 0, 0, 0, 0
    start += len(name)
    if msg.profile.bounded_numbers:
        value, end = sip_strtouint(msg.buf, start, limit - start)
    else:
        value, end = msg.parse_uint(start, limit - start, base=0)
    if end == start:
        return -1, 0, 0, 0
    return 1, start, end - start, value


# --- SDP hooks ------------------------------------------------------------------------------------
def mangle_content_len(ctx: "PacketContext") -> bool:
    """mangle_content_len(): Content-Length becomes the bytes from "v=" to the message's end."""
    msg = ctx.msg
    ret, matchoff, _ = get_sdp_header(msg, msg.start, SDP_HDR_VERSION, SDP_HDR_UNSPEC)
    if ret <= 0:
        return False
    c_len = msg.limit - matchoff + len(b"v=")
    ret, off, length = msg.get_header(msg.start, SIP_HDR_CONTENT_LENGTH)
    if ret <= 0:
        return False
    ctx.trace.fire(rules.NAT_CONTENT_LENGTH, "%s", c_len)
    return mangle(ctx, off, length, str(c_len).encode())


def mangle_sdp_packet(ctx: "PacketContext", sdpoff: int, kind: str, term: str, text: bytes) -> int:
    """mangle_sdp_packet(): 0, -ENOENT (no such line) or -EINVAL."""
    ret, matchoff, matchlen = get_sdp_header(ctx.msg, sdpoff, kind, term)
    if ret <= 0:
        return -2
    return 0 if mangle(ctx, matchoff, matchlen, text) else -22


def nf_nat_sdp_addr(ctx: "PacketContext", mediaoff: int, addr: Address) -> bool:
    """The ``sdp_addr`` hook: the media's c= line."""
    ctx.trace.fire(rules.NAT_SDP_ADDR, "%s", addr)
    if mangle_sdp_packet(ctx, mediaoff, SDP_HDR_CONNECTION, SDP_HDR_MEDIA, sprintf_addr(addr, False)):
        return False
    return mangle_content_len(ctx)


def nf_nat_sdp_port(ctx: "PacketContext", matchoff: int, matchlen: int, port: int) -> bool:
    """The ``sdp_port`` hook: the m= port."""
    ctx.trace.fire(rules.NAT_SDP_PORT, "%s", port)
    if not mangle(ctx, matchoff, matchlen, str(port).encode()):
        return False
    return mangle_content_len(ctx)


def nf_nat_sdp_session(ctx: "PacketContext", sdpoff: int, addr: Address) -> Verdict:
    """The ``sdp_session`` hook: o= (which must exist) and the session c= (which may not)."""
    text = sprintf_addr(addr, False)
    if mangle_sdp_packet(ctx, sdpoff, SDP_HDR_OWNER, SDP_HDR_MEDIA, text):
        ctx.trace.fire(rules.NAT_SDP_SESSION_NO_OWNER)
        return rules.NAT_SDP_SESSION_NO_OWNER
    ctx.trace.fire(rules.NAT_SDP_SESSION, "%s", addr)
    if mangle_sdp_packet(ctx, sdpoff, SDP_HDR_CONNECTION, SDP_HDR_MEDIA, text) not in (0, -2):
        return _failed(ctx)
    if not mangle_content_len(ctx):
        return _failed(ctx)
    return None


def translated_source(master: "Master", reply: bool, fallback: Address) -> Address:
    """"Connection will come from reply": the sender's address as the other
    side sees it, or ``fallback`` (the SDP's) when the sender is not source-NATed."""
    here, there = master.tuple_for(reply), master.tuple_for(not reply)
    if here.src == there.dst:
        return fallback
    return there.dst


def nf_nat_sdp_media(ctx: "PacketContext", daddr: Address, port: int, klass: ExpectClass,
                     mediaoff: int, medialen: int, saddr: Address | None) -> tuple[Verdict, Address]:
    """The ``sdp_media`` hook: the RTP/RTCP pair expected at the translated
    address, its port searched from the SDP's upwards by 2; returns the
    verdict and the address process_sdp() goes on with (``rtp_addr``)."""
    master, table, now, trace = ctx.master, ctx.table, ctx.now, ctx.trace
    rtp_addr = translated_source(master, ctx.reply, daddr)
    direction = IP_CT_DIR_ORIGINAL if ctx.reply else IP_CT_DIR_REPLY  # exp->dir = !dir
    family = master.family
    base = port  # set_expected_rtp_rtcp() already made it even
    rtp_nat = ExpectNat(direction, daddr, base)
    rtcp_nat = ExpectNat(direction, daddr, base + 1)
    found = 0
    p = base
    while p != 0:
        rtp = ExpectTuple(family, IPPROTO_UDP, saddr, rtp_addr, p)
        err, rtp_entry = table.related(master, rtp, klass, NO_FLAGS, now, trace, skip_master=True, nat=rtp_nat)
        if err == EBUSY:
            trace.fire(rules.NAT_SDP_MEDIA_MOVED, "%s", p)
            p = (p + 2) & 0xFFFF
            continue
        if err < 0:
            break
        rtcp = ExpectTuple(family, IPPROTO_UDP, saddr, rtp_addr, (p + 1) & 0xFFFF)
        err, _ = table.related(master, rtcp, klass, NO_FLAGS, now, trace, skip_master=True, nat=rtcp_nat,
                               pair=rtp_entry)
        if err == 0:
            found = p
            break
        table.unexpect(master, rtp, klass, now, trace, rules.NAT_SDP_MEDIA_MOVED)
        if err == EBUSY:
            trace.fire(rules.NAT_SDP_MEDIA_MOVED, "%s", p)
            p = (p + 2) & 0xFFFF
            continue
        break
    if not found:
        trace.fire(rules.NAT_SDP_MEDIA_NO_PORT)
        return rules.NAT_SDP_MEDIA_NO_PORT, rtp_addr
    trace.fire(rules.NAT_SDP_MEDIA, "%s %s:%s/%s (saved %s:%s)", klass.label, rtp_addr, found, found + 1, daddr, base)
    if found != base and not nf_nat_sdp_port(ctx, mediaoff, medialen, found):
        rtp = ExpectTuple(family, IPPROTO_UDP, saddr, rtp_addr, found)
        rtcp = ExpectTuple(family, IPPROTO_UDP, saddr, rtp_addr, found + 1)
        table.unexpect(master, rtp, klass, now, trace, rules.NAT_MANGLE_FAILED)
        table.unexpect(master, rtcp, klass, now, trace, rules.NAT_MANGLE_FAILED)
        return _failed(ctx), rtp_addr
    return None, rtp_addr


# --- the expect hook: nf_nat_sip_expect() -----------------------------------------------------------
# nf_nat_exp_find_port()'s max_attempts (nf_nat_helper.c): random draws after the first port, fewer
# when fewer ports lie above it.
FIND_PORT_ATTEMPTS = 128


def nf_nat_sip_expect(ctx: "PacketContext", expect: ExpectTuple, matchoff: int, matchlen: int,
                      klass: ExpectClass, flags: ExpectFlag) -> tuple[Rule | None, object]:
    """The ``expect`` hook of process_register_request(): the signalling
    expectation at the sender's translated address; the Contact follows.
    Returns (the rule that drops the REGISTER or None, the entry)."""
    master, trace = ctx.master, ctx.trace
    here, there = master.tuple_for(ctx.reply), master.tuple_for(not ctx.reply)
    newaddr = expect.dst if here.src == there.dst else there.dst
    # "If the signalling port matches the connection's source port in the
    # original direction, try to use the destination port in the opposite direction."
    srcport = master.forced_dport or here.sport
    port = there.dport if expect.dport == srcport else expect.dport
    nat = ExpectNat(IP_CT_DIR_ORIGINAL if ctx.reply else IP_CT_DIR_REPLY, expect.dst, expect.dport)
    moved = ExpectTuple(expect.family, expect.proto, expect.src, newaddr, port, expect.sport)
    # nf_nat_exp_find_port(): the port, then up to 128 random ones on -EBUSY
    # ("min + get_random_u32_below(range)"), drawn by the caller.
    err, entry = ctx.table.related(master, moved, klass, flags, ctx.now, trace, skip_master=False, nat=nat)
    attempt, draws = 0, min(0xFFFF - port, FIND_PORT_ATTEMPTS)
    while err == EBUSY and attempt < draws:
        if ctx.nat_port_choice is None:
            raise NatUnpredictable(f"{moved}: nf_nat_exp_find_port() tries random ports after -EBUSY")
        attempt += 1
        drawn = ctx.nat_port_choice(moved, attempt)
        if drawn is None:
            break
        if not port <= drawn < 0xFFFF:
            raise ValueError(f"nf_nat_exp_find_port() draws from {port}-65534, not {drawn}")
        moved = ExpectTuple(moved.family, moved.proto, moved.src, newaddr, drawn, moved.sport)
        err, entry = ctx.table.related(master, moved, klass, flags, ctx.now, trace, skip_master=False, nat=nat)
    if err:
        trace.fire(rules.NAT_REGISTER_NO_PORT)
        return rules.NAT_REGISTER_NO_PORT, entry
    port = moved.dport
    trace.fire(rules.NAT_REGISTER, "%s:%s (saved %s:%s)", newaddr, port, expect.dst, expect.dport)
    if newaddr != expect.dst or port != expect.dport:
        trace.fire(rules.NAT_REGISTER_CONTACT, "%s:%s", newaddr, port)
        if not mangle(ctx, matchoff, matchlen, sprintf_addr_port(newaddr, port)):
            ctx.table.end(entry, "unlink", rules.NAT_MANGLE_FAILED, ctx.now, trace, report=False)
            return _failed(ctx), entry
    return None, entry


class NatUnpredictable(ValueError):
    """The kernel's NAT path takes a random choice here, or leaves what
    happens next to the TCP stacks (a segment resized without seqadj)."""


# --- nf_nat_sip_expected(): the binding of a connection that matched ----------------------------------
def nat_sip_expected(original_src: Address, original_sport: int, proto: int, klass: ExpectClass, nat: ExpectNat,
                     master: "Master", pairs: list[tuple[ExpectTuple, ExpectNat]],
                     trace) -> tuple[tuple[Address, int], tuple[Address, int | None] | None]:
    """The bindings nf_nat_sip_expected() makes for a new conntrack that
    matched an expectation with a NAT part: the destination always (the
    saved address and port), the source from the paired expectation whose
    saved address:port this connection comes from (symmetric RTP), else
    only the address, when it comes from the master's peer.
    ``pairs`` are the master's expectations with a NAT part, in
    help->expectations order, this one gone already if it was used up."""
    trace.fire(rules.NAT_EXPECTED, "%s:%s", nat.addr, nat.port)
    dst = (nat.addr, nat.port)
    if klass != ExpectClass.SIGNALLING:
        for t, pair in pairs:
            if t.family == original_src.version and t.proto == proto and pair.addr == original_src \
                    and pair.port == original_sport:
                trace.fire(rules.NAT_EXPECTED_PAIR, "%s:%s", t.dst, t.dport)
                return dst, (t.dst, t.dport)
    if original_src == master.tuple_for(nat.dir == IP_CT_DIR_REPLY).src:
        src = master.tuple_for(nat.dir != IP_CT_DIR_REPLY).dst
        trace.fire(rules.NAT_EXPECTED_MASTER, "%s", src)
        return dst, (src, None)
    return dst, None

