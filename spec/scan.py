"""Byte scanners with the kernel's exact semantics.

The helper never sees a C string: every scan is bounded by ``limit`` (an index
into the message buffer), exactly like the kernel's ``dptr``/``limit`` pairs.
Character classes come from the kernel's ``lib/ctype.c`` table, which treats
Latin-1 letters (0xC0-0xFF but 0xD7 and 0xF7) as alphabetic - a difference from
Python's ``bytes.isalpha`` that changes what ``string_len`` accepts.
"""

from __future__ import annotations

import functools
import ipaddress
import re

# lib/ctype.c: _U=1 _L=2 _D=4 (only what the helper asks for).
_UPPER = frozenset(range(0x41, 0x5B)) | frozenset(range(0xC0, 0xDF)) - {0xD7}
_LOWER = frozenset(range(0x61, 0x7B)) | frozenset(range(0xDF, 0x100)) - {0xF7}
ALPHA = frozenset(_UPPER | _LOWER)
DIGIT = frozenset(range(0x30, 0x3A))
ALNUM = ALPHA | DIGIT

# iswordc() in nf_conntrack_sip.c: the characters of a Call-ID word.
WORD = ALNUM | frozenset(b'!"%:<>?_`{}~\'') | frozenset(range(ord("("), ord("+") + 1)) \
    | frozenset(range(ord("["), ord("]") + 1)) | frozenset(range(ord("-"), ord("/") + 1))

CR, LF, SP, HT = 0x0D, 0x0A, 0x20, 0x09
UINT_MAX = 0xFFFFFFFF


def is_alpha(c: int) -> bool:
    return c in ALPHA


def casecmp(buf: bytes, pos: int, needle: bytes) -> bool:
    """strncasecmp(buf + pos, needle, len(needle)) == 0 for an ASCII needle.

    The caller guarantees ``pos + len(needle)`` is inside the data it may read;
    the kernel relies on the same (or on a NUL it would stop at, which never
    equals a needle character).
    """
    return buf[pos:pos + len(needle)].lower() == needle


def run_len(buf: bytes, pos: int, limit: int, chars: frozenset[int]) -> int:
    """Length of the run of ``chars`` at ``pos`` (string_len, digits_len, word_len)."""
    end = pos
    while end < limit and buf[end] in chars:
        end += 1
    return end - pos


def _run_pattern(chars: frozenset[int]) -> re.Pattern[bytes]:
    """A regex for a run of ``chars``: run_len() done by one match."""
    return re.compile(b"[" + b"".join(re.escape(bytes([c])) for c in sorted(chars)) + b"]*")


_ALPHA_RUN, _DIGIT_RUN, _WORD_RUN = _run_pattern(ALPHA), _run_pattern(DIGIT), _run_pattern(WORD)


def string_len(buf: bytes, pos: int, limit: int) -> int:
    return _ALPHA_RUN.match(buf, pos, limit).end() - pos if pos < limit else 0  # type: ignore[union-attr]


def digits_len(buf: bytes, pos: int, limit: int) -> int:
    return _DIGIT_RUN.match(buf, pos, limit).end() - pos if pos < limit else 0  # type: ignore[union-attr]


def word_len(buf: bytes, pos: int, limit: int) -> int:
    return _WORD_RUN.match(buf, pos, limit).end() - pos if pos < limit else 0  # type: ignore[union-attr]


def sip_strtouint(buf: bytes, pos: int, length: int) -> tuple[int, int]:
    """sip_strtouint(): bounded base-10 parse; returns (value, end).

    More than ``sizeof("4294967295")`` (11) digits, or a value above UINT_MAX,
    is an error: value 0 and ``end == pos``, which callers treat as "no number".
    The digits are found by one regex match and read by int(); the value only
    grows digit by digit, so checking it once at the end is checking it after
    every digit, as the kernel's loop (_sip_strtouint_loop) does.
    """
    if length <= 0 or pos >= len(buf):
        return 0, pos
    end = _DIGIT_RUN.match(buf, pos, pos + length).end()  # type: ignore[union-attr]  # digits_len(), inline
    if end == pos or end - pos > 11:
        return 0, pos
    value = int(buf[pos:end])
    if value > UINT_MAX:
        return 0, pos
    return value, end


