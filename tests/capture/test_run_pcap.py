"""sipct run --pcap: the lab's router traffic as pcapng, read back with tshark
(its SIP decode and the per-packet comments), imported again and replayed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from sipct.capture.importer import import_capture
from sipct.cli.main import EXIT_OK, examples_dir, main
from sipct.spec.dialog import Send, load_dialog

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(shutil.which("nft") is None, reason="needs nft (apt-get install nftables)"),
    pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark (scripts/setup.sh --dev)"),
]

CANCEL = examples_dir() / "invite-cancel.yaml"
BAD_PORT = examples_dir() / "invite-bad-media-port.yaml"
TCP = examples_dir() / "tcp-coalesced-split.yaml"


def tshark(path, *fields, display="sip"):
    out = subprocess.run(["tshark", "-r", str(path), "-Y", display, "-T", "fields", "-E", "separator=|",
                          *[a for f in fields for a in ("-e", f)]], capture_output=True, text=True, check=True,
                         timeout=60).stdout
    return [line.split("|") for line in out.splitlines()]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("pcap")
    assert main(["run", "--pcap", str(out), str(CANCEL), str(BAD_PORT), str(TCP)]) == EXIT_OK
    return out


def test_both_sides_of_the_router_decode_as_sip_with_the_spec_in_the_comments(run_dir):
    rows = tshark(run_dir / "invite-cancel.pcapng", "frame.interface_name", "sip.Method", "sip.Status-Code",
                  "frame.comment")
    invites = [r for r in rows if r[1] == "INVITE"]
    assert [r[0] for r in invites] == ["br0", "br1"]  # in on the UA's side, out on the server's
    comment = invites[0][3]
    assert "sipct step 0 (line 10)" in comment and re.search(r"spec \(profile [\d.]+\): accept", comment)
    assert "media.expect (set_expected_rtp_rtcp)" in comment
    assert "expectations after the step: udp server:* -> ua:49170 audio (180 s)" in comment
    assert "agrees with the spec" in comment
    assert [r[2] for r in rows if r[2]] == ["183", "183", "200", "200", "487", "487"]
    assert all(r[3].startswith("sipct step ") for r in rows)


def test_a_dropped_packet_is_seen_coming_in_only(run_dir):
    rows = tshark(run_dir / "invite-bad-media-port.pcapng", "frame.interface_name", "frame.comment")
    assert len(rows) == 1 and rows[0][0] == "br0"
    assert ('drop by sdp.media-port-range (process_sdp), the kernel logs "nf_ct_sip: dropping packet: wrong port"'
            in rows[0][1])


def test_tcp_segments_and_handshake_are_commented(run_dir):
    syns = tshark(run_dir / "tcp-coalesced-split.pcapng", "frame.comment",
                  display="tcp.flags.syn == 1 && tcp.flags.ack == 0")
    assert syns and "connect tcp" in syns[0][0]
    acks = tshark(run_dir / "tcp-coalesced-split.pcapng", "frame.comment", display="tcp.len == 0 && tcp.flags.syn == 0")
    assert acks and all(r == [""] for r in acks)


def test_the_capture_imports_back_to_the_dialog_and_runs_again(run_dir, capsys):
    for original, name in ((CANCEL, "invite-cancel"), (TCP, "tcp-coalesced-split")):
        imported = import_capture(run_dir / f"{name}.pcapng", keep_addresses=True)
        want = [s.payload for s in load_dialog(original).steps if isinstance(s, Send)]
        assert [s.payload for s in imported.dialog.steps if isinstance(s, Send)] == want
        assert imported.skipped["forwarded copy (seen again on another interface)"] >= len(want)
    assert main(["run", "--keep-addresses", str(run_dir / "invite-cancel.pcapng")]) == EXIT_OK
    assert ": agree" in capsys.readouterr().out
