"""What carries a dialog's packets to the router, as the caller describes it.

The helper's behaviour is the kernel's and lives in the spec; how the packets
got there is not. ``sip_help_tcp()`` parses each TCP segment on its own, so
where a write is cut decides what it finds, and a dropped segment is either
retransmitted (TCP's timers decide when) or the connection is given up: both
are choices of whoever sends, not of the kernel. The spec is therefore told
them - :data:`sipct.harness.wire.LAB_WIRE` for the netns lab, a test's own for a
test - and predicts for that wire.
"""

from __future__ import annotations

from dataclasses import dataclass

from .dialog import Send
from .expectation import IPPROTO_TCP


@dataclass(frozen=True, slots=True)
class Wire:
    # The TCP segment size (MSS) by IP version: a longer write is cut into
    # pieces of that size, each one segment.
    tcp_segment_size: tuple[tuple[int, int], ...]
    # After a dropped TCP segment both ends abort the connection (an RST from
    # each crosses the router) and nothing more is sent on it; otherwise the
    # next send step goes on as if the segment had been lost for good.
    abort_after_drop: bool

    def segment_size(self, family: int) -> int:
        return dict(self.tcp_segment_size)[family]

    def segments(self, step: Send, family: int) -> tuple[bytes, ...]:
        """What crosses the router for a send step: the datagram, or the TCP
        writes cut at the segment size."""
        if step.proto != IPPROTO_TCP:
            return step.segments
        size = self.segment_size(family)
        return tuple(write[i:i + size] for write in step.segments for i in range(0, len(write), size))
