"""SIP header parsing with the kernel's semantics, not RFC 3261's.

One :class:`SipMessage` is what the kernel calls ``(dptr, datalen)``: a window
``[start, limit)`` of a packet's payload (a TCP segment can hold several). All
positions are absolute indices into the payload. Every function names the
kernel function it ports; where the kernel reads one byte past ``limit`` (it
does, in several places) the port reads the same byte of the payload, or a NUL
past its end.

Return conventions follow the kernel: ``1`` found, ``0`` not present, ``-1``
present but unparsable.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from .expectation import IPPROTO_TCP, IPPROTO_UDP, Address
from .params import SIP_PORT
from .profiles import KernelProfile
from .scan import (_ALPHA_RUN, _DIGIT_RUN, ALPHA, CR, HT, LF, SP, digits_len, pton,
                   simple_strtoul, sip_strtouint, string_len, word_len)
from .values import value

# enum sip_header_types
SIP_HDR_CSEQ = "cseq"
SIP_HDR_FROM = "from"
SIP_HDR_TO = "to"
SIP_HDR_CONTACT = "contact"
SIP_HDR_VIA_UDP = "via-udp"
SIP_HDR_VIA_TCP = "via-tcp"
SIP_HDR_EXPIRES = "expires"
SIP_HDR_CONTENT_LENGTH = "content-length"
SIP_HDR_CALL_ID = "call-id"

@dataclass(frozen=True, slots=True)
class SipHeader:
    """struct sip_header: full name, compact name, value search string, value scanner."""

    name: bytes
    cname: bytes | None
    search: bytes | None
    match_len: str  # name of the SipMessage method (kernel: *_len function)


# ct_sip_hdrs[] in nf_conntrack_sip.c. Names are stored lowercased: every
# comparison is strncasecmp().
CT_SIP_HDRS: dict[str, SipHeader] = {
    SIP_HDR_CSEQ: SipHeader(b"cseq", None, None, "digits_len"),
    SIP_HDR_FROM: SipHeader(b"from", b"f", b"sip:", "skp_epaddr_len"),
    SIP_HDR_TO: SipHeader(b"to", b"t", b"sip:", "skp_epaddr_len"),
    SIP_HDR_CONTACT: SipHeader(b"contact", b"m", b"sip:", "skp_epaddr_len"),
    SIP_HDR_VIA_UDP: SipHeader(b"via", b"v", b"udp ", "epaddr_len"),
    SIP_HDR_VIA_TCP: SipHeader(b"via", b"v", b"tcp ", "epaddr_len"),
    SIP_HDR_EXPIRES: SipHeader(b"expires", None, None, "digits_len"),
    SIP_HDR_CONTENT_LENGTH: SipHeader(b"content-length", b"l", None, "digits_len"),
    SIP_HDR_CALL_ID: SipHeader(b"call-id", b"i", None, "callid_len"),
}


@value
class UriMatch:
    """ct_sip_parse_header_uri()'s outputs."""

    matchoff: int
    matchlen: int
    addr: Address
    port: int
    dataoff: int  # where the next search of a header list continues


EOL = re.compile(rb"[\r\n]")
_BLANK_OR_EOL = (SP, HT, CR, LF)


def walk_line_starts(buf: bytes, pos: int, limit: int) -> list[int]:
    """The line starts the kernel's header loops test from ``pos``
    (ct_sip_get_header(), ct_sip_get_sdp_header()): one
    character after CR, LF or CRLF. Every test that does not end the loop
    steps over that character (dptr++), so a CR or LF there never ends a line
    itself - "\\n\\nCSeq" hides CSeq, "\\r\\n\\r\\nCSeq" does not."""
    starts: list[int] = []
    while pos < limit:
        eol = EOL.search(buf, pos, limit)
        if eol is None:
            break
        pos = eol.start() + 1
        if pos >= limit:
            break
        if buf[pos - 1] == CR and buf[pos] == LF:
            pos += 1
            if pos >= limit:
                break
        starts.append(pos)
        pos += 1
    return starts


def crlf_only(buf: bytes, start: int, limit: int) -> bool:
    """Every CR and every LF in ``buf[start:limit]`` is part of a CRLF."""
    crlfs = buf.count(b"\r\n", start, limit)
    return buf.count(b"\r", start, limit) == crlfs == buf.count(b"\n", start, limit)


