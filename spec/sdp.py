"""SDP lookup as nf_conntrack_sip.c does it: ``v=``, ``o=``, ``c=``, ``m=`` lines.

SDP "headers" are found at line starts anywhere after the given offset (the
kernel does not locate the body first), names compare case-insensitively, and
the ``IN IP4 ``/``IN IP6 `` search within a value is case-sensitive and chosen
by the master's address family - an IPv4 master never sees an ``IN IP6`` line.
"""

from __future__ import annotations

from dataclasses import dataclass

from .expectation import Address, ExpectClass
from .parse import EOL, MATCH_LEN, SipMessage
from .scan import pton

SDP_HDR_UNSPEC = "unspec"
SDP_HDR_VERSION = "v"
SDP_HDR_OWNER = "o"
SDP_HDR_CONNECTION = "c"
SDP_HDR_MEDIA = "m"


@dataclass(frozen=True, slots=True)
class SdpHeader:
    name: bytes
    search: bytes | None
    match_len: str


def _sdp_hdrs(ip: bytes) -> dict[str, SdpHeader]:
    return {
        SDP_HDR_VERSION: SdpHeader(b"v=", None, "digits_len"),
        SDP_HDR_OWNER: SdpHeader(b"o=", b"IN " + ip + b" ", "sdp_addr_len"),
        SDP_HDR_CONNECTION: SdpHeader(b"c=", b"IN " + ip + b" ", "sdp_addr_len"),
        SDP_HDR_MEDIA: SdpHeader(b"m=", None, "media_len"),
    }


# ct_sdp_hdrs_v4[] and ct_sdp_hdrs_v6[]
CT_SDP_HDRS: dict[int, dict[str, SdpHeader]] = {4: _sdp_hdrs(b"IP4"), 6: _sdp_hdrs(b"IP6")}


@dataclass(frozen=True, slots=True)
class SdpMediaType:
    name: bytes
    klass: ExpectClass


# sdp_media_types[]: compared with strncmp(), so case-sensitive, and the
# trailing space is part of the name ("audio " - "audiox 5000" is unknown).
SDP_MEDIA_TYPES: tuple[SdpMediaType, ...] = (
    SdpMediaType(b"audio ", ExpectClass.AUDIO),
    SdpMediaType(b"video ", ExpectClass.VIDEO),
    SdpMediaType(b"image ", ExpectClass.IMAGE),
)


def sdp_header_search(msg: SipMessage, pos: int, limit: int, needle: bytes) -> int | None:
    """ct_sdp_header_search(): case-sensitive, within the line."""
    buf = msg.buf
    end = limit - len(needle)
    if pos >= end:
        return None
    eol = EOL.search(buf, pos, end)
    stop = eol.start() if eol is not None else end
    found = buf.find(needle, pos, stop - 1 + len(needle))
    return found if found >= 0 else None


def get_sdp_header(msg: SipMessage, dataoff: int, kind: str, term: str) -> tuple[int, int, int]:
    """ct_sip_get_sdp_header(): (ret, matchoff, matchlen) of the first ``kind``
    line after ``dataoff``, stopping at a ``term`` line."""
    hdrs = CT_SDP_HDRS[msg.family]
    hdr = hdrs[kind]
    thdr = hdrs[term] if term != SDP_HDR_UNSPEC else None
    pos = msg.find_line(dataoff, hdr.name)
    if thdr is not None:
        # The loop tests the terminating name first at each line.
        term_pos = msg.find_line(dataoff, thdr.name)
        if term_pos >= 0 and (pos < 0 or term_pos <= pos):
            return 0, 0, 0
    if pos < 0:
        return 0, 0, 0
    limit = msg.limit
    pos += len(hdr.name)
    matchoff = pos
    if hdr.search is not None:
        found = sdp_header_search(msg, pos, limit, hdr.search)
        if found is None:
            return -1, matchoff, 0
        pos = found + len(hdr.search)
    matchlen, _ = MATCH_LEN[hdr.match_len](msg, pos)
    if not matchlen:
        return -1, matchoff, 0
    return 1, pos, matchlen


def parse_sdp_addr(msg: SipMessage, dataoff: int, kind: str, term: str) -> tuple[int, Address | None, int, int]:
    """ct_sip_parse_sdp_addr(): (ret, address, matchoff, matchlen)."""
    ret, matchoff, matchlen = get_sdp_header(msg, dataoff, kind, term)
    if ret <= 0:
        return ret, None, matchoff, matchlen
    addr, _ = pton(msg.family, msg.buf, matchoff, matchoff + matchlen)
    if addr is None:
        return -1, None, matchoff, matchlen
    return 1, addr, matchoff, matchlen


def sdp_media_type(msg: SipMessage, matchoff: int, matchlen: int) -> SdpMediaType | None:
    """sdp_media_type()"""
    for t in SDP_MEDIA_TYPES:
        if matchlen >= len(t.name) and msg.buf.startswith(t.name, matchoff):
            return t
    return None
