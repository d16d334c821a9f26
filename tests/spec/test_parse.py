"""SIP header parsing (sipct.spec.parse) against nf_conntrack_sip.c.

Expected values follow the kernel functions named in each test:
ct_sip_get_header(), ct_sip_header_search(), sip_follow_continuation(),
sip_skip_whitespace(), ct_sip_next_header(), ct_sip_walk_headers(),
ct_sip_parse_header_uri(), sip_parse_addr(), sip_parse_port() (6.1.192) or
the simple_strtoul() port check (6.1.170), epaddr_len(), skp_epaddr_len(),
ct_sip_parse_param(), ct_sip_parse_numerical_param(), ct_sip_parse_transport().
Return conventions are the kernel's: 1 found, 0 absent, -1 present but bad.
The tables were cross-checked against those functions compiled unchanged.
"""

from __future__ import annotations

import ipaddress

import pytest
from sipct.spec.expectation import IPPROTO_TCP, IPPROTO_UDP
from sipct.spec.parse import (
    SIP_HDR_CALL_ID,
    SIP_HDR_CONTACT,
    SIP_HDR_CONTENT_LENGTH,
    SIP_HDR_CSEQ,
    SIP_HDR_EXPIRES,
    SIP_HDR_FROM,
    SIP_HDR_TO,
    SIP_HDR_VIA_TCP,
    SIP_HDR_VIA_UDP,
    SipMessage,
)
from sipct.spec.profiles import HARDENED_6_1_192, LEGACY_6_1_170, KernelProfile

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address
BOTH = pytest.mark.parametrize("profile", [LEGACY_6_1_170, HARDENED_6_1_192], ids=lambda p: p.name)


def msg(buf: bytes, family: int = 4, proto: int = IPPROTO_UDP,
        profile: KernelProfile = HARDENED_6_1_192) -> SipMessage:
    return SipMessage(buf, 0, len(buf), family, proto, profile)


def value_of(buf: bytes, kind: str, **kw: object) -> bytes | int:
    """The matched value of ct_sip_get_header(), or its return code when not 1."""
    m = msg(buf, **kw)  # type: ignore[arg-type]
    ret, off, length = m.get_header(0, kind)
    return buf[off:off + length] if ret == 1 else ret


