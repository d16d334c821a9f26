"""SDP lookup (sipct.spec.sdp) against nf_conntrack_sip.c.

ct_sip_get_sdp_header(), ct_sdp_header_search(), ct_sip_parse_sdp_addr(),
sdp_addr_len(), media_len(), sdp_media_type() and the ct_sdp_hdrs_v4[] /
ct_sdp_hdrs_v6[] and sdp_media_types[] tables. The cases were cross-checked
against those functions compiled unchanged.
"""

from __future__ import annotations

import ipaddress

import pytest
from sipct.spec.expectation import IPPROTO_UDP, ExpectClass
from sipct.spec.parse import SipMessage
from sipct.spec.profiles import HARDENED_6_1_192, LEGACY_6_1_170
from sipct.spec.sdp import (
    CT_SDP_HDRS,
    SDP_HDR_CONNECTION,
    SDP_HDR_MEDIA,
    SDP_HDR_OWNER,
    SDP_HDR_UNSPEC,
    SDP_HDR_VERSION,
    SDP_MEDIA_TYPES,
    get_sdp_header,
    parse_sdp_addr,
    sdp_media_type,
)

HEAD = b"INVITE sip:b@198.51.100.2 SIP/2.0\r\nCSeq: 1 INVITE\r\n\r\n"


def msg(body: bytes, family: int = 4, profile=HARDENED_6_1_192, head: bytes = HEAD) -> SipMessage:
    buf = head + body
    return SipMessage(buf, 0, len(buf), family, IPPROTO_UDP, profile)


def sdp_value(body: bytes, kind: str, term: str = SDP_HDR_UNSPEC, family: int = 4, dataoff: int = 0) -> bytes | int:
    m = msg(body, family)
    ret, off, length = get_sdp_header(m, dataoff, kind, term)
    return m.buf[off:off + length] if ret == 1 else ret


SDP_CASES = [
    # v=: digits
    (b"v=0\r\n", SDP_HDR_VERSION, SDP_HDR_UNSPEC, 4, b"0"),
    (b"V=0\r\n", SDP_HDR_VERSION, SDP_HDR_UNSPEC, 4, b"0"),  # names compare case-insensitively
    (b"v=x\r\n", SDP_HDR_VERSION, SDP_HDR_UNSPEC, 4, -1),
    (b"s=-\r\n", SDP_HDR_VERSION, SDP_HDR_UNSPEC, 4, 0),
    (b"v =0\r\n", SDP_HDR_VERSION, SDP_HDR_UNSPEC, 4, 0),  # no whitespace is skipped
    # o= and c=: "IN IP4 " / "IN IP6 " by the master's family, searched case-sensitively
    (b"o=a 1 1 IN IP4 192.0.2.2\r\n", SDP_HDR_OWNER, SDP_HDR_UNSPEC, 4, b"192.0.2.2"),
    (b"c=IN IP4 192.0.2.2\r\n", SDP_HDR_CONNECTION, SDP_HDR_UNSPEC, 4, b"192.0.2.2"),
    (b"C=IN IP4 192.0.2.2\r\n", SDP_HDR_CONNECTION, SDP_HDR_UNSPEC, 4, b"192.0.2.2"),
    (b"c=in ip4 192.0.2.2\r\n", SDP_HDR_CONNECTION, SDP_HDR_UNSPEC, 4, -1),  # strncmp
    (b"c=IN IP4  192.0.2.2\r\n", SDP_HDR_CONNECTION, SDP_HDR_UNSPEC, 4, -1),
    (b"c=IN IP4 192.0.2.2/127\r\n", SDP_HDR_CONNECTION, SDP_HDR_UNSPEC, 4, b"192.0.2.2"),
    (b"c=IN IP4 192.0.2\r\n", SDP_HDR_CONNECTION, SDP_HDR_UNSPEC, 4, -1),
    (b"c=IN IP6 2001:db8::2\r\n", SDP_HDR_CONNECTION, SDP_HDR_UNSPEC, 4, -1),  # an IPv4 master wants IP4
    (b"c=IN IP4 192.0.2.2\r\n", SDP_HDR_CONNECTION, SDP_HDR_UNSPEC, 6, -1),  # an IPv6 master wants IP6
    (b"c=IN IP6 2001:db8::2\r\n", SDP_HDR_CONNECTION, SDP_HDR_UNSPEC, 6, b"2001:db8::2"),
    (b"c=IN IP6 [2001:db8::2]\r\n", SDP_HDR_CONNECTION, SDP_HDR_UNSPEC, 6, -1),  # no brackets in SDP
    (b"c=IN IP6 ::ffff:192.0.2.2\r\n", SDP_HDR_CONNECTION, SDP_HDR_UNSPEC, 6, b"::ffff:192.0.2.2"),
    (b"c=\r\n IN IP4 192.0.2.2\r\n", SDP_HDR_CONNECTION, SDP_HDR_UNSPEC, 4, -1),  # no continuation lines in SDP
    # the term header ends the search: a c= after the first m= is not the session's
    (b"v=0\r\nm=audio 5000 RTP/AVP 0\r\nc=IN IP4 192.0.2.2\r\n", SDP_HDR_CONNECTION, SDP_HDR_MEDIA, 4, 0),
    (b"v=0\r\nm=audio 5000 RTP/AVP 0\r\nc=IN IP4 192.0.2.2\r\n", SDP_HDR_CONNECTION, SDP_HDR_UNSPEC, 4,
     b"192.0.2.2"),
    (b"v=0\r\nM=audio 5000 RTP/AVP 0\r\nc=IN IP4 192.0.2.2\r\n", SDP_HDR_CONNECTION, SDP_HDR_MEDIA, 4, 0),
    # m=: media_len() is type, one space, digits
    (b"m=audio 5000 RTP/AVP 0\r\n", SDP_HDR_MEDIA, SDP_HDR_UNSPEC, 4, b"audio 5000"),
    (b"m=audio 0 RTP/AVP 0\r\n", SDP_HDR_MEDIA, SDP_HDR_UNSPEC, 4, b"audio 0"),
    (b"m=audio x RTP/AVP 0\r\n", SDP_HDR_MEDIA, SDP_HDR_UNSPEC, 4, b"audio "),  # zero digits are fine
    (b"m=audio\t5000 RTP/AVP 0\r\n", SDP_HDR_MEDIA, SDP_HDR_UNSPEC, 4, -1),  # the space is required
    (b"m=audio\r\n", SDP_HDR_MEDIA, SDP_HDR_UNSPEC, 4, -1),
    (b"m=audi\xe9 5000 RTP/AVP 0\r\n", SDP_HDR_MEDIA, SDP_HDR_UNSPEC, 4, b"audi\xe9 5000"),  # Latin-1 isalpha
    (b"m= 5000\r\n", SDP_HDR_MEDIA, SDP_HDR_UNSPEC, 4, b" 5000"),
]


