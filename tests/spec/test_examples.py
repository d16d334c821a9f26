"""The example dialogs and the dialog loader's error messages."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from sipct.spec.dialog import (
    LOADER,
    PURE_LOADER,
    Connect,
    DialogError,
    Send,
    Wait,
    load_dialog,
    parse_dialog,
)
from sipct.spec.expectation import IPPROTO_TCP, IPPROTO_UDP
from sipct.spec.predict import predict
from sipct.spec.profiles import PROFILES
from sipct.harness.wire import LAB_WIRE

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "spec" / "examples").glob("*.yaml"))
BUNDLED = EXAMPLES + sorted((ROOT / "conformance" / "scenarios").rglob("*.yaml"))
# The errors' and steps' line numbers come from the composer's marks: both must give them.
LOADERS = pytest.mark.parametrize("loader", [PURE_LOADER, LOADER], ids=["pure", "libyaml"])


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 7


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
@pytest.mark.parametrize("profile", list(PROFILES))
def test_example_predicts_without_failures(path: Path, profile: str) -> None:
    dialog = load_dialog(path)
    if dialog.kernels and profile not in dialog.kernels:
        pytest.skip(f"{path.name} is meant for {dialog.kernels}")
    prediction = predict(dialog, PROFILES[profile], wire=LAB_WIRE)
    assert prediction.failures == []
    assert len(prediction.steps) == len(dialog.steps)
    # every example asserts something
    assert any(isinstance(s, Send) and s.expect is not None for s in dialog.steps)


def test_example_register_goes_through_the_machines() -> None:
    dialog = load_dialog(next(p for p in EXAMPLES if p.stem == "register"))
    prediction = predict(dialog, PROFILES["6.1.192"], wire=LAB_WIRE)
    assert all(s.verdict in (None, "accept") for s in prediction.steps)


# --- loading -----------------------------------------------------------------------------------------
GOOD = """\
name: t
hosts:
  ua: 192.0.2.2
  srv: 198.51.100.2
steps:
  - send: ua:5060 -> srv:5060
    message: |
      OPTIONS sip:{srv.uri} SIP/2.0
      Content-Length: {body_length}

      body
    expect:
      verdict: accept
      expectations: []
  - wait: 30
  - connect: ua:5070 -> srv:5060
  - send: ua:5070 -> srv:5060
    transport: tcp
    messages:
      - |
        OPTIONS sip:x SIP/2.0
        Content-Length: 0

      - raw: "BYE sip:x SIP/2.0\\r\\nl: 0\\r\\n\\r\\n"
    split_at: [5]