# --- ct_sip_get_header(): where headers are ----------------------------------------------------
# (message, kind, expected value or return code); both profiles agree on all of these.
GET_HEADER_CASES = [
    # The first line is never a header: the search starts at the first line break.
    (b"CSeq: 5 INVITE\r\n", SIP_HDR_CSEQ, 0),
    (b"CSeq: 5 INVITE\r\nCSeq: 6 INVITE\r\n", SIP_HDR_CSEQ, b"6"),
    # CR, LF and CRLF line ends.
    (b"INVITE x SIP/2.0\r\nCSeq: 12 INVITE\r\n", SIP_HDR_CSEQ, b"12"),
    (b"INVITE x SIP/2.0\nCSeq: 12 INVITE\n", SIP_HDR_CSEQ, b"12"),
    (b"INVITE x SIP/2.0\rCSeq: 12 INVITE\r", SIP_HDR_CSEQ, b"12"),
    # Names compare case-insensitively.
    (b"X\r\ncSEQ: 7 BYE\r\n", SIP_HDR_CSEQ, b"7"),
    (b"X\r\nCONTENT-LENGTH: 10\r\n", SIP_HDR_CONTENT_LENGTH, b"10"),
    (b"X\r\nCall-ID: abc@host\r\n", SIP_HDR_CALL_ID, b"abc@host"),
    # Whitespace around the colon, including tabs.
    (b"X\r\nCSeq \t: \t 8 BYE\r\n", SIP_HDR_CSEQ, b"8"),
    # Compact forms f t m v l i.
    (b"X\r\nf: <sip:a@192.0.2.2>\r\n", SIP_HDR_FROM, b"192.0.2.2"),
    (b"X\r\nt: <sip:b@198.51.100.2:5070>\r\n", SIP_HDR_TO, b"198.51.100.2:5070"),
    (b"X\r\nm: <sip:c@192.0.2.2:5062>\r\n", SIP_HDR_CONTACT, b"192.0.2.2:5062"),
    (b"X\r\nM : <sip:192.0.2.2>\r\n", SIP_HDR_CONTACT, b"192.0.2.2"),
    (b"X\r\nv: SIP/2.0/UDP 192.0.2.2:5080;branch=z\r\n", SIP_HDR_VIA_UDP, b"192.0.2.2:5080"),
    (b"X\r\nl: 42\r\n", SIP_HDR_CONTENT_LENGTH, b"42"),
    (b"X\r\ni: a1b2\r\n", SIP_HDR_CALL_ID, b"a1b2"),
    # A compact name must be followed by a non-letter ...
    (b"X\r\nmx: <sip:192.0.2.2>\r\n", SIP_HDR_CONTACT, 0),
    (b"X\r\nMax-Forwards: 70\r\nm: <sip:192.0.2.2>\r\n", SIP_HDR_CONTACT, b"192.0.2.2"),
    # ... in the kernel's ctype, where Latin-1 letters are letters.
    (b"X\r\nm\xe9: <sip:192.0.2.2>\r\n", SIP_HDR_CONTACT, 0),
    (b"X\r\nm\xd7: <sip:192.0.2.2>\r\n", SIP_HDR_CONTACT, 0),  # not alpha, so a compact name ... then no ':'
    # A full-name match not followed by ':' ends the search: later headers are not seen.
    (b"X\r\nContact-Info: x\r\nContact: <sip:192.0.2.2>\r\n", SIP_HDR_CONTACT, 0),
    (b"X\r\nTox: 1\r\nTo: <sip:192.0.2.2>\r\n", SIP_HDR_TO, 0),
    (b"X\r\nCSeqNo: 1\r\nCSeq: 2 BYE\r\n", SIP_HDR_CSEQ, 0),
    # ... and so does a compact match followed by something else (an SDP "m=" line).
    (b"X\r\n\r\nm=audio 5000 RTP/AVP 0\r\nContact: <sip:192.0.2.2>\r\n", SIP_HDR_CONTACT, 0),
    # Prefixes that are not the name do not match at all.
    (b"X\r\nContent-Type: a/b\r\nContact: <sip:192.0.2.2>\r\n", SIP_HDR_CONTACT, b"192.0.2.2"),
    # Continuation lines: a folded value, whitespace and line breaks before the colon.
    (b"X\r\nCSeq:\r\n   77 REGISTER\r\n", SIP_HDR_CSEQ, b"77"),
    (b"X\nCSeq\n\t:\n 78 REGISTER\n", SIP_HDR_CSEQ, b"78"),
    # A continuation line never starts a header.
    (b"X\r\nSubject: a\r\n CSeq: 5 BYE\r\n", SIP_HDR_CSEQ, 0),
    (b"X\r\nSubject: a\r\n\tCSeq: 5 BYE\r\nCSeq: 6 BYE\r\n", SIP_HDR_CSEQ, b"6"),
    # The blank line does not end the search: the body is scanned too.
    (b"OPTIONS x SIP/2.0\r\nA: b\r\n\r\nCSeq: 9 BYE\r\n", SIP_HDR_CSEQ, b"9"),
    # A value the match_len function refuses: -1.
    (b"X\r\nCSeq: abc\r\n", SIP_HDR_CSEQ, -1),
    (b"X\r\nContact: <tel:123>\r\n", SIP_HDR_CONTACT, -1),  # no "sip:" before the line end
    (b"X\r\nContact: <sip:alice@host.example>\r\n", SIP_HDR_CONTACT, -1),  # not an address
    (b"X\r\nVia: SIP/2.0/TCP 192.0.2.2\r\n", SIP_HDR_VIA_UDP, -1),
    (b"X\r\nVia: SIP/2.0/TCP 192.0.2.2;x\r\n", SIP_HDR_VIA_TCP, b"192.0.2.2"),
    (b"X\r\nVia: SIP/2.0/udp 192.0.2.2;x\r\n", SIP_HDR_VIA_UDP, b"192.0.2.2"),  # strncasecmp
    (b"X\r\nVia: SIP/2.0/UDP\t192.0.2.2;x\r\n", SIP_HDR_VIA_UDP, -1),  # "UDP " needs the space
    # skp_epaddr_len(): the user part is skipped up to '@' on the same line.
    (b"X\r\nFrom: <sip:alice:pw@192.0.2.2:5070>;tag=1\r\n", SIP_HDR_FROM, b"192.0.2.2:5070"),
    (b"X\r\nFrom: <sip:192.0.2.2>;tag=a@b\r\n", SIP_HDR_FROM, -1),  # the '@' of the tag is used
    # callid_len(): word [@ word]
    (b"X\r\nCall-ID: a@\r\n", SIP_HDR_CALL_ID, -1),
]


