"""Untrusted text made safe to print on a terminal.

Payloads and dialog files may hold bytes a terminal acts on: ESC sequences
that recolour or rewrite the screen, NUL, C1 controls (0x9b is a one-byte
CSI), bidi overrides (U+202E) that reorder what follows. Text output shows
them in a visible escape instead; JSON output keeps them exactly.
"""

from __future__ import annotations

_NAMED = {"\r": "\\r", "\t": "\\t"}


def printable(text: str | bytes) -> str:
    """``text`` with every character that ``str.isprintable()`` rejects,
    except the line feed, written as an escape: ``\\r``, ``\\t``, ``\\xNN``,
    ``\\uNNNN`` or ``\\UNNNNNNNN``, the forms of a YAML double-quoted string.

    Rejected are the C0 and C1 controls and DEL, format characters (bidi
    controls, zero-width joiners, the BOM), separators other than the space,
    surrogates, private-use and unassigned code points. The line feed stays
    a line break so that multi-line text keeps its lines; the CR of a CRLF
    shows as ``\\r``. Bytes are read as UTF-8; a byte that is not part of
    valid UTF-8 shows as ``\\xNN``. A backslash stays as it is, so the result
    passes through printable() again unchanged (an escape in the output may
    therefore also be text of the input; the JSON output tells them apart).
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "surrogateescape")
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch == "\n" else _escape(ch) for ch in text)


def _escape(ch: str) -> str:
    code = ord(ch)
    if ch in _NAMED:
        return _NAMED[ch]
    if 0xDC80 <= code <= 0xDCFF:  # a byte surrogateescape could not decode
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