"""


def test_libyaml_is_the_default_loader_when_pyyaml_has_it() -> None:
    assert LOADER is (yaml.CBaseLoader if yaml.__with_libyaml__ else PURE_LOADER)


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: str(p.relative_to(ROOT)))
def test_both_loaders_give_the_same_dialog(path: Path) -> None:
    pure, fast = load_dialog(path, loader=PURE_LOADER), load_dialog(path, loader=LOADER)
    assert fast == pure
    assert [s.line for s in fast.steps] == [s.line for s in pure.steps]


@LOADERS
def test_a_good_dialog(loader: type) -> None:
    d = parse_dialog(GOOD, "good.yaml", loader=loader)
    assert [type(s) for s in d.steps] == [Send, Wait, Connect, Send]
    first = d.steps[0]
    assert isinstance(first, Send) and first.proto == IPPROTO_UDP and first.line == 6
    assert first.payload == b"OPTIONS sip:198.51.100.2 SIP/2.0\r\nContent-Length: 6\r\n\r\nbody\r\n"
    last = d.steps[3]
    assert isinstance(last, Send) and last.proto == IPPROTO_TCP
    assert last.segments[0] == b"OPTIO"
    assert last.payload.endswith(b"BYE sip:x SIP/2.0\r\nl: 0\r\n\r\n")
    assert predict(d, wire=LAB_WIRE).failures == []


def error_of(text: str, loader: type = LOADER) -> DialogError:
    with pytest.raises(DialogError) as info:
        parse_dialog(text, "bad.yaml", loader=loader)
    return info.value


HEAD = "name: t\nhosts:\n  ua: 192.0.2.2\n  srv: 198.51.100.2\nsteps:\n"


@pytest.mark.parametrize("text, line, words", [
    ("name: t\nhosts: [a\nsteps: {\n", 3, "YAML"),
    (HEAD + "  - send: ua:5060 -> srv:5060\n    message: \"abc\n\n", 9, "YAML"),
    (HEAD + "  - send: ua:5060 -> srv:5060\n\tmessage: x\n", 7, "YAML"),
    (HEAD + "  - send: ua:5060 -> srv:5060\n    message: x\n   bad: 1\n", 8, "YAML"),
    (HEAD + "  - send: ua:5060 -> srv:5060\n    message: *nothing\n", 7, "YAML"),
    (HEAD + "  - send: ua:5060 -> srv:5060\n    message: \u00e9\x1b\n", 7, "YAML: the character '\\x1b'"),
    (HEAD + "  - send: ua:5060 -> srv:5060\n    message: \u00e9\x9b\n", 7, "YAML: the character '\\x9b'"),
    ("name: t\n---\nname: u\n", 2, "YAML"),
    (HEAD + "  - send: ua:5060 -> nobody:5060\n    message: x\n", 6, "unknown host 'nobody'"),
    (HEAD + "  - send: ua:5060 -> srv:70000\n    message: x\n", 6, "port 70000 is out of range"),
    (HEAD + "  - send: ua:0 -> srv:5060\n    message: x\n", 6, "port 0 is out of range"),
    (HEAD + "  - send: ua:5060 -> srv:5060\n    message: x\n    colour: red\n", 8, "unknown key 'colour'"),
    (HEAD + "  - send: ua:5060 -> srv:5060\n    transport: tcp\n    message: xyz\n    split_at: [0]\n", 9,
     "split_at"),
    (HEAD + "  - send: ua:5060 -> srv:5060\n    transport: tcp\n    message: xyz\n    split_at: [5]\n", 9,
     "split_at"),
    (HEAD + "  - send: ua:5060 -> srv:5060\n    transport: tcp\n    message: xyzw\n    split_at: [3, 2]\n", 9,
     "offsets must increase"),
    (HEAD + "  - send: ua:5060 -> srv:5060\n    message: xyz\n    split_at: [1]\n", 8, "only TCP"),
    (HEAD + "  - send: ua:5060 -> srv:5060\n    messages: [a, b]\n", 7, "need transport tcp"),
    (HEAD + "  - send: ua:5060 -> srv:5060\n    message: x\n    expect: {verdict: maybe}\n", 8, "accept or drop"),
    (HEAD + "  - send: ua:5060 -> srv:5060\n    message: x\n    expect: {rules: [no.such-rule]}\n", 8,
     "unknown rule"),
    (HEAD + "  - wait: -1\n", 6, "backwards"),
    (HEAD + "  - wait: soon\n", 6, "must be a number"),
    (HEAD + "  - jump: 1\n", 6, "exactly one of send, connect, wait"),
    ("name: t\nfamily: ipv6\nhosts:\n  ua: 192.0.2.2\n  srv: '2001:db8::2'\nsteps:\n  - wait: 1\n", 4,
     "not an IPv6 address"),
    ("name: t\nhosts:\n  ua: 192.0.2.2\n  srv: '2001:db8::2'\nsteps:\n  - wait: 1\n", 4, "not an IPv4 address"),
    ("name: t\nhosts:\n  ua: 192.0.2.2\n  srv: somewhere\nsteps:\n  - wait: 1\n", 4, "not an IP address"),
    ("name: t\nfamily: ipv5\nhosts:\n  ua: 192.0.2.2\n  srv: 198.51.100.2\nsteps:\n  - wait: 1\n", 2, "ipv4 or ipv6"),
    ("name: t\ncolour: red\nhosts:\n  ua: 192.0.2.2\n  srv: 198.51.100.2\nsteps:\n  - wait: 1\n", 2,
     "unknown key 'colour'"),
    ("name: t\nparams: {sip_timeout: soon}\nhosts:\n  ua: 192.0.2.2\n  srv: 198.51.100.2\nsteps:\n  - wait: 1\n", 2,
     "sip_timeout"),
    ("name: t\nparams: {nat: 1}\nhosts:\n  ua: 192.0.2.2\n  srv: 198.51.100.2\nsteps:\n  - wait: 1\n", 2,
     "unknown module parameter"),
])
@LOADERS
def test_loader_errors_name_the_line(text: str, line: int, words: str, loader: type) -> None:
    err = error_of(text, loader)
    assert err.line == line, str(err)
    assert words in err.message
    assert str(err).startswith(f"bad.yaml:{line}: ")


def test_loader_errors_without_a_line() -> None:
    err = error_of("")
    assert err.line is None and "empty" in err.message
    assert str(err) == "bad.yaml: the file is empty"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DialogError, match="cannot read"):
        load_dialog(tmp_path / "nope.yaml")
    bad = tmp_path / "latin.yaml"
    bad.write_bytes(b"name: \xe9\n")
    with pytest.raises(DialogError, match="not UTF-8"):
        load_dialog(bad)


# --- warnings ------------------------------------------------------------------------------------------
TCP_HEAD = HEAD + "  - connect: ua:5070 -> srv:5060\n  - send: ua:5070 -> srv:5060\n    transport: tcp\n"
CLIPPED = "      OPTIONS sip:x SIP/2.0\n      Content-Length: 0\n\n"  # the blank line a '|' block drops


def warnings_of(text: str, loader: type = LOADER) -> list[tuple[int, str]]:
    return [(w.line, w.message) for w in parse_dialog(text, "w.yaml", loader=loader).warnings]


@LOADERS
def test_a_message_whose_headers_no_blank_line_ends_is_warned_about(loader: type) -> None:
    text = TCP_HEAD + "    message: |\n" + CLIPPED + "    expect: {verdict: accept}\n"
    ((line, message),) = warnings_of(text, loader)
    assert line == 9
    assert message.startswith("steps[1].message: no blank line ends the headers")
    assert "tcp.no-blank-line" in message and "'|+'" in message and "no_blank_line: true" in message
    d = parse_dialog(text, "w.yaml", loader=loader)
    assert str(d.warnings[0]).startswith("w.yaml:9: steps[1].message: ")
    # ... and it is what the kernel helper then does
    assert "tcp.no-blank-line" in {f.rule.id for s in predict(d, wire=LAB_WIRE).steps for f in s.firings}


def test_each_message_of_a_tcp_payload_is_checked() -> None:
    text = TCP_HEAD + (
        "    messages:\n"
        "      - |+\n"
        "        OPTIONS sip:x SIP/2.0\n"
        "        Content-Length: 0\n"
        "\n"
        "      - |\n"  # line 14
        "        OPTIONS sip:x SIP/2.0\n"
        "        Content-Length: 0\n"
        "\n"
        "      - raw: \"BYE sip:x SIP/2.0\\r\\n\"\n")
    assert [(line, message.split(":")[0]) for line, message in warnings_of(text)] == [(14, "steps[1].messages[1]")]


@pytest.mark.parametrize("body", [
    "    message: |+\n" + CLIPPED,  # keep: the blank line stays
    "    message: |\n      OPTIONS sip:x SIP/2.0\n      Content-Length: 4\n\n      body\n",
    "    message: \"OPTIONS sip:x SIP/2.0\\nl: 0\\n\\n\"\n",
    "    eol: lf\n    message: |+\n" + CLIPPED,
    "    raw: \"OPTIONS sip:x SIP/2.0\\r\\nl: 0\\r\\n\"\n",  # exact bytes, as written
])
def test_no_warning_when_the_headers_end(body: str) -> None:
    assert warnings_of(TCP_HEAD + body) == []


def test_no_blank_line_true_says_it_is_meant() -> None:
    text = TCP_HEAD + "    no_blank_line: true\n    message: |\n" + CLIPPED
    assert warnings_of(text) == []
    assert warnings_of(text.replace("true", "false")) != []
    assert error_of(text.replace("true", "yes")).message == "steps[1].no_blank_line must be true or false"
    stale = error_of(TCP_HEAD + "    no_blank_line: true\n    message: |+\n" + CLIPPED)
    assert stale.line == 9 and "nothing to excuse" in stale.message


def test_warnings_do_not_make_dialogs_differ() -> None:
    text = TCP_HEAD + "    message: |\n" + CLIPPED
    assert parse_dialog(text).warnings and parse_dialog(text) == parse_dialog(
        text.replace("    message: |\n", "    no_blank_line: true\n    message: |\n"))


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: str(p.relative_to(ROOT)))
def test_bundled_dialogs_load_without_warnings(path: Path) -> None:
    assert [str(w) for w in load_dialog(path).warnings] == []
