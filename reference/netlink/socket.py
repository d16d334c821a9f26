"""The helper's netlink sockets (its messages' codecs are sipct.netlink's).

`HelperSocket` speaks nfnetlink_cthelper and nfnetlink_queue on one
NETLINK_NETFILTER socket, as conntrackd's cthelper.c does: it registers the
userspace helper, owns the queue (the kernel binds a queue to the port id of
the socket that sent NFQNL_CFG_CMD_BIND), receives the queued packets and
sends the verdicts. `ExpectationSocket` is the harness's ctnetlink
expectation socket plus the two requests a helper needs besides
create/delete/dump: a new timeout for an expectation, and one conntrack.

What each errno means is said at the request, with the kernel function
that returns it; `HelperNetlinkError` carries that text.
"""

from __future__ import annotations

import errno
import os
import select
import socket as _socket
import struct
from collections.abc import Callable, Iterable
from typing import Any

from pyroute2.netlink import (NETLINK_NETFILTER, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST,
                              NLMSG_DONE, NLMSG_ERROR)
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.nfnetlink.nfctsocket import IPCTNL_MSG_CT_GET, IPCTNL_MSG_CT_NEW

from sipct.netlink.conntrack import KernelConntrack, SeqAdj, conntrack_from_msg, ct_msg, tuple_attr, update_msg
from sipct.netlink.ctexp import IPCTNL_MSG_EXP_NEW, NFNLGRP_CONNTRACK_EXP_DESTROY, KernelExpectation, exp_msg_type
from sipct.netlink.cthelper import (NFNL_MSG_CTHELPER_DEL, NFNL_MSG_CTHELPER_GET, NFNL_MSG_CTHELPER_NEW,
                                    UserspaceHelper, cthelper_msg, cthelper_msg_type, helper_from_bytes)
from sipct.netlink.netns import entered_netns
from sipct.netlink.nfqueue import (NFQA_CFG_F_CONNTRACK, NFQA_CFG_F_FAIL_OPEN, NFQNL_CFG_CMD_BIND,
                                   NFQNL_CFG_CMD_UNBIND, NFQNL_COPY_PACKET, NFQNL_MSG_PACKET, QueueConfig,
                                   QueuedPacket, Verdict, encode_verdict, packet_from_bytes, queue_msg_type)
from sipct.netlink.socket import CtExpSocket
from sipct.netlink.wire import NLMSG, netlink_messages
from sipct.spec.expectation import ConnTuple

__all__ = ["ExpectationSocket", "HelperNetlinkError", "HelperSocket", "netlink_text", "subsystem_errors"]

SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
_ERRNO = struct.Struct("=i")

_NO_CTHELPER = ("the kernel has no nfnetlink_cthelper: `modprobe nfnetlink_cthelper` "
                "(kernel option CONFIG_NF_CT_NETLINK_HELPER)")
_NO_QUEUE = "the kernel has no nfnetlink_queue: `modprobe nfnetlink_queue` (CONFIG_NETFILTER_NETLINK_QUEUE)"
_NO_GLUE = ("queued packets cannot carry their conntrack (NFQA_CT): the kernel lacks "
            "CONFIG_NETFILTER_NETLINK_GLUE_CT, or ctnetlink is missing (`modprobe nf_conntrack_netlink`)")
_ROOT = "needs CAP_NET_ADMIN (run as root)"

# errno -> meaning, per request (nfnetlink_rcv_msg() answers EINVAL for a subsystem nobody registered).
_MEANINGS: dict[str, dict[int, str]] = {
    "register": {
        errno.EPERM: _ROOT,
        errno.EINVAL: _NO_CTHELPER + ", or a malformed policy (nfnl_cthelper_parse_expect_policy)",
        errno.EBUSY: ("a helper of that name and protocol exists already - the kernel's own SIP helper? "
                      "(nf_conntrack_sip is loaded: `modprobe -r nf_nat_sip nf_conntrack_sip` and keep it from "
                      "loading, or choose another helper name), or its policies or private data size differ "
                      "(nfnl_cthelper_update)"),
        errno.EEXIST: "registered already (NLM_F_EXCL)",
        errno.ENOENT: "conntrack's helper table is missing (nf_conntrack_helper_register)",
    },
    "unregister": {
        errno.EPERM: _ROOT,
        errno.EINVAL: _NO_CTHELPER,
        errno.EBUSY: "still in use: an nft `ct helper` object (or an iptables CT target) refers to it",
        errno.ENOENT: "no such helper (nfnl_cthelper_del)",
    },
    "dump helpers": {errno.EPERM: _ROOT, errno.EINVAL: _NO_CTHELPER},
    "bind queue": {
        errno.EPERM: "the queue is bound by another process (another helper, conntrackd?), or " + _ROOT,
        errno.EINVAL: _NO_QUEUE,
        errno.EOPNOTSUPP: _NO_GLUE,
        errno.EBUSY: "the queue is bound already",
    },
    "unbind queue": {errno.ENODEV: "the queue is not bound", errno.EPERM: "the queue belongs to another process"},
    "probe queue": {errno.EINVAL: _NO_QUEUE, errno.EOPNOTSUPP: _NO_GLUE,
                    errno.EPERM: "the queue is bound by another process (another helper, conntrackd?), or " + _ROOT},
}


