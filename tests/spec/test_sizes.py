"""Hostile sizes: what the lab can carry, and the TCP segments the spec is given."""

from __future__ import annotations

import ipaddress

import pytest
from sipct.spec.dialog import (TCP_WRITE_MAX, UDP_PAYLOAD_MAX, Connect, Dialog, DialogError, Endpoint, Send,
                               dump_dialog, parse_dialog)
from sipct.spec.expectation import IPPROTO_TCP, IPPROTO_UDP
from sipct.spec.predict import predict
from sipct.spec.report import describe_step
from sipct.harness.wire import LAB_WIRE, TCP_SEGMENT_SIZE

HOSTS = {4: {"ua": "192.0.2.2", "server": "198.51.100.2"},
         6: {"ua": "2001:db8:1::2", "server": "2001:db8:2::2"}}


def dialog_text(family: int, transport: str, payload: bytes, split_at: list[int] | None = None) -> str:
    """One send of ``payload`` as ``raw`` bytes (after a connect over TCP)."""
    hosts = HOSTS[family]
    lines = [f"family: ipv{family}", f"transport: {transport}",
             f"hosts: {{ua: '{hosts['ua']}', server: '{hosts['server']}'}}", "steps:"]
    if transport == "tcp":
        lines.append("  - connect: ua:5070 -> server:5060")
    lines += ["  - send: ua:5070 -> server:5060", f"    raw: \"{payload.decode('latin-1')}\""]
    if split_at:
        lines.append(f"    split_at: [{', '.join(map(str, split_at))}]")
    return "\n".join(lines) + "\n"


def code_dialog(family: int, *steps) -> Dialog:
    hosts = {name: ipaddress.ip_address(a) for name, a in HOSTS[family].items()}
    return Dialog("built-in-code", "<code>", family, hosts, steps)


def invite(family: int, size: int, media_port: int, call_id: str) -> bytes:
    """An INVITE with an SDP offer, padded with X-Pad headers to ``size`` bytes."""
    ua, server = HOSTS[family]["ua"], HOSTS[family]["server"]
    ua_uri, server_uri = (f"[{ua}]", f"[{server}]") if family == 6 else (ua, server)
    sdp = (f"v=0\r\no=alice 1 1 IN IP{family} {ua}\r\ns=-\r\nc=IN IP{family} {ua}\r\nt=0 0\r\n"
           f"m=audio {media_port} RTP/AVP 0\r\n").encode()
    head = [f"INVITE sip:bob@{server_uri} SIP/2.0", f"Via: SIP/2.0/TCP {ua_uri}:5070;branch=z9hG4bK{call_id}",
            f"From: <sip:alice@{ua_uri}>;tag=1", f"To: <sip:bob@{server_uri}>", f"Call-ID: {call_id}@ua",
            "CSeq: 1 INVITE", f"Contact: <sip:alice@{ua_uri}:5070>"]
    tail = ["Content-Type: application/sdp", f"Content-Length: {len(sdp)}", "", ""]
    short = ("\r\n".join(head + tail)).encode() + sdp
    left = size - len(short)  # bytes of X-Pad lines, each 9 bytes more than its x's
    assert left >= 9, f"an INVITE is at least {len(short) + 9} bytes"
    lines = []
    while left > 0:
        line = 89 if left > 169 else left
        lines.append("X-Pad: " + "x" * (line - 9))
        left -= line
    message = ("\r\n".join(head + lines + tail)).encode() + sdp
    assert len(message) == size
    return message


# --- the cutting rule -----------------------------------------------------------------------------
def wire_segments(writes: list[bytes], family: int) -> tuple[bytes, ...]:
    """The lab's pieces of these TCP writes."""
    return LAB_WIRE.segments(Send(1, Endpoint("ua", 5070), Endpoint("server", 5060), IPPROTO_TCP, tuple(writes)),
                             family)


@pytest.mark.parametrize("family, mss", [(4, 1448), (6, 1428)])
def test_a_long_write_is_cut_at_the_lab_mss(family: int, mss: int) -> None:
    assert TCP_SEGMENT_SIZE[family] == mss
    write = bytes(range(256)) * 12  # 3072 bytes
    pieces = wire_segments([write], family)
    assert [len(p) for p in pieces] == [mss, mss, 3072 - 2 * mss]
    assert b"".join(pieces) == write


@pytest.mark.parametrize("family", [4, 6])
def test_writes_up_to_the_mss_are_left_whole(family: int) -> None:
    mss = TCP_SEGMENT_SIZE[family]
    writes = [b"a" * mss, b"b", b"c" * (mss - 1)]
    assert wire_segments(writes, family) == tuple(writes)
    assert [len(p) for p in wire_segments([b"d" * (mss + 1)], family)] == [mss, 1]


@pytest.mark.parametrize("family", [4, 6])
def test_each_split_at_piece_is_cut_on_its_own(family: int) -> None:
    mss = TCP_SEGMENT_SIZE[family]
    payload = b"x" * 4000
    dialog = parse_dialog(dialog_text(family, "tcp", payload, split_at=[100, 3100]))
    send = dialog.steps[1]
    assert [len(s) for s in send.segments] == [100, 3000, 900]
    assert [len(p) for p in LAB_WIRE.segments(send, family)] == [100, mss, mss, 3000 - 2 * mss, 900]


def test_a_udp_datagram_is_never_cut() -> None:
    payload = b"y" * 5000
    (send,) = parse_dialog(dialog_text(4, "udp", payload)).steps
    assert LAB_WIRE.segments(send, 4) == (payload,)


