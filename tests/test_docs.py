"""The published specification builds with warnings as errors and every
cross-reference resolved (``sphinx-build -W -n``, what CI runs), and shows
what the code says."""

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from sipct.docs.sphinxext import function_parts, ident_url, link_profile, machine_dot, rule_anchor, rule_group
from sipct.spec.machines import MACHINES
from sipct.spec.rules import RULES
from sipct.harness.wire import LAB_WIRE

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(MACHINES))
def test_diagram_has_every_transition(name):
    dot = machine_dot(name)
    for t in MACHINES[name].transitions():
        assert f"{t.source} -> {t.target}" in dot
        assert t.label.replace("[", " [") in dot
        assert all(action in dot for action in t.actions)


# The build CI runs: warnings are errors (-W), every reference must resolve (-n).
SPHINX_BUILD = [sys.executable, "-m", "sphinx", "-q", "-W", "-n", "--keep-going", "-b", "html"]


@pytest.fixture(scope="module")
def html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("dot") is None:
        pytest.skip("graphviz (dot) is not installed: scripts/setup.sh --dev")
    out = tmp_path_factory.mktemp("docs") / "html"
    proc = subprocess.run([*SPHINX_BUILD, str(ROOT / "docs"), str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return out


def test_sphinx_builds_with_warnings_as_errors_and_no_dead_reference(html):
    rules_page = (html / "rules.html").read_text()
    for rule_id in RULES:
        assert rule_id in rules_page
    machines_page = (html / "machines.html").read_text()
    assert machines_page.count("<svg") + machines_page.count(".svg") >= len(MACHINES)


def test_every_page_names_the_version_and_commit(html):
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    pages = sorted(p for p in html.rglob("*.html") if p.parent.name not in ("_modules", "_static"))
    assert len(pages) >= 15
    for page in pages:
        if page.name in ("genindex.html", "search.html", "py-modindex.html"):
            continue
        assert f"sipct {version}, commit " in page.read_text() or "not built from a git checkout" in \
            page.read_text(), page.name


def test_the_api_pages_document_what_the_prose_links_to(html):
    spec = (html / "api" / "spec.html").read_text()
    for target in ("sipct.spec.helper.SipHelper", "sipct.spec.dialog.load_dialog", "sipct.spec.predict.predict",
                   "sipct.spec.profiles.KernelProfile", "sipct.spec.params.ModuleParams", "sipct.spec.rules.Rule",
                   "sipct.spec.transitions.Runtime", "module-sipct.spec.handlers"):
        assert f'id="{target}"' in spec, target
    assert 'id="sipct.harness.diff.compare"' in (html / "api" / "harness.html").read_text()
    assert 'id="sipct.reference.config.load_config"' in (html / "api" / "reference.html").read_text()


def test_every_rule_has_its_anchor_and_a_group(html):
    rules_page = (html / "rules.html").read_text()
    for rule_id in RULES:
        assert f'id="{rule_anchor(rule_id)}"' in rules_page, rule_id
        rule_group(rule_id)  # raises for a prefix without a group


def test_rule_role_links_to_the_catalogue(html):
    conformance = (html / "conformance.html").read_text()
    assert 'href="rules.html#rule-expect.expire"' in conformance


@pytest.mark.parametrize("function, idents", [
    ("process_invite/update/prack_response",
     ["process_invite_response", "process_update_response", "process_prack_response"]),
    ("sip_help_udp/sip_help_tcp -> nf_ct_refresh", ["sip_help_udp", "sip_help_tcp", "nf_ct_refresh"]),
    ("sip_handlers[]: UPDATE/ACK/PRACK -> process_sdp", ["sip_handlers", "process_sdp"]),
    ("nf_conntrack_expect.c: __nf_ct_expect_check -> expect_clash", ["__nf_ct_expect_check", "expect_clash"]),
])
def test_kernel_functions_become_identifiers(function, idents):
    assert [target for kind, _, target in function_parts(function) if kind == "ident"] == idents


def test_every_rule_function_links_only_identifiers():
    for rule in RULES.values():
        parts = function_parts(rule.function)
        assert "".join(shown for _, shown, _ in parts).replace(" → ", " -> ") == rule.function
        for kind, _, target in parts:
            if kind == "ident":
                assert re.fullmatch(r"_*[a-z][a-z0-9]*(_[a-z0-9]+)+", target), (rule.id, target)
            elif kind == "file":
                assert target.startswith(("nf_conntrack_", "nf_nat_")) and target.endswith(".c"), (rule.id, target)
        assert ident_url(link_profile(rule), "x").startswith("https://elixir.bootlin.com/linux/v")


def test_an_unknown_rule_id_fails_the_build(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "conf.py").write_text('extensions = ["sipct.docs.sphinxext"]\n')
    (src / "index.rst").write_text("Title\n=====\n\nSee :rule:`register.no-such-rule`.\n")
    proc = subprocess.run([*SPHINX_BUILD, str(src), str(tmp_path / "out")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0
    assert "unknown rule id 'register.no-such-rule'" in proc.stderr


def test_every_state_diagram_has_its_legend(html):
    assert (html / "machines.html").read_text().count("Legend:") == len(MACHINES)


def test_module_parameters_are_shown_as_modprobe_takes_them(html):
    page = re.sub(r"<[^>]+>", "", (html / "parameters.html").read_text())
    assert "modprobe nf_conntrack_sip ports=5060 sip_timeout=3600 sip_direct_signalling=1" in page
    assert "sip_external_media=0" in page


def test_dialogs_are_drawn_as_ladders_from_the_spec(html):
    """`.. sipct-ladder::` draws each dialog as the spec predicts it at build
    time: an SVG per directive, its steps' rules linked to the catalogue, and
    a column for a profile that predicts otherwise."""
    import re

    from sipct.spec.dialog import load_dialog
    from sipct.spec.predict import predict

    walk = (html / "walkthrough.html").read_text()
    ladders = (html / "ladders.html").read_text()
    assert walk.count('<div class="sipct-ladder"') == 2
    sources = re.findall(r"^\.\. sipct-ladder:: (\S+)$", (ROOT / "docs" / "ladders.rst").read_text(), re.M)
    assert ladders.count('<div class="sipct-ladder"') == len(sources) >= 7 + 3
    # The register walk: every rule the spec fires links to its anchor.
    register = predict(load_dialog(ROOT / "spec" / "examples" / "register.yaml"), wire=LAB_WIRE)
    for rule_id in {f.rule.id for s in register.steps for f in s.firings}:
        assert f'href="rules.html#rule-{rule_id}"' in walk, rule_id
    # 6.1.170 reads expires=010 as octal: its own column.
    assert "profiles that predict otherwise: <code" in ladders and "6.1.170" in ladders
