"""`sipct run` batches: a bad file is reported and the rest runs; the dialog's
own `expect:` assertions count as in `sipct spec`; `--json` is always a whole
document."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from sipct.cli.main import EXIT_DIVERGED, EXIT_ERROR, EXIT_OK, examples_dir, main

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(shutil.which("nft") is None, reason="needs nft (apt-get install nftables)"),
]

WRONG_VERDICT = (examples_dir() / "invite-bad-media-port.yaml").read_text().replace("verdict: drop",
                                                                                    "verdict: accept")


def test_a_bad_file_is_reported_and_the_others_run(tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: broken\nhosts: [\n")
    missing = tmp_path / "missing.yaml"
    register = examples_dir() / "register.yaml"
    status = main(["run", "--json", str(broken), str(register), str(missing)])
    captured = capsys.readouterr()
    assert status == EXIT_ERROR
    results = json.loads(captured.out)
    assert [r["source"] for r in results] == [str(broken), str(register), str(missing)]
    assert results[0]["error"].startswith(f"{broken}:3: YAML")
    assert results[1]["agree"] is True and "error" not in results[1]
    assert "cannot read" in results[2]["error"]
    assert f"{broken}:3:" in captured.err.replace("\n", "") and str(missing) in captured.err.replace("\n", "")


def test_only_bad_files_still_give_a_json_document(tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text("steps: 3\n")
    assert main(["run", "--json", str(broken)]) == EXIT_ERROR
    assert json.loads(capsys.readouterr().out)["error"].startswith(str(broken))


def test_a_failed_expect_assertion_exits_1_even_when_spec_and_kernel_agree(tmp_path, capsys):
    dialog = tmp_path / "wrong.yaml"
    dialog.write_text(WRONG_VERDICT)
    assert main(["run", str(dialog)]) == EXIT_DIVERGED
    out = capsys.readouterr().out.replace("\n", " ")
    assert "the dialog's expect: verdict drop, the dialog expects accept" in out
    assert "agree; the dialog's expect: fails" in " ".join(out.split())  # the headline says it too

    assert main(["run", "--json", str(dialog)]) == EXIT_DIVERGED
    data = json.loads(capsys.readouterr().out)
    assert data["agree"] is True and data["expect_ok"] is False
    assert [s["failures"] for s in data["steps"] if s["failures"]] == [
        ["verdict drop, the dialog expects accept"]]


def test_holding_assertions_keep_exit_0(capsys):
    assert main(["run", "--json", str(examples_dir() / "invite-bad-media-port.yaml")]) == EXIT_OK
    data = json.loads(capsys.readouterr().out)
    assert data["expect_ok"] is True and not any(s["failures"] for s in data["steps"])


def test_a_run_that_cannot_start_still_gives_a_json_document(tmp_path, capsys):
    """An unknown --profile: nothing runs, and every dialog says why."""
    broken = tmp_path / "broken.yaml"
    broken.write_text("steps: 3\n")
    register = examples_dir() / "register.yaml"
    assert main(["run", "--json", "--profile", "5.4", str(register), str(broken)]) == EXIT_ERROR
    first, second = json.loads(capsys.readouterr().out)
    assert first["source"] == str(register) and "cannot run: unknown kernel profile '5.4'" in first["error"]
    assert second["source"] == str(broken) and second["error"].startswith(str(broken))