@pytest.mark.parametrize("body, kind, term, family, expected", SDP_CASES)
def test_get_sdp_header(body: bytes, kind: str, term: str, family: int, expected: bytes | int) -> None:
    assert sdp_value(body, kind, term, family) == expected


def test_sdp_lookup_starts_anywhere_not_at_the_body() -> None:
    # The kernel does not locate the body: a "v=" line in the headers counts.
    m = SipMessage(b"INVITE x SIP/2.0\r\nv=7\r\n\r\nv=0\r\n", 0, 29, 4, IPPROTO_UDP, HARDENED_6_1_192)
    ret, off, length = get_sdp_header(m, 0, SDP_HDR_VERSION, SDP_HDR_UNSPEC)
    assert (ret, m.buf[off:off + length]) == (1, b"7")
    # ... but never on the first line.
    m = SipMessage(b"v=1\r\nv=2\r\n", 0, 10, 4, IPPROTO_UDP, HARDENED_6_1_192)
    ret, off, length = get_sdp_header(m, 0, SDP_HDR_VERSION, SDP_HDR_UNSPEC)
    assert m.buf[off:off + length] == b"2"


def test_sdp_line_ends() -> None:
    for eol in (b"\r\n", b"\n", b"\r"):
        body = eol.join([b"s=-", b"v=0", b"c=IN IP4 192.0.2.2", b"m=audio 5000 RTP/AVP 0", b""])
        m = msg(body, head=b"INVITE x SIP/2.0" + eol + b"CSeq: 1 INVITE" + eol + eol)
        assert get_sdp_header(m, 0, SDP_HDR_VERSION, SDP_HDR_UNSPEC)[0] == 1
        ret, addr, _, _ = parse_sdp_addr(m, 0, SDP_HDR_CONNECTION, SDP_HDR_MEDIA)
        assert (ret, addr) == (1, ipaddress.IPv4Address("192.0.2.2"))


@pytest.mark.parametrize("eol, found", [(b"\r\n", 1), (b"\n", 0), (b"\r", 0)])
def test_first_line_after_a_bare_lf_or_cr_blank_line_is_invisible(eol: bytes, found: int) -> None:
    # ct_sip_get_sdp_header(): after the first line break of "\n\n" the name test
    # fails on the second '\n' and "continue" (dptr++) steps over it, so the next
    # line is not at a line start. With CRLF the second CR is consumed instead
    # and its LF starts the line.
    body = eol.join([b"v=0", b"c=IN IP4 192.0.2.2", b""])
    m = msg(body, head=b"INVITE x SIP/2.0" + eol + b"CSeq: 1 INVITE" + eol + eol)
    assert get_sdp_header(m, 0, SDP_HDR_VERSION, SDP_HDR_UNSPEC)[0] == found
    assert get_sdp_header(m, 0, SDP_HDR_CONNECTION, SDP_HDR_UNSPEC)[0] == 1  # the second line is seen