@pytest.mark.parametrize("buf, kind, expected", GET_HEADER_CASES)
@BOTH
def test_get_header(buf: bytes, kind: str, expected: bytes | int, profile: KernelProfile) -> None:
    assert value_of(buf, kind, profile=profile) == expected


def test_get_header_offsets_and_dataoff() -> None:
    buf = b"REGISTER sip:r SIP/2.0\r\nExpires: 60\r\nExpires: 120\r\n"
    m = msg(buf)
    ret, off, length = m.get_header(0, SIP_HDR_EXPIRES)
    assert (ret, buf[off:off + length]) == (1, b"60")
    # dataoff is where the search for a line break starts.
    assert m.get_header(off, SIP_HDR_EXPIRES)[0] == 1
    _, off2, len2 = m.get_header(off, SIP_HDR_EXPIRES)
    assert buf[off2:off2 + len2] == b"120"
    assert m.get_header(off2, SIP_HDR_EXPIRES) == (0, 0, 0)


def test_get_header_minus_one_reports_the_value_start() -> None:
    # On -1 the kernel leaves *matchoff at the value start, which the walk
    # resumes from.
    buf = b"X\r\nContact: <tel:1>\r\n"
    ret, off, _ = msg(buf).get_header(0, SIP_HDR_CONTACT)
    assert ret == -1
    assert buf[off:off + 5] == b"<tel:"


def test_get_header_respects_the_message_window() -> None:
    # A TCP segment holds several messages: lookups stay inside [start, limit).
    buf = b"BYE a SIP/2.0\r\nX: y\r\n\r\nBYE b SIP/2.0\r\nCSeq: 3 BYE\r\n\r\n"
    first = SipMessage(buf, 0, buf.index(b"BYE b"), 4, IPPROTO_TCP, HARDENED_6_1_192)
    second = SipMessage(buf, buf.index(b"BYE b"), len(buf), 4, IPPROTO_TCP, HARDENED_6_1_192)
    assert first.get_header(first.start, SIP_HDR_CSEQ)[0] == 0
    ret, off, length = second.get_header(second.start, SIP_HDR_CSEQ)
    assert (ret, buf[off:off + length]) == (1, b"3")


def test_value_ending_at_the_buffer_end() -> None:
    # digits_len() stops at limit; the kernel never reads the byte after a CSeq value.
    assert value_of(b"X\r\nCSeq: 1234", SIP_HDR_CSEQ) == b"1234"
    # Nothing after the colon: the hardened sip_skip_whitespace() returns NULL at
    # the limit (break: 0); 6.1.170 returned the limit and match_len found nothing (-1).
    assert value_of(b"X\r\nCSeq:", SIP_HDR_CSEQ, profile=HARDENED_6_1_192) == 0
    assert value_of(b"X\r\nCSeq: ", SIP_HDR_CSEQ, profile=HARDENED_6_1_192) == 0
    assert value_of(b"X\r\nCSeq: ", SIP_HDR_CSEQ, profile=LEGACY_6_1_170) == -1


