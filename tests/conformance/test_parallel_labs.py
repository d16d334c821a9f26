"""sipct conformance --labs N: the same report as one lab, on the running kernel."""

import json
import os
import shutil
import xml.etree.ElementTree as ET

import pytest

from sipct.cli.main import main
from sipct.cli.main import examples_dir
from sipct.conformance.corpus import SCENARIOS
from sipct.spec import media

EXAMPLES = examples_dir()

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(shutil.which("nft") is None, reason="needs nft (apt-get install nftables)"),
]


def _report(path):
    """The JSON report without what the wall clock decides: how long things
    took, and the probes' kernel timeouts (whole seconds, read when the dump
    ran; the comparison allows for that, harness.diff.TIMEOUT_TOLERANCE)."""
    data = json.loads(path.read_text())
    del data["elapsed"]
    for probe in data["probes"]:
        for step in probe["steps"]:
            step["kernel"].pop("elapsed")
            for expectation in step["kernel"]["expectations"]:
                expectation.pop("timeout")
    return data


def _junit(path):
    root = ET.parse(path).getroot()
    for element in root.iter():
        element.attrib.pop("time", None)
    return ET.tostring(root)


def _run(tmp_path, labs, *argv):
    out = tmp_path / f"labs{labs}"
    out.mkdir()
    status = main(["conformance", "--labs", str(labs), "--out", str(out / "out"), "--json", str(out / "r.json"),
                   "--junit", str(out / "j.xml"), *argv])
    return status, _report(out / "r.json"), _junit(out / "j.xml")


def test_parallel_labs_make_the_serial_report(tmp_path):
    scenarios = SCENARIOS
    # Version probes (their step-by-step results are in the report), drops,
    # TCP, NAT and IPv6: a few curated dialogs of each kind, and 60 generated.
    # The last curated one waits (retransmissions, 1 s): the generated part
    # starts in the other labs meanwhile, and is judged after it all the same.
    curated = [scenarios / "versions", scenarios / "rare" / "forward-drop-media.yaml",
               scenarios / "nat" / "tcp-forced-dport.yaml", EXAMPLES / "nat-ipv6-masquerade.yaml",
               scenarios / "rfc3665" / "session-update-sdp.yaml", scenarios / "rfc3665" / "session-retransmissions.yaml"]
    argv = ["--no-curated", *(a for p in curated for a in ("--scenarios", str(p))), "--examples", "60",
            "--seed", "11"]
    serial = _run(tmp_path, 1, *argv)
    parallel = _run(tmp_path, 3, *argv)
    assert serial[0] == 0, json.dumps(serial[1]["divergences"]["findings"][:3], indent=1)
    assert (serial[1]["dialogs"]["curated"], serial[1]["dialogs"]["generated"]) == (12, 60)
    assert len(serial[1]["probes"]) == 7
    assert parallel == serial


def test_a_divergence_in_parallel_labs_is_shrunk_as_in_one(tmp_path, monkeypatch):
    """The parallel run notices the unregistered divergence and leaves the
    generated part to the serial run, which shrinks it: the same minimal
    dialog, the same report."""
    monkeypatch.setattr(media, "MAX_MEDIA", 1)  # the mistake of test_suite_kernel's shrink test
    argv = ["--no-curated", "--no-reproducers", "--examples", "100", "--seed", "3"]
    serial = _run(tmp_path, 1, *argv)
    parallel = _run(tmp_path, 2, *argv)
    assert serial[0] == 1 and serial[1]["divergences"]["unregistered"] > 0
    # Each names its own --out folder.
    minimal = [(tmp_path / f"labs{n}" / "out" / "minimal-divergence-seed3.yaml").read_text() for n in (1, 2)]
    assert minimal[0].replace("labs1", "labs2") == minimal[1]
    assert json.dumps(serial[1]).replace("labs1", "labs2") == json.dumps(parallel[1])
    assert serial[2].replace(b"labs1", b"labs2") == parallel[2]
