"""UDP across the router, with and without the kernel SIP helper."""

from __future__ import annotations

import pytest
from sipct.harness.lab import Lab

from tests.support.lab import SERVER, UA, router_conntracks, router_expectations
from tests.support.sip_messages import SERVER4, SERVER6, UA4, UA6, invite

pytestmark = pytest.mark.netns


@pytest.mark.parametrize(
    ("family", "ua", "server"), [(4, UA4, SERVER4), (6, UA6, SERVER6)], ids=["v4", "v6"]
)
def test_udp_crosses_the_router_both_ways(
    clean_lab: Lab, family: int, ua: str, server: str
) -> None:
    # Not SIP ports: plain forwarding, no helper involved.
    there = clean_lab.udp_send("ua", 40000, "server", 40001, b"ping\x00\xff", family=family)
    back = clean_lab.udp_send("server", 40001, "ua", 40000, b"pong", family=family)

    assert there.delivered and there.data == b"ping\x00\xff"
    assert (there.src, there.dst) == ((ua, 40000), (server, 40001))
    assert back.delivered and back.data == b"pong"
    assert (back.src, back.dst) == ((server, 40001), (ua, 40000))
    # It really was routed: the router tracked the flow.
    assert len(router_conntracks(clean_lab)) == 1


def test_helper_drops_invite_with_media_port_below_1024(clean_lab: Lab) -> None:
    # nf_conntrack_sip process_sdp: "wrong port" -> NF_DROP for ports < 1024.
    dropped = clean_lab.udp_send("ua", 5060, "server", 5060, invite(80), timeout=0.3)
    assert not dropped.delivered
    assert dropped.data is None

    clean_lab.reset()
    message = invite(5000)
    passed = clean_lab.udp_send("ua", 5060, "server", 5060, message)
    assert passed.delivered
    assert passed.data == message
    assert (passed.src, passed.dst) == ((UA4, 5060), (SERVER4, 5060))


def test_without_helper_the_same_invite_passes() -> None:
    # The control for the test above: the drop is the helper's, not the lab's.
    with Lab([UA, SERVER], helper=False) as lab:
        message = invite(80)
        delivery = lab.udp_send("ua", 5060, "server", 5060, message)
        assert delivery.delivered and delivery.data == message
        assert router_expectations(lab) == []
        assert len(router_conntracks(lab)) == 1  # conntrack still on in the baseline


def test_invite_creates_rtp_and_rtcp_expectations_and_reset_removes_them(clean_lab: Lab) -> None:
    assert clean_lab.udp_send("ua", 5060, "server", 5060, invite(5000)).delivered

    expectations = router_expectations(clean_lab)
    assert len(expectations) == 2, expectations
    assert any("dport=5000 sip/audio" in e for e in expectations)
    assert any("dport=5001 sip/audio" in e for e in expectations)

    clean_lab.reset()
    assert router_expectations(clean_lab) == []
    assert router_conntracks(clean_lab) == []


def test_reset_empties_the_conntrack_table_of_both_families(clean_lab: Lab) -> None:
    assert clean_lab.udp_send("ua", 40000, "server", 40000, b"x", family=4).delivered
    assert clean_lab.udp_send("ua", 40000, "server", 40000, b"x", family=6).delivered
    assert clean_lab.udp_send("ua", 5060, "server", 5060, invite(5000)).delivered
    assert len(router_conntracks(clean_lab)) == 3

    clean_lab.reset()

    assert router_conntracks(clean_lab) == []
    assert router_expectations(clean_lab) == []


def test_v6_invite_is_delivered_byte_exact(clean_lab: Lab) -> None:
    message = invite(5000, family=6)
    delivery = clean_lab.udp_send("ua", 5060, "server", 5060, message, family=6)
    assert delivery.delivered and delivery.data == message
    assert any("sip/audio" in e for e in router_expectations(clean_lab))
