"""Where the SIP messages of a payload begin and end, and where each one's
Content-Length value is: the importer cuts TCP steps at message ends and
fixes Content-Length after it rewrote addresses in a body."""

from __future__ import annotations

import re
from dataclasses import dataclass

# The header as the kernel's ct_sip_hdrs[] knows it: full and compact form, at a line start.
_CONTENT_LENGTH = re.compile(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*(\d+)")
_KEEPALIVE = re.compile(rb"(?:\r\n)+")


@dataclass(frozen=True, slots=True)
class Message:
    start: int
    end: int  # one past the body
    body_start: int  # after the blank line; == end when there is no body
    length_value: tuple[int, int] | None  # where the Content-Length digits are (start, end)

    @property
    def keepalive(self) -> bool:
        """A CRLF keep-alive (RFC 5626), not a message."""
        return self.length_value is None and self.body_start == self.end


def split_messages(data: bytes) -> list[Message] | None:
    """The messages ``data`` consists of, in order, or None when it is not a
    sequence of whole messages (no blank line, no Content-Length over TCP, a
    body running past the end)."""
    messages, end = leading_messages(data)
    return messages if end == len(data) else None


def leading_messages(data: bytes) -> tuple[list[Message], int]:
    """The whole messages ``data`` starts with, and where they end."""
    out: list[Message] = []
    at = 0
    while at < len(data):
        ping = _KEEPALIVE.match(data, at)
        if ping:
            out.append(Message(at, ping.end(), ping.end(), None))
            at = ping.end()
            continue
        blank = data.find(b"\r\n\r\n", at)
        if blank < 0:
            break
        body_start = blank + 4
        length = _CONTENT_LENGTH.search(data, at, blank + 2)
        if length is None:
            break
        end = body_start + int(length.group(1))
        if end > len(data):
            break
        out.append(Message(at, end, body_start, length.span(1)))
        at = end
    return out, at


def datagram_message(data: bytes) -> Message:
    """A UDP payload is one message whatever it says: its body is the rest of
    the datagram (Content-Length may be absent or wrong)."""
    blank = data.find(b"\r\n\r\n")
    if blank < 0:
        blank = data.find(b"\n\n")
        body_start = len(data) if blank < 0 else blank + 2
    else:
        body_start = blank + 4
    length = _CONTENT_LENGTH.search(data, 0, body_start)
    return Message(0, len(data), body_start, length.span(1) if length else None)
