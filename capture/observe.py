"""``sipct observe``: real user agents (SIPp) call each other across the lab's
router; the capture at the router becomes a dialog (sipct import), the spec
predicts every packet of it, and the prediction is compared per call with
what the kernel did: which packets it forwarded (seen leaving on the other
side of the router) and which expectations it created (ctnetlink events, as
sipct run reads them)."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from sipct.netlink.kernel import RunningKernel, to_spec
from sipct.harness.lab import HostSpec, Lab
from sipct.netlink.socket import CtExpSocket
from sipct.spec.dialog import Send, expectation_key
from sipct.spec.predict import Prediction, predict

from .files import Frame
from .importer import Imported, import_capture
from .packets import IpPacket, decode
from .pcapng import Record, write_pcapng
from .sipp import SippResult, run_calls
from .sniffer import RouterCapture
from .streams import COPY_WINDOW
from sipct.harness.wire import LAB_WIRE

UAC = HostSpec("uac", ("192.0.2.2", "2001:db8:1::2"))
UAS = HostSpec("uas", ("198.51.100.2", "2001:db8:2::2"))
_CALL_ID = re.compile(rb"(?im)^(?:call-id|i)[ \t]*:[ \t]*(\S+)")


@dataclass
class CallReport:
    call_id: str
    steps: list[int] = field(default_factory=list)
    spec_drops: list[int] = field(default_factory=list)  # step indexes
    kernel_drops: list[int] = field(default_factory=list)
    spec_expectations: list[str] = field(default_factory=list)  # created, as dialog files write them
    kernel_expectations: list[str] = field(default_factory=list)
    spec_only: list[str] = field(default_factory=list)

    @property
    def agree(self) -> bool:
        return self.spec_drops == self.kernel_drops and not self.spec_only and (
            Counter(self.spec_expectations) == Counter(self.kernel_expectations))


@dataclass
class ObserveRun:
    transport: str
    family: int
    calls: int
    sipp: SippResult
    pcap: Path
    dialog: Path
    prediction: Prediction
    reports: list[CallReport]
    kernel_only: list[str]  # kernel expectations no call of the spec created

    @property
    def agree(self) -> bool:
        return self.sipp.returncode == 0 and not self.kernel_only and all(r.agree for r in self.reports)


def observe(transport: str, family: int, calls: int, out: Path, kernel: RunningKernel) -> ObserveRun:
    name = f"sipp-{transport}-ipv{family}-{calls}"
    with Lab([UAC, UAS], timeout=0.5) as lab:
        events = CtExpSocket(lab.router_netns)
        try:
            events.subscribe_events()  # before SIPp makes a master (see CtExpSocket.subscribe_events)
            kernel_events = []
            with RouterCapture(lab) as capture:
                sipp = run_calls(lab, "uac", "uas", family, transport, calls, workdir=out,
                                 while_running=lambda: kernel_events.extend(events.drain_events()))
            packets = capture.stop()
            kernel_events.extend(events.drain_events())
        finally:
            events.close()
        interfaces = capture.interfaces
    pcap = out / f"{name}.pcapng"
    records = [Record(p.time_ns, p.interface, p.outgoing, p.frame) for p in sorted(packets, key=lambda p: p.time_ns)]
    write_pcapng(pcap, interfaces, records)
    imported = import_capture(pcap, keep_addresses=True)
    dialog_path = out / f"{name}.yaml"
    dialog_path.write_text(imported.text, encoding="utf-8")
    prediction = predict(imported.dialog, kernel.profile, kernel.params_for(None), wire=LAB_WIRE)
    forwarded = _forwarded(records)
    created = [to_spec(e, 0.0) for kind, e in kernel_events if kind == "new"]
    reports, kernel_only = _per_call(imported, prediction, forwarded, created)
    return ObserveRun(transport, family, calls, sipp, pcap, dialog_path, prediction, reports, kernel_only)


def _forwarded(records: list[Record]) -> dict[int, bool]:
    """Per frame number (1-based) of a packet coming in: did it leave on the other side?"""
    decoded: list[IpPacket | None] = []
    for number, r in enumerate(records, start=1):
        p = decode("<router>", Frame(number, r.time_ns / 1e9, 1, r.frame, len(r.frame), r.interface))
        decoded.append(p if isinstance(p, IpPacket) else None)
    out_copies: dict[tuple, list[tuple[int, int]]] = {}
    for r, p in zip(records, decoded):
        if p is not None and r.outgoing:
            out_copies.setdefault(p.key, []).append((r.time_ns, r.interface))
    result = {}
    for number, (r, p) in enumerate(zip(records, decoded), start=1):
        if p is None or r.outgoing:
            continue
        result[number] = any(r.interface != iface and 0 <= t - r.time_ns <= COPY_WINDOW * 1e9
                             for t, iface in out_copies.get(p.key, ()))
    return result


def _per_call(imported: Imported, prediction: Prediction, forwarded: dict[int, bool],
              created: list) -> tuple[list[CallReport], list[str]]:
    d = imported.dialog
    calls: dict[str, CallReport] = {}
    pending: list[tuple[tuple, str, CallReport]] = []  # what the spec created, in order
    current: CallReport | None = None
    for s, frames in zip(prediction.steps, imported.frames):
        if not isinstance(s.step, Send):
            continue
        match = _CALL_ID.search(s.step.payload)
        call_id = match.group(1).decode("latin-1") if match else (current.call_id if current else "-")
        current = calls.setdefault(call_id, CallReport(call_id))
        current.steps.append(s.index)
        if s.verdict == "drop":
            current.spec_drops.append(s.index)
        if not all(forwarded.get(f, True) for f in frames):
            current.kernel_drops.append(s.index)
        for ev in s.events:
            if ev.kind == "new":
                text = d.symbolic(ev.expectation)
                current.spec_expectations.append(text)
                pending.append((expectation_key(ev.expectation), text, current))
    kernel_only = []
    for e in created:
        key = expectation_key(e)
        hit = next((i for i, (k, _, _) in enumerate(pending) if k == key), None)
        if hit is None:
            kernel_only.append(d.symbolic(e))
            continue
        _, text, report = pending.pop(hit)
        report.kernel_expectations.append(text)
    for _, text, report in pending:
        report.spec_only.append(text)
    return list(calls.values()), kernel_only