def test_search_stays_within_the_line() -> None:
    # ct_sdp_header_search() stops at CR/LF: "IN IP4 " on the next line is not found.
    assert sdp_value(b"c=\r\nIN IP4 192.0.2.2\r\n", SDP_HDR_CONNECTION) == -1


def test_parse_sdp_addr() -> None:
    body = b"v=0\r\nc=IN IP4 192.0.2.2\r\nm=audio 5000 RTP/AVP 0\r\nc=IN IP4 192.0.2.3\r\n"
    m = msg(body)
    ret, sdpoff, _ = get_sdp_header(m, 0, SDP_HDR_VERSION, SDP_HDR_UNSPEC)
    ret, addr, off, length = parse_sdp_addr(m, sdpoff, SDP_HDR_CONNECTION, SDP_HDR_MEDIA)
    assert (ret, addr, m.buf[off:off + length]) == (1, ipaddress.IPv4Address("192.0.2.2"), b"192.0.2.2")
    ret, mediaoff, _ = get_sdp_header(m, sdpoff, SDP_HDR_MEDIA, SDP_HDR_UNSPEC)
    ret, addr, _, _ = parse_sdp_addr(m, mediaoff, SDP_HDR_CONNECTION, SDP_HDR_MEDIA)
    assert (ret, addr) == (1, ipaddress.IPv4Address("192.0.2.3"))
    assert parse_sdp_addr(msg(b"c=IN IP4 1.2.3\r\n"), 0, SDP_HDR_CONNECTION, SDP_HDR_MEDIA)[0] == -1
    assert parse_sdp_addr(msg(b"s=x\r\n"), 0, SDP_HDR_CONNECTION, SDP_HDR_MEDIA)[:2] == (0, None)


def test_ipv6_sdp() -> None:
    m = msg(b"v=0\r\no=x 1 1 IN IP6 2001:db8::2\r\nc=IN IP6 2001:db8::3\r\n", family=6)
    assert parse_sdp_addr(m, 0, SDP_HDR_OWNER, SDP_HDR_MEDIA)[1] == ipaddress.IPv6Address("2001:db8::2")
    assert parse_sdp_addr(m, 0, SDP_HDR_CONNECTION, SDP_HDR_MEDIA)[1] == ipaddress.IPv6Address("2001:db8::3")


@pytest.mark.parametrize("line, klass", [
    (b"audio 5000", ExpectClass.AUDIO),
    (b"video 5000", ExpectClass.VIDEO),
    (b"image 5000", ExpectClass.IMAGE),
    (b"audio ", ExpectClass.AUDIO),
    (b"Audio 5000", None),  # strncmp: case-sensitive
    (b"AUDIO 5000", None),
    (b"audiox 5000", None),  # the space is part of the type name
    (b"text 5000", None),
    (b"application 5000", None),
    (b"message 5000", None),
])
def test_media_types(line: bytes, klass: ExpectClass | None) -> None:
    m = msg(b"m=" + line + b"\r\n")
    ret, off, length = get_sdp_header(m, 0, SDP_HDR_MEDIA, SDP_HDR_UNSPEC)
    assert ret == 1
    t = sdp_media_type(m, off, length)
    assert (t.klass if t else None) == klass


def test_media_type_needs_the_whole_name_inside_the_match() -> None:
    # matchlen < t->len: "audio" followed by a space only because the match ended
    m = msg(b"m=audio 5000\r\n")
    _, off, _ = get_sdp_header(m, 0, SDP_HDR_MEDIA, SDP_HDR_UNSPEC)
    assert sdp_media_type(m, off, 5) is None
    assert sdp_media_type(m, off, 6).klass == ExpectClass.AUDIO


def test_tables_mirror_the_kernel() -> None:
    assert [t.name for t in SDP_MEDIA_TYPES] == [b"audio ", b"video ", b"image "]
    assert CT_SDP_HDRS[4][SDP_HDR_CONNECTION].search == b"IN IP4 "
    assert CT_SDP_HDRS[6][SDP_HDR_OWNER].search == b"IN IP6 "
    assert CT_SDP_HDRS[4][SDP_HDR_MEDIA].search is None


def test_profiles_do_not_change_sdp_lookup() -> None:
    body = b"v=0\r\nc=IN IP4 192.0.2.2\r\nm=audio 5000 RTP/AVP 0\r\n"
    for profile in (LEGACY_6_1_170, HARDENED_6_1_192):
        m = msg(body, profile=profile)
        assert get_sdp_header(m, 0, SDP_HDR_MEDIA, SDP_HDR_UNSPEC)[0] == 1
