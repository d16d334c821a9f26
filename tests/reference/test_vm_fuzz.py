"""The reference helper against the RFC 4475 corpus and fuzzed messages, in 6.1.192 (a VM).

Opt-in (``pytest -m vm tests/reference/test_vm_fuzz.py``): one boot, the
seeds (RFC 4475 when ../shared has it, the bundled examples' messages, SDP
offers) and 2,000 fuzzed messages, 7-10 minutes under TCG.
SIPCT_FUZZ_MESSAGES changes the count.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (the guest runs the netns lab as root)"),
]

KERNEL = "/boot/vmlinuz-6.1.0-56-amd64"  # linux-image-6.1.0-56-amd64 (6.1.192)
MESSAGES = int(os.environ.get("SIPCT_FUZZ_MESSAGES", "2000"))


def vm_selected(config: pytest.Config) -> bool:
    expr = config.getoption("markexpr", "") or ""
    return "vm" in expr.replace("not vm", "")


@pytest.fixture(scope="module")
def fuzz(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    from sipct.harness.vmboot import find_vng
    from sipct.harness.vmkernels import VmError

    if not vm_selected(request.config):
        pytest.skip("boots a VM (7-10 minutes under TCG): run `pytest -m vm tests/reference/test_vm_fuzz.py`")
    if not Path(KERNEL).exists():
        pytest.skip(f"no {KERNEL}: run scripts/setup-kernels.sh as root")
    try:
        find_vng()
    except VmError as exc:
        pytest.skip(f"{exc} (run scripts/setup-kernels.sh as root)")
    out = tmp_path_factory.mktemp("fuzz") / "fuzz.json"
    sipct = str(Path(sys.executable).parent / "sipct")
    proc = subprocess.run([sipct, "fuzz", "--kernel", KERNEL, "--messages", str(MESSAGES), "--seed", "7",
                           "--json", str(out)], capture_output=True, text=True, timeout=3600)
    if not out.exists():
        pytest.fail(f"sipct fuzz wrote no report (exit {proc.returncode}): {proc.stderr[-3000:]}")
    data = json.loads(out.read_text())
    data["exit_status"], data["stdout"] = proc.returncode, proc.stdout
    return data


def test_every_message_went_through(fuzz: dict) -> None:
    from sipct.conformance.fuzz import Mutator, default_seeds

    corpus = Mutator(default_seeds(), 7).corpus_size
    assert fuzz["report"]["messages"] == corpus + MESSAGES
    assert fuzz["kernel"] == "6.1.0-56-amd64" and fuzz["profile"] == "6.1.192"
    # Both verdicts, both transports and families were exercised.
    r = fuzz["report"]
    assert r["delivered"] and r["dropped"] and r["tcp"] and r["ipv6"] and r["kernel_new_expectations"]
    # And behind the router's masquerade (--nat-share's default): nf_nat_sip's rewrites delivered.
    assert r["nat"] and r["rewritten"] and r["warm_ups"]


def test_the_daemon_survived_without_internal_errors(fuzz: dict) -> None:
    (s,) = fuzz["slices"]
    assert s["alive"] and s["exit_code"] == 0, s["log_tail"][-3000:]
    assert s["queue"]["dropped"] == 0 and s["queue"]["user_dropped"] == 0
    for what in ("tracebacks", "internal_errors", "policy_verdicts", "lost_repeats", "queue_overflows"):
        assert fuzz["daemon"][what] == 0, (what, s["log_lines"])


def test_verdicts_and_expectations_are_the_spec_s(fuzz: dict) -> None:
    assert fuzz["report"]["mismatches"] == {}, fuzz["stdout"]
    assert fuzz["problems"] == [] and fuzz["exit_status"] == 0
