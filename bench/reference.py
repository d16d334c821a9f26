"""The reference helper's core alone: SIP messages per second on one core.

Runs the four-message call (INVITE+SDP, 200+SDP, ACK, BYE) through
sipct.reference.core.HelperCore.decide() as the kernel would queue it: every
call on a fresh master (a new UA port), so each INVITE arrives on an
unconfirmed conntrack and is answered NF_REPEAT first, then decided again
when it comes back confirmed (5 decisions per call). Queued-packet records
(network headers, NFQA_CT facts) are built before the clock starts.

In the same run, the daemon's whole CPU work per queued packet short of the
kernel: the NFQNL_MSG_PACKET bytes decoded (the struct fast path, and
pyroute2's generic decoding it replaces), the decision, the verdict encoded.
The ctnetlink round trips (one per expectation change) are not part of it.
Rates are CPU time of this process.
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
from sipct.netlink.nfqueue import Verdict, encode_verdict, nfq_msg, packet_from_bytes  # noqa: E402
from sipct.netlink.conntrack import (IP_CT_ESTABLISHED, IP_CT_ESTABLISHED_REPLY, IP_CT_NEW,  # noqa: E402
                                               IPS_CONFIRMED, IPS_SEEN_REPLY, KernelConntrack)
from sipct.netlink.nfqueue import ETH_P_IP, QueuedPacket  # noqa: E402
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
    wire = []
    for call in packets:
        for pkt in call:
            msg = pkt.to_msg()
            msg.encode()
            wire.append(bytes(msg.data))
    messages = args.calls * len(steps)

    core_rate, decisions, ops = run_core(packets, args.calls, len(steps))
    print(f"reference core: {messages} messages ({decisions} decisions, {ops} ctnetlink operations) = "
          f"{core_rate:,.0f} messages/s on one core (CPU time)")
    codecs = {"hot path (struct)": (packet_from_bytes, lambda v: encode_verdict(v, 1, 1, 1)),
              "pyroute2": (pyroute2_decode, pyroute2_encode)}
    rates = {}
    for name, (decoder, encoder) in codecs.items():
        rates[name] = run_wire(wire, decoder, encoder, args.calls, len(steps))
        print(f"daemon per packet, {name}: packet decoded, decided, verdict encoded: "
              f"{rates[name]:,.0f} messages/s on one core")
    fast = rates["hot path (struct)"]
    print(f"  ratios: hot path / pyroute2 {fast / rates['pyroute2']:.2f}; with the codec / core alone "
          f"{fast / core_rate:.2f}")


def pyroute2_decode(data: bytes):
    """pyroute2's generic decoding of the message (what the codec replaced), then the codec."""
    msg = nfq_msg(data)
    msg.decode()
    return QueuedPacket.from_msg(msg)


def pyroute2_encode(verdict: Verdict) -> bytes:
    msg = verdict.to_msg()
    msg.encode()
    return bytes(msg.data)


def run_core(packets, calls: int, per_call: int) -> tuple[float, int, int]:
    core = HelperCore(ModuleParams(), HARDENED_6_1_192)
    now = 0.0
    decisions = ops = 0
    started = time.process_time()
    for call in packets:
        for pkt in call:
            decision = core.decide(pkt, now)
            decisions += 1
            for op in decision.ops:
                core.applied(op)
                ops += 1
            assert decision.error is None, decision.error
        now += 0.001
    elapsed = time.process_time() - started
    assert core.stats["verdict.accept"] == calls * per_call
    assert core.pending == 0 and not core.stats["errors"]
    return calls * per_call / elapsed, decisions, ops


def run_wire(wire: list[bytes], decoder, encoder, calls: int, per_call: int) -> float:
    per_wire_call = len(wire) // calls  # the INVITE is queued twice
    core = HelperCore(ModuleParams(), HARDENED_6_1_192)
    now = 0.0
    started = time.process_time()
    for index, data in enumerate(wire):
        pkt = decoder(data)
        decision = core.decide(pkt, now)
        for op in decision.ops:
            core.applied(op)
        data = encoder(Verdict(pkt.queue_num, pkt.packet_id, decision.verdict, pkt.family,
                               ct_timeout=decision.ct_timeout,
                               helper="sip" if decision.helper_info is not None else None,
                               helper_info=decision.helper_info))
        assert data
        if index % per_wire_call == per_wire_call - 1:
            now += 0.001
    elapsed = time.process_time() - started
    assert core.stats["verdict.accept"] == calls * per_call and not core.stats["errors"]
    return calls * per_call / elapsed


if __name__ == "__main__":
    main()
