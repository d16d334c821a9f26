"""``sipct run --pcap DIR``: the router's traffic of each dialog as pcapng,
every packet a step sent commented with what the spec says of that step
(verdict, rules, expectation table) and what the kernel did, so the run can
be opened in Wireshark and read packet by packet."""

from __future__ import annotations

import re
import time
from bisect import bisect_right
from pathlib import Path

from sipct.explain.words import KERNEL_LOG
from sipct.harness.diff import StepDiff
from sipct.harness.lab import Lab
from sipct.spec.predict import Prediction, StepPrediction
from sipct.spec.report import describe_step

from .files import Frame
from .packets import TH_SYN, IpPacket, decode
from .pcapng import Record, write_pcapng
from .sniffer import Captured, RouterCapture


class StepCapture:
    """The ``on_step`` hook of DialogRunner.run: captures at the router from
    the first step on and notes when each step starts."""

    def __init__(self) -> None:
        self.capture: RouterCapture | None = None
        self.marks: list[int] = []

    def __call__(self, lab: Lab, index: int) -> None:
        if self.capture is None:
            self.capture = RouterCapture(lab)
        self.marks.append(time.time_ns())

    def finish(self) -> list[Captured]:
        return self.capture.stop() if self.capture is not None else []

    def step_of(self, packet: Captured) -> int | None:
        """The step whose time the packet was seen in (None: after the last)."""
        index = bisect_right(self.marks, packet.time_ns) - 1
        return index if 0 <= index < len(self.marks) - 1 else None


def pcap_name(dialog_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", dialog_name).strip("._") or "dialog"


def step_comment(prediction: Prediction, s: StepPrediction, kernel: StepDiff | None, release: str) -> str:
    d = prediction.dialog
    lines = [f"sipct step {s.index} (line {s.step.line}): {describe_step(d, s.step, wire=prediction.wire)}",
             f"spec (profile {prediction.profile.name}): {s.verdict or 'no verdict'}"]
    drop = next((p.drop_rule for p in s.packets if p.drop_rule), None)
    if drop is not None:
        lines[-1] += f" by {drop.id} ({drop.function})" + (
            f', the kernel logs "{KERNEL_LOG.format(drop.log).rstrip()}"' if drop.log else "")
    if s.firings:
        lines.append("rules: " + "; ".join(f"{f.rule.id} ({f.rule.function})" for f in s.firings))
    lines.append("expectations after the step: " + ("; ".join(
        f"{d.symbolic(e)} ({e.remaining(s.time):.0f} s)" for e in s.expectations) or "none"))
    if kernel is not None:
        seen = {True: "delivered", False: "not delivered", None: "-"}[kernel.observation.delivered]
        lines.append(f"kernel {release}: {seen}, " + ("agrees with the spec" if kernel.agree else "DIVERGES: " + "; ".join(
            f"{v.aspect}: spec {v.spec}, kernel {v.kernel}" for v in kernel.divergences)))
    return "\n".join(lines)


def write_run_pcap(path: Path, lab_capture: StepCapture, packets: list[Captured], prediction: Prediction,
                   kernel_steps: tuple[StepDiff, ...], release: str) -> int:
    """Writes the pcapng; returns the number of packets in it."""
    assert lab_capture.capture is not None
    comments = [step_comment(prediction, s, kernel_steps[s.index] if s.index < len(kernel_steps) else None,
                             release) for s in prediction.steps]
    records = []
    for p in sorted(packets, key=lambda p: p.time_ns):
        index = lab_capture.step_of(p)
        comment = comments[index] if index is not None and _carries_step(p) else None
        records.append(Record(p.time_ns, p.interface, p.outgoing, p.frame, comment))
    write_pcapng(path, lab_capture.capture.interfaces, records)
    return len(records)


def _carries_step(p: Captured) -> bool:
    """A datagram, a segment with data, or a SYN: what a step sent (not the ACKs)."""
    try:
        decoded = decode("<capture>", Frame(0, p.time_ns / 1e9, 1, p.frame, len(p.frame)))
    except ValueError:
        return False
    return isinstance(decoded, IpPacket) and (bool(decoded.payload) or bool(decoded.flags & TH_SYN))