# --- ct_sip_header_search() and continuation lines ---------------------------------------------
def test_header_search_skips_the_first_character_of_a_continuation_line() -> None:
    # After sip_follow_continuation() the for-loop's dptr++ skips one character:
    # a "sip:" that starts a continuation line is never found ...
    assert value_of(b"X\r\nContact: <\r\n sip:192.0.2.2>\r\n", SIP_HDR_CONTACT) == -1
    assert value_of(b"X\r\nVia: SIP/2.0/\r\n UDP 192.0.2.2\r\n", SIP_HDR_VIA_UDP) == -1
    # ... one character later it is.
    assert value_of(b"X\r\nContact: <\r\n xsip:192.0.2.2>\r\n", SIP_HDR_CONTACT) == b"192.0.2.2"
    # Directly after the colon the continuation is followed by sip_skip_whitespace(),
    # which does not skip anything extra.
    assert value_of(b"X\r\nContact:\r\n sip:192.0.2.2\r\n", SIP_HDR_CONTACT) == b"192.0.2.2"


def test_header_search_stops_at_a_non_continuation_line() -> None:
    assert value_of(b"X\r\nContact: <x\r\nsip:192.0.2.2>\r\n", SIP_HDR_CONTACT) == -1


def test_header_search_needle_must_end_before_limit() -> None:
    # The loop runs while dptr < limit - len(needle).
    assert msg(b"ab,").header_search(0, 3, b",") is None  # ',' is the last byte
    m = msg(b"AB,c")
    assert m.header_search(0, 4, b",") == 2
    assert m.header_search(0, 4, b"ab") == 0  # strncasecmp (the port keeps needles lowercased)
    assert m.header_search(0, 4, b"b,c") is None  # would end exactly at limit


def test_follow_continuation_and_skip_whitespace() -> None:
    m = msg(b"a\r\n  b\r\nc\n\td")
    assert m.follow_continuation(1, len(m.buf)) == 5  # the 'b'
    assert m.follow_continuation(6, len(m.buf)) is None  # "c" is not a continuation
    assert m.follow_continuation(9, len(m.buf)) == 11  # LF then tab
    assert m.skip_whitespace(1, len(m.buf)) == 5
    assert m.skip_whitespace(0, len(m.buf)) == 0


# --- ct_sip_walk_headers() over comma lists and repeated headers -----------------------------------
def contacts(buf: bytes, profile: KernelProfile = HARDENED_6_1_192, family: int = 4) -> list[tuple[str, int]]:
    """The loop of process_register_response(): every parsable contact in order."""
    m = msg(buf, family=family, profile=profile)
    out: list[tuple[str, int]] = []
    coff, in_contact = 0, False
    while True:
        ret, uri, in_contact = m.parse_header_uri(coff, SIP_HDR_CONTACT, in_contact)
        if ret <= 0:
            out.append(("ret", ret))
            return out
        assert uri is not None
        out.append((str(uri.addr), uri.port))
        coff = uri.dataoff


def test_walk_headers_over_comma_lists() -> None:
    buf = (b"SIP/2.0 200 OK\r\nContact: <sip:a@192.0.2.2:5062>;expires=60, <sip:b@192.0.2.3:5070>\r\n"
           b"Via: x\r\nm: <sip:192.0.2.4>, sip:192.0.2.5:6000\r\n")
    assert contacts(buf) == [("192.0.2.2", 5062), ("192.0.2.3", 5070), ("192.0.2.4", 5060),
                             ("192.0.2.5", 6000), ("ret", 0)]


def test_walk_headers_skips_unparsable_values() -> None:
    # ct_sip_next_header()/ct_sip_get_header() returning -1 make the walk continue.
    buf = (b"SIP/2.0 200 OK\r\nContact: <tel:1>, <sip:192.0.2.3>\r\n"
           b"Contact: <sip:host.example>\r\nContact: <sip:192.0.2.4:5999>\r\n")
    assert contacts(buf) == [("192.0.2.3", 5060), ("192.0.2.4", 5999), ("ret", 0)]


def test_walk_headers_comma_list_folded_over_lines() -> None:
    buf = b"SIP/2.0 200 OK\r\nContact: <sip:192.0.2.2:5062>,\r\n <sip:192.0.2.3:5064>\r\n"
    assert contacts(buf) == [("192.0.2.2", 5062), ("192.0.2.3", 5064), ("ret", 0)]


