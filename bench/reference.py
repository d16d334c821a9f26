"""The reference helper's core alone: SIP messages per second on one core.

Runs the four-message call (INVITE+SDP, 200+SDP, ACK, BYE) through
sipct.reference.core.HelperCore.decide() as the kernel would queue it: every
call on a fresh master (a new UA port), so each INVITE arrives on an
unconfirmed conntrack and is answered NF_REPEAT first, then decided again
when it comes back confirmed (5 decisions per call). Queued-packet records
(network headers, NFQA_CT facts) are built before the clock starts; netlink
decoding and the ctnetlink round trips are not part of this number.
Usage: .venv/bin/python bench/reference.py [--calls N]
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import call_dialog  # noqa: E402

from sipct.reference.core import HelperCore  # noqa: E402
from sipct.reference.netlink.conntrack import (IP_CT_ESTABLISHED, IP_CT_ESTABLISHED_REPLY, IP_CT_NEW,  # noqa: E402
                                               IPS_CONFIRMED, IPS_SEEN_REPLY, KernelConntrack)
from sipct.reference.netlink.queue import ETH_P_IP, QueuedPacket  # noqa: E402
from sipct.reference.packet import build_packet  # noqa: E402
from sipct.spec.expectation import ConnTuple  # noqa: E402
from sipct.spec.params import ModuleParams  # noqa: E402
from sipct.spec.profiles import HARDENED_6_1_192  # noqa: E402


def queued_call(steps, ua, server, ua_port: int, ct_id: int, first_id: int) -> list[QueuedPacket]:
    """The call's packets as the kernel queues them, the first one twice (before and after NF_REPEAT)."""
    original = ConnTuple(ua, server, 17, ua_port, 5060)
    out = []
    pid = first_id
    for index, (src, payload) in enumerate(steps):
        reply = src != ua
        sport, dport = (5060, ua_port) if reply else (ua_port, 5060)
        data = build_packet(src, sport, server if not reply else ua, dport, 17, payload)
        if index == 0:
            for status, ctinfo in ((0, IP_CT_NEW), (IPS_CONFIRMED, IP_CT_NEW)):
                ct = KernelConntrack(socket.AF_INET, original, original.reply(), ct_id, status, 0, helper="sip",
                                     helper_info=bytes(12))
                out.append(QueuedPacket(0, socket.AF_INET, pid, ETH_P_IP, 4, data, ct, ctinfo))
                pid += 1
            continue
        ct = KernelConntrack(socket.AF_INET, original, original.reply(), ct_id, IPS_CONFIRMED | IPS_SEEN_REPLY, 3600,
                             helper="sip", helper_info=bytes(12))
        out.append(QueuedPacket(0, socket.AF_INET, pid, ETH_P_IP, 4, data, ct,
                                IP_CT_ESTABLISHED_REPLY if reply else IP_CT_ESTABLISHED))
        pid += 1
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args()
    dialog = call_dialog()
    hosts = dialog.hosts
    ua, server = hosts["ua"], hosts["server"]
    steps = [(hosts[s.src.host], s.payload) for s in dialog.steps]
    packets = []
    for call in range(args.calls):
        packets.append(queued_call(steps, ua, server, 10000 + call % 50000, 1000 + call, call * 10))
    core = HelperCore(ModuleParams(), HARDENED_6_1_192)
    now = 0.0
    decisions = ops = 0
    started = time.perf_counter()
    for call in packets:
        for pkt in call:
            decision = core.decide(pkt, now)
            decisions += 1
            for op in decision.ops:
                core.applied(op)
                ops += 1
            assert decision.error is None, decision.error
        now += 0.001
    elapsed = time.perf_counter() - started
    assert core.stats["verdict.accept"] == args.calls * len(steps)
    assert core.pending == 0 and not core.stats["errors"]
    messages = args.calls * len(steps)
    print(f"reference core: {messages} messages ({decisions} decisions, {ops} ctnetlink operations) in "
          f"{elapsed:.2f} s = {messages / elapsed:,.0f} messages/s on one core "
          f"({decisions / elapsed:,.0f} decisions/s)")


if __name__ == "__main__":
    main()
