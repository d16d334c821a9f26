"""Send a dialog through the running kernel's SIP helper and observe it.

The lab is built from the dialog's hosts (or reused when it already has
them); before the dialog the router's conntrack and expectation tables are
emptied, the expectation event groups are joined (before any master exists:
a conntrack only gets an event cache if a listener exists when it is created),
and after every step the router's expectation table is dumped over ctnetlink.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial

from sipct.harness.drivers import Delivery, TcpConnection
from sipct.netlink.interrupts import Doing, doing, shielded
from sipct.netlink.kernel import to_spec
from sipct.harness.lab import HostSpec, Lab, LabError
from sipct.netlink.socket import CtExpSocket
from sipct.netlink.ctexp import MasterTuple
from sipct.spec.dialog import Connect, DeleteConntrack, Dialog, Send, Step, Wait
from sipct.spec.expectation import IPPROTO_TCP, Address, Expectation, expectation_key
from sipct.spec.predict import StepPrediction, dialled
from sipct.spec.report import describe_step
from sipct.spec.walk import Connection, Walker
from sipct.harness.wire import LAB_WIRE

# How long a packet may take before it counts as dropped by the helper, when
# the kernel did not log dropping it (the lab's drop log, sipct.harness.droplog,
# ends the wait at once when it did).
DROP_TIMEOUT = 0.25
# When the spec predicts delivery, a late packet is waited for this long: on a
# loaded machine a short timeout would turn a slow delivery into a "drop".
DELIVERY_TIMEOUT = 2.0

class LabCannotCarry(LabError):
    """A step of a dialog the lab could not carry out as the spec models it:
    not a divergence, the kernel never saw the step as written."""

    def __init__(self, dialog: Dialog, index: int, step: Step, reason: str) -> None:
        self.source, self.line, self.index, self.reason = dialog.source, step.line, index, reason
        where = f"{dialog.source}:{step.line}" if step.line else dialog.source
        what = describe_step(dialog, step, wire=LAB_WIRE)
        if isinstance(step, Send):
            what += f", {len(step.payload):,} bytes"
        super().__init__(f"{where}: steps[{index}] ({what}): the lab cannot carry it: {reason}")


@dataclass(frozen=True, slots=True)
class KernelEvent:
    kind: str  # "new" | "destroy"
    expectation: Expectation


@dataclass(frozen=True, slots=True)
class StepObservation:
    index: int
    time: float  # dialog time of the step
    real_elapsed: float  # wall-clock seconds from the dialog's start to the step's table dump
    delivered: bool | None  # None for wait steps
    data: bytes | None  # what the receiver got (None when nothing arrived)
    expectations: tuple[Expectation, ...]
    events: tuple[KernelEvent, ...]
    late: int = 0  # datagrams judged dropped that arrived after all, seen during this step
    # The ends as the receiver saw them: the peer (source) and its own address (destination).
    src: tuple[str, int] | None = None
    dst: tuple[str, int] | None = None
    elsewhere: str | None = None  # the host a datagram reached instead of the receiver (NAT sent it there)
    # The kernel's reason when it logged dropping the step's packet (nf_ct_helper_log(); sipct.harness.droplog).
    dropped: str | None = None


@dataclass
class KernelRun:
    dialog: Dialog
    steps: list[StepObservation] = field(default_factory=list)


def lab_hosts(dialog: Dialog) -> list[HostSpec]:
    return [HostSpec(f"h{i}", (addr,)) for i, addr in enumerate(dialog.hosts.values())]


class DialogRunner:
    """Runs dialogs in one lab, which it builds lazily and can reuse."""

    def __init__(self, lab: Lab | None = None, *, drop_timeout: float = DROP_TIMEOUT) -> None:
        self._lab = lab
        self._own_lab = lab is None
        self.drop_timeout = drop_timeout
        self._netlink: tuple[Lab, CtExpSocket, CtExpSocket] | None = None

    def close(self) -> None:
        with shielded():
            self._close_sockets()
            if self._lab is not None and self._own_lab:
                self._lab.close()
            self._lab = None

    def __enter__(self) -> "DialogRunner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _lab_for(self, dialog: Dialog, ports: tuple[int, ...]) -> tuple[Lab, dict[str, str]]:
        lab = self._lab
        if lab is not None:
            names = _host_names(lab, dialog)
            if names is not None and (not self._own_lab or lab.sip_ports == ports):
                return lab, names
            if not self._own_lab:
                raise ValueError(f"the lab has no host for every address of dialog {dialog.name}")
            self._close_sockets()
            lab.close()
        lab = Lab(lab_hosts(dialog), sip_ports=ports, timeout=self.drop_timeout)
        self._lab = lab
        names = _host_names(lab, dialog)
        assert names is not None
        return lab, names

    def run(self, dialog: Dialog, ports: tuple[int, ...],
            expected: Sequence[bool | None] | None = None,
            on_step: Callable[[Lab, int], None] | None = None,
            predicted: Sequence[StepPrediction] | None = None) -> KernelRun:
        """Run ``dialog``; ``expected`` (per step: will it be delivered?, e.g.
        from the spec) makes the wait for a packet long when it should arrive
        and short when it should not. Late arrivals are counted either way.
        ``on_step(lab, index)`` is called as each step starts (and with
        ``len(dialog.steps)`` after the last): a capture tells the steps'
        packets apart by it."""
        with doing(f"dialog {dialog.name} ({dialog.source})") as task:
            return self._run(dialog, ports, expected, task, on_step, predicted)

    def _run(self, dialog: Dialog, ports: tuple[int, ...], expected: Sequence[bool | None] | None,
             task: Doing, on_step: Callable[[Lab, int], None] | None,
             predicted: Sequence[StepPrediction] | None = None) -> KernelRun:
        lab, names = self._lab_for(dialog, ports)
        # Reset first: the last dialog's TCP connections close under the
        # rules they were made under (a new forward policy or NAT table
        # dropped their FINs, and each close waited for its time-out).
        lab.reset()
        lab.set_nat(dialog.nat, dialog.forward)
        result = KernelRun(dialog)
        ctexp, listener = self._sockets(lab)
        try:
            ctexp.flush()
            listener.drain_events()
            started = time.monotonic()
            walker = Walker(dialog, LAB_WIRE, _LabSteps(lab, names, dialog, ctexp, started, self.drop_timeout,
                                                        expected, predicted))
            stragglers = lab.sweep_stragglers()
            for index, step in enumerate(dialog.steps):
                task.what = partial(_step_text, dialog, index)
                if on_step is not None:
                    on_step(lab, index)
                delivered, data, seen = walker.step(index, step)
                now = walker.now
                dumped = ctexp.dump()
                # After the dump: ctnetlink computes the remaining timeouts while dumping,
                # so the time the dump took under load is part of the drift (harness.diff).
                elapsed = time.monotonic() - started
                table = tuple(sorted((to_spec(e, now) for e in dumped), key=expectation_key))
                events = tuple(KernelEvent(kind, to_spec(e, now)) for kind, e in listener.drain_events())
                late, stragglers = lab.sweep_stragglers() - stragglers, lab.sweep_stragglers()
                result.steps.append(StepObservation(index, now, elapsed, delivered, data, table, events, late,
                                                    *seen))
            if on_step is not None:
                on_step(lab, len(dialog.steps))
        except BaseException:
            self._close_sockets()
            raise
        return result

    def _sockets(self, lab: Lab) -> tuple[CtExpSocket, CtExpSocket]:
        """The router's ctnetlink sockets (dumps; events), kept while the lab lives."""
        if self._netlink is None or self._netlink[0] is not lab:
            self._close_sockets()
            with shielded():  # pyroute2 sockets: see Lab.__init__
                ctexp = CtExpSocket(lab.router_netns)
                listener = CtExpSocket(lab.router_netns)
                listener.subscribe_events()
                self._netlink = (lab, ctexp, listener)
        return self._netlink[1], self._netlink[2]

    def _close_sockets(self) -> None:
        if self._netlink is not None:
            for sock in self._netlink[1:]:
                sock.close()
            self._netlink = None


