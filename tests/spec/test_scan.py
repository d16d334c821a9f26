"""Byte scanners (sipct.spec.scan) against the kernel's own functions.

Every expected value here comes from the kernel source, not from the port:
in4_pton()/in6_pton()/xdigit2bin() in net/core/utils.c, sip_strtouint() in
net/netfilter/nf_conntrack_sip.c (6.1.192), simple_strtoul() of lib/vsprintf.c
with _parse_integer_fixup_radix()/_parse_integer_limit() of lib/kstrtox.c
(6.1.170's number parser), and the _ctype[] table of lib/ctype.c. The values
were cross-checked by compiling those kernel functions unchanged in userspace.
"""

from __future__ import annotations

import ipaddress

import pytest
from sipct.spec import scan
from sipct.spec.scan import (
    ALPHA,
    casecmp,
    digits_len,
    in4_pton,
    in6_pton,
    is_alpha,
    pton,
    simple_strtoul,
    sip_strtouint,
    string_len,
    word_len,
)


# --- in4_pton(src, srclen, dst, delim=-1, &end) -------------------------------------------
@pytest.mark.parametrize("text, addr, end", [
    (b"192.0.2.2", "192.0.2.2", 9),
    (b"0.0.0.0", "0.0.0.0", 7),  # zero octets are fine: w keeps xdigit2bin's flag bits, so "w == 0" means "no digit"
    (b"255.255.255.255", "255.255.255.255", 15),
    (b"010.001.002.003", "10.1.2.3", 15),  # leading zeros are decimal, not octal
    (b"0001.2.3.4", "1.2.3.4", 10),
    (b"00000000000001.2.3.4", "1.2.3.4", 20),  # any number of leading zeros
    (b"1.2.3.4:5060", "1.2.3.4", 7),  # ':' is a delimiter (IN6PTON_COLON_MASK)
    (b"1.2.3.4]", "1.2.3.4", 7),
    (b"1.2.3.4g", "1.2.3.4", 7),  # not a hex digit: IN6PTON_DELIM with delim -1
    (b"1.2.3.4 rest", "1.2.3.4", 7),
])
def test_in4_pton_accepts(text: bytes, addr: str, end: int) -> None:
    raw, stop = in4_pton(text, 0, len(text))
    assert raw == ipaddress.IPv4Address(addr).packed
    assert stop == end


@pytest.mark.parametrize("text, end", [
    (b"1.2.3.256", 8),  # (w & 0xffff) > 255 at the third digit
    (b"1.2.3.0400", 9),
    (b"1.2.3.4.5", 7),  # five octets: "i >= 4" after the fourth dot
    (b"1.2.3.4.", 7),
    (b"1.2.3", 5),  # three octets: i != 4 at the end
    (b"1..2.3", 2),  # empty octet: w == 0 at the second dot
    (b".1.2.3.4", 0),
    (b"1.2.3.4abc", 7),  # a hex letter is IN6PTON_XDIGIT only, which in4_pton refuses
    (b"", 0),
])
def test_in4_pton_refuses(text: bytes, end: int) -> None:
    assert in4_pton(text, 0, len(text)) == (None, end)


def test_in4_pton_stops_at_srclen() -> None:
    # srclen ends the address exactly like a NUL byte would.
    assert in4_pton(b"1.2.3.45", 0, 7) == (bytes([1, 2, 3, 4]), 7)
    assert in4_pton(b"xx1.2.3.4", 2, 7) == (bytes([1, 2, 3, 4]), 9)
    assert in4_pton(b"1.2.3.4", 0, 6) == (None, 6)  # "1.2.3." then end: empty fourth octet


