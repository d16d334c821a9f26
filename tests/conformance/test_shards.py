"""A matrix in shards, merged, is the matrix of one run; --jobs does not
change it. No VM: the guests are a fake ``run_in_vm`` that answers as a
guest would (a ``sipct.conformance/1`` report over the dialog files it was
given), and the running kernel a fake ``run_here``.

Two real shards: tests/vm/test_vm.py::test_merged_shards_are_the_matrix_of_one_run.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

import sipct.conformance.cli as conformance_cli
import sipct.conformance.matrix as matrix
import sipct.harness.vm as vm
import sipct.harness.vmboot as vmboot
import sipct.harness.vmkernels as vmkernels
from sipct.cli.main import EXIT_ERROR, main
from sipct.conformance.corpus import SCENARIOS
from sipct.conformance.report import stats_json
from sipct.conformance.suite import Finding, Stats
from sipct.spec.profiles import profile_for_kernel

DIRECT_MEDIA_OFF = SCENARIOS / "seed" / "two-clients-direct-media-off.yaml"  # a second boot (sip_direct_media=0)
TIMING = {"elapsed", "wall_seconds", "seconds"}


@dataclass(frozen=True)
class FakeKernel:
    release: str
    version: str
    package_version: str

    @property
    def vmlinuz(self) -> str:
        return f"/boot/vmlinuz-{self.release}"

    def __str__(self) -> str:
        return self.release


KERNELS = {k.release: k for k in (FakeKernel("6.1.0-47-amd64", "6.1.170", "6.1.170-3"),
                                  FakeKernel("6.1.0-56-amd64", "6.1.192", "6.1.192-2"))}


@pytest.fixture
def fake_matrix(monkeypatch):
    """Guests that answer at once - the first kernel the slowest, so that
    with --jobs it finishes last - and diverge on 6.1.192's first generated
    dialog; a running kernel that agrees."""
    finished: list[str] = []

    def run_in_vm(kernel, argv, *, module_params, inputs, outputs, cancel, **_):
        time.sleep(0.3 if kernel.release == "6.1.0-47-amd64" else 0.0)
        s = Stats(profile_for_kernel(kernel.version).name, kernel.release, {"ports": [5060], **module_params})
        s.seed, s.examples, s.elapsed = 1, 3, 4.0
        s.dialogs["curated"] = argv.count("--scenarios")
        sources = {}
        if "--dialog-files" in argv:
            sources["in/generated"] = str(inputs["generated"])
            files = sorted(Path(inputs["generated"]).glob("*.yaml"))
            s.dialogs["generated"] = len(files)
            if kernel.release == "6.1.0-56-amd64":
                guest_path = f"in/generated/{files[0].name}"
                s.findings = [Finding(files[0].stem, guest_path, "generated", 1, 5, "verdict", "accept", "drop",
                                      ("request.bad-cseq",), None)]
                s.failed_dialogs = [f"{files[0].stem} ({guest_path})"]
        s.agreeing = Counter(s.dialogs)
        s.agreeing["generated"] -= len(s.findings)
        s.rules = Counter({"register.expect": 2, "media.expect": sum(s.dialogs.values())})
        s.transitions = {("master", "idle", "register")}
        finished.append(kernel.release)
        return vmboot.VmResult(kernel=kernel, module_params=dict(module_params), exit_code=1 if s.findings else 0,
                           json=stats_json(s), stdout="", stderr="", guest_release=kernel.release,
                           guest_version=kernel.version, loaded_params={"sip_direct_media": "0" if module_params
                                                                        else "1"},
                           missing_modules=[], boot_seconds=20.0, total_seconds=50.0, sources=sources)

    def run_here(args, *, quiet):
        s = Stats("6.12", "6.12.57-test", {"ports": [5060]})
        s.dialogs, s.agreeing = Counter(curated=1, generated=3), Counter(curated=1, generated=3)
        s.rules, s.seed, s.examples = Counter({"register.expect": 1}), 1, 3
        return s

    monkeypatch.setattr(vm, "run_in_vm", run_in_vm)
    monkeypatch.setattr(vmboot, "find_vng", lambda: Path("/usr/bin/vng"))
    monkeypatch.setattr(vmkernels.VmKernel, "from_path", staticmethod(lambda image, **_: KERNELS[str(image)]))
    monkeypatch.setattr(conformance_cli, "run_here", run_here)
    monkeypatch.setattr(matrix, "_running_version", lambda: "6.12.57")
    return finished


def _untimed(value):
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [_untimed(v) for v in value]
    return value


def _run(capsys, argv: list[str]) -> tuple[int, str]:
    status = main(argv)
    return status, capsys.readouterr().out


def _outputs(folder: Path) -> tuple[dict, str, str]:
    junit = re.sub(r' time="[^"]*"', "", (folder / "matrix.xml").read_text())
    return (_untimed(json.loads((folder / "matrix.json").read_text())), (folder / "matrix.rst").read_text(), junit)


SUITE = ["--examples", "3", "--seed", "1", "--no-curated", "--no-reproducers", "--scenarios", str(DIRECT_MEDIA_OFF)]


def test_merged_shards_are_the_matrix_of_one_run(fake_matrix, tmp_path, capsys):
    out = ["--out", str(tmp_path / "out")]
    outputs = ["--json", str(tmp_path / "matrix.json"), "--docs", str(tmp_path / "matrix.rst"),
               "--junit", str(tmp_path / "matrix.xml")]
    status, text = _run(capsys, ["conformance", "--kernel", "6.1.0-47-amd64", "--kernel", "6.1.0-56-amd64",
                                 *SUITE, *out, *outputs])
    assert status == 1 and "FAILED" in text  # 6.1.192 diverged
    one_run = _outputs(tmp_path)
    data = json.loads((tmp_path / "matrix.json").read_text())
    assert [k["kernel"] for k in data["kernels"]] == ["6.12.57-test", "6.1.0-47-amd64", "6.1.0-56-amd64"]
    assert [len(k["vm"]["boots"]) for k in data["kernels"][1:]] == [2, 2]
    assert data["kernels"][2]["divergent_files"]  # copied to --out, named in the report

    # The running kernel with one kernel, the other kernel alone: two shards (as two CI jobs).
    shards = [tmp_path / "a.json", tmp_path / "b.json"]
    assert _run(capsys, ["conformance", "--kernel", "6.1.0-47-amd64", *SUITE, *out, "--json", str(shards[0])])[0] == 0
    assert _run(capsys, ["conformance", "--kernel", "6.1.0-56-amd64", "--no-host", *SUITE, *out,
                         "--json", str(shards[1])])[0] == 1
    for path in tmp_path.glob("matrix.*"):
        path.unlink()
    status_merged, text_merged = _run(capsys, ["report", "merge", *map(str, shards), *outputs])
    assert (status_merged, text_merged) == (status, text)
    merged = _outputs(tmp_path)
    assert merged[0] == one_run[0]
    assert merged[1] == one_run[1]
    assert merged[2] == one_run[2]


def test_a_run_writes_the_shards_of_its_rows(fake_matrix, tmp_path, capsys):
    """--shard-dir: each row as if its kernel had run alone; merged, the run's report."""
    run = tmp_path / "run.json"
    _run(capsys, ["conformance", "--kernel", "6.1.0-47-amd64", "--kernel", "6.1.0-56-amd64", *SUITE,
                  "--out", str(tmp_path / "out"), "--json", str(run), "--shard-dir", str(tmp_path / "shards")])
    shards = sorted((tmp_path / "shards").glob("*.json"))
    assert [p.name for p in shards] == ["6.1.0-47-amd64.json", "6.1.0-56-amd64.json", "host-6.12.57-test.json"]
    commands = [json.loads(p.read_text())["command"] for p in shards]
    assert "--kernel 6.1.0-47-amd64 " in commands[0] and "--no-host" in commands[0]
    assert "--kernel" not in commands[2] and "--no-host" not in commands[2]
    merged = tmp_path / "merged.json"
    assert main(["report", "merge", *map(str, shards), "--json", str(merged)]) == 1
    capsys.readouterr()
    assert _untimed(json.loads(merged.read_text())) == _untimed(json.loads(run.read_text()))