def test_parse_header_uri_without_in_header_takes_the_first_header_only() -> None:
    buf = b"REGISTER r SIP/2.0\r\nContact: <sip:192.0.2.2:5062>, <sip:192.0.2.3>\r\n"
    ret, uri, in_header = msg(buf).parse_header_uri(0, SIP_HDR_CONTACT)
    assert ret == 1 and uri is not None and in_header is None
    assert (uri.addr, uri.port) == (V4("192.0.2.2"), 5062)
    assert buf[uri.matchoff:uri.matchoff + uri.matchlen] == b"192.0.2.2:5062"
    assert buf[uri.dataoff:uri.dataoff + 1] == b">"


# --- URI host and port -----------------------------------------------------------------------------
def uri_of(value: bytes, profile: KernelProfile = HARDENED_6_1_192, family: int = 4,
           after: bytes = b">\r\n") -> tuple[int, str | None, int | None]:
    buf = b"REGISTER r SIP/2.0\r\nContact: <sip:u@" + value + after
    ret, uri, _ = msg(buf, family=family, profile=profile).parse_header_uri(0, SIP_HDR_CONTACT)
    return (ret, str(uri.addr), uri.port) if uri is not None else (ret, None, None)


@BOTH
@pytest.mark.parametrize("value, family, addr, port", [
    (b"192.0.2.2", 4, "192.0.2.2", 5060),  # no port: SIP_PORT
    (b"192.0.2.2:5062", 4, "192.0.2.2", 5062),
    (b"192.0.2.2:1024", 4, "192.0.2.2", 1024),
    (b"192.0.2.2:65535", 4, "192.0.2.2", 65535),
    (b"192.0.2.2:05060", 4, "192.0.2.2", 5060),
    (b"[2001:db8::2]", 6, "2001:db8::2", 5060),
    (b"[2001:db8::2]:5070", 6, "2001:db8::2", 5070),
    (b"[::ffff:192.0.2.2]:5070", 6, "::ffff:c000:202", 5070),
])
def test_uri_host_and_port(value: bytes, family: int, addr: str, port: int, profile: KernelProfile) -> None:
    assert uri_of(value, profile, family) == (1, addr, port)


@BOTH
@pytest.mark.parametrize("value, family", [
    (b"2001:db8::2", 6),  # IPv6 must be bracketed in a SIP URI (sip_parse_addr(..., delim=true))
    (b"[2001:db8::2", 6),
    (b"192.0.2.256", 4),
    (b"192.0.2", 4),
])
def test_uri_bad_address_is_skipped(value: bytes, family: int, profile: KernelProfile) -> None:
    # epaddr_len() fails inside the walk, so the header does not count at all.
    assert uri_of(value, profile, family)[0] == 0


@pytest.mark.parametrize("value, legacy", [
    (b"192.0.2.2:1023", -1),  # below 1024
    (b"192.0.2.2:65536", -1),  # above 65535
    (b"192.0.2.2:050600", (1, "192.0.2.2", 50600)),  # six digits: only sip_parse_port() counts them
    (b"192.0.2.2:", -1),  # no digits: sip_parse_port() fails, simple_strtoul() reads 0
    (b"192.0.2.2:4294972296", (1, "192.0.2.2", 5000)),  # 6.1.170 truncates to unsigned int
    (b"192.0.2.2:4294967297", -1),  # truncates to 1: out of range
])
def test_uri_port_rules_per_profile(value: bytes, legacy: object) -> None:
    # 6.1.192: the walk's epaddr_len() uses sip_parse_port() too, so a bad port makes
    # the contact unparsable: it is skipped and the walk finds nothing (0).
    # 6.1.170: epaddr_len() skipped any digits, and ct_sip_parse_header_uri() then
    # refused the value (-1) or took the truncated port.
    assert uri_of(value, HARDENED_6_1_192) == (0, None, None)
    old = uri_of(value, LEGACY_6_1_170)
    assert (old if isinstance(legacy, tuple) else old[0]) == legacy