@pytest.mark.parametrize("family", [4, 6])
def test_dump_writes_the_writes_and_loads_back_to_the_same_segments(family: int) -> None:
    payload = b"0123456789abcdefghijklmnopqrstuvwxyz" * 132  # 4752 bytes
    dialog = parse_dialog(dialog_text(family, "tcp", payload, split_at=[10, 4000]))
    text = dump_dialog(dialog)
    assert "split_at: [10, 4000]" in text  # the dialog's own writes, not the lab's pieces
    again = parse_dialog(text)
    assert again.family == family
    for before, after in zip(dialog.steps, again.steps, strict=True):
        assert type(before) is type(after) and (before.src, before.dst) == (after.src, after.dst)
    assert again.steps[1].segments == dialog.steps[1].segments
    assert LAB_WIRE.segments(again.steps[1], family) == LAB_WIRE.segments(dialog.steps[1], family)


# --- the spec is given the pieces ------------------------------------------------------------------
@pytest.mark.parametrize("family", [4, 6])
def test_the_spec_helps_each_piece_of_a_long_invite(family: int) -> None:
    """A 12 KB INVITE arrives in pieces none of which holds the whole message,
    so sip_help_tcp() stops at each (msglen > datalen): no media."""
    message = invite(family, 12_000, 5000, "long")
    dialog = code_dialog(family, Connect(1, Endpoint("ua", 5070), Endpoint("server", 5060)),
                         Send(2, Endpoint("ua", 5070), Endpoint("server", 5060), IPPROTO_TCP, (message,)))
    step = predict(dialog, wire=LAB_WIRE).steps[1]
    pieces = -(-12_000 // TCP_SEGMENT_SIZE[family])
    assert len(step.packets) == pieces and step.verdict == "accept"
    assert step.expectations == ()
    assert f"({pieces} segments)" in describe_step(dialog, dialog.steps[1], wire=LAB_WIRE)


@pytest.mark.parametrize("family", [4, 6])
def test_messages_of_exactly_one_mss_each_create_their_media(family: int) -> None:
    mss = TCP_SEGMENT_SIZE[family]
    messages = [invite(family, mss, 5000 + 2 * i, f"call{i}") for i in range(8)]
    dialog = code_dialog(family, Connect(1, Endpoint("ua", 5070), Endpoint("server", 5060)),
                         Send(2, Endpoint("ua", 5070), Endpoint("server", 5060), IPPROTO_TCP,
                              (b"".join(messages),)))
    step = predict(dialog, wire=LAB_WIRE).steps[1]
    assert len(step.packets) == 8
    created = sorted({e.expectation.tuple.dport for e in step.events if e.kind == "new"})
    assert created == [5000 + i for i in range(16)]


# --- what the lab cannot carry ---------------------------------------------------------------------
@pytest.mark.parametrize("family", [4, 6])
def test_the_largest_udp_payload_loads(family: int) -> None:
    (send,) = parse_dialog(dialog_text(family, "udp", b"z" * UDP_PAYLOAD_MAX[family])).steps
    assert len(send.payload) == UDP_PAYLOAD_MAX[family]


@pytest.mark.parametrize("family, limit", [(4, "65,507"), (6, "65,527")])
def test_a_udp_payload_over_one_datagram_is_refused_at_load(family: int, limit: str) -> None:
    size = UDP_PAYLOAD_MAX[family] + 1
    with pytest.raises(DialogError) as info:
        parse_dialog(dialog_text(family, "udp", b"z" * size), "big.yaml")
    assert info.value.source == "big.yaml" and info.value.line == 5
    assert str(info.value).startswith("big.yaml:5: steps[0].send: ")
    assert f"{size:,} bytes" in str(info.value) and f"at most {limit} bytes" in str(info.value)
    assert f"IPv{family}" in str(info.value)


def test_an_ipv6_sized_udp_payload_is_too_big_for_ipv4() -> None:
    with pytest.raises(DialogError, match="IPv4 datagram"):
        parse_dialog(dialog_text(4, "udp", b"z" * UDP_PAYLOAD_MAX[6]))


def test_the_largest_tcp_step_loads_and_one_byte_more_is_refused() -> None:
    assert TCP_WRITE_MAX == 1 << 20
    parse_dialog(dialog_text(4, "tcp", b"t" * TCP_WRITE_MAX))
    with pytest.raises(DialogError, match=r"<dialog>:6: steps\[1\].send: 1,048,577 bytes in one TCP send step "
                                          r"are more than the lab writes \(at most 1,048,576 bytes a step\)"):
        parse_dialog(dialog_text(4, "tcp", b"t" * (TCP_WRITE_MAX + 1)))


def test_dialogs_built_in_code_are_refused_the_same_way() -> None:
    too_big = Send(7, Endpoint("ua", 5060), Endpoint("server", 5060), IPPROTO_UDP, (b"u" * 70_000,))
    with pytest.raises(DialogError, match=r"^<code>:7: steps\[0\].send: a UDP payload of 70,000 bytes"):
        code_dialog(4, too_big)
    tcp = Send(9, Endpoint("ua", 5070), Endpoint("server", 5060), IPPROTO_TCP,
               (b"t" * TCP_WRITE_MAX, b"t"))
    with pytest.raises(DialogError, match=r"^<code>:9: steps\[1\].send: 1,048,577 bytes"):
        code_dialog(4, Connect(8, Endpoint("ua", 5070), Endpoint("server", 5060)), tcp)