def test_jobs_run_kernels_side_by_side_and_keep_their_order(fake_matrix, tmp_path, capsys):
    reports = {}
    for jobs in ("1", "2"):
        fake_matrix.clear()
        folder = tmp_path / jobs
        folder.mkdir()
        started = time.monotonic()
        _run(capsys, ["conformance", "--kernel", "6.1.0-47-amd64", "--kernel", "6.1.0-56-amd64", "--no-host",
                      "--jobs", jobs, *SUITE, "--out", str(folder / "out"), "--json", str(folder / "m.json")])
        reports[jobs] = (json.loads((folder / "m.json").read_text()), time.monotonic() - started, list(fake_matrix))
    (one, _, order_one), (two, _, order_two) = reports["1"], reports["2"]
    # With two jobs 6.1.192's boots finished before 6.1.170's (which sleep): the rows do not show it.
    assert order_one[:2] == ["6.1.0-47-amd64", "6.1.0-47-amd64"]
    assert order_two[0] == "6.1.0-56-amd64"
    rows = [[k["kernel"] for k in r["kernels"]] for r in (one, two)]
    assert rows == [["6.1.0-47-amd64", "6.1.0-56-amd64"]] * 2
    strip = lambda d: {**_untimed(d), "kernels": [{**k, "divergent_files": [Path(p).name for p in k["divergent_files"]]}
                                                  for k in _untimed(d)["kernels"]]}
    for k in (*one["kernels"], *two["kernels"]):
        k["divergences"]["findings"] = [{**f, "source": Path(f["source"]).name} for f in k["divergences"]["findings"]]
        k["failed_dialogs"] = [re.sub(r"\(.*/", "(", t) for t in k["failed_dialogs"]]
    assert strip(one) == strip(two)
    assert "--jobs" not in one["command"]