def test_port_ending_at_the_buffer_end() -> None:
    # sip_parse_port(): "reached limit while parsing port" is malformed, and so is an
    # address that ends at the limit (dptr >= limit on entry).
    assert uri_of(b"192.0.2.2:5062", after=b"")[0] == 0
    assert uri_of(b"192.0.2.2", after=b"")[0] == 0
    assert uri_of(b"192.0.2.2:5062", after=b">")[0] == 1
    # 6.1.170 had no such rule.
    assert uri_of(b"192.0.2.2:5062", LEGACY_6_1_170, after=b"") == (1, "192.0.2.2", 5062)
    assert uri_of(b"192.0.2.2", LEGACY_6_1_170, after=b"") == (1, "192.0.2.2", 5060)


def test_parse_port_directly() -> None:
    m = msg(b"x:5062;", profile=HARDENED_6_1_192)
    assert m.parse_port(1, 7) == (True, 5062, 6)
    assert m.parse_port(1, 6) == (False, 0, 6)  # ends at the limit
    assert m.parse_port(0, 7) == (True, 5060, 0)  # no ':' - default port, end unchanged
    assert m.parse_port(7, 7)[0] is False  # at the limit
    m = msg(b"x:123456;")
    assert m.parse_port(1, 9) == (False, 0, 8)  # the sixth digit ends it
    legacy = msg(b"x:5062", profile=LEGACY_6_1_170)
    assert legacy.parse_port(1, 6) == (True, 5062, 6)


def test_epaddr_len_per_profile() -> None:
    buf = b"X\r\nVia: SIP/2.0/UDP 192.0.2.2:99999;branch=x\r\n"
    assert value_of(buf, SIP_HDR_VIA_UDP, profile=HARDENED_6_1_192) == -1
    assert value_of(buf, SIP_HDR_VIA_UDP, profile=LEGACY_6_1_170) == b"192.0.2.2:99999"
    ret, uri, _ = msg(buf, profile=LEGACY_6_1_170).parse_header_uri(0, SIP_HDR_VIA_UDP)
    assert (ret, uri) == (-1, None)


# --- parameters: transport= and expires= ---------------------------------------------------------------
def after_contact(buf: bytes, profile: KernelProfile = HARDENED_6_1_192, proto: int = IPPROTO_UDP,
                  index: int = 0) -> tuple[SipMessage, int]:
    m = msg(buf, proto=proto, profile=profile)
    coff, in_contact = 0, False
    for _ in range(index + 1):
        ret, uri, in_contact = m.parse_header_uri(coff, SIP_HDR_CONTACT, in_contact)
        assert ret == 1 and uri is not None
        coff = uri.dataoff
    return m, uri.matchoff + uri.matchlen


@pytest.mark.parametrize("params, proto, result", [
    (b"", IPPROTO_UDP, IPPROTO_UDP),  # absent: the master's protocol
    (b"", IPPROTO_TCP, IPPROTO_TCP),
    (b";transport=udp", IPPROTO_UDP, IPPROTO_UDP),
    (b";transport=UDP", IPPROTO_UDP, IPPROTO_UDP),
    (b";TRANSPORT=Tcp", IPPROTO_TCP, IPPROTO_TCP),
    (b";transport=tcp", IPPROTO_UDP, 0),  # another protocol than the master's: ignored
    (b";transport=udp", IPPROTO_TCP, 0),
    (b";transport=sctp", IPPROTO_UDP, 0),
    (b";transport=udpx", IPPROTO_UDP, IPPROTO_UDP),  # strncasecmp over 3 characters
])
def test_transport_param(params: bytes, proto: int, result: int) -> None:
    m, off = after_contact(b"REGISTER r SIP/2.0\r\nContact: <sip:192.0.2.2:5062" + params + b">\r\n", proto=proto)
    assert m.parse_transport(off) == result


