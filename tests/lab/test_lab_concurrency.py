"""Several sipct processes at once on one machine do not interfere: four
commands run together report what each reports alone.

Two `sipct run --json` over the bundled examples - the very same dialogs,
addresses and ports at the same time - and two `sipct conformance` runs of
different seeds.  Compared: everything but the wall-clock parts (elapsed
seconds, the remaining timeouts ctnetlink reports in whole seconds).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.kill import REPO, SIPCT

pytestmark = pytest.mark.netns

EXAMPLES = 20
CLOCK_KEYS = {"elapsed", "timeout"}


def deterministic(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: deterministic(v) for k, v in data.items() if k not in CLOCK_KEYS}
    if isinstance(data, list):
        return [deterministic(v) for v in data]
    return data


def commands(folder: Path) -> dict[str, list[str]]:
    out = {"run A": ["run", "--json"], "run B": ["run", "--json"]}
    for seed in (1, 2):
        work = folder / f"seed{seed}"
        work.mkdir(parents=True, exist_ok=True)
        out[f"conformance seed {seed}"] = ["conformance", "--examples", str(EXAMPLES), "--seed", str(seed),
                                           "--json", str(work / "report.json"), "--out", str(work)]
    return out


def start(argv: list[str], folder: Path, name: str) -> subprocess.Popen[bytes]:
    with open(folder / f"{name}.stdout", "wb") as out, open(folder / f"{name}.stderr", "wb") as err:
        return subprocess.Popen([SIPCT, *argv], stdout=out, stderr=err, cwd=REPO)


def report(argv: list[str], folder: Path, name: str, proc: subprocess.Popen[bytes]) -> Any:
    proc.wait(timeout=600)
    err = (folder / f"{name}.stderr").read_text(errors="replace")
    assert proc.returncode == 0, f"{name}: exit status {proc.returncode}: {err[-3000:]}"
    if argv[0] == "conformance":
        return deterministic(json.loads(Path(argv[argv.index("--json") + 1]).read_text()))
    return deterministic(json.loads((folder / f"{name}.stdout").read_text()))


def test_four_runs_at_once_report_what_each_reports_alone(tmp_path: Path) -> None:
    alone_dir, together_dir = tmp_path / "alone", tmp_path / "together"
    alone_dir.mkdir()
    together_dir.mkdir()
    alone = {}
    for name, argv in commands(alone_dir).items():
        if name == "run B":  # the same command as run A
            alone[name] = alone["run A"]
            continue
        alone[name] = report(argv, alone_dir, name, start(argv, alone_dir, name))

    together = commands(together_dir)
    procs = {name: start(argv, together_dir, name) for name, argv in together.items()}
    at_once = {name: report(together[name], together_dir, name, proc) for name, proc in procs.items()}

    for name in alone:
        assert at_once[name] == alone[name], f"{name} reported otherwise next to the others"
    assert len(at_once["run A"]) == len(list((REPO / "spec" / "examples").glob("*.yaml")))
    assert at_once["conformance seed 1"]["dialogs"]["generated"] == EXAMPLES
