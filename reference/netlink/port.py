"""The daemon's :class:`~sipct.reference.port.KernelPort`: its ctnetlink
expectation socket and its nfnetlink_queue socket."""

from __future__ import annotations

from collections.abc import Iterable

from sipct.netlink.conntrack import KernelConntrack, SeqAdj
from sipct.netlink.ctexp import KernelExpectation
from sipct.netlink.nfqueue import QueuedPacket, Verdict
from sipct.spec.expectation import ConnTuple

from .socket import ExpectationSocket, HelperSocket

__all__ = ["NetlinkPort"]


class NetlinkPort:
    """KernelPort over netlink. ``helper`` names the userspace helper whose
    private data a verdict carries (CTA_HELP_NAME)."""

    def __init__(self, queue: HelperSocket, ops: ExpectationSocket, helper: str) -> None:
        self.queue = queue
        self.ops = ops
        self.helper = helper

    def create_expectation(self, exp: KernelExpectation) -> None:
        self.ops.create(exp.master, exp.tuple, proto=exp.proto, mask=exp.mask, klass=exp.klass, flags=exp.flag_bits,
                        nat=exp.nat, fn=exp.fn)

    def delete_expectation(self, exp: KernelExpectation) -> None:
        self.ops.delete(exp, match_id=False)

    def set_expectation_timeout(self, exp: KernelExpectation, seconds: int) -> None:
        self.ops.set_timeout(exp, seconds)

    def send_verdict(self, packet: QueuedPacket, verdict: int, *, ct_timeout: int | None = None,
                     helper_info: bytes | None = None, exp: KernelExpectation | None = None,
                     exp_helper: str | None = None, payload: bytes | None = None, conntrack: bool = True) -> None:
        self.queue.send_verdict(Verdict(
            packet.queue_num, packet.packet_id, verdict, packet.family, ct_timeout=ct_timeout,
            helper=self.helper if helper_info is not None else None, helper_info=helper_info,
            exp=exp, exp_helper=exp_helper, payload=payload, conntrack=conntrack))

    def update_conntrack(self, packet: QueuedPacket, *, timeout: int | None, helper_info: bytes | None,
                         reply: bool, seq: SeqAdj) -> None:
        assert packet.ct is not None
        self.ops.update_conntrack(packet.ct.original, timeout=timeout,
                                  helper=self.helper if helper_info is not None else None, helper_info=helper_info,
                                  seq_adj={reply: seq})

    def dump_expectations(self) -> list[KernelExpectation]:
        return self.ops.dump()

    def get_conntracks(self, originals: Iterable[ConnTuple]) -> dict[ConnTuple, KernelConntrack]:
        return self.ops.conntracks(originals)
