"""Text output shows the control characters of payloads and dialog files in
a visible escape, and their [markup] and :emoji: codes as written; JSON output
keeps them exactly."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from rich.console import Console

from sipct.cli.main import EXIT_OK, main
from sipct.conformance.matrixrow import KernelReport
from sipct.conformance.matrixtable import print_matrix
from sipct.conformance.report import print_report
from sipct.conformance.suite import Finding, Stats
from sipct.harness.diff import compare
from sipct.harness.report import add_reference, comparison_json, print_comparison, print_run_json
from sipct.harness.run import KernelRun, StepObservation
from sipct.spec.dialog import parse_dialog
from sipct.spec.predict import predict
from sipct.harness.wire import LAB_WIRE

# ESC sequences, NUL, the one-byte CSI 0x9b (UTF-8 in a message, a byte in raw), a right-to-left override;
# rich markup and an emoji code in the name.
HOSTILE = r"""
name: "evil\e[2J[bold]:smile:\u202e"
hosts: {ua: 192.0.2.2, server: 198.51.100.2}
steps:
  - send: ua:5060 -> server:5060
    message: "OPTIONS sip:\e[31mbob\0\x9b\u202e@{server.uri} SIP/2.0\nContent-Length: 0\n\n"
  - send: ua:5060 -> server:5060
    raw: "OPTIONS sip:[red]\x9b\e]0;title\a SIP/2.0\r\n\r\n"
"""
NAME = "evil\x1b[2J[bold]:smile:\u202e"
SHOWN = ["evil\\x1b[2J[bold]:smile:\\u202e", "sip:\\x1b[31mbob\\x00\\x9b\\u202e@198.51.100.2",
         "sip:[red]\\x9b\\x1b]0;title\\x07 SIP/2.0"]


def assert_printable(text: str) -> None:
    raw = sorted({ch for ch in text if not ch.isprintable() and ch != "\n"})
    assert not raw, f"raw characters reached the terminal: {raw}"


@pytest.fixture
def wide(monkeypatch):
    """A console wide enough that table cells are not wrapped, without colours."""
    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)


@pytest.fixture
def hostile(tmp_path):
    path = tmp_path / "hostile.yaml"
    path.write_text(HOSTILE)
    return path


def test_spec_text_escapes_every_control_character(hostile, wide, capsys):
    assert main(["spec", "-v", str(hostile)]) == EXIT_OK
    out = capsys.readouterr().out
    assert_printable(out)
    for text in SHOWN:
        assert text in out


def test_spec_json_keeps_the_exact_bytes(hostile, capsys):
    assert main(["spec", "--json", str(hostile)]) == EXIT_OK
    data = json.loads(capsys.readouterr().out)
    assert data["dialog"] == NAME
    # The payload's first line, every byte as the code point of its value.
    first = "OPTIONS sip:\x1b[31mbob\x00" + "\u009b\u202e".encode().decode("latin-1") + "@198.51.100.2 SIP/2.0"
    assert data["steps"][0]["step"].endswith(first)
    assert data["steps"][1]["step"].endswith("OPTIONS sip:[red]\x9b\x1b]0;title\x07 SIP/2.0")


def comparison():
    """The hostile dialog with a kernel that delivered nothing."""
    dialog = parse_dialog(HOSTILE, "hostile\x1b[5m.yaml")
    prediction = predict(dialog, wire=LAB_WIRE)
    run = KernelRun(dialog, [StepObservation(p.index, p.time, p.time, False, None, (), ()) for p in prediction.steps])
    return compare(prediction, run, "6.1.0-56-amd64")


def test_run_text_escapes_every_control_character(wide):
    c = comparison()
    assert not c.agree
    for data_of in (print_comparison, lambda c, console: print_run_json(json.loads(json.dumps(comparison_json(c))),
                                                                        console),
                    lambda c, console: print_run_json(add_reference(comparison_json(c), c), console)):
        console = Console(width=400, record=True)
        data_of(c, console)
        text = console.export_text()
        assert_printable(text)
        assert "hostile\\x1b[5m.yaml" in text and SHOWN[0] in text and SHOWN[2] in text


def test_conformance_text_escapes_every_control_character(wide):
    stats = Stats("6.1.192", "6.1.0-56-amd64", {"ports": [5060]})
    stats.dialogs, stats.agreeing = Counter(curated=1), Counter()
    stats.findings = [Finding(NAME, "x\x1b[5m.yaml", "curated", 0, 5, "verdict", "accept [/red]", "drop\x9b",
                              ("msg.request",), None)]
    stats.stale_entries = ["entry\x1b[2J"]
    stats.not_runnable = ["name\u202e: needs sip_direct_media=0"]
    for show in (lambda console: print_report(stats, console),
                 lambda console: print_matrix([KernelReport("6.1.0-56-amd64", "6.1.192-2", stats,
                                                            error="boot: \x1b[2J")], console)):
        console = Console(width=400, record=True)
        show(console)
        text = console.export_text()
        assert_printable(text)
        assert SHOWN[0] in text and "x\\x1b[5m.yaml" in text and "accept [/red]" in text and "drop\\x9b" in text
        assert "entry\\x1b[2J" in text and "name\\u202e" in text


@pytest.mark.parametrize("command", ["spec", "run"])
def test_an_error_quoting_the_file_shows_its_markup_and_escapes(command, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text('hosts:\n  ua: 192.0.2.2\n  b: 198.51.100.2\nsteps:\n'
                   '  - send: "ua:5060 -> [/red]\\e[31m"\n    message: hi\n')
    assert main([command, str(bad)]) == 2
    err = capsys.readouterr().err
    assert_printable(err)
    assert "[/red]\\x1b[31m" in err.replace("\n", "")