def test_params_are_bounded_by_the_next_comma() -> None:
    buf = b"SIP/2.0 200 OK\r\nContact: <sip:192.0.2.2>, <sip:192.0.2.3;transport=tcp>;expires=7\r\n"
    m, off = after_contact(buf)
    assert m.parse_transport(off) == IPPROTO_UDP
    assert m.parse_numerical_param(off, b"expires=") == (0, 0)
    m, off = after_contact(buf, index=1)
    assert m.parse_transport(off) == 0
    assert m.parse_numerical_param(off, b"expires=") == (1, 7)


def test_params_are_bounded_by_the_header_line() -> None:
    buf = b"SIP/2.0 200 OK\r\nContact: <sip:192.0.2.2>\r\nX: ;expires=9;transport=tcp\r\n"
    m, off = after_contact(buf)
    assert m.parse_numerical_param(off, b"expires=") == (0, 0)
    assert m.parse_transport(off) == IPPROTO_UDP


def test_parse_param_value_ends_at_semicolon() -> None:
    buf = b"SIP/2.0 200 OK\r\nContact: <sip:192.0.2.2;transport=udp;lr>\r\n"
    m, off = after_contact(buf)
    ret, start, length = m.parse_param(off, b"transport=")
    assert (ret, buf[start:start + length]) == (1, b"udp")


@pytest.mark.parametrize("param, hardened, legacy", [
    (b"60", (1, 60), (1, 60)),
    (b"0", (1, 0), (1, 0)),
    (b"010", (1, 10), (1, 8)),  # 6.1.170: simple_strtoul(start, &end, 0) is octal
    (b"08", (1, 8), (1, 0)),
    (b"0x10", (1, 0), (1, 16)),  # hardened: "0", then 'x' ends the number
    (b"4294967296", (-1, 0), (1, 0)),  # sip_strtouint() error sets end = start: -1
    (b"4294967297", (-1, 0), (1, 1)),
    (b"000000000060", (-1, 0), (1, 48)),  # 12 characters
    (b"x", (-1, 0), (-1, 0)),
    (b"", (-1, 0), (-1, 0)),
])
def test_expires_param(param: bytes, hardened: tuple[int, int], legacy: tuple[int, int]) -> None:
    buf = b"SIP/2.0 200 OK\r\nContact: <sip:192.0.2.2>;expires=" + param + b"\r\n"
    for profile, want in ((HARDENED_6_1_192, hardened), (LEGACY_6_1_170, legacy)):
        m, off = after_contact(buf, profile=profile)
        assert m.parse_numerical_param(off, b"expires=") == want, profile.name


def test_expires_param_is_case_insensitive() -> None:
    m, off = after_contact(b"SIP/2.0 200 OK\r\nContact: <sip:192.0.2.2>;EXPIRES=30\r\n")
    assert m.parse_numerical_param(off, b"expires=") == (1, 30)


# --- Via "UDP " for forced_dport --------------------------------------------------------------------
@pytest.mark.parametrize("via, result", [
    (b"SIP/2.0/UDP 192.0.2.2:5080;branch=z", ("192.0.2.2", 5080)),
    (b"SIP/2.0/UDP 192.0.2.2;branch=z", ("192.0.2.2", 5060)),
    (b"SIP/2.0/TCP 192.0.2.2:5080;branch=z", None),
    (b"SIP/2.0/UDP host.example:5080", None),
])
def test_via_udp(via: bytes, result: tuple[str, int] | None) -> None:
    buf = b"INVITE x SIP/2.0\r\nVia: " + via + b"\r\n"
    ret, uri, _ = msg(buf).parse_header_uri(0, SIP_HDR_VIA_UDP)
    assert (None if uri is None else (str(uri.addr), uri.port)) == result
    assert ret == (1 if result else 0)


def test_ipv6_master_parses_ipv6_uris_only() -> None:
    buf = b"REGISTER r SIP/2.0\r\nContact: <sip:192.0.2.2:5062>\r\nContact: <sip:[2001:db8::2]:5062>\r\n"
    assert contacts(buf, family=6) == [("2001:db8::2", 5062), ("ret", 0)]
    assert contacts(buf, family=4) == [("192.0.2.2", 5062), ("ret", 0)]