# What one step made: delivered (None: not a packet step), the bytes the
# receiver read, and the ends as it saw them, the host reached instead and
# the kernel's logged reason for dropping it.
Outcome = tuple[bool | None, bytes | None, tuple]
_NOTHING: tuple = (None, None, None, None)


class _LabSteps:
    """The lab's :class:`~sipct.spec.walk.StepVisitor`: each step carried
    out in the lab; a TCP connection's handle is the lab's TcpConnection."""

    def __init__(self, lab: Lab, names: dict[str, str], dialog: Dialog, ctexp: CtExpSocket, started: float,
                 drop_timeout: float, expected: Sequence[bool | None] | None,
                 predicted: Sequence[StepPrediction] | None) -> None:
        self.lab, self.names, self.dialog, self.ctexp, self.started = lab, names, dialog, ctexp, started
        self.drop_timeout, self.expected, self.predicted = drop_timeout, expected, predicted

    def _timeout(self, index: int) -> float:
        expected = self.expected
        if expected is not None and index < len(expected) and expected[index]:
            return max(self.drop_timeout, DELIVERY_TIMEOUT)
        return self.drop_timeout

    def wait(self, index: int, step: Wait, now: float) -> Outcome:
        _sleep_until(self.started + now)
        # The spec destroys a master at its timeout (master.timeout);
        # the kernel only once something walks over it.
        self.ctexp.reap_expired_conntracks()
        return None, None, _NOTHING

    def delete_conntrack(self, index: int, step: DeleteConntrack, now: float) -> Outcome:
        hosts = self.dialog.hosts
        self.ctexp.delete_conntrack(MasterTuple(hosts[step.src.host], hosts[step.dst.host], step.src.port,
                                                step.dst.port, step.proto))
        return None, None, _NOTHING

    def connect(self, index: int, step: Connect, now: float) -> tuple[Outcome, TcpConnection]:
        dialog, names = self.dialog, self.names
        with _carrying(dialog, index, step):
            conn = self.lab.tcp_connect(names[step.src.host], step.src.port, names[step.dst.host], step.dst.port,
                                        dialog.family, timeout=max(self._timeout(index), DELIVERY_TIMEOUT),
                                        to=_dialled(dialog, step, IPPROTO_TCP))
        _check_segment_size(dialog, index, step, conn)
        return (True, None, _NOTHING), conn

    def send(self, index: int, step: Send, now: float, segments: tuple[bytes, ...],
             connection: Connection[TcpConnection] | None) -> tuple[Outcome, bool]:
        with _carrying(self.dialog, index, step):
            delivery = self._send(index, step, segments, connection)
        outcome = (delivery.delivered, delivery.data,
                   (_endpoint(delivery.src), _endpoint(delivery.dst), delivery.elsewhere, delivery.dropped))
        return outcome, step.proto == IPPROTO_TCP and not delivery.delivered

    def abort(self, index: int, step: Send, now: float, connection: Connection[TcpConnection] | None,
              outcome: Outcome) -> Outcome:
        # TcpConnection.send aborted it already when the segment went missing
        # (a FIN would queue behind the retransmission); abort() is idempotent.
        if connection is not None:
            connection.handle.abort()
        return outcome

    def silent(self, index: int, step: Send, now: float) -> Outcome:
        return False, None, _NOTHING

    def _send(self, index: int, step: Send, segments: tuple[bytes, ...],
              connection: Connection[TcpConnection] | None) -> Delivery:
        lab, names, dialog, family = self.lab, self.names, self.dialog, self.dialog.family
        timeout = self._timeout(index)
        plan = self.predicted[index] if self.predicted is not None and index < len(self.predicted) else None
        # Under NAT the spec says where the packets arrive and what they hold.
        arrivals = plan.arrivals if plan is not None else ()
        if step.proto != IPPROTO_TCP:
            first = arrivals[0] if arrivals else None
            if first is not None and first.host is not None and first.host != step.dst.host:
                # NAT sends it to another host (an expectation's saved address): wait for it there.
                delivery = lab.udp_send(names[step.src.host], step.src.port, names[first.host], first.dport,
                                        step.payload, family=family, timeout=timeout,
                                        to=dialled(dialog, step, step.proto))
                return replace(delivery, delivered=False, elsewhere=first.host if delivery.delivered else None)
            receive_port = first.dport if first is not None and first.host == step.dst.host else None
            return lab.udp_send(names[step.src.host], step.src.port, names[step.dst.host], step.dst.port,
                                step.payload, family=family, timeout=timeout, to=_dialled(dialog, step, step.proto),
                                receive_port=receive_port)
        if connection is None:
            raise ValueError(f"line {step.line}: TCP data on {step.src} -> {step.dst} before a connect step")
        lengths = None
        if arrivals:
            lengths = [len(a.payload) if a is not None else len(seg) for a, seg in zip(arrivals, segments)]
            lengths += [len(seg) for seg in segments[len(lengths):]]
        return connection.handle.send(connection.from_client(step), segments, timeout=timeout,
                                      receive_lengths=lengths)