def _sip_strtouint_loop(buf: bytes, pos: int, length: int) -> tuple[int, int]:
    max_len = 11
    budget = min(length, max_len)
    remaining = length
    value = 0
    end = pos
    n = len(buf)
    while remaining > 0 and end < n and buf[end] in DIGIT:
        if budget == 0:
            return 0, pos
        value = value * 10 + buf[end] - 0x30
        if value > UINT_MAX:
            return 0, pos
        end += 1
        budget -= 1
        remaining -= 1
    return value, end


def simple_strtoul(buf: bytes, pos: int, base: int = 10, bits: int = 32) -> tuple[int, int]:
    """simple_strtoul() as 6.1.170 used it, truncated to the ``unsigned int``
    the callers store it in; returns (value, end).

    It reads past the helper's ``limit`` (up to the end of the packet: the
    kernel would go on into whatever follows, which for a linearised skb is
    tail room we cannot know) - one of the bugs the 2026 fixes removed.
    ``base`` 0 takes a ``0x`` prefix as hex and a leading ``0`` as octal.
    """
    n = len(buf)
    end = pos
    if base == 0:
        if end < n and buf[end] == 0x30:
            if end + 2 < n + 0 and buf[end + 1] in b"xX" and _hexval(buf[end + 2]) >= 0:
                base, end = 16, end + 2
            else:
                base = 8
        else:
            base = 10
    elif base == 16 and end + 1 < n and buf[end] == 0x30 and buf[end + 1] in b"xX":
        end += 2
    value = 0
    while end < n:
        d = _hexval(buf[end])
        if d < 0 or d >= base:
            break
        value = (value * base + d) & 0xFFFFFFFFFFFFFFFF
        end += 1
    return value & ((1 << bits) - 1), end


def _hexval(c: int) -> int:
    if 0x30 <= c <= 0x39:
        return c - 0x30
    c |= 0x20
    if 0x61 <= c <= 0x66:
        return c - 0x61 + 10
    return -1


# --- in4_pton / in6_pton (net/core/utils.c), with delim = -1 -------------------
_XDIGIT = 0x00010000
_DIGIT = 0x00020000
_COLON_MASK = 0x00700000
_COLON_1 = 0x00100000
_COLON_2 = 0x00200000
_COLON_1_2 = 0x00400000
_DOT = 0x00800000
_DELIM = 0x10000000
_NULL = 0x20000000


def _xdigit2bin(c: int) -> int:
    """xdigit2bin(c, delim=-1): with no delimiter every other byte ends the address."""
    if c == 0:
        return _DELIM
    if c == 0x3A:
        return _COLON_MASK
    if c == 0x2E:
        return _DOT
    v = _hexval(c)
    if v >= 0:
        return v | _XDIGIT | (_DIGIT if v < 10 else 0)
    return _DELIM


def _at(buf: bytes, pos: int, srclen: int) -> int:
    return buf[pos] if srclen > 0 else 0


_DOTTED_QUAD = re.compile(rb"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}")
# What xdigit2bin() reads as part of an address: after a fourth octet these
# make in4_pton() go on (or fail), so only the byte loop can decide.
_QUAD_GOES_ON = DIGIT | frozenset(b".abcdefABCDEF")


@functools.lru_cache(maxsize=1024)
def _quad_address(text: bytes) -> ipaddress.IPv4Address | None:
    """The address a dotted quad of 1-3 digit octets spells; None when an
    octet is above 255. Cached: a helper sees the same few addresses again
    and again."""
    octets = [int(octet) for octet in text.split(b".")]
    return ipaddress.IPv4Address(bytes(octets)) if max(octets) <= 255 else None


def _in4_fast(buf: bytes, pos: int, srclen: int) -> tuple[ipaddress.IPv4Address, int] | None:
    """in4_pton() for the common case, decided without the byte loop: four
    octets of at most three digits each, none above 255, followed by a byte
    that ends the address. None when the loop has to decide."""
    quad = _DOTTED_QUAD.match(buf, pos, pos + srclen if srclen > 0 else pos)
    if quad is None:
        return None
    end = quad.end()
    if end < pos + srclen and buf[end] in _QUAD_GOES_ON:
        return None
    addr = _quad_address(quad.group())
    return None if addr is None else (addr, end)


