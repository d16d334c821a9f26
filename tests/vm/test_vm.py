"""Dialogs in other kernels: virtme-ng boots them and `sipct run` runs inside."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from sipct.cli.main import examples_dir
from sipct.harness.vm import run_in_vm
from sipct.harness.vmkernels import VmError, VmKernel
from sipct.spec.dialog import load_dialog

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (the guest runs the netns lab as root)"),
]

DIALOGS = Path(__file__).parent / "dialogs"
DIRECT_MEDIA_OFF = DIALOGS / "invite-third-party-media-direct-media-off.yaml"


@pytest.fixture(scope="module")
def boot_6_1_192(kernel_6_1_192: VmKernel, record_boot):
    """The one boot of the default run: two examples in 6.1.192."""
    paths = [str(examples_dir() / "register.yaml"), str(examples_dir() / "invite-audio-video.yaml")]
    return record_boot("examples", run_in_vm(kernel_6_1_192, paths, timeout=600))


def test_examples_agree_in_6_1_192(boot_6_1_192):
    vm = boot_6_1_192
    assert vm.guest_release == "6.1.0-56-amd64"
    assert "Debian 6.1.192" in vm.guest_version
    assert vm.exit_code == 0, vm.stderr
    assert [r["dialog"] for r in vm.results] == ["register", "invite-audio-video"]
    for r in vm.results:
        diverged = [(s["index"], s["divergences"]) for s in r["steps"] if not s["agree"]]
        assert r["agree"], diverged
        assert r["kernel"] == "6.1.0-56-amd64"
        assert r["profile"] == "6.1.192"  # from /proc/version's Debian version, not 6.1.0
        assert r["source"] == str(examples_dir() / f"{r['dialog']}.yaml")  # the host's path
    assert vm.loaded_params["sip_direct_media"] == "1"  # the module's defaults
    assert vm.missing_modules == []
    assert 0 < vm.boot_seconds < vm.total_seconds


MATRIX_EXAMPLES = int(os.environ.get("SIPCT_VM_EXAMPLES", "10"))


def test_conformance_matrix_in_6_1_192(kernel_6_1_192, tmp_path, capsys):
    """The kernel matrix on the kernel CI installs: the curated dialogs (the
    version probes among them) and a few generated ones in 6.1.192, the
    params/ scenarios and the sip_direct_media=0 one in two more boots, the
    report and the docs page."""
    from sipct.cli.main import main
    from sipct.conformance.corpus import SCENARIOS, rfc4475_dialogs, scenario_dialogs
    import json

    report, docs = tmp_path / "matrix.json", tmp_path / "matrix.rst"
    status = main(["conformance", "--kernel", str(kernel_6_1_192.vmlinuz), "--no-host",
                   "--examples", str(MATRIX_EXAMPLES), "--seed", "1", "--out", str(tmp_path / "out"),
                   "--json", str(report), "--docs", str(docs)])
    out = capsys.readouterr().out
    data = json.loads(report.read_text())
    assert data["format"] == "sipct.conformance-matrix/1"
    (k,) = data["kernels"]
    assert status == 0, (k.get("error"), json.dumps(k.get("divergences", {}).get("findings", [])[:5], indent=1))
    assert k["kernel"] == "6.1.0-56-amd64" and k["host"] is False
    assert k["profile"] == "6.1.192" == k["vm"]["expected_profile"]  # chosen in the guest
    assert k["ok"] and k["divergences"]["unregistered"] == 0
    assert k["dialogs"]["generated"] == MATRIX_EXAMPLES == k["examples"]
    assert k["dialogs"]["curated"] >= len(scenario_dialogs()) + len(rfc4475_dialogs())
    params = {"sip_timeout": 10, "sip_direct_media": 0, "sip_external_media": 1, "expect_max": 8}
    assert [b["module_params"] for b in k["vm"]["boots"]] == [{}, params, {"sip_direct_media": 0}]
    assert [b["loaded_params"]["sip_direct_media"] for b in k["vm"]["boots"]] == ["1", "0", "0"]
    assert k["vm"]["boots"][1]["loaded_params"]["expect_max"] == "8"  # the guest wrote the sysctl
    assert k["not_runnable"] == []  # the params/ and direct_media=0 scenarios ran in their own boots
    # The params/ boot reached what the module's defaults cannot (conformance/scenarios/params/).
    for rule in ("media.external-same-interface", "media.failed", "expect.table-full", "master.timeout"):
        assert k["rule_firings"].get(rule), rule
    probes = {p["dialog"]: p["agree"] for p in k["probes"]}
    assert set(probes) == {load_dialog(p).name for p in (SCENARIOS / "versions").glob("*.yaml")}
    assert all(probes.values()), probes
    assert "conformance matrix: OK" in out
    page = docs.read_text()
    assert "Behaviour by kernel" in page and "versions-register-contact-expires-octal" in page


def test_module_parameters_are_set_at_load_time(kernel_6_1_192, record_boot, second_boot):
    vm = record_boot("sip_direct_media=0", run_in_vm(
        kernel_6_1_192, [str(DIRECT_MEDIA_OFF)], module_params={"sip_direct_media": 0}, timeout=600))
    assert vm.loaded_params["sip_direct_media"] == "0"
    (r,) = vm.results
    assert r["params"]["sip_direct_media"] == 0  # what the guest's RunningKernel read from sysfs
    assert r["agree"], [(s["index"], s["divergences"]) for s in r["steps"] if not s["agree"]]
    assert vm.exit_code == 0
    # The kernel itself made the third-party media expectation that only
    # sip_direct_media=0 allows.
    offer = r["steps"][0]["kernel"]["expectations"]
    assert {e["text"] for e in offer} == {"udp *:* -> media:4000 audio", "udp *:* -> media:4001 audio"}


def test_cli_groups_dialogs_by_module_parameters(kernel_6_1_192, second_boot, capsys):
    from sipct.cli.main import main
    import json

    status = main(["run", "--json", "--kernel", str(kernel_6_1_192.vmlinuz),
                   str(examples_dir() / "register.yaml"), str(DIRECT_MEDIA_OFF)])
    data = json.loads(capsys.readouterr().out)
    assert status == 0
    by_name = {d["dialog"]: d for d in data}
    assert by_name["register"]["vm"]["module_params"] == {}
    assert by_name["invite-third-party-media-direct-media-off"]["vm"]["module_params"] == {"sip_direct_media": 0}
    assert all(d["agree"] and d["profile"] == "6.1.192" for d in data)


def test_a_missing_kernel_image_is_a_clear_error(tmp_path):
    with pytest.raises(VmError) as info:
        run_in_vm(tmp_path / "vmlinuz-9.9.9-nope", ["register.yaml"], timeout=5)
    message = str(info.value)
    assert "vmlinuz-9.9.9-nope" in message
    assert "linux-image-9.9.9-nope" in message and "scripts/setup-kernels.sh" in message


def test_a_guest_timeout_kills_qemu(kernel_6_1_192, second_boot, monkeypatch):
    import tempfile

    made = []
    real_mkdtemp = tempfile.mkdtemp

    def mkdtemp(*args, **kwargs):
        made.append(real_mkdtemp(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    started = time.monotonic()
    # QEMU is running by then: ~10 s of vng setup, ~10 s of boot, then sipct's imports.
    with pytest.raises(VmError, match="did not (boot|finish) within 30 s"):
        run_in_vm(kernel_6_1_192, [str(examples_dir() / "register.yaml")], timeout=30, boot_timeout=30)
    assert time.monotonic() - started < 50
    (workdir,) = made
    left = subprocess.run(["pgrep", "-f", workdir], capture_output=True, text=True).stdout.split()
    assert left == [], f"processes of {workdir} outlived the timeout"


def test_a_module_the_guest_lacks_is_a_clear_error(kernel_6_1_192, second_boot, monkeypatch):
    import sipct.harness.vm as vm
    import sipct.harness.vmboot as vmboot

    monkeypatch.setattr(vm, "MODULE", "nf_conntrack_nonexistent")  # what the guest script loads
    monkeypatch.setattr(vmboot, "MODULE", "nf_conntrack_nonexistent")  # what the boot's error names
    with pytest.raises(VmError) as info:
        run_in_vm(kernel_6_1_192, [str(examples_dir() / "register.yaml")], timeout=300)
    message = str(info.value)
    assert message.startswith("kernel 6.1.0-56-amd64: the guest has no nf_conntrack_nonexistent module")
    assert "apt-get install --no-install-recommends linux-image-6.1.0-56-amd64" in message


def test_a_parameter_the_module_refuses_is_a_clear_error(kernel_6_1_192, second_boot):
    with pytest.raises(VmError, match=r"`modprobe nf_conntrack_sip sip_timeout=99999999999` failed in the "
                                      r"guest: .*Numerical result out of range"):
        run_in_vm(kernel_6_1_192, [str(examples_dir() / "register.yaml")],
                  module_params={"sip_timeout": 99999999999}, timeout=300)


def test_merged_shards_are_the_matrix_of_one_run(kernel_6_1_192, second_boot, tmp_path, capsys):
    """Two real shards merge into the report of one run: the running kernel
    and 6.1.192 in one run (which also writes its rows as shards), then
    6.1.192 alone (a second boot, as a CI job would run it) merged with the
    run's host shard. Equal apart from times; two boots."""
    import json

    from sipct.cli.main import main

    def untimed(value):
        if isinstance(value, dict):
            return {k: untimed(v) for k, v in value.items() if k not in {"elapsed", "wall_seconds", "seconds"}}
        return [untimed(v) for v in value] if isinstance(value, list) else value

    suite = ["--examples", "3", "--seed", "1", "--no-curated", "--scenarios", str(examples_dir() / "register.yaml"),
             "--out", str(tmp_path / "out")]
    run, shards, alone, merged = (tmp_path / n for n in ("run.json", "shards", "alone.json", "merged.json"))
    assert main(["conformance", "--kernel", str(kernel_6_1_192.vmlinuz), *suite, "--json", str(run),
                 "--shard-dir", str(shards)]) == 0
    one_run = json.loads(run.read_text())
    assert [k["host"] for k in one_run["kernels"]] == [True, False]
    (host,) = shards.glob("host-*.json")
    assert main(["conformance", "--kernel", str(kernel_6_1_192.vmlinuz), "--no-host", *suite,
                 "--json", str(alone)]) == 0
    capsys.readouterr()
    assert main(["report", "merge", str(host), str(alone), "--json", str(merged)]) == 0
    assert "conformance matrix: OK" in capsys.readouterr().out
    assert untimed(json.loads(merged.read_text())) == untimed(one_run)
    assert main(["report", "merge", *map(str, sorted(shards.glob("*.json"))), "--json", str(merged)]) == 0
    assert untimed(json.loads(merged.read_text())) == untimed(one_run)