class SipMessage:
    """One SIP message inside a payload, parsed the way the kernel helper does."""

    __slots__ = ("buf", "start", "limit", "family", "proto", "profile", "lower", "_crlf", "_starts")

    def __init__(self, buf: bytes, start: int, limit: int, family: int, proto: int,
                 profile: KernelProfile) -> None:
        self.buf = buf
        self.start = start
        self.limit = limit
        self.family = family
        self.proto = proto
        self.profile = profile
        # strncasecmp() against a lowercase ASCII needle is startswith() on
        # the payload lowered once (bytes.lower() folds ASCII letters only).
        self.lower = buf.lower()
        self._crlf: bool | None = None  # crlf_only(), once needed
        self._starts: list[int] | None = None

    def line_starts(self, dataoff: int) -> list[int]:
        """The positions, in order, where the header loops of ct_sip_get_header()
        and ct_sip_get_sdp_header() started at ``dataoff`` test a name.

        Indexed once per message. Where a loop tests next depends only on
        where it tested last, and from any ``dataoff`` inside the message the
        first test is at the first line start after ``dataoff`` - unless
        ``dataoff`` is itself a line start holding CR or LF, which the loop
        started there takes as a line end instead of stepping over it."""
        starts = self._starts
        if starts is None:
            starts = self._starts = walk_line_starts(self.buf, self.start, self.limit)
        if dataoff == self.start:
            return starts
        i = bisect.bisect_right(starts, dataoff)
        if i and starts[i - 1] == dataoff and self.buf[dataoff] in (CR, LF):
            return walk_line_starts(self.buf, dataoff, self.limit)
        return starts[i:]

    def find_line(self, dataoff: int, name: bytes, after: int = 0) -> int:
        """The first position where a header loop started at ``dataoff`` tests
        a name and finds ``name`` (lowercase: strncasecmp()) with ``after``
        more bytes before ``limit``; -1 when there is none.

        When all lines end in CRLF, the loop tests exactly the positions right
        after a CRLF, the first of them after ``dataoff`` first (a CRLF blank
        line is a line start whose test fails, and its LF still ends it): one
        find() of CRLF + name walks the whole loop."""
        limit = self.limit - after
        crlf = self._crlf
        if crlf is None:
            crlf = self._crlf = crlf_only(self.buf, self.start, self.limit)
        if crlf:
            start = self.start  # max(dataoff - 1, start): a builtin's call costs more than the find()
            i = self.lower.find(b"\r\n" + name, dataoff - 1 if dataoff > start else start, limit)
            return i + 2 if i >= 0 else -1
        lower = self.lower
        for pos in self.line_starts(dataoff):
            if lower.startswith(name, pos, limit):
                return pos
        return -1

    @property
    def datalen(self) -> int:
        return self.limit - self.start

    def peek(self, pos: int) -> int:
        """The byte the kernel would read at ``pos`` (NUL beyond the payload)."""
        return self.buf[pos] if pos < len(self.buf) else 0

    # --- numbers -------------------------------------------------------------
    def parse_uint(self, pos: int, length: int, base: int = 10) -> tuple[int, int]:
        """The number at ``pos``: sip_strtouint() on hardened kernels, else
        simple_strtoul() (which ignores ``length``). Returns (value, end)."""
        if self.profile.bounded_numbers:
            return sip_strtouint(self.buf, pos, length)
        return simple_strtoul(self.buf, pos, base)

    # --- value scanners (the match_len functions of ct_sip_hdrs[]) ------------
    def digits_len(self, pos: int) -> tuple[int, int]:
        limit = self.limit  # scan.digits_len(), inline
        return (_DIGIT_RUN.match(self.buf, pos, limit).end() - pos if pos < limit else 0), 0  # type: ignore[union-attr]

    def callid_len(self, pos: int) -> tuple[int, int]:
        """callid_len(): word, optionally ``@`` and a second word."""
        limit = self.limit
        n = word_len(self.buf, pos, limit)
        p = pos + n
        if not n or p == limit or self.buf[p] != 0x40:
            return n, 0
        domain = word_len(self.buf, p + 1, limit)
        if not domain:
            return 0, 0
        return n + 1 + domain, 0

    def parse_addr(self, pos: int, limit: int, delim: bool) -> tuple[Address | None, int]:
        """sip_parse_addr(): an IPv4 address, or an IPv6 address that must be
        bracketed when ``delim`` (it always is, for SIP URIs)."""
        if self.family == 4:
            return pton(4, self.buf, pos, limit)
        buf = self.buf
        if pos < limit and buf[pos] == 0x5B:
            pos += 1
        elif delim:
            return None, pos
        addr, end = pton(6, buf, pos, limit)
        if addr is None:
            return None, end
        if end < limit and buf[end] == 0x5D:
            end += 1
        elif delim:
            return None, end
        return addr, end

    def parse_port(self, pos: int, limit: int) -> tuple[bool, int, int]:
        """The optional ``:port`` after a URI host. Returns (ok, port, end).

        Hardened kernels: sip_parse_port() - 1 to 5 digits, 1024-65535, and a
        port (or address) that ends at the buffer end is malformed. Older
        kernels: simple_strtoul() and a range check on the value truncated to
        ``unsigned int`` (ct_sip_parse_header_uri() in 6.1.170).
        """
        buf = self.buf
        if self.profile.strict_uri_port:
            if pos >= limit:
                return False, 0, pos
            if buf[pos] != 0x3A:
                return True, SIP_PORT, pos
            # At most six digits are read: the sixth already fails.
            digits = digits_len(buf, pos + 1, limit if limit < pos + 7 else pos + 7)  # min(), without its call
            p = pos + 1 + digits
            if digits == 0 or digits > 5 or p >= limit:
                return False, 0, p
            value = int(buf[pos + 1:p])
            if not 1024 <= value <= 65535:
                return False, 0, p
            return True, value, p
        if self.peek(pos) != 0x3A:
            return True, SIP_PORT, pos
        value, end = simple_strtoul(buf, pos + 1, 10)
        if not 1024 <= value <= 65535:
            return False, 0, end
        return True, value, end

    def epaddr_len(self, pos: int) -> tuple[int, int]:
        """epaddr_len(): length of ``address[:port]`` at ``pos``, 0 if malformed."""
        addr, end = self.parse_addr(pos, self.limit, True)
        if addr is None:
            return 0, 0
        if self.profile.strict_uri_port:
            ok, _, end = self.parse_port(end, self.limit)
            if not ok:
                return 0, 0
        elif self.peek(end) == 0x3A:
            # 6.1.170 skipped any run of digits, unchecked.
            end += 1 + digits_len(self.buf, end + 1, self.limit)
        return end - pos, 0

    def skp_epaddr_len(self, pos: int) -> tuple[int, int]:
        """skp_epaddr_len(): skip ``user@`` (up to the line end) then epaddr_len().
        The shift tells the caller where the address starts."""
        buf, limit = self.buf, self.limit
        p = pos
        while p < limit and buf[p] not in (0x40, CR, LF):
            p += 1
        if p < limit and buf[p] == 0x40:
            p += 1
        else:
            p = pos
        length, _ = self.epaddr_len(p)
        return length, p - pos

    def media_len(self, pos: int) -> tuple[int, int]:
        """media_len(): ``type SP digits``; 0 when the space is missing."""
        buf, limit = self.buf, self.limit
        if pos >= limit:  # string_len() and digits_len(), inline
            return 0, 0
        p = _ALPHA_RUN.match(buf, pos, limit).end()  # type: ignore[union-attr]
        if p >= limit or buf[p] != SP:
            return 0, 0
        return p - pos + 1 + _DIGIT_RUN.match(buf, p + 1, limit).end() - (p + 1), 0  # type: ignore[union-attr]

    def sdp_addr_len(self, pos: int) -> tuple[int, int]:
        """sdp_addr_len(): an address without brackets."""
        addr, end = pton(self.family, self.buf, pos, self.limit)
        return (end - pos if addr is not None else 0), 0

    # --- line structure --------------------------------------------------------
    def follow_continuation(self, pos: int, limit: int) -> int | None:
        """sip_follow_continuation(): from a CR/LF, the first non-blank of a
        continuation line, or None when the next line is not one."""
        buf = self.buf
        pos += 1
        if pos >= limit:
            return None
        if buf[pos - 1] == CR and buf[pos] == LF:
            pos += 1
            if pos >= limit:
                return None
        if buf[pos] != SP and buf[pos] != HT:
            return None
        while pos < limit and buf[pos] in (SP, HT):
            pos += 1
        return pos

    def skip_whitespace(self, pos: int, limit: int) -> int | None:
        """sip_skip_whitespace(): blanks and continuation lines."""
        buf = self.buf
        result: int | None = pos
        while result is not None and result < limit:
            c = buf[result]
            if c == SP or c == HT:
                result += 1
                continue
            if c == CR or c == LF:
                result = self.follow_continuation(result, limit)
            break
        if self.profile.skip_whitespace_null_at_end and result is not None and result >= limit:
            return None
        return result

    def header_search(self, pos: int, limit: int, needle: bytes) -> int | None:
        """ct_sip_header_search(): case-insensitive search within one header
        value, following continuation lines. The needle must start before
        ``limit - len(needle)`` (the kernel loops while ``dptr < limit - len``).
        Needles are lowercase ASCII (strncasecmp() is a find() in the lowered
        payload)."""
        buf, lower = self.buf, self.lower
        end = limit - len(needle)
        while pos < end:
            eol = EOL.search(buf, pos, end)
            stop = eol.start() if eol is not None else end
            # Needles hold no CR or LF, so a match cannot straddle the line end.
            found = lower.find(needle, pos, stop - 1 + len(needle))
            if found >= 0:
                return found
            if eol is None:
                return None
            nxt = self.follow_continuation(stop, end)
            if nxt is None:
                return None
            # The kernel's for-loop increment then skips the first character
            # of the continuation line.
            pos = nxt + 1
        return None

    # --- header lookup -----------------------------------------------------------
    def get_header(self, dataoff: int, kind: str) -> tuple[int, int, int]:
        """ct_sip_get_header(): first header of ``kind`` at the start of a line
        after ``dataoff``. Returns (ret, matchoff, matchlen).

        Quirks kept: the first line is never a header; the blank line does not
        end the search (the body is scanned too); a name match not followed by
        ``:`` ends the search with "not found"; a compact name needs a
        non-letter after it, a full name does not.
        """
        hdr = CT_SIP_HDRS[kind]
        name, cname = hdr.name, hdr.cname
        pos = self.find_line(dataoff, name)
        if cname is not None:
            # The compact name counts where the full name does not match
            # first, and only before a non-letter.
            c = self.find_line(dataoff, cname, 1)
            while c >= 0 and (pos < 0 or c < pos) and self.buf[c + len(cname)] in ALPHA:
                c = self.find_line(c, cname, 1)
            if c >= 0 and (pos < 0 or c < pos):
                return self._header_value(c + len(cname), hdr)
        if pos < 0:
            return 0, 0, 0
        return self._header_value(pos + len(name), hdr)

    def _header_value(self, pos: int, hdr: SipHeader) -> tuple[int, int, int]:
        """ct_sip_get_header() after a header name: the colon, then the value.
        Where the kernel breaks out of its loop the header is "not found"."""
        limit, buf = self.limit, self.buf
        # sip_skip_whitespace() is only called where it has something to do:
        # a blank or a line end (a continuation) before ``limit``, or the limit.
        if pos < limit and buf[pos] not in _BLANK_OR_EOL:
            if buf[pos] != 0x3A:
                return 0, 0, 0
            p = pos + 1
        else:
            at = self.skip_whitespace(pos, limit)
            if at is None or self.peek(at) != 0x3A:
                return 0, 0, 0
            p = at + 1
        if p >= limit:
            return 0, 0, 0
        q = p
        while q < limit and (buf[q] == SP or buf[q] == HT):
            q += 1
        if q < limit and buf[q] != CR and buf[q] != LF:
            p = q  # what sip_skip_whitespace(p) returns: the blanks end on the line
        else:
            at = self.skip_whitespace(p, limit)
            if at is None:
                return 0, 0, 0
            p = at
        matchoff = p
        if hdr.search is not None:
            found = self.header_search(p, limit, hdr.search)
            if found is None:
                return -1, matchoff, 0
            p = found + len(hdr.search)
        matchlen, shift = MATCH_LEN[hdr.match_len](self, p)
        if not matchlen:
            return -1, matchoff, 0
        return 1, p + shift, matchlen

    def next_header(self, dataoff: int, kind: str) -> tuple[int, int, int]:
        """ct_sip_next_header(): the next comma-separated value of a header."""
        hdr = CT_SIP_HDRS[kind]
        assert hdr.search is not None
        p = self.header_search(dataoff, self.limit, b",")
        if p is None:
            return 0, 0, 0
        p = self.header_search(p, self.limit, hdr.search)
        if p is None:
            return 0, 0, 0
        p += len(hdr.search)
        matchlen, shift = MATCH_LEN[hdr.match_len](self, p)
        if not matchlen:
            return -1, p, 0
        return 1, p + shift, matchlen

    def walk_headers(self, dataoff: int, kind: str, in_header: bool | None) -> tuple[int, int, int, bool | None]:
        """ct_sip_walk_headers(): the next parsable value, first within the
        current header's comma list, then in following headers."""
        matchoff = matchlen = 0
        if in_header:
            while True:
                ret, matchoff, matchlen = self.next_header(dataoff, kind)
                if ret > 0:
                    return ret, matchoff, matchlen, in_header
                if ret == 0:
                    break
                dataoff = matchoff
            in_header = False
        while True:
            ret, matchoff, matchlen = self.get_header(dataoff, kind)
            if ret > 0:
                break
            if ret == 0:
                return 0, matchoff, matchlen, in_header
            dataoff = matchoff
        if in_header is not None:
            in_header = True
        return 1, matchoff, matchlen, in_header

    def parse_header_uri(self, dataoff: int, kind: str,
                         in_header: bool | None = None) -> tuple[int, UriMatch | None, bool | None]:
        """ct_sip_parse_header_uri(): address and port of a URI header."""
        ret, matchoff, matchlen, in_header = self.walk_headers(dataoff, kind, in_header)
        if ret == 0:
            return 0, None, in_header
        addr, c = self.parse_addr(matchoff, self.limit, True)
        if addr is None:
            return -1, None, in_header
        ok, port, c = self.parse_port(c, self.limit)
        if not ok:
            return -1, None, in_header
        return 1, UriMatch(matchoff, matchlen, addr, port, c), in_header

    def _param_limit(self, dataoff: int) -> int:
        comma = self.header_search(dataoff, self.limit, b",")
        return self.limit if comma is None else comma

    def parse_param(self, dataoff: int, name: bytes) -> tuple[int, int, int]:
        """ct_sip_parse_param(): a ``name=value`` parameter up to the next
        ``;``, searched from ``dataoff`` to the next comma."""
        limit = self._param_limit(dataoff)
        p = self.header_search(dataoff, limit, name)
        if p is None:
            return 0, 0, 0
        p += len(name)
        end = self.header_search(p, limit, b";")
        if end is None:
            end = limit
        return 1, p, end - p

    def parse_numerical_param(self, dataoff: int, name: bytes) -> tuple[int, int]:
        """ct_sip_parse_numerical_param(): returns (ret, value)."""
        limit = self._param_limit(dataoff)
        p = self.header_search(dataoff, limit, name)
        if p is None:
            return 0, 0
        p += len(name)
        # 6.1.170 parsed parameters with simple_strtoul(..., 0): octal and hex.
        value, end = self.parse_uint(p, limit - p, base=0)
        if end == p:
            return -1, 0
        return 1, value

    def parse_transport(self, dataoff: int) -> int:
        """ct_sip_parse_transport(): the URI's ``transport=`` must name the
        master's protocol; without it the master's protocol is assumed.
        Returns the protocol number, or 0 when the contact is to be ignored."""
        ret, off, _ = self.parse_param(dataoff, b"transport=")
        if not ret:
            return self.proto
        if self.lower.startswith(b"tcp", off):
            proto = IPPROTO_TCP
        elif self.lower.startswith(b"udp", off):
            proto = IPPROTO_UDP
        else:
            return 0
        return proto if proto == self.proto else 0


# The match_len functions by name (SipHeader.match_len, sdp.SdpHeader.match_len):
# called as functions, not looked up with getattr() and bound per header.
MATCH_LEN = {name: getattr(SipMessage, name) for name in (
    "digits_len", "callid_len", "epaddr_len", "skp_epaddr_len", "media_len", "sdp_addr_len")}
