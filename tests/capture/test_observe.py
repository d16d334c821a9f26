"""sipct observe: SIPp calls through the lab (UDP and TCP, IPv4 and IPv6),
predicted from the router's capture and compared with the kernel."""

from __future__ import annotations

import os
import re
import shutil

import pytest

from sipct.cli.main import EXIT_DIVERGED, EXIT_OK, main
from sipct.spec import media
from sipct.spec.dialog import Send, load_dialog

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(shutil.which("nft") is None, reason="needs nft (apt-get install nftables)"),
    pytest.mark.skipif(shutil.which("sipp") is None, reason="needs sipp (scripts/setup.sh installs sip-tester)"),
]


def test_sipp_calls_agree_with_the_spec_call_by_call(tmp_path, capsys):
    assert main(["observe", "--calls", "2", "--out", str(tmp_path), "-v"]) == EXIT_OK
    out = " ".join(capsys.readouterr().out.split())
    for transport in ("udp", "tcp"):
        for family in (4, 6):
            # 6 packets a call (INVITE, 180, 200, ACK, BYE, 200), more if a loaded machine made SIPp retransmit
            assert re.search(rf"SIPp {transport} IPv{family}: 2 calls \(SIPp exit 0\), \d+ SIP packets", out)
            dialog = load_dialog(tmp_path / f"sipp-{transport}-ipv{family}-2.yaml")
            invite = next(s for s in dialog.steps if isinstance(s, Send))
            assert invite.payload.startswith(b"INVITE sip:") and invite.src.host == "ua"
    assert out.count("calls agree") == 4 and "2 of 2 calls agree" in out
    assert "expectations created: spec 4, kernel 4" in out


def test_a_spec_mistake_shows_as_a_divergent_call(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(media, "MAX_MEDIA", 0)  # the spec now expects no media at all
    assert main(["observe", "--calls", "1", "--transport", "udp", "--family", "4"]) == EXIT_DIVERGED
    out = " ".join(capsys.readouterr().out.split())
    assert "DIVERGE" in out and "only the kernel created udp server:* -> ua:6000 audio" in out