def _dialled(dialog: Dialog, step: Send | Connect, proto: int) -> tuple | None:
    """Where the sender addresses the packet when NAT (or the step's via:) puts
    the receiver at another address or port than its own."""
    hosts = dialog.hosts
    to = dialled(dialog, step, proto)
    return None if to == (hosts[step.dst.host], step.dst.port) else to


def _endpoint(ep: object) -> tuple[str, int] | None:
    return None if ep is None else (str(ep[0]), int(ep[1]))  # type: ignore[index]


@contextmanager
def _carrying(dialog: Dialog, index: int, step: Step) -> Iterator[None]:
    """An error of the lab's sockets (EMSGSIZE, a failed handshake, ...) is
    the lab's failure to carry the step, not something the helper did."""
    try:
        yield
    except OSError as exc:
        raise LabCannotCarry(dialog, index, step, f"{type(exc).__name__}: {exc}") from exc


def _check_segment_size(dialog: Dialog, index: int, step: Connect, conn: TcpConnection) -> None:
    """The spec cuts TCP writes at the lab's model MSS (LAB_WIRE); on a
    connection with a smaller one, TCP would cut the pieces again and the
    helper would see segments the spec was never given."""
    mss, model = conn.segment_size(), LAB_WIRE.segment_size(dialog.family)
    if mss < model:
        raise LabCannotCarry(dialog, index, step, f"the connection's MSS is {mss} bytes, less than the "
                                                  f"{model} at which the spec cuts IPv{dialog.family} TCP writes")


def _host_names(lab: Lab, dialog: Dialog) -> dict[str, str] | None:
    by_addr: dict[Address, str] = {}
    for host in lab.hosts.values():
        for addr in host.addresses:
            by_addr[addr] = host.name
    names = {}
    for name, addr in dialog.hosts.items():
        if addr not in by_addr:
            return None
        names[name] = by_addr[addr]
    return names


def _step_text(dialog: Dialog, index: int) -> str:
    from sipct.spec.report import describe_step

    step = dialog.steps[index]
    what = describe_step(dialog, step, wire=LAB_WIRE)
    return f"dialog {dialog.name} ({dialog.source}), step {index} (line {step.line}): {what}"


def _sleep_until(deadline: float) -> None:
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 1.0))