def in4_pton(buf: bytes, pos: int, srclen: int) -> tuple[bytes | None, int]:
    """Returns (4 address bytes or None, end position)."""
    fast = _in4_fast(buf, pos, srclen)
    if fast is not None:
        return fast[0].packed, fast[1]
    return _in4_pton_loop(buf, pos, srclen)


def _in4_pton_loop(buf: bytes, pos: int, srclen: int) -> tuple[bytes | None, int]:
    s = pos
    out = bytearray()
    w = 0
    seen = False  # the kernel's w keeps xdigit2bin's flag bits: "w != 0" means "a digit was read"
    while True:
        c = _xdigit2bin(_at(buf, s, srclen))
        if not c & (_DIGIT | _DOT | _DELIM | _COLON_MASK):
            return None, s
        if c & (_DOT | _DELIM | _COLON_MASK):
            if not seen:
                return None, s
            out.append(w & 0xFF)
            w, seen = 0, False
            if c & (_DELIM | _COLON_MASK):
                if len(out) != 4:
                    return None, s
                return bytes(out), s
        else:
            w, seen = w * 10 + (c & 0xFF), True
            if w > 255:
                return None, s
        if len(out) >= 4:
            return None, s
        s += 1
        srclen -= 1


def in6_pton(buf: bytes, pos: int, srclen: int) -> tuple[bytes | None, int]:
    """Returns (16 address bytes or None, end position)."""
    s = pos
    tok: int | None = None
    d = bytearray()
    dc: int | None = None
    state = _COLON_1_2 | _XDIGIT | _NULL
    w = 0
    while True:
        c = _xdigit2bin(_at(buf, s, srclen))
        if not c & state:
            return None, s
        if c & (_DELIM | _COLON_MASK):
            if not state & _NULL:
                d.append((w >> 8) & 0xFF)
                d.append(w & 0xFF)
            w = 0
            if c & _DELIM:
                break
            colon = state & _COLON_MASK
            if colon == _COLON_2:
                dc = len(d)
                state = _XDIGIT | _DELIM
                if dc >= 16:
                    state |= _NULL
            elif colon == _COLON_1 | _COLON_1_2:
                state = _XDIGIT | _COLON_2
            elif colon == _COLON_1:
                state = _XDIGIT
            elif colon == _COLON_1_2:
                state = _COLON_2
            else:
                state = 0
            tok = s + 1
        elif c & _DOT:
            start = tok if tok is not None else s
            v4, s = in4_pton(buf, start, srclen + (s - start))
            if v4 is None:
                return None, s
            d += v4
            break
        else:
            w = (w << 4) | (c & 0xFF)
            state = _COLON_1 | _DELIM
            if not w & 0xF000:
                state |= _XDIGIT
            if dc is None and len(d) + 2 < 16:
                state |= _COLON_1_2
                state &= ~_DELIM
            if len(d) + 2 >= 16:
                state &= ~(_COLON_1 | _COLON_1_2)
        # cont:
        if (dc is not None and len(d) + 4 < 16) or len(d) + 4 == 16:
            state |= _DOT
        if len(d) >= 16:
            state &= ~(_XDIGIT | _COLON_MASK)
        s += 1
        srclen -= 1
    if dc is not None:
        head, tail = d[:dc], d[dc:]
        addr = bytes(head) + bytes(16 - len(head) - len(tail)) + bytes(tail)
    else:
        addr = bytes(d) + bytes(16 - len(d))
    return addr, s


def pton(family: int, buf: bytes, pos: int, limit: int) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address | None, int]:
    """in4_pton/in6_pton bounded by ``limit``, as an ipaddress object."""
    if family == 4:
        # _in4_fast(buf, pos, limit - pos), inline: most addresses of a message are read here.
        quad = _DOTTED_QUAD.match(buf, pos, limit if limit > pos else pos)
        if quad is not None:
            end = quad.end()
            if end >= limit or buf[end] not in _QUAD_GOES_ON:
                addr = _quad_address(quad.group())
                if addr is not None:
                    return addr, end
        raw, end = _in4_pton_loop(buf, pos, limit - pos)
        return (ipaddress.IPv4Address(raw) if raw is not None else None), end
    raw, end = in6_pton(buf, pos, limit - pos)
    return (ipaddress.IPv6Address(raw) if raw is not None else None), end
