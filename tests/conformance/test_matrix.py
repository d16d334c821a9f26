"""The kernel matrix's pieces that need no VM and no root: host-side
generation, boot planning, the guest's arguments, merging and the reports.

The matrix itself (boots) is tests/vm/test_vm.py::test_conformance_matrix_in_6_1_192.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

import sipct.conformance.suite as suite_module
from sipct.cli.main import EXIT_ERROR, build_parser, main
from sipct.conformance.corpus import SCENARIOS, scenario_dialogs
from sipct.conformance.matrixdocs import matrix_docs
from sipct.conformance.matrixjson import matrix_json
from sipct.conformance.matrixplan import GENERATED_FOLDER, boot_groups, guest_argv, write_generated
from sipct.conformance.matrixrow import KernelReport
from sipct.conformance.matrixrun import merge_stats
from sipct.conformance.matrixtable import print_matrix
from sipct.conformance.report import stats_from_json, stats_json
from sipct.conformance.suite import PROBE_TAG, Finding, Stats, generate_dialogs
from sipct.spec.dialog import load_dialog
from sipct.spec.predict import predict
from sipct.spec.profiles import PROFILES
from sipct.harness.wire import LAB_WIRE

VERSIONS = SCENARIOS / "versions"


def args_for(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["conformance", *argv])


def test_host_generation_makes_the_dialogs_a_host_run_makes(monkeypatch):
    """Same seed (and process state), same dialogs: generate_dialogs() makes
    what run_generated() runs (as long as nothing diverges)."""
    seen = []

    class NoLab:
        def __init__(self, *args, **kwargs) -> None:
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            pass

    class Recording(suite_module.Suite):
        def __init__(self) -> None:
            self.stats = Stats("6.18", "test", {})

        def check(self, dialog, kind, runner=None, *, count=True):
            seen.append(dialog)
            return []

    monkeypatch.setattr(suite_module, "Lab", NoLab)
    monkeypatch.setattr(suite_module, "DialogRunner", NoLab)
    Recording().run_generated(60, 7, Path("unused"))
    assert generate_dialogs(60, 7) == seen
    assert len(seen) == 60
    assert generate_dialogs(0, 7) == []


def test_generated_files_load_back_and_predict_the_same(tmp_path):
    dialogs = generate_dialogs(40, 3)
    paths = write_generated(dialogs, tmp_path / GENERATED_FOLDER, 3)
    assert [p.name for p in paths[:2]] == ["generated-seed3-00000.yaml", "generated-seed3-00001.yaml"]
    for original, path in zip(dialogs, paths):
        loaded = load_dialog(path)
        assert loaded.name == path.stem
        assert loaded.hosts == original.hosts and loaded.family == original.family
        assert [getattr(s, "segments", None) for s in loaded.steps] == \
               [getattr(s, "segments", None) for s in original.steps]
        for profile in ("6.1.170", "6.1.192"):
            a = predict(original, PROFILES[profile], wire=LAB_WIRE)
            b = predict(loaded, PROFILES[profile], wire=LAB_WIRE)
            assert [(s.verdict, s.expectations) for s in a.steps] == [(s.verdict, s.expectations) for s in b.steps]


def test_dialogs_without_steps_are_not_written(tmp_path):
    dialogs = generate_dialogs(40, 3)
    empty = replace(dialogs[0], steps=())
    paths = write_generated([empty, *dialogs[:3]], tmp_path, 3)
    assert [p.name for p in paths] == [f"generated-seed3-0000{i}.yaml" for i in (1, 2, 3)]


def test_boots_are_planned_per_module_parameter_set():
    curated = scenario_dialogs()
    boots = boot_groups(curated)
    assert boots[0].params == {}
    assert [b.params for b in boots[1:]] == [
        {"sip_timeout": 10, "sip_direct_media": 0, "sip_external_media": 1, "expect_max": 8},  # params/
        {"sip_direct_media": 0}]
    assert {d.name for d in boots[1].dialogs} == {
        "params-expect-table-full", "params-external-media-same-interface", "params-master-timeout",
        "params-media-clash", "params-nat-direct-rtp", "params-nat-media-port-moved",
        "params-nat-register-table-full"}
    assert [d.name for d in boots[2].dialogs] == ["seed-two-clients-direct-media-off"]
    assert len(boots[0].dialogs) == len(curated) - 8
    assert boot_groups([])[0].params == {}  # the generated dialogs always need the default boot


def test_guest_arguments():
    args = args_for("--kernel", "x", "--seed", "5", "--examples", "10")
    default, _, extra = boot_groups(scenario_dialogs())
    argv, inputs = guest_argv(args, default)
    assert argv[:8] == ["--json", "report.json", "--out", "out", "--seed", "5", "--labs", "1"]  # one lab in a guest
    assert argv[-2:] == ["--dialog-files", f"in/{GENERATED_FOLDER}"]
    assert "--no-curated" not in argv and inputs == {}
    argv, _ = guest_argv(args, extra)
    assert "--no-curated" in argv and "--no-reproducers" in argv
    assert argv[argv.index("--scenarios") + 1].endswith("seed/two-clients-direct-media-off.yaml")
    assert argv[argv.index("--examples") + 1] == "0"
    # A registry of one's own travels with its folder (reproducers are relative to it).
    registry = Path(__file__).resolve().parents[2] / "conformance" / "known-divergences.yaml"
    argv, inputs = guest_argv(args_for("--kernel", "x", "--registry", str(registry)), default)
    assert inputs == {"registry": registry.parent}
    assert argv[argv.index("--registry") + 1] == "in/registry/known-divergences.yaml"


def _stats(kernel: str = "6.1.0-56-amd64", profile: str = "6.1.192") -> Stats:
    s = Stats(profile, kernel, {"ports": [5060], "sip_timeout": 3600})
    s.dialogs, s.agreeing = Counter(curated=3, generated=10), Counter(curated=3, generated=9)
    s.steps, s.messages, s.seed, s.examples, s.elapsed = 40, 50, 1, 10, 12.5
    s.rules = Counter({"register.expect": 2, "media.expect": 5})
    s.transitions = {("master", "idle", "register")}
    s.findings = [Finding("generated-seed1-00004", "in/generated/generated-seed1-00004.yaml", "generated", 2, 7,
                          "verdict", "drop", "delivered", ("request.bad-cseq",), None)]
    s.failed_dialogs = ["generated-seed1-00004 (in/generated/generated-seed1-00004.yaml)"]
    s.not_runnable = ["seed-two-clients-direct-media-off: needs sip_direct_media=0 (this kernel has 1)"]
    return s


def test_reports_round_trip_through_json():
    s = _stats()
    back = stats_from_json(json.loads(json.dumps(stats_json(s), default=str)))
    for name in ("profile", "kernel", "params", "dialogs", "agreeing", "steps", "messages", "findings", "rules",
                 "transitions", "not_runnable", "failed_dialogs", "seed", "examples", "elapsed", "probes"):
        assert getattr(back, name) == getattr(s, name), name
    with pytest.raises(ValueError, match="sipct.conformance/1"):
        stats_from_json({"format": "sipct.run/1"})


def test_the_boots_of_a_kernel_merge_into_one_report():
    default = _stats()
    other = Stats("6.1.192", "6.1.0-56-amd64", {"ports": [5060], "sip_direct_media": False})
    other.dialogs, other.agreeing = Counter(curated=1), Counter(curated=1)
    other.rules = Counter({"media.other-master": 2, "media.expect": 1})
    merged = merge_stats([default, other], {"seed-two-clients-direct-media-off"})
    assert merged.dialogs == Counter(curated=4, generated=10)
    assert merged.agreeing == Counter(curated=4, generated=9)
    assert merged.rules["media.expect"] == 6 and merged.rules["media.other-master"] == 2
    assert merged.not_runnable == []  # it ran in the second boot
    assert merged.params == default.params
    assert len(merged.findings) == 1 and not merged.ok


def test_matrix_report_json_and_docs(tmp_path, capsys):
    good = _stats("6.1.0-47-amd64", "6.1.170")
    good.findings, good.failed_dialogs = [], []
    good.agreeing = Counter(good.dialogs)
    probe = load_dialog(VERSIONS / "register-contact-expires-octal.yaml")
    assert PROBE_TAG in probe.tags
    good.probes = [{
        "dialog": probe.name, "profile": "6.1.170", "agree": True, "steps": [
            {"index": 0, "step": "udp alice:5060 -> registrar:5060: REGISTER", "agree": True,
             "spec": {"rules": ["register.expect"]},
             "kernel": {"delivered": True, "expectations": [
                 {"text": "udp registrar:* -> alice:5060 signalling PERMANENT,INACTIVE", "timeout": 179.6}]},
             "divergences": []}]}]
    bad = _stats()
    bad.probes = [{**good.probes[0], "profile": "6.1.192", "agree": False, "steps": [
        {**good.probes[0]["steps"][0], "agree": False, "spec": {"rules": ["register.expect", "x.y"]},
         "divergences": [{"aspect": "timeout", "spec": "10.0s", "kernel": "8s"}]}]}]
    reports = [KernelReport("6.1.0-47-amd64", "6.1.170-3", good, vmlinuz="/boot/vmlinuz-6.1.0-47-amd64",
                            expected_profile="6.1.170", seconds=100.0),
               KernelReport("6.1.0-56-amd64", "6.1.192-2", bad, seconds=90.0),
               KernelReport("6.1.0-50-amd64", "6.1.176-1", None, error="did not boot")]
    args = args_for("--kernels", "debian", "--examples", "10", "--seed", "1")
    print_matrix(reports, __import__("rich.console").console.Console(width=200))
    out = capsys.readouterr().out
    assert "kernel matrix" in out and "13/13" in out and "12/13" in out and "not run" in out
    assert "request.bad-cseq" in out and "FAILED" in out

    data = matrix_json(reports, args, 200.0)
    assert data["format"] == "sipct.conformance-matrix/1" and data["ok"] is False
    assert [k["format"] for k in data["kernels"]] == ["sipct.conformance/1"] * 3
    assert data["kernels"][0]["profile"] == "6.1.170" and data["kernels"][0]["vm"]["expected_profile"] == "6.1.170"
    assert data["kernels"][2]["error"] == "did not boot"
    assert data["matrix"]["probes"] == {probe.name: {"6.1.0-47-amd64": True, "6.1.0-56-amd64": False}}
    assert data["command"] == "sipct conformance --kernels debian --examples 10 --seed 1"

    page = matrix_docs(reports, args, [probe])
    assert "Kernel matrix\n=============" in page
    assert probe.name in page and "as the spec predicts" in page and "DIVERGES (timeout" in page
    assert ":rule:`x.y`" in page  # a spec rule that fired on one kernel only
    assert "``strict_uri_port``" in page


def test_matrix_options_need_a_kernel(capsys):
    assert main(["conformance", "--no-host"]) == EXIT_ERROR
    assert "go with --kernel" in capsys.readouterr().err


def test_a_missing_kernel_stops_the_matrix_before_it_starts(capsys):
    assert main(["conformance", "--kernel", "9.9.9-nope", "--examples", "0"]) == EXIT_ERROR
    err = capsys.readouterr().err.replace("\n", "")
    assert "linux-image-9.9.9-nope" in err


def test_version_probes_assert_only_what_every_profile_shares():
    probes = sorted(VERSIONS.glob("*.yaml"))
    assert len(probes) >= 4
    distinguishing = 0
    for path in probes:
        dialog = load_dialog(path)
        assert PROBE_TAG in dialog.tags and dialog.kernels == ()
        outcomes = set()
        for profile in PROFILES.values():
            prediction = predict(dialog, profile, wire=LAB_WIRE)
            assert not prediction.failures, (path.name, profile.name, prediction.failures)
            outcomes.add(tuple((s.verdict, tuple(sorted((str(e.tuple), round(e.remaining(s.time)))
                                                        for e in s.expectations)))
                               for s in prediction.steps))
        distinguishing += len(outcomes) > 1
    # All but the sip_skip_whitespace() probe tell some profiles apart.
    assert distinguishing == len(probes) - 1


def test_slow_dialogs_run_only_with_slow():
    from sipct.conformance.suite import SLOW_TAG, select_curated

    curated = scenario_dialogs()
    slow = [d.name for d in curated if SLOW_TAG in d.tags]
    assert slow == ["slow-registration-unanswered-expires"]
    assert not {d.name for d in select_curated(curated, slow=False)} & set(slow)
    assert select_curated(curated, slow=True) == curated
    default = boot_groups(curated)[0]
    assert "--slow" not in guest_argv(args_for("--kernel", "x"), default)[0]
    assert "--slow" in guest_argv(args_for("--kernel", "x", "--slow"), default)[0]
