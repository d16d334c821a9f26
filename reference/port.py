"""The kernel as the reference helper's decisions reach it.

:class:`~sipct.reference.core.HelperCore` decides without sockets; what it
decides is carried out through a :class:`KernelPort` - by one executor,
:mod:`sipct.reference.execute`. The daemon's netlink side
(:class:`~sipct.reference.netlink.port.NetlinkPort`: ctnetlink and
nfnetlink_queue) implements it, and so does the tests' fake kernel, so the
tests run the daemon's executor, not a copy of it.

A refusal is a ``pyroute2`` ``NetlinkError`` whose ``code`` is the errno the
kernel answered (what a netlink ACK carries); anything else a port raises is
an internal error.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from sipct.netlink.conntrack import KernelConntrack, SeqAdj
from sipct.netlink.ctexp import KernelExpectation
from sipct.netlink.nfqueue import QueuedPacket
from sipct.spec.expectation import ConnTuple

__all__ = ["KernelPort"]


class KernelPort(Protocol):
    """The operations of a userspace helper on the kernel's tables."""

    def create_expectation(self, exp: KernelExpectation) -> None:
        """IPCTNL_MSG_EXP_NEW with NLM_F_CREATE|NLM_F_EXCL (ctnetlink_create_expect():
        the master must be confirmed; nf_ct_expect_related_report() without
        NF_CT_EXP_F_SKIP_MASTER)."""

    def delete_expectation(self, exp: KernelExpectation) -> None:
        """IPCTNL_MSG_EXP_DELETE of the expectation covering ``exp.tuple`` (ctnetlink_del_expect())."""

    def set_expectation_timeout(self, exp: KernelExpectation, seconds: int) -> None:
        """IPCTNL_MSG_EXP_NEW on an existing expectation (ctnetlink_change_expect())."""

    def send_verdict(self, packet: QueuedPacket, verdict: int, *, ct_timeout: int | None = None,
                     helper_info: bytes | None = None, exp: KernelExpectation | None = None,
                     exp_helper: str | None = None, payload: bytes | None = None, conntrack: bool = True) -> None:
        """NFQNL_MSG_VERDICT for ``packet``: NFQA_CT with the conntrack's new
        timeout and the helper's private data, NFQA_EXP with an expectation
        (ctnetlink_glue_attach_expect(), whose errors are not reported) and
        the helper its connection gets, NFQA_PAYLOAD with the packet that
        replaces it (nfqnl_mangle(); then seq_adjust with the length change,
        with NFQA_CT only). ``conntrack`` False: no NFQA_CT at all (nor NFQA_EXP)."""

    def update_conntrack(self, packet: QueuedPacket, *, timeout: int | None, helper_info: bytes | None,
                         reply: bool, seq: SeqAdj) -> None:
        """IPCTNL_MSG_CT_NEW without NLM_F_CREATE/EXCL on ``packet``'s conntrack
        (ctnetlink_change_conntrack()): CTA_HELP with ``helper_info``, CTA_TIMEOUT,
        and ``seq`` as CTA_SEQ_ADJ_REPLY or _ORIG (ctnetlink_change_seq_adj())."""

    def dump_expectations(self) -> list[KernelExpectation]:
        """Every expectation of the namespace (a ctnetlink dump)."""

    def get_conntracks(self, originals: Iterable[ConnTuple]) -> Mapping[ConnTuple, KernelConntrack]:
        """The conntracks with these original tuples that exist (IPCTNL_MSG_CT_GET each)."""
