"""sipct import: captures written with dpkt become dialogs that say what the
capture carried, on the lab's addresses."""

from __future__ import annotations

import ipaddress

import pytest

from sipct.capture.importer import import_capture
from sipct.cli.main import EXIT_ERROR, EXIT_OK, main
from sipct.spec.dialog import Connect, Send, Wait, load_dialog
from sipct.spec.predict import predict
from tests.support.pcaps import Pkt, TcpFlow, invite, ok, pcap, pcap_cut, pcapng, tcp, udp
from sipct.harness.wire import LAB_WIRE

UA, SERVER = "10.0.0.5", "10.1.1.9"


def write(tmp_path, data: bytes, name: str = "call.pcap"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def sends(dialog):
    return [s for s in dialog.steps if isinstance(s, Send)]


def test_a_udp_call_lands_on_documentation_addresses_with_its_sdp_rewritten(tmp_path):
    path = write(tmp_path, pcap([Pkt(10.0, udp(UA, 5060, SERVER, 5060, invite(UA, SERVER))),
                                 Pkt(10.25, udp(SERVER, 5060, UA, 5060, ok(UA, SERVER)))]))
    imported = import_capture(path)
    d = imported.dialog
    assert d.hosts == {"ua": ipaddress.ip_address("192.0.2.2"), "server": ipaddress.ip_address("198.51.100.2")}
    first = sends(d)[0].payload
    assert b"10.0.0.5" not in first and b"c=IN IP4 192.0.2.2\r\n" in first
    head, body = first.split(b"\r\n\r\n", 1)
    # 10.0.0.5 -> 192.0.2.2 is one byte longer, twice in the body
    assert f"Content-Length: {len(body)}".encode() in head
    assert isinstance(d.steps[1], Wait) and d.steps[1].seconds == 0.25
    assert [s.line for s in sends(d)] == [1, 2]  # the frame numbers
    assert "message: |" in imported.text and "{body_length}" in imported.text and "# frame 1" in imported.text
    prediction = predict(d, wire=LAB_WIRE)
    assert [d.symbolic(e) for e in prediction.steps[0].expectations] == [
        "udp server:* -> ua:7078 audio", "udp server:* -> ua:7079 audio"]


def test_the_written_file_loads_back_to_the_same_dialog(tmp_path):
    path = write(tmp_path, pcap([Pkt(1.0, udp(UA, 5060, SERVER, 5060, invite(UA, SERVER))),
                                 Pkt(2.0, udp(SERVER, 5060, UA, 5060, b"SIP/2.0 100 \xff\x00 odd\r\n\r\n"))]))
    out = tmp_path / "call.yaml"
    assert main(["import", str(path), "-o", str(out)]) == EXIT_OK
    loaded = load_dialog(out)
    imported = import_capture(path)
    assert [s.payload for s in sends(loaded)] == [s.payload for s in sends(imported.dialog)]
    assert sends(loaded)[1].payload == b"SIP/2.0 100 \xff\x00 odd\r\n\r\n"
    assert 'raw: "SIP/2.0 100 \\xff\\x00 odd\\r\\n' in out.read_text()  # not text: raw bytes


def test_tcp_over_ipv6_keeps_the_segments_and_drops_retransmissions(tmp_path):
    ua, server = "fd00::5", "fd00:1::9"
    flow = TcpFlow((ua, 40000), (server, 5060))
    message = invite(ua, f"[{server}]", uri_ua=f"[{ua}]")
    reply = ok(f"[{ua}]", server)
    frames = flow.handshake()
    first, second = flow.send(True, message[:100]), flow.send(True, message[100:])
    frames += [first, first, second, flow.send(False, reply + reply)]
    path = write(tmp_path, pcapng([Pkt(5.0 + i / 100, f) for i, f in enumerate(frames)]), "tcp.pcapng")
    imported = import_capture(path)
    d = imported.dialog
    assert d.family == 6 and str(d.hosts["ua"]) == "2001:db8:1::2" and str(d.hosts["server"]) == "2001:db8:2::2"
    kinds = [type(s).__name__ for s in d.steps if not isinstance(s, Wait)]
    assert kinds == ["Connect", "Send", "Send"]
    connect = next(s for s in d.steps if isinstance(s, Connect))
    assert (str(connect.src), str(connect.dst)) == ("ua:40000", "server:5060") and connect.line == 1
    invite_step, reply_step = sends(d)
    assert len(invite_step.segments) == 2 and invite_step.payload.startswith(b"INVITE sip:bob@[2001:db8:2::2]")
    assert b"c=IN IP6 2001:db8:1::2" in invite_step.payload
    assert imported.frames[-1] == (7,) and imported.skipped["TCP retransmission"] == 1
    assert "messages:" in imported.text and "split_at:" in imported.text and "{ua.uri}" in imported.text
    assert predict(d, wire=LAB_WIRE).steps[-1].verdict == "accept"


def test_forwarded_copies_on_a_second_interface_are_skipped(tmp_path):
    frame = udp(UA, 5060, SERVER, 5060, invite(UA, SERVER))
    path = write(tmp_path, pcapng([Pkt(1.0, frame, 0), Pkt(1.0001, frame, 1),
                                   Pkt(1.6, frame, 0)], interfaces=2), "router.pcapng")
    imported = import_capture(path)
    assert len(sends(imported.dialog)) == 2  # the retransmission 0.6 s later stays
    assert imported.skipped["forwarded copy (seen again on another interface)"] == 1


def test_non_sip_frames_are_skipped_and_counted(tmp_path):
    path = write(tmp_path, pcap([Pkt(1.0, udp(UA, 40000, SERVER, 53, b"dns")),
                                 Pkt(1.1, b"\xff" * 60),
                                 Pkt(1.2, udp(UA, 5060, SERVER, 5060, invite(UA, SERVER)))]))
    imported = import_capture(path)
    assert imported.skipped == {"not on a SIP port": 1, "not IP": 1}
    assert "2 frames skipped (" in imported.summary()


def test_other_sip_ports_with_port(tmp_path):
    path = write(tmp_path, pcap([Pkt(1.0, udp(UA, 5080, SERVER, 5080, invite(UA, SERVER)))]))
    with pytest.raises(ValueError, match="no SIP packets"):
        import_capture(path)
    d = import_capture(path, ports=(5080,)).dialog
    assert d.params.ports == (5060, 5080)


@pytest.mark.parametrize("cut, expected", [
    (lambda data: data[:-10], "frame 2: the packet data is cut short"),
    (lambda data: data[:24 + 16 + 8], "frame 1: the packet data is cut short"),
    (lambda data: data[:30], "frame 1: the record header is cut short"),
    (lambda data: b"\0\0\0\0" + data[4:], "not a pcap or pcapng capture"),
])
def test_a_truncated_or_foreign_file_is_a_clear_error(tmp_path, capsys, cut, expected):
    data = pcap([Pkt(1.0, udp(UA, 5060, SERVER, 5060, invite(UA, SERVER))),
                 Pkt(2.0, udp(SERVER, 5060, UA, 5060, ok(UA, SERVER)))])
    path = write(tmp_path, cut(data))
    assert main(["import", str(path)]) == EXIT_ERROR
    err = " ".join(capsys.readouterr().err.split())
    assert expected in err and str(path) in err and "Traceback" not in err


def test_a_truncated_pcapng_block_names_its_frame(tmp_path, capsys):
    data = pcapng([Pkt(1.0, udp(UA, 5060, SERVER, 5060, invite(UA, SERVER))),
                   Pkt(2.0, udp(SERVER, 5060, UA, 5060, ok(UA, SERVER)))])
    path = write(tmp_path, data[:-40], "cut.pcapng")
    assert main(["spec", str(path)]) == EXIT_ERROR
    err = " ".join(capsys.readouterr().err.split())  # rich wraps the line
    assert "cut.pcapng: frame 2: the block at byte 476 is cut short (160 of 200 bytes)" in err


def test_a_sip_packet_cut_by_the_snaplen_is_refused(tmp_path):
    path = write(tmp_path, pcap_cut([Pkt(1.0, udp(UA, 5060, SERVER, 5060, invite(UA, SERVER)))], 200))
    with pytest.raises(ValueError, match=r"frame 1: the SIP payload is cut: .* 200 of its \d+ bytes"):
        import_capture(path)


def test_keep_addresses_takes_lab_addresses_and_refuses_others(tmp_path):
    private = write(tmp_path, pcap([Pkt(1.0, udp(UA, 5060, SERVER, 5060, invite(UA, SERVER)))]), "p.pcap")
    with pytest.raises(ValueError, match="10.0.0.5 is not a documentation address"):
        import_capture(private, keep_addresses=True)
    same = write(tmp_path, pcap([Pkt(1.0, udp("192.0.2.2", 5060, "192.0.2.3", 5060, b"OPTIONS x SIP/2.0\r\n\r\n"))]),
                 "s.pcap")
    with pytest.raises(ValueError, match="inside one network"):
        import_capture(same, keep_addresses=True)
    lab = write(tmp_path, pcap([Pkt(1.0, udp("203.0.113.7", 5060, "192.0.2.9", 5060,
                                             invite("203.0.113.7", "192.0.2.9")))]), "l.pcap")
    d = import_capture(lab, keep_addresses=True).dialog
    assert [str(a) for a in d.hosts.values()] == ["203.0.113.7", "192.0.2.9"]


def test_max_wait_compresses_pauses(tmp_path):
    path = write(tmp_path, pcap([Pkt(1.0, udp(UA, 5060, SERVER, 5060, invite(UA, SERVER))),
                                 Pkt(61.0, udp(SERVER, 5060, UA, 5060, ok(UA, SERVER)))]))
    assert import_capture(path).dialog.steps[1].seconds == 60
    imported = import_capture(path, max_wait=2)
    assert imported.dialog.steps[1].seconds == 2 and "60.000 s in the capture (--max-wait)" in imported.text


def test_four_ipv4_hosts_share_three_networks_without_a_packet_inside_one(tmp_path):
    hosts = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
    proxy = "10.9.9.9"
    frames = [Pkt(1.0 + i, udp(h, 5060, proxy, 5060, b"OPTIONS sip:p SIP/2.0\r\nCSeq: 1 OPTIONS\r\n\r\n"))
              for i, h in enumerate(hosts)]
    d = import_capture(write(tmp_path, pcap(frames))).dialog
    nets = {name: ipaddress.ip_network(f"{a}/24", strict=False) for name, a in d.hosts.items()}
    assert len(set(nets.values())) == 3
    assert all(nets[s.src.host] != nets[s.dst.host] for s in sends(d))


def test_an_address_only_the_sdp_names_is_rewritten_too(tmp_path):
    message = invite(UA, SERVER).replace(b"c=IN IP4 10.0.0.5", b"c=IN IP4 172.16.0.77")
    d = import_capture(write(tmp_path, pcap([Pkt(1.0, udp(UA, 5060, SERVER, 5060, message))]))).dialog
    payload = sends(d)[0].payload
    assert b"172.16.0.77" not in payload and b"c=IN IP4 203.0.113.254" in payload
    # not the sender's address: with sip_direct_media the kernel expects nothing
    assert predict(d, wire=LAB_WIRE).steps[0].expectations == ()


def test_hold_address_stays(tmp_path):
    message = invite(UA, SERVER).replace(b"c=IN IP4 10.0.0.5", b"c=IN IP4 0.0.0.0")
    d = import_capture(write(tmp_path, pcap([Pkt(1.0, udp(UA, 5060, SERVER, 5060, message))]))).dialog
    assert b"c=IN IP4 0.0.0.0" in sends(d)[0].payload


def test_a_tcp_gap_is_an_error(tmp_path):
    flow = TcpFlow(("10.0.0.5", 40000), (SERVER, 5060))
    frames = flow.handshake()
    flow.send(True, b"lost segment")
    frames.append(flow.send(True, invite(UA, SERVER)))
    with pytest.raises(ValueError, match="frame 4: 12 bytes of the TCP stream 10.0.0.5:40000 -> 10.1.1.9:5060"):
        import_capture(write(tmp_path, pcap([Pkt(1.0 + i, f) for i, f in enumerate(frames)])))


def test_a_connection_without_its_handshake_gets_a_connect_step(tmp_path):
    frames = [tcp(UA, 40000, SERVER, 5060, 77, invite(UA, SERVER))]
    imported = import_capture(write(tmp_path, pcap([Pkt(1.0, f) for f in frames])))
    assert isinstance(imported.dialog.steps[0], Connect)
    assert "no handshake for this connection" in imported.text


def test_a_linux_cooked_capture_on_a_router_keeps_each_packet_once(tmp_path):
    import io
    import struct

    import dpkt

    def cooked(pkttype: int, frame: bytes) -> bytes:
        return struct.pack("!HHH8sH", pkttype, 1, 6, b"\x02" * 6 + b"\0\0", 0x0800) + frame[14:]

    frame = udp(UA, 5060, SERVER, 5060, invite(UA, SERVER))
    out = io.BytesIO()
    writer = dpkt.pcap.Writer(out, linktype=113)  # tcpdump -i any
    writer.writepkt(cooked(0, frame), 1.0)  # in from the UA
    writer.writepkt(cooked(4, frame), 1.00005)  # forwarded: out towards the server
    imported = import_capture(write(tmp_path, out.getvalue()))
    assert len(sends(imported.dialog)) == 1
    assert imported.skipped["forwarded copy (seen again on another interface)"] == 1
