"""SIP over real TCP connections through the router's helper."""

from __future__ import annotations

import pytest
from sipct.harness.lab import Lab

from tests.support.lab import router_conntracks, router_expectations
from tests.support.sip_messages import SERVER4, UA4, invite, response

pytestmark = pytest.mark.netns


def test_segments_arrive_as_written(clean_lab: Lab) -> None:
    first = invite(5000, transport="TCP", call_id="one", cseq=1)
    second = invite(5002, transport="TCP", call_id="two", cseq=2)
    third = invite(5004, transport="TCP", call_id="three", cseq=3)
    conn = clean_lab.tcp_connect("ua", 40000, "server", 5060)
    assert (conn.client_endpoint, conn.server_endpoint) == ((UA4, 40000), (SERVER4, 5060))

    # Two messages in one segment, then one message split over two.
    delivery = conn.send(True, [first + second, third[:100], third[100:]])

    assert delivery.delivered
    assert delivery.data == first + second + third
    assert (delivery.src, delivery.dst) == ((UA4, 40000), (SERVER4, 5060))
    # The helper parsed the two-message segment (each INVITE flushes the
    # master's earlier media expectations, so the second one's remain) and
    # left the split message alone: an incomplete message is not parsed.
    expectations = router_expectations(clean_lab)
    assert sorted(e.split("dport=")[1].split()[0] for e in expectations) == ["5002", "5003"]

    reply = conn.send(False, [response("200 OK", "INVITE", call_id="two", cseq=2)])
    assert reply.delivered
    assert (reply.src, reply.dst) == ((SERVER4, 5060), (UA4, 40000))


def test_v6_connection(clean_lab: Lab) -> None:
    conn = clean_lab.tcp_connect("ua", 40000, "server", 5060, 6)
    message = invite(5000, family=6, transport="TCP")
    assert conn.send(True, [message[:10], message[10:]]).data == message


def test_dropped_segment_is_reported_and_reset_recovers(clean_lab: Lab) -> None:
    conn = clean_lab.tcp_connect("ua", 40000, "server", 5060)
    dropped = conn.send(True, [invite(80, transport="TCP")], timeout=0.2)
    assert not dropped.delivered
    assert dropped.data is None

    clean_lab.reset()  # the stuck connection is aborted, not waited for
    assert conn.closed
    assert router_conntracks(clean_lab) == []

    # Same 4-tuple at once: nothing of the old connection is in the way.
    again = clean_lab.tcp_connect("ua", 40000, "server", 5060)
    message = invite(5000, transport="TCP")
    assert again.send(True, [message]).data == message


def test_graceful_close_allows_reusing_the_same_ports(clean_lab: Lab) -> None:
    for attempt in range(3):
        conn = clean_lab.tcp_connect("ua", 40000, "server", 5060)
        message = invite(5000, transport="TCP", cseq=attempt + 1)
        assert conn.send(True, [message]).delivered
        clean_lab.reset()
        assert conn.closed


MASQUERADED_TCP = """
name: masq-tcp
hosts: {ua: 192.0.2.2, server: 198.51.100.2}
nat:
  - masquerade: 192.0.2.0/24
steps:
  - connect: ua:5060 -> server:5060
  - send: ua:5060 -> server:5060
    transport: tcp
    message: |
      OPTIONS sip:b@{server.uri} SIP/2.0
      Via: SIP/2.0/TCP {ua.uri}:5060;branch=z9hG4bK1
      From: <sip:a@{ua.uri}>;tag=1
      To: <sip:b@{server.uri}>
      Call-ID: 1@{ua}
      CSeq: 1 OPTIONS
      Content-Length: 0

"""


def test_the_last_dialog_s_connections_close_before_the_next_dialog_s_rules_load() -> None:
    # The next dialog's NAT table was loaded before the lab closed the last
    # dialog's TCP connections: with the masquerade's chains gone no nat hook
    # translated the server's FIN back (it reached the router, which answered
    # RST), and each close waited for its time-out.
    from dataclasses import replace

    from sipct.harness.run import DialogRunner
    from sipct.harness.wire import LAB_WIRE
    from sipct.spec.dialog import parse_dialog
    from sipct.spec.natmap import NatTopology
    from sipct.spec.predict import predict

    masqueraded = parse_dialog(MASQUERADED_TCP, "masq-tcp")
    with DialogRunner() as runner:
        for dialog in (masqueraded, replace(masqueraded, nat=NatTopology()), masqueraded):
            prediction = predict(dialog, wire=LAB_WIRE)
            run = runner.run(dialog, (5060,), [s.delivered for s in prediction.steps], predicted=prediction.steps)
            assert all(step.delivered is not False for step in run.steps)
        assert runner._lab is not None and runner._lab.close_timeouts == 0