# --- in6_pton -------------------------------------------------------------------------------
@pytest.mark.parametrize("text, addr, end", [
    (b"::", "::", 2),
    (b"::1", "::1", 3),
    (b"2001:db8::2]", "2001:db8::2", 11),
    (b"2001:DB8::A", "2001:db8::a", 11),
    (b"2001:db8::", "2001:db8::", 10),
    (b"2001:db8::2x", "2001:db8::2", 11),  # trailing garbage ends the address
    (b"fe80::1%eth0", "fe80::1", 7),
    (b"1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8", 15),
    (b"1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0", 15),
    (b"::1:2:3:4:5:6:7", "0:1:2:3:4:5:6:7", 15),
    (b"::ffff:192.0.2.2", "::ffff:192.0.2.2", 16),  # embedded IPv4 via in4_pton
    (b"::1.2.3.4", "::102:304", 9),
    (b"1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:102:304", 19),
])
def test_in6_pton_accepts(text: bytes, addr: str, end: int) -> None:
    raw, stop = in6_pton(text, 0, len(text))
    assert raw == ipaddress.IPv6Address(addr).packed
    assert stop == end


@pytest.mark.parametrize("text, end", [
    (b"1:2:3:4:5:6:7:8:9", 15),  # a ninth group
    (b"1:2:3:4:5:6:7:8::", 15),
    (b"1::2::3", 5),  # two "::"
    (b"12345::", 4),  # five hex digits in a group (w & 0xf000 stops IN6PTON_XDIGIT)
    (b":1", 1),  # a single leading colon
    (b":::", 2),
    (b"1:2", 3),  # no "::" and fewer than eight groups: DELIM is not allowed yet
    (b"::ffff:1.2.3.256", 15),  # the embedded IPv4 fails inside in4_pton
    (b"[::1]", 0),  # brackets are sip_parse_addr()'s business, not in6_pton's
])
def test_in6_pton_refuses(text: bytes, end: int) -> None:
    assert in6_pton(text, 0, len(text)) == (None, end)


def test_pton_by_family() -> None:
    assert pton(4, b"x192.0.2.9;", 1, 11) == (ipaddress.IPv4Address("192.0.2.9"), 10)
    assert pton(6, b"x2001:db8::9;", 1, 13) == (ipaddress.IPv6Address("2001:db8::9"), 12)
    # An IPv4 text is not an IPv6 address (no colon) and vice versa.
    assert pton(6, b"192.0.2.9", 0, 9)[0] is None
    assert pton(4, b"2001:db8::9", 0, 11)[0] is None


# --- sip_strtouint(cp, len, &end) (6.1.192) ----------------------------------------------------
@pytest.mark.parametrize("text, length, value, end", [
    (b"4294967295", 10, 4294967295, 10),  # UINT_MAX
    (b"4294967296", 10, 0, 0),  # above UINT_MAX: error, *endp = cp
    (b"42949672950", 11, 0, 0),
    (b"99999999999", 11, 0, 0),
    (b"00000000001", 11, 1, 11),  # 11 characters: sizeof("4294967295") is the bound
    (b"000000000001", 12, 0, 0),  # the 12th digit is an error even though the value is 1
    (b"0004294967295", 13, 0, 0),
    (b"12345", 3, 123, 3),  # len bounds the scan
    (b"12a", 3, 12, 2),
    (b"abc", 3, 0, 0),  # no digits: value 0, end = cp (callers treat it as "no number")
    (b"", 0, 0, 0),
])
def test_sip_strtouint(text: bytes, length: int, value: int, end: int) -> None:
    assert sip_strtouint(text, 0, length) == (value, end)


def test_sip_strtouint_offsets_are_absolute() -> None:
    assert sip_strtouint(b"CSeq: 42 INVITE", 6, 9) == (42, 8)
    assert sip_strtouint(b"CSeq: 4294967296 X", 6, 12) == (0, 6)


