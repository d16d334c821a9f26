"""The one walk over a dialog's steps, for whoever carries them out.

The spec's prediction (sipct.spec.predict), the lab run
(sipct.harness.run.DialogRunner) and the tests' fake kernel each give a
:class:`StepVisitor`; the :class:`Walker` owns what is the same for all of
them:

- the dialog's clock: ``now`` starts at 0 and only wait steps advance it
  (nothing reads a clock; a lab sleeps until it, a model is told it);
- the dispatch on the step kinds;
- what a send step puts on the wire: the :class:`~sipct.spec.wire.Wire`'s
  cut of its writes;
- the TCP connections the connect steps opened: which end is the client,
  what the visitor keeps for each, and whether the wire aborted one after a
  dropped segment - its later send steps then carry nothing.

What a step does - to a helper, a lab or a fake kernel - is the visitor's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from .dialog import Connect, DeleteConntrack, Dialog, Endpoint, Send, Step, Wait
from .expectation import IPPROTO_TCP
from .wire import Wire

H = TypeVar("H")  # what a visitor keeps for one TCP connection
R = TypeVar("R")  # what a visitor makes of one step


@dataclass(slots=True)
class Connection(Generic[H]):
    """A TCP connection a connect step opened, from ``client`` to ``server``."""

    client: Endpoint
    server: Endpoint
    handle: H

    def from_client(self, step: Send) -> bool:
        return step.src == self.client


class StepVisitor(Protocol[H, R]):
    """What one caller does with each kind of step, at dialog time ``now``."""

    def wait(self, index: int, step: Wait, now: float) -> R: ...

    def delete_conntrack(self, index: int, step: DeleteConntrack, now: float) -> R: ...

    def connect(self, index: int, step: Connect, now: float) -> tuple[R, H]:
        """The handshake; also what to keep for the connection."""
        ...

    def send(self, index: int, step: Send, now: float, segments: tuple[bytes, ...],
             connection: Connection[H] | None) -> tuple[R, bool]:
        """The step's datagram or TCP segments (``connection``: the one its
        endpoints opened, if any); also whether one of them was dropped."""
        ...

    def abort(self, index: int, step: Send, now: float, connection: Connection[H] | None, outcome: R) -> R:
        """The wire aborts the TCP stream whose segment ``step`` lost (an RST
        from each end, within the step); ``outcome`` is what :meth:`send`
        made of the step, the result what the step made after all."""
        ...

    def silent(self, index: int, step: Send, now: float) -> R:
        """A send step on a TCP connection the wire aborted: nothing is sent."""
        ...


class Walker(Generic[H, R]):
    """Walks one dialog: call :meth:`step` for each step in turn (a caller
    that stops between steps, e.g. to restart a helper, goes on with the
    same walker)."""

    def __init__(self, dialog: Dialog, wire: Wire, visitor: StepVisitor[H, R]) -> None:
        self.dialog = dialog
        self.wire = wire
        self.visitor = visitor
        self.now = 0.0
        # Both orders of a connection's endpoints name it.
        self.connections: dict[frozenset[Endpoint], Connection[H]] = {}
        # Endpoint pairs whose TCP stream the wire aborted: a dropped segment
        # aborts it with or without a connect step before (data picked up
        # mid-stream); a new connect step opens a live connection again.
        self.aborted: set[frozenset[Endpoint]] = set()

    def step(self, index: int, step: Step) -> R:
        """Step ``index`` of the dialog, through the visitor."""
        visitor = self.visitor
        if isinstance(step, Wait):
            self.now += step.seconds
            return visitor.wait(index, step, self.now)
        if isinstance(step, DeleteConntrack):
            return visitor.delete_conntrack(index, step, self.now)
        pair = frozenset((step.src, step.dst))
        if isinstance(step, Connect):
            outcome, handle = visitor.connect(index, step, self.now)
            self.connections[pair] = Connection(step.src, step.dst, handle)
            self.aborted.discard(pair)
            return outcome
        tcp = step.proto == IPPROTO_TCP
        if tcp and pair in self.aborted:
            return visitor.silent(index, step, self.now)
        connection = self.connections.get(pair) if tcp else None
        outcome, dropped = visitor.send(index, step, self.now, self.wire.segments(step, self.dialog.family),
                                        connection)
        if tcp and dropped and self.wire.abort_after_drop:
            self.aborted.add(pair)
            outcome = visitor.abort(index, step, self.now, connection, outcome)
        return outcome

    def walk(self) -> list[R]:
        """Every step of the dialog."""
        return [self.step(index, step) for index, step in enumerate(self.dialog.steps)]
