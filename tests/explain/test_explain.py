"""sipct explain: the words per step, the ladder, the page."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from sipct.cli.main import EXIT_OK, examples_dir, main
from sipct.explain.ladder import ladder_svg
from sipct.explain.words import explain
from sipct.spec.dialog import load_dialog, parse_dialog
from sipct.spec.predict import predict
from sipct.spec.profiles import profile_named
from tests.support.pcaps import Pkt, invite, pcap, udp
from sipct.harness.wire import LAB_WIRE


def words(name: str, profile=None) -> list[str]:
    prediction = predict(load_dialog(examples_dir() / f"{name}.yaml"), *(p for p in [profile] if p), wire=LAB_WIRE)
    return ["\n".join(s.lines()) for s in explain(prediction)]


def test_a_drop_names_its_rule_function_and_kernel_log_line():
    (step,) = words("invite-bad-media-port")
    assert "The helper DROPPED it" in step and "(sdp.media-port-range, process_sdp)" in step
    assert 'The kernel logs: "nf_ct_sip: dropping packet: wrong port"' in step


def test_expectations_created_refreshed_and_removed_with_their_timeouts():
    steps = words("register")
    assert ("Created expectation udp registrar:* -> ua:5060 signalling PERMANENT,INACTIVE, for 180 s - "
            "register.expect (process_register_request)") in steps[0]
    assert ("Refreshed expectation udp registrar:* -> ua:5060 signalling PERMANENT: 600 s left (had 180 s) - "
            "register-response.refresh (refresh_signalling_expectation)") in steps[1]
    assert "Removed expectation udp registrar:* -> ua:5060 signalling PERMANENT - register-response.unbind-flush" \
        in steps[4]
    assert steps[4].endswith("Expectations now: none")


def test_profiles_change_the_explanation():
    # A Contact port 99999: sip_parse_port() (6.1.176 on) refuses the URI, older kernels drop the REGISTER.
    path = Path(__file__).parents[2] / "conformance/scenarios/versions/register-contact-port-99999.yaml"
    old = "\n".join(s for s in map(lambda e: "\n".join(e.lines()),
                                   explain(predict(load_dialog(path), profile_named("6.1.170"), wire=LAB_WIRE))))
    prediction = predict(load_dialog(path), profile_named("6.18"), wire=LAB_WIRE)
    new = "\n".join("\n".join(e.lines()) for e in explain(prediction))
    assert old != new


def test_the_command_explains_a_capture_by_frame_numbers(tmp_path, capsys):
    path = tmp_path / "c.pcap"
    path.write_bytes(pcap([Pkt(1.0, udp("10.0.0.5", 5060, "10.1.1.9", 5060, invite("10.0.0.5", "10.1.1.9")))]))
    page = tmp_path / "c.html"
    assert main(["explain", str(path), "--html", str(page)]) == EXIT_OK
    out = " ".join(capsys.readouterr().out.split())
    assert "0. frame 1: udp ua:5060 -> server:5060: INVITE sip:bob@198.51.100.2 SIP/2.0" in out
    assert "Created expectation udp server:* -> ua:7078 audio, for 180 s - media.expect (set_expected_rtp_rtcp)" in out
    html = page.read_text()
    assert "<svg" in html and not re.search(r"""(src|href)=["']https?:""", html)  # self-contained


def test_control_bytes_reach_the_terminal_escaped(capsys, tmp_path):
    dialog = tmp_path / "evil.yaml"
    dialog.write_text('name: "evil\\e[31m"\nhosts: {a: 192.0.2.2, b: 198.51.100.2}\nsteps:\n'
                      '  - send: a:5060 -> b:5060\n    raw: "OPTIONS \\e]0;owned\\a sip:b SIP/2.0\\r\\n\\r\\n"\n')
    assert main(["explain", str(dialog)]) == EXIT_OK
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\\x1b]0;owned\\x07" in out


def test_the_ladder_is_well_formed_svg_with_a_lane_per_host_and_red_drops():
    svg = ladder_svg(predict(load_dialog(examples_dir() / "invite-bad-media-port.yaml"), wire=LAB_WIRE))
    root = ET.fromstring(svg)
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "ua" in texts and "server" in texts and "dropped: sdp.media-port-range" in texts
    assert 'stroke="#c62828"' in svg
    cancel = ladder_svg(predict(load_dialog(examples_dir() / "invite-cancel.yaml"), wire=LAB_WIRE))
    assert "+ udp server:* -&gt; ua:49170 audio (180 s)" in cancel and "− udp ua:* -&gt; server:3456 audio" in cancel


@pytest.mark.parametrize("payload", ["OPTIONS sip:b SIP/2.0\\x01\\r\\n\\r\\n", "\\x00\\xff\\r\\n"])
def test_the_ladder_holds_any_bytes_as_xml(payload):
    d = parse_dialog(f'hosts: {{a: 192.0.2.2, b: 198.51.100.2}}\nsteps:\n  - send: a:5060 -> b:5060\n'
                     f'    raw: "{payload}"\n')
    ET.fromstring(ladder_svg(predict(d, wire=LAB_WIRE)))


CURATED = sorted([*examples_dir().glob("*.yaml"),
                  *(Path(__file__).resolve().parents[2] / "conformance" / "scenarios").rglob("*.yaml")])


@pytest.mark.parametrize("path", CURATED, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_bundled_dialog_is_explained_and_a_drop_says_who_dropped_it(path: Path):
    dialog = load_dialog(path)
    for s in explain(predict(dialog, wire=LAB_WIRE)):
        text = "\n".join(s.lines())
        if s.verdict == "drop":
            assert ("The helper DROPPED it" in text) != ("The helper did not drop it" in text)
