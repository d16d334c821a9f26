"""The network a dialog describes: where its hosts are and what the
router's routing table says.

A dialog names only hosts; this one rule says the rest, for the spec and for
the lab that builds the network (sipct.harness.segments): an IPv4 host lives
in its /24, an IPv6 host in its /64, and the router has one interface per
such network, at the network's first address.
``sip_external_media`` asks the routing table whether a media address is
reached through the interface a signalling packet leaves by; with this layout
that is "same network as the packet's destination".
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Iterable

from .expectation import Address

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


# A batch of dialog files names the same few hosts thousands of times, and
# building the network object was a third of loading one with libyaml.
@lru_cache(maxsize=1024)
def network_of(addr: Address) -> Network:
    prefix = 24 if addr.version == 4 else 64
    return ipaddress.ip_network(f"{addr}/{prefix}", strict=False)


def router_address(network: Network) -> Address:
    """The router's address in a lab network: the first host (.1 or ::1)."""
    return network.network_address + 1


class LabRouting:
    """The router's view: one interface per network of the given hosts."""

    def __init__(self, hosts: Iterable[Address]) -> None:
        self.networks = frozenset(network_of(a) for a in hosts)

    def router_owns(self, addr: Address) -> bool:
        """An address of the router itself (its first address in each lab network)."""
        return addr == router_address(network_of(addr)) and network_of(addr) in self.networks

    def same_interface(self, media: Address, packet_dst: Address) -> bool | None:
        """True/False as the route lookup in set_expected_rtp_rtcp() decides;
        None when no route exists (the lab router has no default route)."""
        media_net = network_of(media)
        if media_net not in self.networks:
            return None
        return media_net == network_of(packet_dst)
