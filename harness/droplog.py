"""The router's drop log: a step stops waiting once the kernel says it dropped the step's packet.

Without it "not delivered" is only ever a time-out at the receiver. The
kernel helper says more: nf_ct_helper_log() logs almost every NF_DROP of
nf_conntrack_sip and nf_nat_sip ("nf_ct_sip: dropping packet: cannot parse
cseq"), and sipct.netlink.nflog receives those logs in the router's
namespace. The log is a shortcut, never the only way to learn of a drop:
some drops log nothing (skb_linearize() failing in sip_help_udp/_tcp, the
helper gone in process_register_request(), nf_nat_sdp_session() failing to
rewrite o=/c= - process_sdp() returns its NF_DROP without a word - and any
drop that is not the helper's, such as the nat table's forward policy), and
a log can be lost (receive buffer full) or cut (a packet longer than
nfnetlink_log copies, NFULNL_COPY_RANGE_MAX), so the delivery time-out stays
where it was. (The
drops of set_expected_rtp_rtcp() and of nf_nat_sip()'s forced_dport checks
log nothing themselves; their callers, process_sdp() and process_sip_msg(),
do.)

A log ends the wait only for the packet just sent: same protocol, same L4
payload, and the sender's end or the dialled end unchanged (NAT at most
rewrote the other one; the helper runs from the confirm hook, after both
NAT hooks). A log of a packet that NAT rewrote on both ends, or that
nf_nat_sip mangled before another part of it failed, matches nothing: that
step waits for its time-out as before. Logs left from earlier steps are
discarded as a step starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import ip_address

from sipct.netlink.nflog import NflogSocket
from sipct.reference.packet import PacketError, parse_packet

__all__ = ["DropLog", "SentPacket"]


@dataclass(frozen=True, slots=True)
class SentPacket:
    """One datagram or TCP segment as its sender wrote it."""

    proto: int
    src: tuple[str, int]  # the sender's address and port
    dst: tuple[str, int]  # where it was addressed
    payload: bytes

    def is_logged(self, packet: bytes) -> bool:
        """Whether a logged packet (from its network header on) is this one."""
        try:
            logged = parse_packet(packet)
        except PacketError:
            return False
        if logged.proto != self.proto or logged.truncated or logged.payload != self.payload:
            return False
        return ((logged.src, logged.sport) == (ip_address(self.src[0]), self.src[1])
                or (logged.dst, logged.dport) == (ip_address(self.dst[0]), self.dst[1]))


class DropLog:
    """The helper's drop logs in network namespace ``netns`` (the router's)."""

    def __init__(self, netns: str) -> None:
        self._sock = NflogSocket(netns)
        self._sent: SentPacket | None = None

    def fileno(self) -> int:
        return self._sock.fileno()

    @property
    def lost(self) -> int:
        return self._sock.lost

    def expect(self, sent: SentPacket) -> None:
        """Watch for ``sent`` from now on; what was logged before is of earlier packets."""
        self._sock.read()
        self._sent = sent

    def dropped(self) -> str | None:
        """The kernel's reason if it logged the drop of the watched packet
        (reads what is queued; poll fileno() to wait for more)."""
        sent = self._sent
        for logged in self._sock.read():
            reason = logged.drop_reason
            if reason is not None and sent is not None and sent.is_logged(logged.packet):
                self._sent = None
                return reason
        return None

    def close(self) -> None:
        self._sock.close()
