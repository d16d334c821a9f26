"""Hostile sizes through the running kernel: long TCP messages agree with the
spec because the lab cuts writes where the spec does; what the lab cannot
carry is an error, never a divergence or a traceback."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from sipct.cli.main import EXIT_ERROR, EXIT_OK, main
from sipct.harness.diff import compare
from sipct.harness.lab import Lab, LabError
from sipct.harness.run import DialogRunner, LabCannotCarry, lab_hosts
from sipct.harness.wire import LAB_WIRE, TCP_SEGMENT_SIZE
from sipct.spec.dialog import TCP_WRITE_MAX, UDP_PAYLOAD_MAX, Send, parse_dialog
from sipct.spec.predict import predict

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(shutil.which("nft") is None, reason="needs nft (apt-get install nftables)"),
]

HOSTS = {4: "{ua: 192.0.2.2, server: 198.51.100.2}", 6: "{ua: '2001:db8:1::2', server: '2001:db8:2::2'}"}


def pad_lines(size: int) -> list[str]:
    """X-Pad header lines of ``size`` bytes with their CRLFs (0, or at least 9)."""
    assert size == 0 or size >= 9
    lines = []
    while size:
        line = 89 if size > 169 else size
        lines.append("X-Pad: " + "x" * (line - 9))
        size -= line
    return lines


def invite(family: int, transport: str, media_port: int, call: str, pad: int) -> str:
    return "\n".join([
        "INVITE sip:bob@{server.uri} SIP/2.0",
        f"Via: SIP/2.0/{transport.upper()} {{ua.uri}}:5070;branch=z9hG4bK{call}",
        f"From: <sip:alice@{{ua.uri}}>;tag={call}", "To: <sip:bob@{server.uri}>", f"Call-ID: {call}@ua",
        "CSeq: 1 INVITE", "Contact: <sip:alice@{ua.uri}:5070>", *pad_lines(pad),
        "Content-Type: application/sdp", "Content-Length: {body_length}", "",
        "v=0", f"o=alice 1 1 IN IP{family} {{ua}}", "s=-", f"c=IN IP{family} {{ua}}", "t=0 0",
        f"m=audio {media_port} RTP/AVP 0", ""])


def dialog_file(family: int, transport: str, size: int, count: int = 1) -> str:
    """ua sends ``count`` INVITEs with SDP (media 5000, 5002, ...) of ``size``
    bytes each, in one write (over TCP after a connect)."""
    def text(pad: int) -> str:
        lines = [f"name: invite-{count}x{size}-{transport}-ipv{family}", f"family: ipv{family}",
                 f"transport: {transport}", f"hosts: {HOSTS[family]}", "steps:"]
        if transport == "tcp":
            lines.append("  - connect: ua:5070 -> server:5060")
        lines.append("  - send: ua:5070 -> server:5060")
        lines.append("    messages:" if transport == "tcp" else "    message: |")
        for i in range(count):
            body = invite(family, transport, 5000 + 2 * i, f"call{i}", pad)
            if transport == "tcp":
                lines.append("      - |")
            lines += [("        " if transport == "tcp" else "      ") + line if line else "" for line in
                      body.splitlines()]
        return "\n".join(lines) + "\n"

    bare = len(parse_dialog(text(0)).steps[-1].payload) // count  # the pad renders byte for byte
    return text(size - bare)



def run_and_compare(text: str, kernel, runner):
    dialog = parse_dialog(text, "<sizes>")
    params = kernel.params_for(dialog.params)
    prediction = predict(dialog, kernel.profile, params, wire=LAB_WIRE)
    run = runner.run(dialog, params.ports, [s.delivered for s in prediction.steps])
    return dialog, prediction, run, compare(prediction, run, kernel.release)


@pytest.mark.parametrize("family, size", [(4, 3_000), (4, 12_000), (4, 100_000), (6, 12_000)])
def test_a_long_tcp_invite_agrees_with_the_kernel(family, size, kernel, runner):
    """Cut at the MSS no piece holds the whole INVITE, so sip_help_tcp() finds
    no complete message (msglen > datalen) in any: no media on either side."""
    dialog, prediction, run, comparison = run_and_compare(dialog_file(family, "tcp", size), kernel, runner)
    send = dialog.steps[-1]
    assert len(send.payload) == size
    assert comparison.agree, [(s.index, v) for s in comparison.steps for v in s.divergences]
    assert len(prediction.steps[-1].packets) == -(-size // TCP_SEGMENT_SIZE[family])
    assert run.steps[-1].delivered and run.steps[-1].data == send.payload


@pytest.mark.parametrize("family", [4, 6])
def test_messages_of_one_mss_each_are_each_helped_whole(family, kernel, runner):
    """Eight INVITEs of exactly one MSS in one write: when the lab cuts where
    the spec does, every piece is one whole INVITE and creates its media
    (and flushes the previous one's, process_invite_request())."""
    text = dialog_file(family, "tcp", TCP_SEGMENT_SIZE[family], count=8)
    dialog, prediction, run, comparison = run_and_compare(text, kernel, runner)
    assert len(dialog.steps[-1].payload) == 8 * TCP_SEGMENT_SIZE[family]
    assert comparison.agree, [(s.index, v) for s in comparison.steps for v in s.divergences]
    created = sorted(e.expectation.tuple.dport for e in run.steps[-1].events if e.kind == "new")
    assert created == list(range(5000, 5016))


def test_the_largest_tcp_step_agrees(kernel, runner):
    _, _, run, comparison = run_and_compare(dialog_file(4, "tcp", TCP_WRITE_MAX), kernel, runner)
    assert comparison.agree and run.steps[-1].delivered


@pytest.mark.parametrize("family", [4, 6])
def test_the_largest_udp_datagram_agrees(family, kernel, runner):
    dialog, _, run, comparison = run_and_compare(dialog_file(family, "udp", UDP_PAYLOAD_MAX[family]),
                                                 kernel, runner)
    assert len(dialog.steps[-1].payload) == UDP_PAYLOAD_MAX[family]
    assert comparison.agree and run.steps[-1].delivered


def test_sipct_run_agrees_on_a_12_kb_tcp_invite(tmp_path, capsys):
    path = tmp_path / "invite-12k.yaml"
    path.write_text(dialog_file(4, "tcp", 12_000))
    assert main(["run", str(path)]) == EXIT_OK


@pytest.mark.parametrize("family, transport, size, words", [
    (4, "udp", 70_000, "a UDP payload of 70,000 bytes does not fit in one IPv4 datagram (at most 65,507 bytes)"),
    (6, "udp", 70_000, "a UDP payload of 70,000 bytes does not fit in one IPv6 datagram (at most 65,527 bytes)"),
    (4, "tcp", 10_000_000, "10,000,000 bytes in one TCP send step are more than the lab writes "
                           "(at most 1,048,576 bytes a step)"),
])
def test_sipct_run_refuses_what_the_lab_cannot_carry(tmp_path, capsys, family, transport, size, words):
    path = tmp_path / "too-big.yaml"
    path.write_text(dialog_file(family, transport, size))
    assert main(["run", str(path)]) == EXIT_ERROR
    captured = capsys.readouterr()
    err = " ".join(captured.err.split())
    line = 6 if transport == "udp" else 7
    assert f"{path}:{line}: steps[{line - 6}].send: {words}" in err
    assert "Traceback" not in captured.err + captured.out


def test_a_send_the_socket_refuses_is_lab_cannot_carry(runner):
    """A step that slipped past the load check (the steps swapped after the
    Dialog was made): the kernel's EMSGSIZE is a clear error, and the runner
    runs the next dialog as usual."""
    good = parse_dialog(dialog_file(4, "udp", 1_000), "<sizes>")
    slipped = parse_dialog(dialog_file(4, "udp", 1_000), "<sizes>")
    step = slipped.steps[0]
    object.__setattr__(slipped, "steps", (Send(step.line, step.src, step.dst, step.proto,
                                                (step.payload + b"x" * 65_000,)),))
    with pytest.raises(LabCannotCarry) as info:
        runner.run(slipped, (5060,))
    assert isinstance(info.value, LabError)
    message = str(info.value)
    assert message.startswith("<sizes>:6: steps[0] (udp ua:5070 -> server:5060: INVITE sip:bob@198.51.100.2 SIP/2.0")
    assert f"{len(slipped.steps[0].payload):,} bytes" in message
    assert "Message too long" in message
    assert runner.run(good, (5060,)).steps[0].delivered


def test_a_connection_with_a_smaller_mss_is_a_lab_error():
    """The pieces are only whole segments while the connection's MSS is the
    model's; on a smaller one TCP would cut them again."""
    dialog = parse_dialog(dialog_file(4, "tcp", 3_000), "<sizes>")
    with Lab(lab_hosts(dialog)) as lab:
        subprocess.run(["ip", "-n", lab.host_netns["h0"], "link", "set", "dev", "eth0", "mtu", "1400"],
                       check=True)
        with DialogRunner(lab) as runner:
            with pytest.raises(LabCannotCarry, match=r"^<sizes>:6: steps\[0\] \(connect tcp ua:5070 -> "
                                                     r"server:5060\): the lab cannot carry it: the connection's "
                                                     r"MSS is 1348 bytes, less than the 1448"):
                runner.run(dialog, (5060,))