def _shard(tmp_path: Path, capsys, name: str, *argv: str) -> Path:
    path = tmp_path / name
    _run(capsys, ["conformance", *argv, "--out", str(tmp_path / "out"), "--json", str(path)])
    return path


def test_shards_of_different_matrices_do_not_merge(fake_matrix, tmp_path, capsys):
    a = _shard(tmp_path, capsys, "a.json", "--kernel", "6.1.0-47-amd64", "--no-host", *SUITE)
    other_seed = [*SUITE[:3], "2", *SUITE[4:]]
    b = _shard(tmp_path, capsys, "b.json", "--kernel", "6.1.0-56-amd64", "--no-host", *other_seed)
    assert main(["report", "merge", str(a), str(b)]) == EXIT_ERROR
    assert "seed 2, not 1" in " ".join(capsys.readouterr().err.split())
    # The same seed on another machine (another Hypothesis) made other dialogs.
    c = _shard(tmp_path, capsys, "c.json", "--kernel", "6.1.0-56-amd64", "--no-host", *SUITE)
    data = json.loads(c.read_text())
    assert len(data["options"]["generated_sha256"]) == 64
    assert data["options"]["generated_sha256"] == json.loads(a.read_text())["options"]["generated_sha256"]
    data["options"]["generated_sha256"] = "0" * 64
    c.write_text(json.dumps(data))
    assert main(["report", "merge", str(a), str(c)]) == EXIT_ERROR
    assert "generated_sha256" in capsys.readouterr().err
    assert main(["report", "merge", str(a), str(a)]) == EXIT_ERROR
    assert "kernel 6.1.0-47-amd64 is in" in capsys.readouterr().err
    h1 = _shard(tmp_path, capsys, "h1.json", "--kernel", "6.1.0-47-amd64", *SUITE)
    h2 = _shard(tmp_path, capsys, "h2.json", "--kernel", "6.1.0-56-amd64", *SUITE)
    assert main(["report", "merge", str(h1), str(h2)]) == EXIT_ERROR
    assert "running kernel is in more than one shard" in " ".join(capsys.readouterr().err.split())


def test_a_shard_is_a_matrix_report(tmp_path, capsys):
    single = tmp_path / "single.json"
    single.write_text(json.dumps({"format": "sipct.conformance/1", "kernel": "x"}))
    assert main(["report", "merge", str(single)]) == EXIT_ERROR
    assert "not a sipct.conformance-matrix/1 report" in " ".join(capsys.readouterr().err.split())
    assert main(["report", "merge", str(tmp_path / "missing.json")]) == EXIT_ERROR
    assert "cannot merge" in capsys.readouterr().err


def test_rows_merge_in_kernel_order_whatever_the_order_of_the_shards(fake_matrix, tmp_path, capsys):
    a = _shard(tmp_path, capsys, "a.json", "--kernel", "6.1.0-47-amd64", "--no-host", *SUITE)
    b = _shard(tmp_path, capsys, "b.json", "--kernel", "6.1.0-56-amd64", "--no-host", *SUITE)
    merged = tmp_path / "merged.json"
    main(["report", "merge", str(b), str(a), "--json", str(merged)])
    data = json.loads(merged.read_text())
    assert [k["kernel"] for k in data["kernels"]] == ["6.1.0-47-amd64", "6.1.0-56-amd64"]
    assert data["options"]["no_host"] is True and "--no-host" in data["command"]


