"""Fuzzed SIP messages: seeds and deterministic mutations.

The seeds are what a SIP helper meets in the field and in the torture
tests: the RFC 4475 messages (read from the shared corpus, skipped when it
is absent), every message of the bundled example dialogs, and SDP offers.
Each fuzzed message is one seed with one to three mutations aimed at the
kernel's parsers: ``ct_sip_get_header()`` and its compact forms and line
folding, ``sip_strtouint()``/``simple_strtoul()`` numbers (CSeq,
Content-Length, Expires, media ports), ``ct_sip_parse_sdp_addr()`` and
``sip_parse_addr()`` (IPv4, bracketed IPv6), the CRLF search that finds
the SDP body, and ``sip_help_tcp()``'s Content-Length framing.

Message ``i`` of a run depends on ``(seed, i)`` alone, so a run can be cut
into slices (one VM boot each) that together are the same run.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FuzzMessage", "MUTATIONS", "Mutator", "Seed", "default_seeds", "mutate"]

MAX_SIZE = 4000  # bytes: a datagram the lab's 1500-byte links carry in three fragments at most

# RFC 3261 7.3.3 compact forms, both ways.
COMPACT = {b"Call-ID": b"i", b"Contact": b"m", b"Content-Length": b"l", b"Content-Type": b"c",
           b"From": b"f", b"To": b"t", b"Via": b"v", b"Subject": b"s", b"Supported": b"k"}
LONG = {v: k for k, v in COMPACT.items()}
METHODS = (b"INVITE", b"REGISTER", b"ACK", b"BYE", b"CANCEL", b"UPDATE", b"PRACK", b"MESSAGE", b"OPTIONS",
           b"INFO", b"invite", b"FOO")
STATUS = (b"100", b"180", b"183", b"200", b"202", b"401", b"407", b"486", b"503", b"699", b"099", b"2000", b"20")
# sip_strtouint() and simple_strtoul() limits, signs and bases (6.1.170 parsed some with base 0).
NUMBERS = (b"0", b"00", b"007", b"010", b"0x10", b"1", b"-1", b"+5", b"65535", b"65536", b"1023", b"1024",
           b"2147483647", b"2147483648", b"4294967295", b"4294967296", b"18446744073709551616",
           b"99999999999999999999999999", b"", b" 12", b"12 ", b"1e3", b"\t3")
PORTS = (b"0", b"1", b"1023", b"1024", b"2000", b"5060", b"49170", b"65534", b"65535", b"65536", b"70000",
         b"-1", b"abc", b"", b"0049170", b"4917O", b"999999999999", b"49170/2", b"49171")
ADDRESSES = (b"0.0.0.0", b"255.255.255.255", b"192.0.2.2", b"198.51.100.2", b"203.0.113.7", b"300.1.1.1",
             b"192.0.2", b"192.0.2.2.5", b"192.0.2.02", b"[192.0.2.2]", b"2001:db8::2", b"[2001:db8::2]",
             b"2001:db8:2::2", b"::", b"::ffff:192.0.2.2", b"fe80::1%eth0", b"example.com", b"", b" 192.0.2.2",
             b"192.0.2.2 ", b"192.0.2.2\x00")
URIS = (b"<sip:alice@[2001:db8::2]:5060>", b"<sip:alice@[2001:db8::2]>", b"<sip:[2001:db8::2]:99999>",
        b"<sip:alice@192.0.2.2:0>", b"<sip:alice@192.0.2.2:65536>", b"<sip:alice@192.0.2.2:>",
        b"sip:alice@192.0.2.2:5060;transport=tcp", b"<sip:alice@192.0.2.2:5060>;expires=0",
        b"<sip:alice@192.0.2.2:5060>;expires=4294967296", b"*", b"<sip:alice@[2001:db8::2>",
        b"<sip:alice@198.51.100.2:5060;maddr=203.0.113.7>", b"<sips:alice@192.0.2.2:5061>")
WHITESPACE = (b" ", b"  ", b"\t", b" \t ", b"\r\n ", b"\r\n\t", b"\n ", b"")
NEWLINES = (b"\r\n", b"\n", b"\r", b"\r\r\n", b"")


@dataclass(frozen=True, slots=True)
class Seed:
    name: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class FuzzMessage:
    """Message ``index`` of a run: its bytes and how they were made."""

    index: int
    seed: str
    mutations: tuple[str, ...]
    payload: bytes

    @property
    def is_response(self) -> bool:
        return self.payload.startswith(b"SIP/")


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\r\n")


def _head_body(data: bytes) -> tuple[bytes, bytes, bytes]:
    for sep in (b"\r\n\r\n", b"\n\n"):
        at = data.find(sep)
        if at >= 0:
            return data[:at], sep, data[at + len(sep):]
    return data, b"", b""


def _header_spans(head: bytes) -> list[tuple[int, int]]:
    """(start, end) of each header line after the start line."""
    spans = []
    pos = head.find(b"\n")
    while 0 <= pos < len(head):
        start = pos + 1
        end = head.find(b"\n", start)
        end = len(head) if end < 0 else end + 1
        if start < end:
            spans.append((start, end))
        pos = end if end < len(head) else -1
    return spans


# --- the mutations: (rng, data) -> data; every one total on any bytes ---------------------------------

def flip_bytes(rng: random.Random, data: bytes) -> bytes:
    if not data:
        return b"\xff"
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(out))
        out[at] = rng.choice((out[at] ^ (1 << rng.randrange(8)), rng.randrange(256), ord(":"), ord(" "),
                              ord("\r"), ord("\n"), ord("0")))
    return bytes(out)


def truncate(rng: random.Random, data: bytes) -> bytes:
    return data[:rng.randrange(len(data) + 1)] if data else data


def duplicate_header(rng: random.Random, data: bytes) -> bytes:
    head, sep, body = _head_body(data)
    spans = _header_spans(head)
    if not spans:
        return data + b"\r\nCSeq: 1 INVITE\r\n"
    a, b = rng.choice(spans)
    line = head[a:b]
    if not line.endswith(b"\n"):
        line += b"\r\n"
    at = rng.choice(spans)[0]
    return head[:at] + line + head[at:] + sep + body


def remove_header(rng: random.Random, data: bytes) -> bytes:
    head, sep, body = _head_body(data)
    spans = _header_spans(head)
    if not spans:
        return data
    name = rng.choice((b"CSeq", b"Content-Length", b"Call-ID", b"Via", b"Contact", b"Content-Type", b"To",
                       b"From", b"Expires", None))
    chosen = [s for s in spans if name is not None and head[s[0]:s[1]].lower().startswith(name.lower())]
    a, b = rng.choice(chosen or spans)
    return head[:a] + head[b:] + sep + body


def replace_number(rng: random.Random, data: bytes) -> bytes:
    numbers = list(re.finditer(rb"\d+", data))
    if not numbers:
        return data + rng.choice(NUMBERS)
    m = rng.choice(numbers)
    return data[:m.start()] + rng.choice(NUMBERS) + data[m.end():]


def odd_whitespace(rng: random.Random, data: bytes) -> bytes:
    """Spaces and tabs around the colon, and header values folded onto a
    continuation line (sip_follow_continuation())."""
    colons = [m.start() for m in re.finditer(rb":", data)] or [0]
    at = rng.choice(colons)
    ws = rng.choice(WHITESPACE)
    if rng.random() < 0.5:
        return data[:at] + ws + data[at:]
    return data[:at + 1] + ws + data[at + 1:]


def compact_form(rng: random.Random, data: bytes) -> bytes:
    head, sep, body = _head_body(data)
    spans = _header_spans(head)
    if not spans:
        return data
    a, b = rng.choice(spans)
    line = head[a:b]
    name, colon, rest = line.partition(b":")
    if not colon:
        return data
    bare = name.strip()
    if bare in COMPACT:
        new = COMPACT[bare]
    elif bare in LONG:
        new = LONG[bare]
    else:
        new = rng.choice((bare.upper(), bare.lower(), bare + b" ", b" " + bare))
    return head[:a] + new + colon + rest + head[b:] + sep + body


def sdp_port(rng: random.Random, data: bytes) -> bytes:
    ms = list(re.finditer(rb"(m=\w+ )(\S*)", data))
    if not ms:
        return data
    m = rng.choice(ms)
    return data[:m.start(2)] + rng.choice(PORTS) + data[m.end(2):]


def sdp_address(rng: random.Random, data: bytes) -> bytes:
    cs = list(re.finditer(rb"((?:c|o)=[^\r\n]*IN IP)([46]) ?([^\r\n]*)", data))
    if not cs:
        return data
    m = rng.choice(cs)
    family = rng.choice((m.group(2), b"4", b"6", b"X"))
    return data[:m.start(2)] + family + b" " + rng.choice(ADDRESSES) + data[m.end(3):]


def sdp_media(rng: random.Random, data: bytes) -> bytes:
    """Another media line, a media type the kernel does not know, or none."""
    head, sep, body = _head_body(data)
    line = rng.choice((b"m=audio 49172 RTP/AVP 0", b"m=video 51372 RTP/AVP 31", b"m=image 54111 udptl t38",
                       b"m=text 11000 RTP/AVP 98", b"m=audio 49170/2 RTP/AVP 0", b"m=audio 49170 RTP/AVP",
                       b"c=IN IP4 203.0.113.9", b"c=IN IP6 2001:db8:2::9", b"m=", b"c="))
    if not sep:
        return data + b"\r\n\r\nv=0\r\n" + line + b"\r\n"
    return head + sep + body + line + b"\r\n"


def ipv6_uri(rng: random.Random, data: bytes) -> bytes:
    head, sep, body = _head_body(data)
    spans = [s for s in _header_spans(head)
             if re.match(rb"\s*(contact|m|via|v|to|t|from|f)\s*:", head[s[0]:s[1]], re.I)]
    uri = rng.choice(URIS)
    if not spans:
        return head + b"\r\nContact: " + uri + sep + body
    a, b = rng.choice(spans)
    name = head[a:b].partition(b":")[0]
    return head[:a] + name + b": " + uri + b"\r\n" + head[b:] + sep + body


def line_endings(rng: random.Random, data: bytes) -> bytes:
    """Some or all CRLFs become LF, CR, nothing or doubled (the blank line
    between headers and body included)."""
    ends = [m.start() for m in re.finditer(rb"\r\n", data)]
    if not ends:
        return data
    new = rng.choice(NEWLINES)
    chosen = set(ends) if rng.random() < 0.2 else set(rng.sample(ends, rng.randint(1, min(3, len(ends)))))
    out = bytearray()
    pos = 0
    for at in ends:
        if at in chosen:
            out += data[pos:at] + new
            pos = at + 2
    return bytes(out + data[pos:])


def insert_nul(rng: random.Random, data: bytes) -> bytes:
    at = rng.randrange(len(data) + 1)
    return data[:at] + b"\x00" * rng.randint(1, 3) + data[at:]


def content_length_lie(rng: random.Random, data: bytes) -> bytes:
    head, sep, body = _head_body(data)
    lie = rng.choice((b"0", str(len(body) + rng.randint(1, 100)).encode(), str(max(0, len(body) - 5)).encode(),
                      b"-1", b"4294967295", b"99999999999", b"", b"abc", b"0" + str(len(body)).encode()))
    m = re.search(rb"(?im)^(content-length|l)[ \t]*:[ \t]*([^\r\n]*)", head)
    if m is None:
        return head + b"\r\nContent-Length: " + lie + sep + body
    return head[:m.start(2)] + lie + head[m.end(2):] + sep + body


def swap_start_line(rng: random.Random, data: bytes) -> bytes:
    if data.startswith(b"SIP/2.0 "):
        return b"SIP/2.0 " + rng.choice(STATUS) + data[11:]
    sp = data.find(b" ")
    if sp < 0:
        return rng.choice(METHODS) + b" " + data
    method = rng.choice(METHODS)
    data = method + data[sp:]
    # Keep CSeq's method in step half of the time (process_sip_request() looks it up there too).
    if rng.random() < 0.5:
        data = re.sub(rb"(?im)^(CSeq[ \t]*:[ \t]*\d+[ \t]+)\w+", lambda m: m.group(1) + method, data, count=1)
    return data


def expires(rng: random.Random, data: bytes) -> bytes:
    value = rng.choice(NUMBERS)
    if re.search(rb"(?im)^expires[ \t]*:", data):
        return re.sub(rb"(?im)^(expires[ \t]*:[ \t]*)[^\r\n]*", lambda m: m.group(1) + value, data, count=1)
    if rng.random() < 0.5 and re.search(rb"(?im)^(contact|m)[ \t]*:[^\r\n]*", data):
        return re.sub(rb"(?im)^((?:contact|m)[ \t]*:[^\r\n]*)", lambda m: m.group(1) + b";expires=" + value, data,
                      count=1)
    head, sep, body = _head_body(data)
    return head + b"\r\nExpires: " + value + sep + body


MUTATIONS: dict[str, Callable[[random.Random, bytes], bytes]] = {
    f.__name__: f for f in (
        flip_bytes, truncate, duplicate_header, remove_header, replace_number, odd_whitespace, compact_form,
        sdp_port, sdp_address, sdp_media, ipv6_uri, line_endings, insert_nul, content_length_lie,
        swap_start_line, expires)
}


def mutate(rng: random.Random, data: bytes, count: int) -> tuple[bytes, tuple[str, ...]]:
    """``count`` mutations in a row; never raises, always bytes of at most MAX_SIZE."""
    names = []
    for _ in range(count):
        name = rng.choice(tuple(MUTATIONS))
        data = MUTATIONS[name](rng, data)
        names.append(name)
    return data[:MAX_SIZE], tuple(names)


# --- seeds -------------------------------------------------------------------------------------------

SDP_OFFER = (
    "INVITE sip:bob@198.51.100.2 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bK{n}\r\n"
    "To: <sip:bob@198.51.100.2>\r\n"
    "From: <sip:alice@192.0.2.2>;tag={n}\r\n"
    "Call-ID: fuzz-{n}@192.0.2.2\r\n"
    "CSeq: {n} INVITE\r\n"
    "Contact: <sip:alice@192.0.2.2:5060>\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: {length}\r\n"
    "\r\n"
    "{body}")
SDP_BODIES = (
    "v=0\r\no=a 1 1 IN IP4 192.0.2.2\r\ns=-\r\nc=IN IP4 192.0.2.2\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0\r\n",
    "v=0\r\no=a 1 1 IN IP4 192.0.2.2\r\ns=-\r\nc=IN IP4 192.0.2.2\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0\r\n"
    "m=video 51372 RTP/AVP 31\r\nm=image 54111 udptl t38\r\n",
    "v=0\r\no=a 1 1 IN IP4 192.0.2.2\r\ns=-\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0\r\nc=IN IP4 203.0.113.7\r\n"
    "m=audio 49180 RTP/AVP 8\r\nc=IN IP4 192.0.2.2\r\n",
    "v=0\r\no=a 1 1 IN IP6 2001:db8:1::2\r\ns=-\r\nc=IN IP6 2001:db8:1::2\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0\r\n",
)


def sdp_offers() -> list[Seed]:
    out = []
    for n, body in enumerate(SDP_BODIES, 1):
        text = SDP_OFFER.format(n=n, length=len(body), body=body)
        out.append(Seed(f"sdp-offer-{n}", text.encode()))
    return out


def example_seeds() -> list[Seed]:
    from sipct.conformance.corpus import example_dialogs
    from sipct.spec.dialog import Send

    out = []
    for dialog in example_dialogs():
        for step in dialog.steps:
            if isinstance(step, Send) and step.payload:
                out.append(Seed(f"{dialog.name}:{step.line}", step.payload))
    return out


def rfc4475_seeds(shared: Path | None = None) -> list[Seed]:
    """The torture messages, or none when the shared corpus is absent."""
    from sipct.conformance.corpus import shared_dir

    shared = shared if shared is not None else shared_dir()
    folder = shared / "corpora" / "rfc4475" if shared else None
    if folder is None or not folder.is_dir():
        return []
    return [Seed(f"rfc4475:{p.stem}", p.read_bytes()) for p in sorted(folder.glob("*.dat"))]


def default_seeds(shared: Path | None = None) -> list[Seed]:
    return rfc4475_seeds(shared) + example_seeds() + sdp_offers()


class Mutator:
    """The run's messages: first every seed unchanged (``corpus``), then
    fuzzed ones; message ``i`` is a function of (``seed``, ``i``) alone."""

    def __init__(self, seeds: Sequence[Seed], seed: int, *, corpus: bool = True) -> None:
        if not seeds:
            raise ValueError("no seed messages")
        self.seeds = list(seeds)
        self.seed = seed
        self.corpus = corpus

    @property
    def corpus_size(self) -> int:
        return len(self.seeds) if self.corpus else 0

    def message(self, index: int) -> FuzzMessage:
        if index < self.corpus_size:
            s = self.seeds[index]
            return FuzzMessage(index, s.name, (), s.payload[:MAX_SIZE])
        rng = random.Random(f"sipct-fuzz:{self.seed}:{index}")
        s = rng.choice(self.seeds)
        if rng.random() < 0.05:
            other = rng.choice(self.seeds)
            cut = rng.randrange(len(s.payload) + 1)
            payload = s.payload[:cut] + other.payload[rng.randrange(len(other.payload) + 1):]
            payload, names = mutate(rng, payload, rng.randint(0, 2))
            return FuzzMessage(index, f"{s.name}+{other.name}", ("splice", *names), payload)
        payload, names = mutate(rng, s.payload, rng.choice((1, 1, 1, 2, 2, 3)))
        return FuzzMessage(index, s.name, names, payload)

    def messages(self, start: int, stop: int) -> list[FuzzMessage]:
        return [self.message(i) for i in range(start, stop)]
