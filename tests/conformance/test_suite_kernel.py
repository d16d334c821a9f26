"""sipct conformance against the running kernel: the CI gate."""

import json
import os
import shutil
import xml.etree.ElementTree as ET

import pytest

from sipct.cli.main import main
from sipct.conformance.corpus import rfc4475_dialogs, scenario_dialogs
from sipct.spec import media
from sipct.spec.dialog import load_dialog

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(shutil.which("nft") is None, reason="needs nft (apt-get install nftables)"),
]

CI_EXAMPLES = int(os.environ.get("SIPCT_CI_EXAMPLES", "400"))


def test_conformance_on_the_running_kernel(tmp_path, capsys):
    report, junit = tmp_path / "report.json", tmp_path / "junit.xml"
    status = main(["conformance", "--examples", str(CI_EXAMPLES), "--seed", "1", "--out", str(tmp_path / "out"),
                   "--json", str(report), "--junit", str(junit)])
    data = json.loads(report.read_text())
    assert status == 0, json.dumps(data["divergences"]["findings"][:5], indent=1)
    assert data["ok"] and data["divergences"]["unregistered"] == 0
    assert data["dialogs"]["generated"] == CI_EXAMPLES
    assert data["dialogs"]["curated"] >= len(scenario_dialogs()) + len(rfc4475_dialogs())
    assert data["messages"] > CI_EXAMPLES
    assert ET.parse(junit).getroot().get("failures") == "0"
    assert "conformance: OK" in capsys.readouterr().out


def test_an_injected_spec_mistake_is_shrunk_to_a_minimal_dialog(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(media, "MAX_MEDIA", 1)
    out = tmp_path / "out"
    status = main(["conformance", "--no-curated", "--examples", "200", "--seed", "3", "--out", str(out),
                   "--json", str(tmp_path / "r.json")])
    assert status == 1
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["divergences"]["unregistered"] > 0
    minimal = load_dialog(data["minimal_dialog"])
    sends = [s for s in minimal.steps if hasattr(s, "payload")]
    # Shrinking leaves a short dialog, one of whose messages has the two media
    # descriptions the mistake needs.
    assert 1 <= len(sends) <= 5
    assert any(s.payload.count(b"\nm=") >= 2 for s in sends)
    assert "minimal divergent dialog" in capsys.readouterr().out.replace("\n", "")
    # The file reproduces with sipct run (the mistake is still injected).
    assert main(["run", data["minimal_dialog"]]) == 1


def test_a_divergence_that_does_not_reproduce_is_reported_not_a_traceback(tmp_path, monkeypatch, capsys):
    """A dialog that diverges once (a lab under load) and agrees when Hypothesis runs it
    again makes Hypothesis raise FlakyFailure: the run reports it and goes on to its report."""
    from sipct.conformance import suite as suite_module

    judge = suite_module.Suite.judge
    calls = {"n": 0}

    def diverging_once(self, plan, observed, kind, *, count=True):
        findings = judge(self, plan, observed, kind, count=count)
        calls["n"] += 1
        if kind == "generated" and calls["n"] == 3:  # the third generated dialog, once
            finding = suite_module.Finding(plan.dialog.name, plan.dialog.source, kind, 0, 1, "verdict",
                                           "accept", "not delivered", (), None)
            if count:
                self.stats.findings.append(finding)
            return [*findings, finding]
        return findings

    monkeypatch.setattr(suite_module.Suite, "judge", diverging_once)
    out = tmp_path / "out"
    # One lab: in parallel labs the divergence sends the run to the serial one, which judges anew.
    status = main(["conformance", "--labs", "1", "--no-curated", "--no-reproducers", "--examples", "8", "--seed", "3",
                   "--out", str(out), "--json", str(tmp_path / "r.json")])
    assert status == 1
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["divergences"]["unregistered"] >= 1
    kept = (out / "minimal-divergence-seed3.yaml").read_text()
    assert "not when Hypothesis ran it again" in kept
    assert "Traceback" not in capsys.readouterr().err


def test_dialog_files_run_as_the_generated_part(tmp_path, monkeypatch):
    """What a VM guest of the kernel matrix runs: dialog files generated on
    the host, no Hypothesis, no shrinking; a divergent file is named."""
    from sipct.conformance.matrixplan import write_generated
    from sipct.conformance.suite import generate_dialogs

    folder = tmp_path / "generated"
    written = len(write_generated(generate_dialogs(30, 4), folder, 4))  # not the ones without steps
    assert written >= 25
    report = tmp_path / "r.json"
    status = main(["conformance", "--no-curated", "--no-reproducers", "--dialog-files", str(folder), "--seed", "4",
                   "--json", str(report)])
    data = json.loads(report.read_text())
    assert status == 0, json.dumps(data["divergences"]["findings"][:5], indent=1)
    assert data["dialogs"] == {"generated": written} and data["examples"] == written and data["seed"] == 4

    monkeypatch.setattr(media, "MAX_MEDIA", 1)
    status = main(["conformance", "--no-curated", "--no-reproducers", "--dialog-files", str(folder),
                   "--json", str(report)])
    data = json.loads(report.read_text())
    assert status == 1 and data["minimal_dialog"] is None
    assert data["failed_dialogs"] and all(str(folder) in text for text in data["failed_dialogs"])
    assert {f["source"] for f in data["divergences"]["findings"]} <= {str(p) for p in folder.iterdir()}
