"""`CtExpSocket`: read, create, delete and watch conntrack expectations.

A pyroute2 NetlinkSocket (protocol NETLINK_NETFILTER) whose underlying socket
is created inside a named network namespace, speaking the messages declared
in `ctexp`. What each request makes the kernel do is documented at the
method, with the handler in net/netfilter/nf_conntrack_netlink.c it reaches.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import socket as _socket
import time
from collections.abc import Iterable, Iterator
from typing import Any

from pyroute2.netlink import (
    NETLINK_NETFILTER,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
)
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.nfnetlink.nfctsocket import (
    IPCTNL_MSG_CT_DELETE,
    IPCTNL_MSG_CT_GET,
)
from pyroute2.netlink.nlsocket import NetlinkSocket

from .conntrack import conntrack_from_msg, ct_msg
from .ctexp import (
    expectation_from_bytes,
    IPCTNL_MSG_EXP_DELETE,
    IPCTNL_MSG_EXP_GET,
    IPCTNL_MSG_EXP_GET_STATS_CPU,
    IPCTNL_MSG_EXP_NEW,
    NFNL_SUBSYS_CTNETLINK,
    NFNLGRP_CONNTRACK_EXP_DESTROY,
    NFNLGRP_CONNTRACK_EXP_NEW,
    ExpectMask,
    ExpectNat,
    ExpectStats,
    ExpectTuple,
    KernelExpectation,
    MasterTuple,
    ctexp_msg,
    ctexp_stats_cpu_msg,
    exp_msg_type,
    family_of,
)
from .wire import encode_request, netlink_messages
from sipct.netlink.interrupts import shielded
from sipct.netlink.netns import entered_netns

__all__ = ["CtExpSocket", "explain"]

SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1


def _ct_msg_type(msg: int) -> int:
    return (NFNL_SUBSYS_CTNETLINK << 8) | msg


# ctnetlink_expect_event(): IPEXP_NEW goes out as IPCTNL_MSG_EXP_NEW on
# NFNLGRP_CONNTRACK_EXP_NEW, IPEXP_DESTROY as IPCTNL_MSG_EXP_DELETE on
# NFNLGRP_CONNTRACK_EXP_DESTROY.
_EVENT_KINDS = {
    exp_msg_type(IPCTNL_MSG_EXP_NEW): "new",
    exp_msg_type(IPCTNL_MSG_EXP_DELETE): "destroy",
}

# nfnetlink_rcv_msg() answers EINVAL for a subsystem nobody registered, and
# requests without attributes give the ctnetlink handlers nothing else to
# reject, so there EINVAL means ctnetlink is missing.
_NO_CTNETLINK = "kernel lacks CONFIG_NF_CT_NETLINK (ctnetlink)"

# What an errno means for each request, read off the kernel handler.
_REASONS: dict[str, dict[int, str]] = {
    "*": {
        errno.EPERM: "needs root (CAP_NET_ADMIN over the network namespace, nfnetlink_rcv_msg)",
        errno.EPROTONOSUPPORT: "kernel lacks CONFIG_NETFILTER_NETLINK (nfnetlink)",
        errno.EOPNOTSUPP: "family is not AF_INET/AF_INET6 (ctnetlink_parse_tuple), or " + _NO_CTNETLINK,
    },
    "dump": {errno.EINVAL: _NO_CTNETLINK},
    "flush": {errno.EINVAL: _NO_CTNETLINK},
    "stats": {errno.EINVAL: _NO_CTNETLINK},
    "flush_conntrack": {errno.EINVAL: _NO_CTNETLINK},
    "create": {
        errno.ENOENT: "no master conntrack with that original tuple (ctnetlink_create_expect)",
        errno.EOPNOTSUPP: "the master conntrack has no helper attached (ctnetlink_alloc_expect)",
        errno.EINVAL: "bad attributes, or class above the helper's expect_class_max (ctnetlink_alloc_expect)",
        errno.EEXIST: "an expectation with that tuple exists already (ctnetlink_new_expect)",
        errno.EBUSY: "clashes with an existing expectation (__nf_ct_expect_check)",
        errno.EMFILE: "the helper's max_expected for this class is reached (__nf_ct_expect_check)",
        errno.ESHUTDOWN: "the master conntrack is dying (nf_ct_expect_related_report)",
    },
    "delete": {
        errno.ENOENT: "no expectation matches that tuple (and id) (ctnetlink_del_expect)",
    },
    "update conntrack": {
        errno.ENOENT: "no confirmed conntrack with that original tuple (ctnetlink_new_conntrack, no NLM_F_CREATE)",
        errno.EBUSY: "the conntrack has another helper (ctnetlink_change_helper)",
        errno.EOPNOTSUPP: "no helper of that name for the conntrack's family and protocol, or the conntrack has no "
                          "helper (ctnetlink_change_helper)",
        errno.EINVAL: "a CTA_SEQ_ADJ_* nest lacks one of its three attributes (change_seq_adj), or " + _NO_CTNETLINK,
    },
    "master_helper": {
        errno.ENOENT: "no conntrack with that original tuple (ctnetlink_get_conntrack)",
    },
}


def explain(err: NetlinkError, op: str) -> NetlinkError:
    """The same NetlinkError code, with a message saying what it means for op."""
    reason = _REASONS.get(op, {}).get(err.code) or _REASONS["*"].get(err.code)
    text = f"ctnetlink {op}: {os.strerror(err.code)}"
    if reason:
        text += f": {reason}"
    explained = NetlinkError(err.code, text)
    explained.extra_code = getattr(err, "extra_code", 0)
    return explained


class CtExpSocket(NetlinkSocket):
    """ctnetlink expectation socket living in network namespace `netns`
    (None: the caller's). Use it from the thread that made it."""

    def __init__(self, netns: str | None = None) -> None:
        with entered_netns(netns):
            try:
                raw = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_DGRAM, NETLINK_NETFILTER)
            except OSError as e:
                if e.errno == errno.EPROTONOSUPPORT:
                    raise OSError(e.errno, f"{e.strerror}: {_REASONS['*'][e.errno]}") from e
                raise
        try:
            # Take a port id now: netlink_broadcast() skips a socket whose
            # port id equals the sender's exclude id, 0 for kernel events,
            # so an unbound (port 0) socket never sees an event.
            raw.bind((0, 0))
            super().__init__(family=NETLINK_NETFILTER, use_socket=raw)
        except BaseException:
            raw.close()
            raise
        self._raw = raw
        self._raw_seq = 1 << 30  # sequence numbers of the plain send/recv requests, apart from pyroute2's
        self._stash: list[tuple[str, KernelExpectation]] = []  # events read while dumping
        self.netns = netns
        self.register_policy(self._policy())

    @staticmethod
    def _policy() -> dict[int, type]:
        policy: dict[int, type] = {
            exp_msg_type(IPCTNL_MSG_EXP_NEW): ctexp_msg,
            exp_msg_type(IPCTNL_MSG_EXP_GET): ctexp_msg,
            exp_msg_type(IPCTNL_MSG_EXP_DELETE): ctexp_msg,
        }
        # ctnetlink answers a conntrack GET with IPCTNL_MSG_CT_NEW.
        for ct_type in range(IPCTNL_MSG_CT_DELETE + 1):
            policy[_ct_msg_type(ct_type)] = ct_msg
        # ctnetlink_exp_stat_fill_info() stamps its replies with subsystem
        # CTNETLINK, not CTNETLINK_EXP, so they share nlmsg_type 0x103 with
        # IPCTNL_MSG_CT_GET_CTRZERO, which this socket never sends.
        policy[_ct_msg_type(IPCTNL_MSG_EXP_GET_STATS_CPU)] = ctexp_stats_cpu_msg
        return policy

    def close(self, code: int = errno.ECONNRESET) -> None:
        # Shielded: pyroute2 closes its asyncio loop here (AsyncCoreSocket.close
        # runs shutdown_asyncgens); a signal half-way leaves a coroutine and a
        # pending task that complain, on stderr, when the interpreter exits.
        with shielded():
            try:
                super().close(code)
            finally:
                self._raw.close()

    # -- plumbing -------------------------------------------------------

    def _request(self, op: str, msg: Any, msg_type: int, flags: int, *, single: bool = False) -> list[Any]:
        # NLM_F_EXCL (0x200) of a create is one of NLM_F_DUMP's two bits (NLM_F_MATCH).
        if flags & NLM_F_ACK and flags & NLM_F_DUMP != NLM_F_DUMP and not single:
            data = encode_request(msg, msg_type, flags, self._raw_seq + 1, self._raw.getsockname()[0])
            if data is not None:
                self._raw_seq += 1
                self._acked(op, data, self._raw_seq)
                return []
        terminate = None
        if flags & NLM_F_ACK:
            terminate = lambda m: m["header"]["type"] == NLMSG_ERROR  # noqa: E731
        elif single:
            # ctnetlink_fill_info() sets NLM_F_MULTI on a unicast GET reply
            # too, and no NLMSG_DONE follows: stop at the first message.
            terminate = lambda m: True  # noqa: E731
        try:
            # Shielded: pyroute2's asyncio request path must not be left half-way by a signal
            # (its coroutine would complain when collected); a request takes milliseconds.
            with shielded():
                replies = list(self.nlm_request(msg, msg_type, msg_flags=flags, terminate=terminate))
        except NetlinkError as e:
            raise explain(e, op) from e
        return [m for m in replies if m["header"]["type"] != NLMSG_ERROR]

    @staticmethod
    def _bare(family: int) -> ctexp_msg:
        msg = ctexp_msg()
        msg["nfgen_family"] = family
        msg["version"] = 0
        msg["res_id"] = 0
        return msg

    # -- expectations ----------------------------------------------------

    def dump(self) -> list[KernelExpectation]:
        """Every expectation of the namespace, of both families.

        ctnetlink_exp_dump_table() filters on nfgen_family only when it is
        non-zero, so AF_UNSPEC lists IPv4 and IPv6 alike.
        """
        msg = self._bare(_socket.AF_UNSPEC)
        msg["header"]["type"] = exp_msg_type(IPCTNL_MSG_EXP_GET)
        return self._raw_dump(msg, keep=True)

    def reap_expired_conntracks(self) -> None:
        """Make the kernel unlink the conntracks whose timeout has passed.

        Conntracks die lazily: an expired one stays hashed, with its
        expectations, until the GC worker (gc_worker(), up to 60 s apart)
        or a lookup finds it. A conntrack dump is such a lookup:
        ctnetlink_dump_table() kills every expired entry it walks over
        (nf_ct_kill -> nf_ct_remove_expectations), of any namespace - those
        were dead already; nothing alive is touched. The replies are
        discarded."""
        msg = ct_msg()
        msg["nfgen_family"] = _socket.AF_UNSPEC
        msg["version"] = 0
        msg["res_id"] = 0
        msg["header"]["type"] = _ct_msg_type(IPCTNL_MSG_CT_GET)
        self._raw_dump(msg, keep=False)

    def _acked(self, op: str, data: bytes, seq: int) -> None:
        """Send a request that only asks for an ACK (create, delete, flush,
        timeout) and wait for it with a plain send/recv loop, as _raw_dump()
        does: pyroute2's asyncio request path costs more than the request."""
        self._raw.send(data)
        while True:
            reply = self._raw.recv(1 << 16)
            for kind, _, rseq, off in netlink_messages(reply):
                if rseq != seq:
                    event = _EVENT_KINDS.get(kind)
                    if event is not None:
                        self._stash.append((event, expectation_from_bytes(reply, off)))
                    continue
                if kind == NLMSG_ERROR:
                    code = abs(int.from_bytes(reply[off + 16:off + 20], "little", signed=True))
                    if code:
                        raise explain(NetlinkError(code), op)
                    return

    def _raw_dump(self, msg: Any, *, keep: bool) -> list[KernelExpectation]:
        msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_DUMP
        self._raw_seq += 1
        msg["header"]["sequence_number"] = self._raw_seq
        msg.encode()
        # A plain send/recv loop: the dump runs after every step of every
        # dialog, and pyroute2's asyncio request path costs more than the dump.
        self._raw.send(msg.data)
        out: list[KernelExpectation] = []
        while True:
            data = self._raw.recv(1 << 16)
            for kind, _, seq, off in netlink_messages(data):
                if seq != self._raw_seq:
                    # A multicast event read while dumping: keep it for events().
                    event = _EVENT_KINDS.get(kind)
                    if event is not None:
                        self._stash.append((event, expectation_from_bytes(data, off)))
                    continue
                if kind == NLMSG_DONE:
                    return out
                if kind == NLMSG_ERROR:
                    code = abs(int.from_bytes(data[off + 16:off + 20], "little", signed=True))
                    if code:
                        raise explain(NetlinkError(code), "dump")
                    return out
                if keep:
                    out.append(expectation_from_bytes(data, off))

    def flush(self) -> None:
        """Remove every expectation of the namespace, both families.

        IPCTNL_MSG_EXP_DELETE without CTA_EXPECT_TUPLE or _HELP_NAME makes
        ctnetlink_del_expect() run nf_ct_expect_iterate_net(expect_iter_all),
        which ignores nfgen_family.
        """
        msg = self._bare(_socket.AF_UNSPEC)
        self._request("flush", msg, exp_msg_type(IPCTNL_MSG_EXP_DELETE), NLM_F_REQUEST | NLM_F_ACK)

    def flush_helper(self, helper: str) -> None:
        """Remove the expectations whose helper is `helper` (expect_iter_name)."""
        msg = self._bare(_socket.AF_UNSPEC)
        msg["attrs"] = [["CTA_EXPECT_HELP_NAME", helper]]
        self._request("flush", msg, exp_msg_type(IPCTNL_MSG_EXP_DELETE), NLM_F_REQUEST | NLM_F_ACK)

    def create(
        self,
        master: MasterTuple,
        tuple: ExpectTuple,
        *,
        proto: int | None = None,
        mask: ExpectMask | None = None,
        klass: int = 0,
        flags: int | Iterable[str] = 0,
        nat: ExpectNat | None = None,
        fn: str | None = None,
    ) -> None:
        """Ask ctnetlink to add an expectation to conntrack `master`.

        The master must exist and carry a helper: ctnetlink_alloc_expect()
        takes the helper (and so the timeout, from the helper's
        expect_policy[klass]) from it, ignoring CTA_EXPECT_TIMEOUT and
        CTA_EXPECT_HELP_NAME, and it clears NF_CT_EXPECT_USERSPACE.
        `proto` defaults to the master's, `mask` to an exact match
        (source address and port all ones). `nat` and `fn` are the NAT
        part (CTA_EXPECT_NAT: ctnetlink_parse_expect_nat(), EOPNOTSUPP
        without CONFIG_NF_NAT) and the expectfn by name (CTA_EXPECT_FN:
        EINVAL unless a module registered it, nf_ct_helper_expectfn_find_by_name()).
        """
        family = family_of(master.src)
        proto = master.proto if proto is None else proto
        if mask is None:
            ones = ipaddress.ip_address((1 << master.src.max_prefixlen) - 1)
            mask = ExpectMask(ones, None if tuple.sport is None else 0xFFFF)
        exp = KernelExpectation(
            family=family,
            proto=proto,
            master=master,
            tuple=tuple,
            mask=mask,
            timeout=0,
            flags=flags if isinstance(flags, int) else frozenset(flags),
            klass=klass,
            nat=nat,
            fn=fn,
        )
        msg = self._bare(family)
        msg["attrs"] = [
            ["CTA_EXPECT_TUPLE", exp.tuple_attr()],
            ["CTA_EXPECT_MASK", exp.mask_attr()],
            ["CTA_EXPECT_MASTER", exp.master_attr()],
            ["CTA_EXPECT_FLAGS", exp.flag_bits],
            ["CTA_EXPECT_CLASS", exp.klass],
        ]
        if nat is not None:
            msg["attrs"].append(["CTA_EXPECT_NAT", exp.nat_attr()])
        if fn is not None:
            msg["attrs"].append(["CTA_EXPECT_FN", fn])
        flags_ = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
        self._request("create", msg, exp_msg_type(IPCTNL_MSG_EXP_NEW), flags_)

    def delete(self, exp: KernelExpectation, *, match_id: bool = True) -> None:
        """Remove one expectation.

        ctnetlink_del_expect() finds it by CTA_EXPECT_TUPLE alone (it never
        reads CTA_EXPECT_MASTER); CTA_EXPECT_ID, sent when `match_id` and
        exp.id is known, only makes it refuse (ENOENT) a different
        expectation that took over the tuple.
        """
        msg = self._bare(exp.family)
        msg["attrs"] = [["CTA_EXPECT_TUPLE", exp.tuple_attr()]]
        if match_id and exp.id is not None:
            msg["attrs"].append(["CTA_EXPECT_ID", exp.id])
        self._request("delete", msg, exp_msg_type(IPCTNL_MSG_EXP_DELETE), NLM_F_REQUEST | NLM_F_ACK)

    def stats(self) -> list[ExpectStats]:
        """Per-CPU expectation counters (ctnetlink_exp_stat_cpu_dump())."""
        msg = self._bare(_socket.AF_UNSPEC)
        msg_type = exp_msg_type(IPCTNL_MSG_EXP_GET_STATS_CPU)
        replies = self._request("stats", msg, msg_type, NLM_F_REQUEST | NLM_F_DUMP)
        return [
            ExpectStats(
                cpu=m["res_id"],
                new=m.get_attr("CTA_STATS_EXP_NEW", 0),
                create=m.get_attr("CTA_STATS_EXP_CREATE", 0),
                delete=m.get_attr("CTA_STATS_EXP_DELETE", 0),
            )
            for m in replies
        ]

    # -- events ------------------------------------------------------------

    def subscribe_events(self) -> None:
        """Join NFNLGRP_CONNTRACK_EXP_NEW and _EXP_DESTROY.

        Subscribe before the master conntracks are created: with
        net.netfilter.nf_conntrack_events=2 (the default) a conntrack gets
        its event cache only if an nfnetlink event listener exists when it
        is created (nf_ct_ecache_ext_add()), and the expectations of a master
        without one raise no events at all, not even on flush.
        """
        for group in (NFNLGRP_CONNTRACK_EXP_NEW, NFNLGRP_CONNTRACK_EXP_DESTROY):
            self._raw.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)

    def events(self, timeout: float) -> Iterator[tuple[str, KernelExpectation]]:
        """("new" | "destroy", expectation) as they arrive, for `timeout` seconds
        counted from the call. Events queued since subscribe_events() come first."""
        stashed, self._stash = self._stash, []
        yield from stashed
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                batch = self._run_with_cleanup(self._next_multicast, left)
            except TimeoutError:
                return
            except NetlinkError as e:
                raise explain(e, "events") from e
            for msg in batch:
                kind = _EVENT_KINDS.get(msg["header"]["type"])
                if kind is not None:
                    yield kind, KernelExpectation.from_msg(msg)

    def drain_events(self) -> list[tuple[str, KernelExpectation]]:
        """Every event already queued on the socket, without waiting.

        The kernel queues an event on the listener while it processes the
        packet (netlink_broadcast() is synchronous), so once the packet has
        been delivered its events are here. Use a socket that sends no
        requests: replies would be read here too.
        """
        out, self._stash = self._stash, []
        while True:
            try:
                data = self._raw.recv(1 << 16, _socket.MSG_DONTWAIT)
            except BlockingIOError:
                return out
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    raise OSError(e.errno, "ctnetlink events: the socket overflowed and events were lost "
                                           "(read them more often or enlarge SO_RCVBUF)") from e
                raise
            for msg_type, _, _, off in netlink_messages(data):
                kind = _EVENT_KINDS.get(msg_type)
                if kind is not None:
                    out.append((kind, expectation_from_bytes(data, off)))

    async def _next_multicast(self, timeout: float) -> list[Any]:
        async def one_datagram() -> list[Any]:
            # Sequence 0 is where pyroute2 queues what no request awaits.
            return [m async for m in self.asyncore.get(msg_seq=0)]

        return await asyncio.wait_for(one_datagram(), timeout)

    # -- conntrack ---------------------------------------------------------

    def flush_conntrack(self) -> None:
        """Remove every conntrack of the namespace, both families (and with
        them their expectations, nf_ct_remove_expectations()).

        IPCTNL_MSG_CT_DELETE without tuple, version 0: ctnetlink_del_conntrack()
        flushes with family AF_UNSPEC, i.e. with no filter at all.
        """
        msg = ct_msg()
        msg["nfgen_family"] = _socket.AF_UNSPEC
        msg["version"] = 0
        msg["res_id"] = 0
        msg_type = _ct_msg_type(IPCTNL_MSG_CT_DELETE)
        self._request("flush_conntrack", msg, msg_type, NLM_F_REQUEST | NLM_F_ACK)

    def delete_conntrack(self, tuple_: MasterTuple) -> bool:
        """Delete the conntrack holding ``tuple_`` in either direction
        (ctnetlink_del_conntrack(): nf_conntrack_find_get, nf_ct_delete, which
        removes its expectations). False if there is none (ENOENT)."""
        msg = ct_msg()
        msg["nfgen_family"] = family_of(tuple_.src)
        msg["version"] = 0
        msg["res_id"] = 0
        msg["attrs"] = [["CTA_TUPLE_ORIG", tuple_.to_attr()]]
        try:
            self._request("delete_conntrack", msg, _ct_msg_type(IPCTNL_MSG_CT_DELETE), NLM_F_REQUEST | NLM_F_ACK)
        except NetlinkError as exc:
            if exc.code == errno.ENOENT:
                return False
            raise
        return True

    def master_helper(self, master: MasterTuple) -> str | None:
        """Name of the helper attached to the conntrack whose original tuple
        is `master` (CTA_HELP/CTA_HELP_NAME of ctnetlink_get_conntrack())."""
        family = family_of(master.src)
        msg = ct_msg()
        msg["nfgen_family"] = family
        msg["version"] = 0
        msg["res_id"] = 0
        msg["attrs"] = [["CTA_TUPLE_ORIG", master.to_attr()]]
        msg_type = _ct_msg_type(IPCTNL_MSG_CT_GET)
        replies = self._request("master_helper", msg, msg_type, NLM_F_REQUEST, single=True)
        return conntrack_from_msg(replies[0]).helper if replies else None
