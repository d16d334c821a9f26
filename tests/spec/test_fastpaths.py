"""The fast paths of the scanners decide exactly as the kernel's byte loops."""

from ipaddress import IPv4Address

from hypothesis import given, settings
from hypothesis import strategies as st

from sipct.spec.scan import _in4_pton_loop, in4_pton, pton

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
    # The split() fast path for CRLF-only messages, and joining the
    # message-start walk from any dataoff, test where the kernel's loop tests.
    from sipct.spec.parse import SipMessage, line_starts, walk_line_starts
    from sipct.spec.profiles import DEFAULT_PROFILE

    start = min(cut_start, len(buf))
    limit = max(start, len(buf) - cut_end)
    assert line_starts(buf, start, limit) == walk_line_starts(buf, start, limit)
    msg = SipMessage(buf, start, limit, 4, 17, DEFAULT_PROFILE)
    for dataoff in range(start, limit + 1):
        assert msg.line_starts(dataoff) == walk_line_starts(buf, dataoff, limit)
