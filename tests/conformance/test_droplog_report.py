"""The drop log changes how long a dropped step waits, never what the suite reports."""

import json
import os
import shutil

import pytest

from sipct.cli.main import examples_dir, main
from sipct.conformance.corpus import SCENARIOS
from sipct.conformance.samereport import comparable, differences
from sipct.harness.lab import Lab

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(shutil.which("nft") is None, reason="needs nft (apt-get install nftables)"),
]


def _run(tmp_path, name, argv):
    out = tmp_path / name
    out.mkdir()
    status = main(["conformance", "--out", str(out / "out"), "--json", str(out / "r.json"), *argv])
    return status, json.loads((out / "r.json").read_text())


def test_the_drop_log_makes_the_report_of_the_time_outs_alone(tmp_path, monkeypatch):
    # The folders with the curated drops (NAT, TCP, the parameter- and version-dependent ones) and generated dialogs.
    curated = [SCENARIOS / "nat", SCENARIOS / "rare", SCENARIOS / "machines", SCENARIOS / "versions",
               examples_dir() / "invite-bad-media-port.yaml"]
    # One lab: the patch below must reach the labs, which run in this process only then.
    argv = ["--no-curated", *(a for p in curated for a in ("--scenarios", str(p))), "--examples", "40",
            "--seed", "5", "--labs", "1"]
    logged = _run(tmp_path, "logged", argv)
    with monkeypatch.context() as patch:
        # The lab as it was before the drop log: every drop is a delivery time-out.
        patch.setattr(Lab, "_open_drops", lambda lab: None)
        timed_out = _run(tmp_path, "timed-out", argv)
    assert logged[0] == timed_out[0] == 0, json.dumps(logged[1]["divergences"]["findings"][:3], indent=1)
    assert differences(comparable(logged[1]), comparable(timed_out[1])) == []
    # The drop log was at work: the probes' logged drops carry the kernel's reason, the time-outs none.
    reasons = [s["kernel"].get("dropped") for p in logged[1]["probes"] for s in p["steps"]]
    assert any(reasons) and not any(s["kernel"].get("dropped") for p in timed_out[1]["probes"] for s in p["steps"])


def test_a_different_verdict_is_a_difference():
    report = {"elapsed": 1.0, "probes": [{"source": "/a/b/conformance/scenarios/x.yaml",
                                          "steps": [{"kernel": {"delivered": False, "dropped": "cannot parse cseq",
                                                                "elapsed": 0.1, "expectations": []}}]}]}
    other = json.loads(json.dumps(report).replace("/a/b/", "/c/").replace("0.1", "0.3"))
    del other["probes"][0]["steps"][0]["kernel"]["dropped"]
    assert differences(comparable(report), comparable(other)) == []
    other["probes"][0]["steps"][0]["kernel"]["delivered"] = True
    assert differences(comparable(report), comparable(other)) == ["probes[0].steps[0].kernel.delivered: False != True"]
