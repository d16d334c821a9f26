"""The spec core alone: SIP messages per second on one core.

Runs the four-message call (INVITE+SDP, 200+SDP, ACK, BYE) through
sipct.spec.helper.SipHelper on fresh masters (a new UA source port per call) and
prints messages per second; goal: at least 50,000.
Usage: .venv/bin/python bench/spec_core.py [--calls N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import call_dialog  # noqa: E402

from sipct.spec.helper import Packet, SipHelper  # noqa: E402

GOAL = 50_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    args = parser.parse_args()
    dialog = call_dialog()
    hosts = dialog.hosts
    steps = [(hosts[s.src.host], s.src.port, hosts[s.dst.host], s.dst.port, s.proto, s.payload) for s in dialog.steps]
    helper = SipHelper()
    now = 0.0
    started = time.perf_counter()
    for call in range(args.calls):
        ua_port = 10000 + call % 50000  # a new master per call
        for src, sport, dst, dport, proto, payload in steps:
            if sport == 5060 and src == hosts["ua"]:
                sport = ua_port
            if dport == 5060 and dst == hosts["ua"]:
                dport = ua_port
            result = helper.packet(Packet(src, sport, dst, dport, proto, payload), now)
            assert result.accepted
        now += 0.001
    elapsed = time.perf_counter() - started
    messages = args.calls * len(steps)
    rate = messages / elapsed
    print(f"spec core: {messages} messages in {elapsed:.2f} s = {rate:,.0f} messages/s on one core "
          f"(goal {GOAL:,}: ratio {rate / GOAL:.2f})")


if __name__ == "__main__":
    main()
