"""The spec core alone: SIP messages per second on one core.

Runs the four-message call (INVITE+SDP, 200+SDP, ACK, BYE) through
sipct.spec.helper.SipHelper on fresh masters (a new UA source port per call) and
prints messages per second; goal: at least 50,000. Rates are from CPU time of
this process (best of --repeat runs), so that other work on a shared machine
does not count; the wall-clock rate of the best run is printed too.

In the same run it measures a parse-only baseline: the header lookups every
message of the mix needs (the request or status line, CSeq, Via, and the SDP
lines of the offer/answer), without the helper, the expectation table or the
state machines - how much of the mix is parsing.
Usage: .venv/bin/python bench/spec_core.py [--calls N] [--repeat R]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from collections.abc import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import call_dialog  # noqa: E402

from sipct.spec.helper import Packet, SipHelper  # noqa: E402
from sipct.spec.parse import SIP_HDR_CSEQ, SIP_HDR_VIA_UDP, SipMessage  # noqa: E402
from sipct.spec.profiles import DEFAULT_PROFILE  # noqa: E402
from sipct.spec.sdp import SDP_HDR_CONNECTION, SDP_HDR_MEDIA, SDP_HDR_UNSPEC, SDP_HDR_VERSION  # noqa: E402
from sipct.spec.sdp import get_sdp_header, parse_sdp_addr  # noqa: E402

GOAL = 50_000


Fields = tuple  # Packet's fields: the caller builds each Packet, inside the timing


def call_packets(calls: int) -> list[list[Fields]]:
    dialog = call_dialog()
    hosts = dialog.hosts
    ua = hosts["ua"]
    packets = []
    for call in range(calls):
        ua_port = 10000 + call % 50000  # a new master per call
        one = []
        for s in dialog.steps:
            src, dst = hosts[s.src.host], hosts[s.dst.host]
            sport = ua_port if src == ua and s.src.port == 5060 else s.src.port
            dport = ua_port if dst == ua and s.dst.port == 5060 else s.dst.port
            one.append((src, sport, dst, dport, s.proto, s.payload))
        packets.append(one)
    return packets


def run_mix(packets: list[list[Fields]]) -> None:
    helper = SipHelper()
    now = 0.0
    for call in packets:
        for fields in call:
            result = helper.packet(Packet(*fields), now)
            assert result.accepted
        now += 0.001


def run_parse_only(packets: list[list[Fields]]) -> None:
    for call in packets:
        for fields in call:
            pkt = Packet(*fields)
            buf = pkt.payload
            msg = SipMessage(buf, 0, len(buf), 4, pkt.proto, DEFAULT_PROFILE)
            msg.parse_header_uri(0, SIP_HDR_VIA_UDP)
            assert msg.get_header(0, SIP_HDR_CSEQ)[0] == 1
            ret, sdpoff, _ = get_sdp_header(msg, 0, SDP_HDR_VERSION, SDP_HDR_UNSPEC)
            if ret > 0:
                parse_sdp_addr(msg, sdpoff, SDP_HDR_CONNECTION, SDP_HDR_MEDIA)
                ret, _, _ = get_sdp_header(msg, sdpoff, SDP_HDR_MEDIA, SDP_HDR_UNSPEC)
                assert ret > 0


def best(run: Callable[[list[list[Fields]]], None], packets: list[list[Fields]],
         repeat: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of the fastest of ``repeat`` runs."""
    times = []
    for _ in range(repeat):
        cpu, wall = time.process_time(), time.perf_counter()
        run(packets)
        times.append((time.process_time() - cpu, time.perf_counter() - wall))
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    packets = call_packets(args.calls)
    messages = sum(len(call) for call in packets)
    cpu, wall = best(run_mix, packets, args.repeat)
    rate = messages / cpu
    print(f"spec core: {messages} messages in {cpu:.3f} s CPU = {rate:,.0f} messages/s on one core "
          f"(goal {GOAL:,}: ratio {rate / GOAL:.2f}; wall {messages / wall:,.0f} messages/s)")
    parse_cpu, _ = best(run_parse_only, packets, args.repeat)
    parse_rate = messages / parse_cpu
    print(f"parse only (the mix's header lookups): {parse_rate:,.0f} messages/s, "
          f"{parse_cpu / cpu:.0%} of the mix's time")


if __name__ == "__main__":
    main()
