"""The fast paths of the scanners decide exactly as the kernel's byte loops."""

from ipaddress import IPv4Address

from hypothesis import given, settings
from hypothesis import strategies as st

from sipct.spec.scan import _in4_pton_loop, _sip_strtouint_loop, in4_pton, pton, sip_strtouint

ALPHABET = st.sampled_from(list(b"0123456789.:aAfgz ]\r\n"))


@settings(max_examples=3000)
@given(st.lists(ALPHABET, max_size=20).map(bytes), st.tuples(*[st.integers(0, 300)] * 4), st.booleans(),
       st.integers(0, 3))
def test_in4_pton_fast_path_equals_the_loop(tail, octets, with_quad, cut):
    buf = (b"%d.%d.%d.%d" % octets if with_quad else b"") + tail
    for srclen in (len(buf), max(0, len(buf) - cut)):
        raw, end = _in4_pton_loop(buf, 0, srclen)
        assert in4_pton(buf, 0, srclen) == (raw, end)
        assert pton(4, buf, 0, srclen) == (None if raw is None else IPv4Address(raw), end)


@settings(max_examples=3000)
@given(st.lists(st.sampled_from(list(b"0123456789 xz")), max_size=16).map(bytes), st.integers(-1, 17),
       st.integers(-2, 17))
def test_sip_strtouint_fast_path_equals_the_loop(buf, pos, length):
    # Long runs: values above UINT_MAX, and more than 11 digits below it.
    buf = buf.replace(b"x", b"9" * 12).replace(b"z", b"0" * 11)
    pos = max(pos, 0)
    assert sip_strtouint(buf, pos, length) == _sip_strtouint_loop(buf, pos, length)


@settings(max_examples=2000)
@given(st.lists(st.sampled_from(list(b"09aZ_@.\xc0\xd7\xf7\xff :;")), max_size=12).map(bytes), st.integers(0, 12),
       st.integers(0, 14))
def test_run_scanners_equal_the_byte_loop(buf, pos, limit):
    from sipct.spec.scan import ALPHA, DIGIT, WORD, digits_len, run_len, string_len, word_len

    limit = min(limit, len(buf))
    for scanner, chars in ((string_len, ALPHA), (digits_len, DIGIT), (word_len, WORD)):
        assert scanner(buf, pos, limit) == (run_len(buf, pos, limit, chars) if pos < limit else 0)


def _parse_port_loop(buf, pos, limit):
    """sip_parse_port() byte by byte (the strict profiles), as the kernel loops."""
    if pos >= limit:
        return False, 0, pos
    if buf[pos] != 0x3A:
        return True, 5060, pos
    p, value, digits = pos + 1, 0, 0
    while p < limit and 0x30 <= buf[p] <= 0x39:
        value = value * 10 + buf[p] - 0x30
        p += 1
        digits += 1
        if digits > 5:
            return False, 0, p
    if digits == 0 or p >= limit or not 1024 <= value <= 65535:
        return False, 0, p
    return True, value, p


@settings(max_examples=2000)
@given(st.lists(st.sampled_from([b"0", b"1", b"5", b"9", b"1024", b"65535", b"65536", b"0", b":", b";", b" "]),
                max_size=6).map(b"".join), st.integers(0, 10), st.integers(0, 14))
def test_parse_port_equals_the_kernel_loop(buf, pos, limit):
    from sipct.spec.parse import SipMessage
    from sipct.spec.profiles import DEFAULT_PROFILE

    buf = b":" + buf
    limit = min(limit + 1, len(buf))
    msg = SipMessage(buf, 0, len(buf), 4, 17, DEFAULT_PROFILE)
    assert msg.parse_port(pos, limit) == _parse_port_loop(buf, pos, limit)


def test_hex_letter_after_an_address_fails_like_the_kernel():
    # xdigit2bin(): 'a'-'f' are hex digits, not delimiters, and in4_pton wants digits.
    assert in4_pton(b"192.0.2.2a", 0, 10)[0] is None
    assert in4_pton(b"192.0.2.2g", 0, 10) == (bytes([192, 0, 2, 2]), 9)


