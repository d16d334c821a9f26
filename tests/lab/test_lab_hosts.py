"""Host specs and topology planning: pure, no namespaces needed."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_network

import pytest
from sipct.harness.lab import HostSpec, plan_segments, render_ruleset
from sipct.spec.topology import network_of as subnet_of, router_address as gateway_of


def test_hostspec_parses_addresses_and_finds_the_first_of_a_family() -> None:
    host = HostSpec("ua", ("2001:db8:1::2", "192.0.2.2", "192.0.2.3"))
    assert host.addresses[1] == IPv4Address("192.0.2.2")
    assert host.address(4) == IPv4Address("192.0.2.2")
    assert host.address(6) == IPv6Address("2001:db8:1::2")
    with pytest.raises(LookupError):
        HostSpec("v4only", ("192.0.2.2",)).address(6)


@pytest.mark.parametrize("name", ["router", "Bad", "with-dash", "", "x" * 25])
def test_hostspec_rejects_names_that_cannot_name_a_namespace(name: str) -> None:
    with pytest.raises(ValueError):
        HostSpec(name, ("192.0.2.2",))


def test_subnets_and_router_addresses() -> None:
    assert subnet_of(IPv4Address("198.51.100.7")) == ip_network("198.51.100.0/24")
    assert gateway_of(ip_network("198.51.100.0/24")) == IPv4Address("198.51.100.1")
    assert subnet_of(IPv6Address("2001:db8:5:0:1::9")) == ip_network("2001:db8:5::/64")
    assert gateway_of(ip_network("2001:db8:5::/64")) == IPv6Address("2001:db8:5::1")


def test_hosts_sharing_any_subnet_share_a_segment() -> None:
    segments = plan_segments(
        [
            HostSpec("a", ("192.0.2.2", "2001:db8:1::2")),
            HostSpec("b", ("198.51.100.2", "2001:db8:1::3")),  # joins a over IPv6
            HostSpec("c", ("203.0.113.2",)),
        ]
    )
    assert [s.hosts for s in segments] == [("a", "b"), ("c",)]
    assert set(segments[0].subnets) == {
        ip_network("192.0.2.0/24"),
        ip_network("2001:db8:1::/64"),
        ip_network("198.51.100.0/24"),
    }
    assert [s.bridge for s in segments] == ["br0", "br1"]


@pytest.mark.parametrize(
    ("hosts", "complaint"),
    [
        ([HostSpec("a", ("10.0.0.2",))], "documentation"),
        ([HostSpec("a", ("2001:db9::2",))], "documentation"),
        ([HostSpec("a", ("192.0.2.1",))], "router's address"),
        ([HostSpec("a", ("2001:db8::1",))], "router's address"),
        ([HostSpec("a", ("192.0.2.255",))], "not a host address"),
        ([HostSpec("a", ("192.0.2.2",)), HostSpec("b", ("192.0.2.2",))], "both"),
        ([HostSpec("a", ("192.0.2.2",)), HostSpec("a", ("192.0.2.3",))], "duplicate"),
    ],
)
def test_bad_plans_are_refused(hosts: list[HostSpec], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        plan_segments(hosts)


def test_ruleset_attaches_the_helper_only_when_asked() -> None:
    with_helper = render_ruleset((5060, 5080), helper=True)
    assert 'type "sip" protocol udp; l3proto inet;' in with_helper
    assert 'udp dport { 5060, 5080 } ct helper set "sip-udp"' in with_helper
    assert 'tcp dport { 5060, 5080 } ct helper set "sip-tcp"' in with_helper
    assert "priority filter" in with_helper
    baseline = render_ruleset((5060,), helper=False)
    assert "helper" not in baseline and "ct state new" in baseline
