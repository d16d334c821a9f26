"""printable(): what a terminal must not receive raw, in a visible escape."""

import pytest

from sipct.spec.printable import printable


@pytest.mark.parametrize("raw, shown", [
    ("\x1b[31mred", "\\x1b[31mred"),
    ("a\x00b", "a\\x00b"),
    ("\x7f", "\\x7f"),
    ("\x9b2J", "\\x9b2J"),  # C1 CSI
    ("\x85", "\\x85"),  # C1 next line
    ("abc\u202edef", "abc\\u202edef"),  # right-to-left override
    ("\u2066x\u2069", "\\u2066x\\u2069"),  # bidi isolates
    ("a\u200db", "a\\u200db"),  # zero-width joiner
    ("\ufeffx", "\\ufeffx"),
    ("a\u2028b", "a\\u2028b"),  # line separator
    ("a\xa0b", "a\\xa0b"),  # no-break space: looks like a space, is not one to the helper
    ("\U000e0001", "\\U000e0001"),  # language tag
    ("\udc9b", "\\x9b"),  # a byte os.fsdecode() could not decode
    ("Via:\tx\r\n", "Via:\\tx\\r\n"),
])
def test_controls_are_escaped(raw, shown):
    assert printable(raw) == shown


def test_printable_text_and_line_breaks_stay():
    text = "INVITE sip:bob@[2001:db8::2] SIP/2.0\nFrom: \"Zoë \\\"Z\\\"\" <sip:zoë@example.com>\n"
    assert printable(text) == text


def test_bytes_are_read_as_utf8_and_other_bytes_escaped():
    assert printable("Zoë\u202e".encode()) == "Zoë\\u202e"
    assert printable(b"\xff\x9b\x1b ok \xc3") == "\\xff\\x9b\\x1b ok \\xc3"
    assert printable("\x9b".encode()) == "\\x9b"


def test_the_result_is_printable_and_a_fixed_point():
    every = "".join(map(chr, range(0x3000))) + "\U000e0001\U0010ffff"
    once = printable(every)
    assert all(ch.isprintable() or ch == "\n" for ch in once)
    assert printable(once) == once
