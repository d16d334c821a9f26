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
