"""Carrying a :class:`~sipct.reference.core.Decision` out against a :class:`~sipct.reference.port.KernelPort`.

The one executor of the reference helper: the daemon runs it against
netlink, the tests against their fake kernel. The ctnetlink operations go
first, in order; when the kernel refuses one, the core says what that means
(``HelperCore.failed()``: an undo, another verdict, stop) and the executor
does it. A seqadj change that goes over ctnetlink (IPv6, see the core)
comes last, with the conntrack's timeout and private data; refused, the
failure policy's verdict lets the packet go as it came. Then the verdict
leaves, with the NFQA_EXP the refusal did not cancel.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from pyroute2.netlink.exceptions import NetlinkError

from sipct.netlink.nfqueue import QueuedPacket
from sipct.spec.expectation import NAT_EXPECTFN

from .core import CTNETLINK, Decision, ExpectOp, HelperCore, ReconcileReport
from .port import KernelPort

__all__ = ["apply", "execute", "resync"]

log = logging.getLogger("sipct.helper")


def apply(port: KernelPort, op: ExpectOp, helper_name: str, expectfn: str = NAT_EXPECTFN) -> None:
    """One ctnetlink operation (raises NetlinkError when the kernel refuses it)."""
    if op.via != CTNETLINK:
        raise ValueError(f"{op} goes in a verdict, not over ctnetlink")
    k = op.kernel(helper_name, expectfn)
    if op.kind == "create":
        port.create_expectation(k)
    elif op.kind == "delete":
        port.delete_expectation(k)
    elif op.kind == "timeout":
        port.set_expectation_timeout(k, op.timeout or 0)
    else:
        raise ValueError(f"unknown operation {op.kind}")


def execute(core: HelperCore, port: KernelPort, packet: QueuedPacket, decision: Decision) -> int:
    """Run ``decision`` for ``packet``: its operations, then its verdict.
    Returns the verdict sent. Raises what the port raises besides a refusal."""
    verdict, exp = decision.verdict, decision.exp
    payload = decision.packet
    name = core.helper_name
    for op in decision.ops:
        try:
            apply(port, op, name, core.nat_expectfn)
            core.applied(op)
            continue
        except NetlinkError as exc:
            failure = core.failed(decision, op, exc.code)
        log.log(logging.INFO if failure.verdict is None else logging.WARNING, "%s: %s", op, failure.reason)
        for undo in failure.undo:
            try:
                apply(port, undo, name, core.nat_expectfn)
                core.applied(undo)
            except NetlinkError as exc:
                log.info("%s: %s", undo, os.strerror(exc.code))
        if failure.verdict is not None:
            verdict = failure.verdict
        if failure.stop:
            exp = None  # it came after the refused operation
            break
    if verdict != decision.verdict:
        payload = None
    seqadj = decision.seqadj if payload is not None else None
    if seqadj is not None and seqadj.via == CTNETLINK:
        try:
            port.update_conntrack(packet, timeout=decision.ct_timeout, helper_info=decision.helper_info,
                                  reply=seqadj.reply, seq=seqadj.seq)
            core.seqadj_applied(seqadj)
        except NetlinkError as exc:
            failure = core.update_failed(decision, exc.code)
            log.warning("%s: %s", seqadj, failure.reason)
            verdict, payload, seqadj = failure.verdict, None, None
    glue = decision.ct_in_verdict or payload is None
    port.send_verdict(packet, verdict, ct_timeout=decision.ct_timeout if glue else None,
                      helper_info=decision.helper_info if glue else None,
                      exp=None if exp is None else exp.kernel(name, core.nat_expectfn), exp_helper=None if exp is None else exp.helper,
                      payload=payload, conntrack=glue)
    if seqadj is not None and seqadj.via != CTNETLINK:
        core.seqadj_applied(seqadj)
    if exp is not None:
        core.applied(exp)
    return verdict


def resync(core: HelperCore, port: KernelPort, clock: Callable[[], float]) -> ReconcileReport:
    """Make the core's shadow the kernel's table: a dump, the masters the
    shadow lacks, and ``HelperCore.reconcile()`` at ``clock()`` after the reads."""
    dump = port.dump_expectations()
    masters = port.get_conntracks(core.missing_masters(dump))
    return core.reconcile(dump, masters, clock())
