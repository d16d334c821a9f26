"""How the lab carries a dialog's packets: the :class:`~sipct.spec.wire.Wire`
the spec predicts the lab for.

TCP cuts a write longer than the MSS where the stack sees fit (GSO may even
hand the router one super-segment), so the lab cuts it itself: every MSS
bytes, each piece written alone and read by the peer before the next, which
with TCP_NODELAY sends each as exactly one segment (sipct.harness.drivers.
TcpConnection.send). A dropped segment would be retransmitted, and helped
again, at moments only the RTO timer decides; the lab aborts the connection
instead (SO_LINGER 0: an RST from each end).
"""

from __future__ import annotations

from sipct.spec.wire import Wire

# The lab's veths have the default MTU 1500 and the endpoints negotiate
# timestamps, so tcp_mtu_to_mss() takes the IP header (20 or 40 bytes), the
# TCP header (20) and the 12-byte timestamp option off.
TCP_SEGMENT_SIZE = {4: 1500 - 20 - 20 - 12, 6: 1500 - 40 - 20 - 12}

LAB_WIRE = Wire(tcp_segment_size=tuple(TCP_SEGMENT_SIZE.items()), abort_after_drop=True)
