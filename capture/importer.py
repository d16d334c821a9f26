"""``sipct import``: a pcap or pcapng capture as a dialog file.

Frames are decoded (packets.py), the SIP packets put in order as the lab
would replay them (streams.py), the endpoints mapped onto lab hosts and the
messages rewritten to match (addresses.py), and the steps written as a
dialog a person can read (writer.py), which is loaded back to check that it
says exactly what the capture carried.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from sipct.spec.dialog import Connect, Dialog, DialogError, Endpoint, Send, Step, Wait, parse_dialog
from sipct.spec.expectation import IPPROTO_TCP, Address
from sipct.spec.params import SIP_PORT, ModuleParams

from .addresses import (AddressPlan, AddressPlanError, Edit, address_edits, addresses_in, apply_edits,
                        message_edits, moved_offset, plan_addresses)
from .files import CaptureError, capture_format, read_frames
from .messages import datagram_message, leading_messages
from .packets import IpPacket, Skipped, decode
from .streams import Data, Handshake, sip_streams
from .writer import render_dialog


@dataclass(frozen=True, slots=True)
class Imported:
    dialog: Dialog  # each step's line is its first frame number (0 for waits)
    text: str  # the dialog file
    frames: tuple[tuple[int, ...], ...]  # per step, the frames it replays
    plan: AddressPlan
    skipped: Counter
    sip_packets: int
    masters: int

    def summary(self) -> str:
        skipped = sum(self.skipped.values())
        parts = ", ".join(f"{n} {why}" for why, n in self.skipped.most_common())
        return (f"{self.sip_packets} SIP packets in {self.masters} master(s) became {len(self.dialog.steps)} steps; "
                f"{skipped} frames skipped" + (f" ({parts})" if parts else ""))


def is_capture(path: Path) -> bool:
    return capture_format(path) is not None


def import_capture(path: str | Path, *, ports: tuple[int, ...] = (), keep_addresses: bool = False,
                   max_wait: float | None = None, family: int | None = None) -> Imported:
    path = Path(path)
    source = str(path)
    ports = tuple(dict.fromkeys((SIP_PORT, *ports)))
    skipped: Counter = Counter()
    packets: dict[int, list[IpPacket]] = {4: [], 6: []}
    for frame in read_frames(path):
        decoded = decode(source, frame)
        if isinstance(decoded, Skipped):
            skipped[decoded.reason] += 1
        else:
            packets[decoded.family].append(decoded)
    sip = {f: [p for p in ps if p.sport in ports or p.dport in ports] for f, ps in packets.items()}
    if family is None:
        if sip[4] and sip[6]:
            raise CaptureError(source, None, f"the capture has SIP over IPv4 ({len(sip[4])} packets) and IPv6 "
                                             f"({len(sip[6])}); a dialog is one family: import with --family 4 "
                                             f"or --family 6")
        family = 6 if sip[6] else 4
    other = 10 - family
    if packets[other]:
        skipped[f"IPv{other} (importing IPv{family})"] += len(packets[other])
    streams = sip_streams(source, packets[family], ports, skipped)
    if not streams.events:
        raise CaptureError(source, None, f"no SIP packets (UDP or TCP with payload on port "
                                         f"{', '.join(map(str, ports))}; give others with --port)")
    plan = _plan(source, family, streams.events, keep_addresses)
    steps, notes, frames = _steps(streams.events, plan, max_wait)
    params = ModuleParams(ports=ports) if ports != (SIP_PORT,) else None
    name = path.stem
    description = (f"Imported from {path.name} by sipct import: {sum(isinstance(e, Data) for e in streams.events)} "
                   f"SIP packets, frame numbers in the comments.")
    text = _verified(source, name, description, family, params, plan, steps, notes)
    dialog = parse_dialog(text, source)
    # The file the user has is the capture: point at its frames, not at lines of a text never written.
    lined = tuple(dataclasses.replace(step, line=f[0] if f else 0) for step, f in zip(dialog.steps, frames))
    dialog = dataclasses.replace(dialog, steps=lined)
    sends = sum(isinstance(e, Data) for e in streams.events)
    return Imported(dialog, text, tuple(frames), plan, skipped, sends, len(streams.masters))


def _plan(source: str, family: int, events: list, keep: bool) -> AddressPlan:
    endpoints: dict[Address, None] = {}
    talks: set[frozenset[Address]] = set()
    mentioned: dict[Address, None] = {}
    for e in events:
        a, b = (e.client, e.server) if isinstance(e, Handshake) else (e.src, e.dst)
        endpoints.update({a[0]: None, b[0]: None})
        talks.add(frozenset((a[0], b[0])))
        if isinstance(e, Data):
            mentioned.update(dict.fromkeys(addresses_in(e.payload, family)))
    for pair in talks:
        if len(pair) == 1:
            raise CaptureError(source, None, f"{next(iter(pair))} sends SIP to itself; the lab needs two hosts")
    try:
        return plan_addresses(family, list(endpoints), talks, mentioned, keep)
    except AddressPlanError as exc:
        raise CaptureError(source, None, str(exc)) from None


def _steps(events: list, plan: AddressPlan, max_wait: float | None
           ) -> tuple[list[Step], list[str], list[tuple[int, ...]]]:
    rewritten = _rewrite_tcp_streams(events, plan)
    steps: list[Step] = []
    notes: list[str] = []
    frames: list[tuple[int, ...]] = []
    clock: float | None = None
    i = 0
    while i < len(events):
        e = events[i]
        when = e.time if clock is None else max(e.time, clock)
        gap = 0.0 if clock is None else when - clock
        if gap > 0:
            seconds = round(min(gap, max_wait) if max_wait is not None else gap, 3)
            if seconds > 0:
                steps.append(Wait(0, seconds))
                notes.append("" if seconds == round(gap, 3) else f"{gap:.3f} s in the capture (--max-wait)")
                frames.append(())
        clock = when
        if isinstance(e, Handshake):
            steps.append(Connect(0, _endpoint(plan, e.client), _endpoint(plan, e.server)))
            notes.append(f"frames {', '.join(map(str, e.frames))}: TCP handshake" if e.frames else
                         "the capture has no handshake for this connection: the lab makes one")
            frames.append(e.frames or (events[i + 1].frame,))
            i += 1
            continue
        if e.proto != IPPROTO_TCP:
            message = datagram_message(e.payload)
            payload = apply_edits(e.payload, message_edits(e.payload, message, plan))
            steps.append(Send(0, _endpoint(plan, e.src), _endpoint(plan, e.dst), e.proto, (payload,)))
            notes.append(f"frame {e.frame}")
            frames.append((e.frame,))
            i += 1
            continue
        # A TCP step: this segment and the next ones of the same direction, up to where a message ends.
        run = [i]
        ends = rewritten.message_ends[(e.src, e.dst)]
        while rewritten.span[run[-1]][1] not in ends and run[-1] + 1 < len(events):
            n = events[run[-1] + 1]
            if not (isinstance(n, Data) and n.proto == IPPROTO_TCP and (n.src, n.dst) == (e.src, e.dst)):
                break
            run.append(run[-1] + 1)
        stream = rewritten.data[(e.src, e.dst)]
        segments = tuple(stream[slice(*rewritten.span[j])] for j in run)
        steps.append(Send(0, _endpoint(plan, e.src), _endpoint(plan, e.dst), IPPROTO_TCP,
                          tuple(s for s in segments if s)))
        numbers = tuple(events[j].frame for j in run)
        notes.append(f"frame{'s' if len(numbers) > 1 else ''} {', '.join(map(str, numbers))}"
                     + (" (segments as captured: split_at)" if len(numbers) > 1 else ""))
        frames.append(numbers)
        clock = max(clock, events[run[-1]].time)
        i = run[-1] + 1
    return steps, notes, frames


@dataclass
class _TcpStreams:
    data: dict[tuple, bytes]  # (src, dst) -> the rewritten byte stream
    span: dict[int, tuple[int, int]]  # event index -> its bytes in the rewritten stream
    message_ends: dict[tuple, set[int]]


def _rewrite_tcp_streams(events: list, plan: AddressPlan) -> _TcpStreams:
    """Each direction's bytes rewritten as one stream: a message (and an
    address in it) may run across segments."""
    raw: dict[tuple, list[tuple[int, bytes]]] = {}
    for index, e in enumerate(events):
        if isinstance(e, Data) and e.proto == IPPROTO_TCP:
            raw.setdefault((e.src, e.dst), []).append((index, e.payload))
    out = _TcpStreams({}, {}, {})
    for direction, pieces in raw.items():
        stream = b"".join(p for _, p in pieces)
        messages, parsed = leading_messages(stream)
        edits: list[Edit] = [edit for m in messages for edit in message_edits(stream, m, plan)]
        edits += address_edits(stream, parsed, len(stream), plan)
        out.data[direction] = apply_edits(stream, edits)
        out.message_ends[direction] = {moved_offset(m.end, edits) for m in messages}
        at = 0
        for index, piece in pieces:
            out.span[index] = (moved_offset(at, edits), moved_offset(at + len(piece), edits))
            at += len(piece)
    return out


def _endpoint(plan: AddressPlan, ep: tuple[Address, int]) -> Endpoint:
    return Endpoint(plan.host(ep[0]), ep[1])


def _verified(source: str, name: str, description: str, family: int, params: ModuleParams | None,
              plan: AddressPlan, steps: list[Step], notes: list[str]) -> str:
    """The dialog text, each step written readably where loading it back gives
    the captured bytes, and as raw bytes where it does not."""
    raw: set[int] = set()
    for _ in range(2):
        text = render_dialog(name, description, family, params, plan, steps, notes, raw)
        try:
            loaded = parse_dialog(text, source)
        except DialogError as exc:
            raise CaptureError(source, None, f"the dialog written for the capture does not load ({exc}); "
                                             f"please report this with the capture") from None
        differ = {i for i, (a, b) in enumerate(zip(steps, loaded.steps))
                  if isinstance(a, Send) and (not isinstance(b, Send) or b.segments != a.segments)}
        if not differ:
            return text
        raw |= differ
    raise CaptureError(source, None, f"steps {sorted(differ)} of the dialog written for the capture do not load "
                                     f"back as captured; please report this with the capture")
