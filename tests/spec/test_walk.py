"""The dialog step walker: its clock, its dispatch, its TCP connections and the wire's abort."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from pathlib import Path

from sipct.harness.wire import LAB_WIRE
from sipct.spec.dialog import Connect, DeleteConntrack, Dialog, Endpoint, Send, Wait, load_dialog
from sipct.spec.expectation import IPPROTO_TCP, IPPROTO_UDP
from sipct.spec.predict import predict
from sipct.spec.walk import Walker
from sipct.spec.wire import Wire

UA, UA2, SRV = Endpoint("ua", 5070), Endpoint("ua", 5072), Endpoint("server", 5060)
HOSTS = {"ua": ipaddress.ip_address("192.0.2.2"), "server": ipaddress.ip_address("198.51.100.2")}
ABORTING = Wire(tcp_segment_size=((4, 4), (6, 4)), abort_after_drop=True)


class Recorder:
    """A visitor that writes down what it is asked, and drops the segments it is told to."""

    def __init__(self, drop: set[bytes] = frozenset()) -> None:
        self.drop = drop
        self.calls: list[tuple] = []

    def wait(self, index, step, now):
        self.calls.append(("wait", index, now))
        return index

    def delete_conntrack(self, index, step, now):
        self.calls.append(("delete", index, now))
        return index

    def connect(self, index, step, now):
        self.calls.append(("connect", index, now))
        return index, f"conn{index}"

    def send(self, index, step, now, segments, connection):
        handle = None if connection is None else (connection.handle, connection.from_client(step))
        self.calls.append(("send", index, now, segments, handle))
        return index, any(s in self.drop for s in segments)

    def abort(self, index, step, now, connection, outcome):
        self.calls.append(("abort", index, None if connection is None else connection.handle))
        return -outcome

    def silent(self, index, step, now):
        self.calls.append(("silent", index, now))
        return None


def dialog(*steps) -> Dialog:
    return Dialog("walk", "<code>", 4, HOSTS, steps)


def tcp(src: Endpoint, dst: Endpoint, *writes: bytes) -> Send:
    return Send(0, src, dst, IPPROTO_TCP, writes)


def test_only_wait_steps_advance_the_clock() -> None:
    d = dialog(Wait(0, 1.5), Send(0, UA, SRV, IPPROTO_UDP, (b"hello",)), DeleteConntrack(0, UA, SRV, IPPROTO_UDP),
               Wait(0, 2))
    visitor = Recorder()
    walker = Walker(d, ABORTING, visitor)
    assert walker.walk() == [0, 1, 2, 3]
    assert visitor.calls == [("wait", 0, 1.5), ("send", 1, 1.5, (b"hello",), None), ("delete", 2, 1.5),
                             ("wait", 3, 3.5)]
    assert walker.now == 3.5


def test_a_send_gets_the_wire_cut_and_the_connection_of_its_endpoints_either_way() -> None:
    d = dialog(Connect(0, UA, SRV), tcp(UA, SRV, b"abcdefghij", b"k"), tcp(SRV, UA, b"xy"),
               tcp(UA2, SRV, b"mid"))
    visitor = Recorder()
    Walker(d, ABORTING, visitor).walk()
    assert visitor.calls[1:] == [("send", 1, 0.0, (b"abcd", b"efgh", b"ij", b"k"), ("conn0", True)),
                                 ("send", 2, 0.0, (b"xy",), ("conn0", False)),
                                 ("send", 3, 0.0, (b"mid",), None)]  # no connect step: picked up mid-stream


def test_a_dropped_segment_aborts_its_stream_and_silences_it_until_a_new_connect() -> None:
    d = dialog(Connect(0, UA, SRV), Connect(0, UA2, SRV), tcp(UA, SRV, b"drop"), tcp(SRV, UA, b"more"),
               tcp(UA2, SRV, b"fine"), Connect(0, UA, SRV), tcp(UA, SRV, b"again"))
    visitor = Recorder(drop={b"drop"})
    outcomes = Walker(d, ABORTING, visitor).walk()
    assert outcomes == [0, 1, -2, None, 4, 5, 6]
    kinds = [c[:2] for c in visitor.calls]
    assert kinds == [("connect", 0), ("connect", 1), ("send", 2), ("abort", 2), ("silent", 3), ("send", 4),
                     ("connect", 5), ("send", 6)]
    assert visitor.calls[3] == ("abort", 2, "conn0")
    assert visitor.calls[-1][4] == ("conn5", True)


def test_a_dropped_segment_without_a_connection_aborts_too() -> None:
    d = dialog(tcp(UA, SRV, b"drop"), tcp(UA, SRV, b"next"))
    visitor = Recorder(drop={b"drop"})
    Walker(d, ABORTING, visitor).walk()
    assert [c[:3] for c in visitor.calls] == [("send", 0, 0.0), ("abort", 0, None), ("silent", 1, 0.0)]


def test_a_wire_that_does_not_abort_sends_on() -> None:
    d = dialog(Connect(0, UA, SRV), tcp(UA, SRV, b"drop"), tcp(UA, SRV, b"next"))
    visitor = Recorder(drop={b"drop"})
    Walker(d, Wire(((4, 1448),), abort_after_drop=False), visitor).walk()
    assert [c[0] for c in visitor.calls] == ["connect", "send", "send"]


def test_a_dropped_udp_datagram_aborts_nothing() -> None:
    d = dialog(Send(0, UA, SRV, IPPROTO_UDP, (b"drop",)), Send(0, UA, SRV, IPPROTO_UDP, (b"next",)))
    visitor = Recorder(drop={b"drop"})
    Walker(d, ABORTING, visitor).walk()
    assert [c[0] for c in visitor.calls] == ["send", "send"]


def test_a_walk_stopped_between_steps_goes_on() -> None:
    d = dialog(Wait(0, 1), Connect(0, UA, SRV), tcp(UA, SRV, b"drop"), Wait(0, 1), tcp(UA, SRV, b"next"))
    visitor = Recorder(drop={b"drop"})
    walker = Walker(d, ABORTING, visitor)
    first = [walker.step(i, s) for i, s in enumerate(d.steps[:3])]
    rest = [walker.step(i, s) for i, s in enumerate(d.steps[3:], start=3)]
    assert first + rest == Walker(d, ABORTING, Recorder(drop={b"drop"})).walk()
    assert visitor.calls[-1] == ("silent", 4, 2.0)


def test_the_prediction_follows_its_wire_after_a_dropped_segment() -> None:
    """Every reply of this master is dropped (nat.forced-dport-tcp): on the
    lab's wire the connection is aborted and a second reply never crosses; on
    a wire that sends on, the helper sees it and drops it again."""
    scenario = load_dialog(Path(__file__).resolve().parents[2] / "conformance/scenarios/nat/tcp-forced-dport.yaml")
    d = replace(scenario, steps=scenario.steps + (scenario.steps[-1],))
    aborted = predict(d, wire=LAB_WIRE).steps[-1]
    assert aborted.packets == () and aborted.verdict == "drop"
    sent_on = predict(d, wire=replace(LAB_WIRE, abort_after_drop=False)).steps[-1]
    assert len(sent_on.packets) == 1 and sent_on.packets[0].drop_rule.id == "nat.forced-dport-tcp"
