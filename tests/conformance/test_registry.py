"""The known-divergence registry: loading, matching, and how the suite uses it."""

import os
import shutil
import textwrap

import pytest

from sipct.cli.main import main
from sipct.conformance.registry import REGISTRY, RegistryError, load_registry
from sipct.spec import media

ENTRY = """\
- id: one-media-only
  kernels: ["6.18", "6.1.192"]
  aspect: [expectations, events]
  rules: [media.expect]
  reason: kernel-bug
  reference: "test entry"
  explanation: pretend the kernel processes one media description per message
  reproducer: repro.yaml
"""

REPRO = """\
name: repro
hosts: {ua: 192.0.2.2, server: 198.51.100.2}
steps:
  - send: ua:5060 -> server:5060
    message: |
      INVITE sip:b@{server.uri} SIP/2.0
      CSeq: 1 INVITE
      Content-Length: {body_length}

      v=0
      c=IN IP4 {ua}
      m=audio 5000 RTP/AVP 0
      m=video 6000 RTP/AVP 31
"""


def test_the_shipped_registry_loads():
    for entry in load_registry(REGISTRY):
        assert entry.reproducer is None or entry.reproducer.is_file()


def test_an_entry_loads_and_matches(tmp_path):
    (tmp_path / "repro.yaml").write_text(REPRO)
    (tmp_path / "reg.yaml").write_text(ENTRY)
    [entry] = load_registry(tmp_path / "reg.yaml")
    assert entry.reproducer == tmp_path / "repro.yaml"
    assert entry.matches("6.18", "expectations", {"media.expect", "msg.request"})
    assert not entry.matches("6.1.170", "expectations", {"media.expect"})
    assert not entry.matches("6.18", "verdict", {"media.expect"})
    assert not entry.matches("6.18", "expectations", {"msg.request"})


@pytest.mark.parametrize("change, message", [
    (("reason: kernel-bug", "reason: feeling"), "reason must be one of"),
    (("aspect: [expectations, events]", "aspect: colour"), "aspect must be one of"),
    (("[media.expect]", "[media.nonsense]"), "unknown rule 'media.nonsense'"),
    (('["6.18", "6.1.192"]', '["5.4"]'), "unknown kernel profile '5.4'"),
    (("reproducer: repro.yaml", "reproducer: missing.yaml"), "reproducer missing.yaml does not exist"),
    (("  reference: \"test entry\"\n", ""), "missing reference"),
])
def test_bad_entries_name_the_line(tmp_path, change, message):
    (tmp_path / "repro.yaml").write_text(REPRO)
    (tmp_path / "reg.yaml").write_text("# comment\n" + ENTRY.replace(*change))
    with pytest.raises(RegistryError, match=message) as err:
        load_registry(tmp_path / "reg.yaml")
    assert f"{tmp_path / 'reg.yaml'}:2:" in str(err.value)


def test_duplicate_ids_are_refused(tmp_path):
    (tmp_path / "repro.yaml").write_text(REPRO)
    (tmp_path / "reg.yaml").write_text(ENTRY + ENTRY)
    with pytest.raises(RegistryError, match="duplicate id 'one-media-only'"):
        load_registry(tmp_path / "reg.yaml")


kernel = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("nft") is None, reason="needs root and nft")


@pytest.mark.netns
@kernel
def test_a_registered_divergence_does_not_fail_the_suite(tmp_path, monkeypatch, capsys):
    (tmp_path / "repro.yaml").write_text(REPRO)
    (tmp_path / "reg.yaml").write_text(ENTRY)
    monkeypatch.setattr(media, "MAX_MEDIA", 1)  # the "kernel bug" the entry explains
    status = main(["conformance", "--no-curated", "--examples", "0", "--registry", str(tmp_path / "reg.yaml"),
                   "--scenarios", str(tmp_path / "repro.yaml"), "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "registered divergences" in out


@pytest.mark.netns
@kernel
def test_a_registered_divergence_that_no_longer_occurs_fails_the_suite(tmp_path, capsys):
    (tmp_path / "repro.yaml").write_text(REPRO)
    (tmp_path / "reg.yaml").write_text(ENTRY)
    status = main(["conformance", "--no-curated", "--examples", "0", "--registry", str(tmp_path / "reg.yaml")])
    out = capsys.readouterr().out.replace("\n", " ")
    assert status == 1
    assert "one-media-only: its reproducer repro.yaml no longer diverges" in textwrap.dedent(out).replace("  ", " ")