class HelperNetlinkError(NetlinkError):
    """A refused cthelper/queue request, with what it means."""

    def __str__(self) -> str:
        return netlink_text(self)


def netlink_text(exc: BaseException) -> str:
    """A NetlinkError's message without pyroute2's (code, text) tuple form."""
    args = getattr(exc, "args", ())
    if isinstance(exc, NetlinkError) and len(args) > 1 and isinstance(args[1], str):
        return args[1]
    return str(exc)


def _explained(code: int, op: str) -> HelperNetlinkError:
    text = f"{op}: {os.strerror(code)}"
    reason = _MEANINGS.get(op, {}).get(code)
    if reason:
        text += f": {reason}"
    return HelperNetlinkError(code, text)


def subsystem_errors() -> dict[str, dict[int, str]]:
    """The errno meanings, for documentation and --check."""
    return _MEANINGS


class HelperSocket:
    """nfnetlink_cthelper + nfnetlink_queue on one netlink socket, made in
    network namespace ``netns`` (None: the caller's). Single-threaded."""

    def __init__(self, netns: str | None = None, rcvbuf: int = 4 << 20) -> None:
        with entered_netns(netns):
            sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW, NETLINK_NETFILTER)
        try:
            sock.bind((0, 0))
            try:
                sock.setsockopt(_socket.SOL_SOCKET, 33, rcvbuf)  # SO_RCVBUFFORCE (root)
            except OSError:
                sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, rcvbuf)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self.portid = sock.getsockname()[0]
        self._seq = 0
        self._stash: list[QueuedPacket] = []  # packets read while waiting for an answer
        self.errors: list[tuple[int, int]] = []  # (errno, sequence) of failed verdicts

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> HelperSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------------------
    def _send(self, msg: Any, flags: int) -> int:
        self._seq += 1
        msg["header"]["flags"] = flags
        msg["header"]["sequence_number"] = self._seq
        msg["header"]["pid"] = self.portid
        msg.encode()
        self._sock.send(msg.data)
        return self._seq

    def _request(self, op: str, msg: Any, flags: int, decode: Callable[[bytes, int], Any] | None = None,
                 timeout: float = 5.0) -> list[Any]:
        """Send, then read until the ACK (or NLMSG_DONE for a dump); queued
        packets read meanwhile are kept for receive()."""
        seq = self._send(msg, NLM_F_REQUEST | flags)
        replies: list[Any] = []
        while True:
            ready, _, _ = select.select([self._sock], [], [], timeout)
            if not ready:
                raise TimeoutError(f"{op}: no answer from the kernel within {timeout:.0f} s")
            data = self._sock.recv(1 << 17)
            for kind, _, mseq, off in netlink_messages(data):
                if kind == queue_msg_type(NFQNL_MSG_PACKET):
                    self._stash.append(packet_from_bytes(data, off))
                    continue
                if mseq != seq:
                    if kind == NLMSG_ERROR:
                        self._record_error(data, off)
                    continue
                if kind == NLMSG_ERROR:
                    code = -_ERRNO.unpack_from(data, off + 16)[0]
                    if code:
                        raise _explained(code, op)
                    return replies
                if kind == NLMSG_DONE:
                    return replies
                if decode is not None:
                    replies.append(decode(data, off))

    def _record_error(self, data: bytes, off: int) -> None:
        code = -_ERRNO.unpack_from(data, off + 16)[0]
        if code:
            self.errors.append((code, NLMSG.unpack_from(data, off + 20)[3]))

    # -- nfnetlink_cthelper -----------------------------------------------------------------------
    def register(self, helper: UserspaceHelper, *, exclusive: bool = False) -> None:
        """NFNL_MSG_CTHELPER_NEW: create the helper, or (without ``exclusive``)
        update one registered before - queue, policy timeouts and maxima,
        status (nfnl_cthelper_update(): the policy names, class count and
        private data size must stay the same, else EBUSY)."""
        flags = NLM_F_ACK | NLM_F_CREATE | (NLM_F_EXCL if exclusive else 0)
        self._request("register", helper.to_msg(NFNL_MSG_CTHELPER_NEW), flags)

    def set_enabled(self, helper: UserspaceHelper, enabled: bool) -> None:
        """Switch NF_CT_HELPER_F_CONFIGURED: a disabled userspace helper lets
        its packets pass without queueing them (nfnl_userspace_cthelper())."""
        attrs = helper.key_attrs() + [["NFCTH_STATUS", int(enabled)]]
        self._request("register", helper.to_msg(NFNL_MSG_CTHELPER_NEW, attrs=attrs), NLM_F_ACK)

    def unregister(self, helper: UserspaceHelper) -> None:
        """NFNL_MSG_CTHELPER_DEL by name and tuple; EBUSY while something
        holds a reference (refcount_dec_if_one() in nfnl_cthelper_del())."""
        self._request("unregister", helper.to_msg(NFNL_MSG_CTHELPER_DEL, attrs=helper.key_attrs()), NLM_F_ACK)

    def helpers(self) -> list[UserspaceHelper]:
        """Every userspace helper of the machine (nfnl_cthelper_dump_table())."""
        msg = cthelper_msg()
        msg["header"]["type"] = cthelper_msg_type(NFNL_MSG_CTHELPER_GET)
        msg["nfgen_family"] = _socket.AF_UNSPEC
        msg["version"] = 0
        msg["res_id"] = 0
        return self._request("dump helpers", msg, NLM_F_DUMP, helper_from_bytes)

    # -- nfnetlink_queue ---------------------------------------------------------------------------
    def bind_queue(self, queue_num: int, *, fail_open: bool, maxlen: int | None = None,
                   copy_range: int = 0xFFFF) -> None:
        """Bind, whole packets, NFQA_CFG_F_CONNTRACK and (un)set
        NFQA_CFG_F_FAIL_OPEN in one message: nfqnl_recv_config() checks the
        flags before it binds, so an unsupported NFQA_CT binds nothing."""
        cfg = QueueConfig(queue_num, NFQNL_CFG_CMD_BIND, _socket.AF_INET, NFQNL_COPY_PACKET, copy_range, maxlen,
                          NFQA_CFG_F_CONNTRACK | (NFQA_CFG_F_FAIL_OPEN if fail_open else 0),
                          NFQA_CFG_F_CONNTRACK | NFQA_CFG_F_FAIL_OPEN)
        self._request("bind queue", cfg.to_msg(), NLM_F_ACK)

    def unbind_queue(self, queue_num: int) -> None:
        """NFQNL_CFG_CMD_UNBIND: packets still queued are dropped by
        instance_destroy(); new ones bypass the queue (NF_VERDICT_FLAG_QUEUE_BYPASS)."""
        cfg = QueueConfig(queue_num, NFQNL_CFG_CMD_UNBIND, _socket.AF_INET)
        self._request("unbind queue", cfg.to_msg(), NLM_F_ACK)

    def probe_queue(self, queue_num: int) -> int:
        """Ask about queue ``queue_num`` without binding it: a config message
        with NFQA_CFG_F_CONNTRACK and no command, answered by nfqnl_recv_config()
        with ENODEV when the subsystem and NFQA_CT are there and the queue is
        free, EPERM when another process owns it, EOPNOTSUPP without NFQA_CT,
        and EINVAL (nfnetlink_rcv_msg()) without nfnetlink_queue. Returns the errno."""
        cfg = QueueConfig(queue_num, flags=NFQA_CFG_F_CONNTRACK, mask=NFQA_CFG_F_CONNTRACK)
        try:
            self._request("probe queue", cfg.to_msg(), NLM_F_ACK)
        except NetlinkError as exc:
            return exc.code
        return 0

    def receive(self, limit: int = 64) -> list[QueuedPacket]:
        """The queued packets available now (without blocking), at most about ``limit``."""
        out, self._stash = self._stash, []
        while len(out) < limit:
            try:
                data = self._sock.recv(1 << 17, _socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            for kind, _, _, off in netlink_messages(data):
                if kind == queue_msg_type(NFQNL_MSG_PACKET):
                    out.append(packet_from_bytes(data, off))
                elif kind == NLMSG_ERROR:
                    self._record_error(data, off)
        return out

    def send_verdict(self, verdict: Verdict) -> None:
        """No ACK is asked for (as conntrackd); a refused verdict comes back
        as an NLMSG_ERROR that receive() records in ``errors``."""
        data = encode_verdict(verdict, NLM_F_REQUEST, self._seq + 1, self.portid)
        if data is None:
            self._send(verdict.to_msg(), NLM_F_REQUEST)
            return
        self._seq += 1
        self._sock.send(data)


class ExpectationSocket(CtExpSocket):
    """ctnetlink for the helper: the harness's expectation requests plus a
    timeout change and a conntrack lookup."""

    def set_timeout(self, exp: KernelExpectation, seconds: int) -> None:
        """IPCTNL_MSG_EXP_NEW without NLM_F_CREATE/EXCL on an existing
        expectation: ctnetlink_change_expect() sets its timeout, nothing else
        (ENOENT when none covers the tuple)."""
        msg = self._bare(exp.family)
        msg["attrs"] = [
            ["CTA_EXPECT_TUPLE", exp.tuple_attr()],
            ["CTA_EXPECT_MASK", exp.mask_attr()],
            ["CTA_EXPECT_MASTER", exp.master_attr()],
            ["CTA_EXPECT_TIMEOUT", int(seconds)],
        ]
        self._request("timeout", msg, exp_msg_type(IPCTNL_MSG_EXP_NEW), NLM_F_REQUEST | NLM_F_ACK)

    def update_conntrack(self, original: ConnTuple, *, timeout: int | None = None, helper: str | None = None,
                         helper_info: bytes | None = None, seq_adj: dict[bool, SeqAdj] | None = None) -> None:
        """IPCTNL_MSG_CT_NEW without NLM_F_CREATE/EXCL on the conntrack whose
        original tuple is ``original``: ctnetlink_change_conntrack() changes
        its helper's private data (ctnetlink_change_helper(): ``helper`` must
        be its helper, else EBUSY/EOPNOTSUPP), its timeout and, per direction
        (``seq_adj``: reply? -> record), its seqadj record
        (ctnetlink_change_seq_adj(), which sets IPS_SEQ_ADJUST), the same
        calls the verdict's NFQA_CT makes (ctnetlink_glue_parse_ct()). ENOENT
        when no confirmed conntrack has the tuple (nf_conntrack_find_get())."""
        msg = update_msg(original, timeout=timeout, helper=helper, helper_info=helper_info, seq_adj=seq_adj)
        self._request("update conntrack", msg, (1 << 8) | IPCTNL_MSG_CT_NEW, NLM_F_REQUEST | NLM_F_ACK)

    def conntrack(self, original: ConnTuple) -> KernelConntrack | None:
        """The conntrack whose original tuple is ``original`` (ctnetlink_get_conntrack()), None if none."""
        msg = ct_msg()
        msg["nfgen_family"] = _socket.AF_INET if original.family == 4 else _socket.AF_INET6
        msg["version"] = 0
        msg["res_id"] = 0
        msg["attrs"] = [["CTA_TUPLE_ORIG", tuple_attr(original)]]
        try:
            replies = self._request("master_helper", msg, (1 << 8) | IPCTNL_MSG_CT_GET, NLM_F_REQUEST, single=True)
        except NetlinkError as exc:
            if exc.code == errno.ENOENT:
                return None
            raise
        return conntrack_from_msg(replies[0]) if replies else None

    def conntracks(self, originals: Iterable[ConnTuple]) -> dict[ConnTuple, KernelConntrack]:
        out = {}
        for original in originals:
            found = self.conntrack(original)
            if found is not None:
                out[original] = found
        return out

    def subscribe_destroy_events(self) -> None:
        """Join NFNLGRP_CONNTRACK_EXP_DESTROY only (see CtExpSocket.subscribe_events)."""
        self._raw.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_CONNTRACK_EXP_DESTROY)

