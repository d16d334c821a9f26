"""The published specification builds with warnings as errors and shows what the code says."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sipct.docs.sphinxext import machine_dot
from sipct.spec.machines import MACHINES
from sipct.spec.rules import RULES

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(MACHINES))
def test_diagram_has_every_transition(name):
    dot = machine_dot(name)
    for t in MACHINES[name].transitions():
        assert f"{t.source} -> {t.target}" in dot
        assert t.label.replace("[", " [") in dot
        assert all(action in dot for action in t.actions)


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz (dot) is not installed: scripts/setup.sh --dev")
def test_sphinx_builds_with_warnings_as_errors(tmp_path):
    out = tmp_path / "html"
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-q", "-W", "-b", "html", str(ROOT / "docs"), str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rules_page = (out / "rules.html").read_text()
    for rule_id in RULES:
        assert rule_id in rules_page
    machines_page = (out / "machines.html").read_text()
    assert machines_page.count("<svg") + machines_page.count(".svg") >= len(MACHINES)