# --- simple_strtoul(cp, &end, base) (6.1.170) ----------------------------------------------------
@pytest.mark.parametrize("text, base, value, end", [
    (b"4294967297", 10, 4294967297, 10),  # unsigned long: no overflow check
    (b"18446744073709551617", 10, 1, 20),  # wraps modulo 2**64
    (b"12abc", 10, 12, 2),
    (b"010", 0, 8, 3),  # base 0: a leading 0 means octal
    (b"077", 0, 63, 3),
    (b"000000000060", 0, 48, 12),
    (b"08", 0, 0, 1),  # '8' is no octal digit: the value is the 0
    (b"0x10", 0, 16, 4),  # 0x + hex digit: hex
    (b"0X1f", 0, 31, 4),
    (b"0x", 0, 0, 1),  # 0x without a hex digit: octal "0", end after the 0
    (b"0xg", 0, 0, 1),
    (b"0", 0, 0, 1),
    (b"10", 0, 10, 2),
])
def test_simple_strtoul(text: bytes, base: int, value: int, end: int) -> None:
    assert simple_strtoul(text, 0, base, bits=64) == (value, end)


def test_simple_strtoul_truncates_to_unsigned_int() -> None:
    # Every caller stores the result in an unsigned int.
    assert simple_strtoul(b"4294967297", 0, 10) == (1, 10)
    assert simple_strtoul(b"4294972296", 0, 10) == (5000, 10)
    assert simple_strtoul(b"4294967296", 0, 10) == (0, 10)


def test_simple_strtoul_ignores_any_limit() -> None:
    # It reads to the end of the digits, wherever the helper's limit was.
    assert simple_strtoul(b"5060123", 0, 10) == (5060123, 7)


# --- lib/ctype.c: isalpha() is Latin-1 aware -------------------------------------------------------
@pytest.mark.parametrize("byte, alpha", [
    (ord("A"), True), (ord("z"), True), (ord("0"), False), (ord("@"), False), (ord("["), False),
    (0xC0, True), (0xD6, True), (0xD7, False),  # multiplication sign is _P
    (0xD8, True), (0xDE, True), (0xDF, True),  # sharp s is _L
    (0xE0, True), (0xF6, True), (0xF7, False),  # division sign is _P
    (0xF8, True), (0xFF, True),
    (0xAA, False), (0xB5, False), (0xBA, False),  # ordinal indicators and micro are _P in the kernel table
    (0x80, False), (0x9F, False), (0xA0, False), (0xBF, False),
])
def test_isalpha_latin1(byte: int, alpha: bool) -> None:
    assert is_alpha(byte) is alpha
    assert (byte in ALPHA) is alpha


def test_isalpha_table_size() -> None:
    # 52 ASCII letters, 30 upper (0xC0-0xDE without 0xD7) and 32 lower (0xDF-0xFF without 0xF7).
    assert len(ALPHA) == 52 + 30 + 32
    assert bytes(range(256)).isalpha() is False  # Python's idea is ASCII only; the kernel's is not
    assert sum(1 for c in range(256) if bytes([c]).isalpha()) == 52


def test_string_len_counts_latin1_letters() -> None:
    buf = b"audi\xe9\xff\xd7x"
    assert string_len(buf, 0, len(buf)) == 6  # stops at 0xD7
    assert string_len(buf, 0, 3) == 3  # bounded by limit
    assert string_len(b"\xf7abc", 0, 4) == 0


def test_digits_and_word_len() -> None:
    assert digits_len(b"123abc", 0, 6) == 3
    assert digits_len(b"123abc", 0, 2) == 2
    assert digits_len(b"\xb2\xb3", 0, 2) == 0  # superscript digits are not isdigit()
    # iswordc(): alnum plus !"%()*+-./:<>?[\]_`{}~'
    word = b"a1!\"%()*+-./:<>?[\\]_`{}~'"
    assert word_len(word + b"@x", 0, len(word) + 2) == len(word)
    for stop in b" ;,@#$&=^|\r\n\t":
        assert word_len(bytes([stop]), 0, 1) == 0


def test_casecmp_is_ascii_case_insensitive_only() -> None:
    assert casecmp(b"xCoNtAcT:", 1, b"contact")
    assert not casecmp(b"Contac", 0, b"contact")  # runs out of data
    # The kernel's tolower() maps 0xC0-0xDE to 0xE0-0xFE, never into ASCII.
    assert not casecmp(b"\xc9", 0, b"i")


def test_uint_max_constant() -> None:
    assert scan.UINT_MAX == 4294967295