def test_a_line_start_consumed_by_a_failed_name_test_is_not_a_line_end():
    # ct_sip_get_header(): in "\n\nCSeq" the second LF is the candidate line
    # start; its name test fails and dptr++ steps over it, so "CSeq" never
    # starts a line. With CRLF blank lines the LF survives and it does.
    from sipct.spec.parse import SIP_HDR_CSEQ, SipMessage
    from sipct.spec.profiles import DEFAULT_PROFILE

    for eol, found in ((b"\n", 0), (b"\r", 0), (b"\r\n", 1)):
        buf = b"INVITE x SIP/2.0" + eol + eol + b"CSeq: 1 INVITE" + eol
        msg = SipMessage(buf, 0, len(buf), 4, 17, DEFAULT_PROFILE)
        assert msg.get_header(0, SIP_HDR_CSEQ)[0] == found


LINES = st.lists(st.sampled_from([b"\r\n", b"\r", b"\n", b"a", b"CSeq: 1", b" ", b"\r\n\r\n"]), max_size=12).map(b"".join)


@settings(max_examples=3000)
@given(LINES, st.integers(0, 3), st.integers(0, 3))
def test_indexed_line_starts_equal_the_kernel_loop(buf, cut_start, cut_end):
    # Joining the message-start walk from any dataoff tests where the
    # kernel's loop started there tests.
    from sipct.spec.parse import SipMessage, walk_line_starts
    from sipct.spec.profiles import DEFAULT_PROFILE

    start = min(cut_start, len(buf))
    limit = max(start, len(buf) - cut_end)
    msg = SipMessage(buf, start, limit, 4, 17, DEFAULT_PROFILE)
    for dataoff in range(start, limit + 1):
        assert msg.line_starts(dataoff) == walk_line_starts(buf, dataoff, limit)


HEADER_LINES = st.lists(st.sampled_from([
    b"INVITE sip:a@192.0.2.1 SIP/2.0", b"Via: SIP/2.0/UDP 192.0.2.2:5062", b"v: SIP/2.0/udp 192.0.2.2",
    b"via:x", b"vi: 1", b"Contact: <sip:b@192.0.2.3:5070>", b"m: <sip:192.0.2.3>", b"mx: 1", b"CSeq: 7 INVITE",
    b"cseq 8", b"l: 12", b"Content-Length: 0", b"lx: 3", b"  continued", b"", b"v=0", b"c=IN IP4 192.0.2.9",
    b"m=audio 4000 RTP/AVP 0", b"M=video 5000 RTP/AVP 0", b"c=IN IP4 300.1.1.1", b"o=x 1 1 IN IP4 192.0.2.8",
    b"t=0 0", b"i: a@b",
]), max_size=14)


@settings(max_examples=600, deadline=None)
@given(HEADER_LINES, st.sampled_from([b"\r\n", b"\n", b"\r"]), st.booleans(), st.integers(0, 4),
       st.lists(st.integers(0, 400), max_size=6))
def test_crlf_find_path_equals_the_line_walk(lines, eol, trailing_eol, cut, offsets):
    # find_line() finds header lines of a CRLF-only message with find();
    # every lookup must give what walking the line starts gives.
    from sipct.spec.parse import CT_SIP_HDRS, SipMessage
    from sipct.spec.profiles import DEFAULT_PROFILE
    from sipct.spec.sdp import CT_SDP_HDRS, SDP_HDR_UNSPEC, get_sdp_header

    buf = eol.join(lines) + (eol if trailing_eol else b"")
    limit = max(0, len(buf) - cut)

    def message(walk: bool) -> SipMessage:
        msg = SipMessage(buf, 0, limit, 4, 17, DEFAULT_PROFILE)
        if walk:
            msg._crlf = False  # take the line walk whatever the line ends
        return msg

    fast, walk = message(False), message(True)
    # Where lookups start: the message start, around every line end, and anywhere.
    around_eols = {i + d for i, c in enumerate(buf) if c in b"\r\n" for d in (-1, 0, 1, 2)}
    for dataoff in sorted({0, *offsets, *around_eols}):
        for kind in CT_SIP_HDRS:
            assert fast.get_header(dataoff, kind) == walk.get_header(dataoff, kind)
        for kind in CT_SDP_HDRS[4]:
            for term in [SDP_HDR_UNSPEC, *CT_SDP_HDRS[4]]:
                assert get_sdp_header(fast, dataoff, kind, term) == get_sdp_header(walk, dataoff, kind, term)
