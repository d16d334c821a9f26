""".github/workflows/matrix.yml cannot run here: read it, and check that what
it runs exists - the scripts, and the sipct command lines, parsed by the
CLI's own parser - and that its jobs hand the shards on."""

from __future__ import annotations

import fnmatch
import re
import shlex
from pathlib import Path

import pytest
import yaml

from sipct.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "matrix.yml"
# What the expressions stand for in one job of the matrix (6.1.192).
EXPRESSIONS = {"matrix.kernel": "6.1.192", "matrix.package": "linux-image-6.1.0-56-amd64",
               "steps.package.outputs.name": "linux-image-6.1.0-56-amd64",
               "steps.package.outputs.release": "6.1.0-56-amd64"}


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def _expand(text: str) -> str:
    text = re.sub(r"\$\{\{\s*([^}]+?)\s*\}\}", lambda m: EXPRESSIONS[m.group(1)], text)
    return text.replace('"$EXAMPLES"', "1000").replace('"$SEED"', "0")


def _commands(job: dict) -> list[list[str]]:
    """The command lines of the job's run steps that chain commands with &&."""
    out = []
    for step in job["steps"]:
        if "run" in step and "&&" in step["run"]:
            out += [shlex.split(part) for part in _expand(step["run"]).split("&&")]
    return out


def _sipct(job: dict) -> list:
    return [build_parser().parse_args(argv[1:]) for argv in _commands(job) if argv[0] == ".venv/bin/sipct"]


def test_one_job_per_kernel(workflow):
    kernel = workflow["jobs"]["kernel"]
    packages = [entry["package"] for entry in kernel["strategy"]["matrix"]["include"]]
    assert packages == ["linux-image-6.1.0-47-amd64", "linux-image-6.1.0-56-amd64", "newest-6.12"]
    assert kernel["strategy"]["fail-fast"] is False
    # The newest 6.12 is found as scripts/setup-kernels.sh finds it.
    pattern = r"'^linux-image-6\.12\.[0-9]+\+deb12-amd64$'"
    assert pattern in (ROOT / "scripts" / "setup-kernels.sh").read_text()
    assert pattern in next(s["run"] for s in kernel["steps"] if s.get("id") == "package")


def test_the_commands_it_runs_exist(workflow):
    for job in workflow["jobs"].values():
        commands = _commands(job)
        assert commands
        for argv in commands:
            if argv[0].startswith("scripts/"):
                script = ROOT / argv[0]
                assert script.is_file() and script.stat().st_mode & 0o111, argv
            else:
                assert argv[0] == ".venv/bin/sipct", argv
        _sipct(job)  # argparse exits on an option the CLI does not have


def test_each_kernel_job_writes_a_shard_the_merge_reads(workflow):
    kernel, merge = workflow["jobs"]["kernel"], workflow["jobs"]["merge"]
    (args,) = _sipct(kernel)
    assert args.command == "conformance" and args.kernels == ["6.1.0-56-amd64"] and args.no_host
    assert (args.examples, args.seed) == (1000, 0)
    assert ["scripts/setup-kernels.sh", "linux-image-6.1.0-56-amd64"] in _commands(kernel)
    upload = next(s for s in kernel["steps"] if s.get("uses", "").startswith("actions/upload-artifact"))
    assert upload["if"] == "always()"
    assert str(args.json) in upload["with"]["path"].split()
    download = next(s for s in merge["steps"] if s.get("uses", "").startswith("actions/download-artifact"))
    name = _expand(upload["with"]["name"])
    assert fnmatch.fnmatch(name, download["with"]["pattern"])
    (merged,) = _sipct(merge)
    assert merged.command == "report" and merged.report_command == "merge"
    # download-artifact puts each artifact in a folder of its name.
    assert [fnmatch.fnmatch(f"{download['with']['path']}/{name}/{args.json}", str(p)) for p in merged.shards] == [True]
    assert merge["needs"] == "kernel" and merge["if"] == "always()"
    assert str(merged.docs) == "docs/matrix.rst"


def test_all_shards_run_the_same_dialogs(workflow):
    """The merge refuses shards of different seeds or counts: they come from the workflow's env only."""
    env = workflow["env"]
    assert set(env) == {"EXAMPLES", "SEED"}
    run = next(s["run"] for s in workflow["jobs"]["kernel"]["steps"] if "sipct conformance" in s.get("run", ""))
    assert '--examples "$EXAMPLES" --seed "$SEED"' in run
