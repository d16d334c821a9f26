"""Where the lab puts a host, what the router's routing table says, and what
the lab's links carry (datagram and TCP segment sizes).

The spec and the harness share this one rule: an IPv4 host lives in its /24,
an IPv6 host in its /64, and the router has one interface per such network.
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


# --- what the lab's links carry ---------------------------------------------------------------
# The largest UDP payload of one datagram: the 16-bit IPv4 total length less
# its 20-byte header and the 8-byte UDP header; IPv6's payload length counts
# the UDP header but not the 40-byte IPv6 header (jumbograms need a hop-by-hop
# option the lab never sends). udp_sendmsg() refuses more with EMSGSIZE.
UDP_PAYLOAD_MAX = {4: 65_535 - 20 - 8, 6: 65_535 - 8}

# The lab's TCP segment size (MSS): its veths have the default MTU 1500 and the
# endpoints negotiate timestamps, so tcp_mtu_to_mss() takes the IP header
# (20 or 40 bytes), the TCP header (20) and the 12-byte timestamp option off.
TCP_SEGMENT_SIZE = {4: 1500 - 20 - 20 - 12, 6: 1500 - 40 - 20 - 12}

# The most one send step may write on a TCP connection: the lab writes it one
# segment at a time, each read by the peer before the next (wire_segments):
# 1 MiB takes about a second, lab and spec together.
# A 100 KB SIP message, far beyond any real one, fits ten times.
TCP_WRITE_MAX = 1 << 20


def wire_segments(writes: Iterable[bytes], family: int) -> tuple[bytes, ...]:
    """The TCP segments the router's helper sees for these writes.

    sip_help_tcp() parses each segment on its own, so where a write is cut
    decides what it finds. TCP cuts a write longer than the MSS where the stack
    sees fit (GSO may even hand the router one super-segment), so the lab cuts
    it itself: every MSS bytes, each piece written alone and read by the peer
    before the next, which with TCP_NODELAY sends each as exactly one segment.
    """
    size = TCP_SEGMENT_SIZE[family]
    return tuple(write[i:i + size] for write in writes for i in range(0, len(write), size))
