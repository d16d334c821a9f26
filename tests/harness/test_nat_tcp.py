"""TCP through a NATing router: the sequence numbers on both sides.

nf_nat_sip_seq_adjust() records one adjustment per packet whose messages NAT
made longer or shorter (nf_ct_seqadj_set()); every later segment of that
direction leaves the router with its sequence number moved by the sum. The
spec predicts that shift per segment (Arrival.seq_shift); here the router's
own capture shows each data segment as it came in and as it went out. The
same record moves the acknowledgment numbers of the other direction back
(nf_ct_seq_adjust(): ``ack_seq - other_way->offset``), so the peer's ACKs
must leave with minus what NAT added to the data they acknowledge.
"""

from __future__ import annotations

import pytest

from sipct.capture.files import Frame
from sipct.capture.packets import IpPacket, decode
from sipct.capture.runpcap import StepCapture
from sipct.harness.diff import compare
from sipct.spec.dialog import Send, load_dialog
from sipct.spec.predict import predict

from sipct.cli.main import examples_dir
from sipct.conformance.corpus import SCENARIOS
from sipct.harness.wire import LAB_WIRE

TH_ACK = 0x10


def _segments(hook: StepCapture) -> dict[int, list[tuple[bool, IpPacket]]]:
    """The TCP data segments at the router, by step: (left the router?, segment)."""
    by_step: dict[int, list[tuple[bool, IpPacket]]] = {}
    for p in hook.finish():
        packet = decode("<capture>", Frame(0, p.time_ns / 1e9, 1, p.frame, len(p.frame)))
        if isinstance(packet, IpPacket) and packet.proto == 6 and packet.payload:
            step = hook.step_of(p)
            if step is not None:
                by_step.setdefault(step, []).append((p.outgoing, packet))
    return by_step


@pytest.mark.parametrize("path", [examples_dir() / "nat-tcp-seq-adjust.yaml",
                                  SCENARIOS / "nat" / "ipv6-tcp-seq-adjust.yaml"], ids=["ipv4", "ipv6"])
def test_segments_after_a_rewrite_leave_shifted_by_what_nat_added(kernel, runner, path) -> None:
    dialog = load_dialog(path)
    params = kernel.params_for(dialog.params)
    prediction = predict(dialog, kernel.profile, params, wire=LAB_WIRE)
    hook = StepCapture()
    run = runner.run(dialog, params.ports, [s.delivered for s in prediction.steps], on_step=hook,
                     predicted=prediction.steps)
    assert compare(prediction, run, kernel.release).agree
    segments = _segments(hook)
    shifts_seen = []
    added: dict = {}  # by sender as the segments came in: what NAT added to its data so far
    acks_checked = 0
    for s in prediction.steps:
        if not isinstance(s.step, Send):
            continue
        seen = segments[s.index]
        came = [p for out, p in seen if not out]
        left = [p for out, p in seen if out]
        assert len(came) == len(left) == len(s.arrivals), s.index
        for a, inside, outside in zip(s.arrivals, came, left):
            assert outside.payload == a.payload
            assert (outside.seq - inside.seq) % 2**32 == a.seq_shift % 2**32, s.index
            shifts_seen.append(a.seq_shift)
            peer = [v for k, v in added.items() if k != inside.src]
            if inside.flags & TH_ACK and peer:
                # The steps go one at a time, so this segment acknowledges all the peer sent.
                assert (outside.ack - inside.ack) % 2**32 == -peer[0] % 2**32, s.index
                acks_checked += 1
            added[inside.src] = added.get(inside.src, 0) + len(outside.payload) - len(inside.payload)
    assert acks_checked and any(added.values())
    # IPv4: the INVITE grew the phone's direction, the PBX's 200s shrank its own (IPv6: the other way round).
    assert any(x > 0 for x in shifts_seen) and any(x < 0 for x in shifts_seen)