def test_a_kernel_that_raises_cancels_the_boots_of_the_others(monkeypatch):
    import sipct.conformance.fanout as fanout

    told = []

    def run_kernel(kernel, *args, cancel=None):
        if kernel == "broken":
            raise RuntimeError("the host ran out of disk")
        told.append(cancel.wait(10))  # a boot polls the event as _boot does
        return kernel

    monkeypatch.setattr(fanout, "run_kernel", run_kernel)
    with pytest.raises(RuntimeError, match="out of disk"):
        fanout.run_kernels(["waiting", "broken"], None, [], Path("."), 0, 0, None, jobs=2)
    assert told == [True]


@pytest.mark.parametrize("jobs", [[], ["--jobs", "2"]], ids=["serial", "jobs-2"])
def test_a_hung_guest_is_reported_with_its_kernel_and_the_matrix_goes_on(fake_matrix, monkeypatch, tmp_path,
                                                                         capsys, jobs):
    """A guest that never finishes (run_in_vm kills QEMU at its time-out and
    raises) is that kernel's error row; the other kernels still run."""
    answer = vm.run_in_vm

    def hangs_on_6_1_170(kernel, argv, **kwargs):
        if kernel.release == "6.1.0-47-amd64":
            raise vmkernels.VmError("the guest did not finish within 600 s (QEMU killed) while the guest ran sipct",
                             kernel=kernel.release)
        return answer(kernel, argv, **kwargs)

    monkeypatch.setattr(vm, "run_in_vm", hangs_on_6_1_170)
    status, text = _run(capsys, ["conformance", "--kernel", "6.1.0-47-amd64", "--kernel", "6.1.0-56-amd64",
                                 *jobs, *SUITE, "--out", str(tmp_path / "out"), "--json", str(tmp_path / "m.json")])
    assert status != 0
    rows = {k["kernel"]: k for k in json.loads((tmp_path / "m.json").read_text())["kernels"]}
    assert rows["6.1.0-47-amd64"]["error"] == ("kernel 6.1.0-47-amd64: the guest did not finish within 600 s "
                                               "(QEMU killed) while the guest ran sipct")
    assert rows["6.1.0-56-amd64"]["error"] is None and sum(rows["6.1.0-56-amd64"]["dialogs"].values()) > 0
    assert "kernel 6.1.0-47-amd64: the guest did not finish" in " ".join(text.split())


def test_a_crashed_guest_is_reported_with_its_kernel_and_the_matrix_goes_on(fake_matrix, monkeypatch, tmp_path,
                                                                            capsys):
    """A guest whose sipct died: no report (run_in_vm says so, with the
    guest's stderr), or a JSON that is not a report."""
    answer = vm.run_in_vm

    def crashes(kernel, argv, **kwargs):
        result = answer(kernel, argv, **kwargs)
        if kernel.release == "6.1.0-47-amd64":
            raise vmkernels.VmError("sipct in the guest wrote no JSON to report.json (exit status 1): Traceback (most "
                             "recent call last): MemoryError", kernel=kernel.release)
        if kernel.release == "6.1.0-56-amd64" and kwargs["module_params"]:  # its second boot
            return dataclasses.replace(result, json=None, exit_code=1)
        return result

    monkeypatch.setattr(vm, "run_in_vm", crashes)
    status, _ = _run(capsys, ["conformance", "--kernel", "6.1.0-47-amd64", "--kernel", "6.1.0-56-amd64", *SUITE,
                              "--out", str(tmp_path / "out"), "--json", str(tmp_path / "m.json")])
    assert status != 0
    rows = {k["kernel"]: k for k in json.loads((tmp_path / "m.json").read_text())["kernels"]}
    assert rows["6.1.0-47-amd64"]["error"].startswith("kernel 6.1.0-47-amd64: sipct in the guest wrote no JSON")
    assert rows["6.1.0-56-amd64"]["error"] == "the guest's report is not sipct.conformance/1: not a " \
        "sipct.conformance/1 report (a JSON NoneType)"
