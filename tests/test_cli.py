"""The sipct command: spec predictions, JSON output, exit codes, clear errors."""

import json

from sipct.cli.main import EXIT_DIVERGED, EXIT_ERROR, EXIT_OK, examples_dir, main


def test_spec_on_every_example_succeeds(capsys):
    assert main(["spec"]) == EXIT_OK
    out = capsys.readouterr().out
    for path in examples_dir().glob("*.yaml"):
        assert path.stem in out


def test_spec_json_is_machine_readable(capsys):
    assert main(["spec", "--json", str(examples_dir() / "register.yaml")]) == EXIT_OK
    data = json.loads(capsys.readouterr().out)
    assert data["format"] == "sipct.prediction/1"
    assert data["ok"] is True
    first = data["steps"][0]
    assert first["verdict"] == "accept"
    assert [e["text"] for e in first["expectations"]] == [
        "udp registrar:* -> ua:5060 signalling PERMANENT,INACTIVE"]
    assert first["expectations"][0]["timeout"] == 180


def test_bad_dialog_names_the_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("hosts:\n  ua: 192.0.2.2\n  b: 198.51.100.2\nsteps:\n  - send: ua:5060 -> nowhere:5060\n"
                   "    message: hi\n")
    assert main(["spec", str(bad)]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert f"{bad}:5:" in err.replace("\n", "")
    assert "unknown host 'nowhere'" in err


def test_failed_assertion_exits_1(tmp_path, capsys):
    dialog = tmp_path / "wrong.yaml"
    dialog.write_text((examples_dir() / "invite-bad-media-port.yaml").read_text()
                      .replace("verdict: drop", "verdict: accept"))
    assert main(["spec", str(dialog)]) == EXIT_DIVERGED
    assert "the dialog expects accept" in capsys.readouterr().out.replace("\n", " ")


def test_unknown_profile_is_refused(capsys):
    try:
        main(["spec", "--profile", "5.4"])
    except SystemExit as exc:
        assert exc.code == 2
    assert "unknown kernel profile '5.4'" in capsys.readouterr().err


def test_rules_lists_the_catalogue(capsys):
    assert main(["rules"]) == EXIT_OK
    assert "register.expect" in capsys.readouterr().out


def test_a_bad_file_in_a_spec_batch_is_reported_and_the_rest_predicted(tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: broken\nhosts: [\n")
    register = examples_dir() / "register.yaml"
    assert main(["spec", "--json", str(broken), str(register)]) == EXIT_ERROR
    captured = capsys.readouterr()
    first, second = json.loads(captured.out)
    assert first["source"] == str(broken) and first["error"].startswith(f"{broken}:3:")
    assert second["dialog"] == "register" and second["ok"] is True
    assert f"{broken}:3:" in captured.err.replace("\n", "")


NO_BLANK_LINE = """\
hosts: {ua: 192.0.2.2, server: 198.51.100.2}
steps:
  - send: ua:5060 -> server:5060
    message: |
      OPTIONS sip:{server.uri} SIP/2.0
      Content-Length: 0

"""


def test_spec_shows_the_loader_warnings(tmp_path, capsys):
    dialog = tmp_path / "clipped.yaml"
    dialog.write_text(NO_BLANK_LINE)
    assert main(["spec", str(dialog)]) == EXIT_OK
    captured = capsys.readouterr()
    assert f"warning: {dialog}:4: steps[0].message: no blank line ends the headers" in captured.err.replace("\n", "")
    assert "warning" not in captured.out

    assert main(["spec", "--json", str(dialog)]) == EXIT_OK
    captured = capsys.readouterr()
    assert captured.err == ""
    (warning,) = json.loads(captured.out)["warnings"]
    assert warning["line"] == 4 and warning["message"].startswith("steps[0].message: no blank line ends")

    dialog.write_text(NO_BLANK_LINE.replace("message: |", "message: |+"))
    assert main(["spec", "--json", str(dialog)]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["warnings"] == []
