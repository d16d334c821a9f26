"""nfnetlink_log (NFNL_SUBSYS_ULOG): the kernel's word that a helper dropped a packet.

nf_conntrack_sip and nf_nat_sip drop through nf_ct_helper_log()
(net/netfilter/nf_conntrack_helper.c), which calls nf_log_packet() with
loginfo NULL and the prefix "nf_ct_<helper>: dropping packet: <reason> ".
With loginfo NULL nf_log_packet() hands the packet to the logger bound for
the family *in the packet's network namespace* (net->nf.nf_loggers[pf]);
NFULNL_CFG_CMD_PF_BIND sent from a socket in that namespace binds
nfnetlink_log there (nf_log_bind_pf()), and nfulnl_log_packet() then sends
it to the instance of group 0, the group of its default_loginfo. So a
socket in the router's namespace that binds the families and group 0 gets
an NFULNL_MSG_PACKET per drop, with NFULA_PREFIX and the packet from its
network header on (NFULA_PAYLOAD, NFULNL_COPY_PACKET). The initial
namespace's loggers (/proc/sys/net/netfilter/nf_log) are never touched;
the binding dies with the namespace (nf_log_net_exit()).

Messages are read and written with ``struct`` (sipct.netlink.wire); the
layouts are include/uapi/linux/netfilter/nfnetlink_log.h.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from dataclasses import dataclass

from sipct.netlink.netns import entered_netns
from sipct.netlink.wire import BE32, NFGEN, NLA, NLMSG, DecodeError, message_attributes, netlink_messages

__all__ = ["DROP_PREFIX", "LoggedPacket", "NflogError", "NflogSocket", "config_request", "packet_from_bytes"]

NETLINK_NETFILTER = 12
NFNL_SUBSYS_ULOG = 4
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLMSG_ERROR = 2

# enum nfulnl_msg_types
NFULNL_MSG_PACKET = 0
NFULNL_MSG_CONFIG = 1
# enum nfulnl_msg_config_cmds
NFULNL_CFG_CMD_BIND = 1
NFULNL_CFG_CMD_UNBIND = 2
NFULNL_CFG_CMD_PF_BIND = 3
# enum nfulnl_attr_config
NFULA_CFG_CMD = 1
NFULA_CFG_MODE = 2
NFULA_CFG_QTHRESH = 5
NFULNL_COPY_PACKET = 2
# enum nfulnl_attr_type
NFULA_PACKET_HDR = 1
NFULA_PAYLOAD = 9
NFULA_PREFIX = 10

# nf_ct_helper_log()'s format: "nf_ct_%s: dropping packet: %pV ".
DROP_PREFIX = ": dropping packet: "

_MODE = struct.Struct(">IBx")  # struct nfulnl_msg_config_mode (packed, 6 bytes)
_ERRNO = struct.Struct("=i")
_RCVBUF = 1 << 20  # a few whole 64 KiB datagrams: a log the buffer cannot take is lost (ENOBUFS)

# errno -> what it means, read off nfnetlink_rcv_msg() and nfulnl_recv_config().
_ROOT = "needs CAP_NET_ADMIN over the network namespace (run as root)"
_MEANINGS = {
    "*": {
        errno.EPERM: _ROOT,
        errno.EINVAL: "the kernel has no nfnetlink_log: `modprobe nfnetlink_log` (CONFIG_NETFILTER_NETLINK_LOG)",
    },
    "bind the logger": {errno.ENOENT: "nfnetlink_log registered no logger for the family (nf_log_bind_pf)"},
    "bind group 0": {
        errno.EPERM: "group 0 of this namespace belongs to another socket (nfulnl_recv_config), or " + _ROOT,
        errno.EBUSY: "this socket bound group 0 already",
    },
}


class NflogError(OSError):
    """A refused nfnetlink_log request, with what it means."""


@dataclass(frozen=True, slots=True)
class LoggedPacket:
    family: int  # nfgen_family: the pf nf_log_packet() was called with
    prefix: str  # NFULA_PREFIX without its NUL ("" when there is none)
    packet: bytes  # NFULA_PAYLOAD: the packet from its network header on

    @property
    def drop_reason(self) -> str | None:
        """The text after "dropping packet: " of an nf_ct_helper_log() prefix
        (nf_log_packet() cut it at NF_LOG_PREFIXLEN), None for other logs."""
        if not self.prefix.startswith("nf_ct_") or DROP_PREFIX not in self.prefix:
            return None
        return self.prefix.split(DROP_PREFIX, 1)[1].strip()


def _nla(kind: int, payload: bytes) -> bytes:
    length = NLA.size + len(payload)
    return NLA.pack(length, kind) + payload + bytes(-length % 4)


def config_request(family: int, group: int, command: int | None, *, seq: int, copy_range: int | None = None,
                   qthresh: int | None = None) -> bytes:
    """NFULNL_MSG_CONFIG for ``group`` (res_id) with the ACK flag: a command
    (NFULA_CFG_CMD), the copy mode (NFULA_CFG_MODE: the whole packet up to
    ``copy_range`` bytes) and the queue threshold (NFULA_CFG_QTHRESH)."""
    body = b""
    if command is not None:
        body += _nla(NFULA_CFG_CMD, bytes([command]))
    if copy_range is not None:
        body += _nla(NFULA_CFG_MODE, _MODE.pack(copy_range, NFULNL_COPY_PACKET))
    if qthresh is not None:
        body += _nla(NFULA_CFG_QTHRESH, BE32.pack(qthresh))
    payload = NFGEN.pack(family, 0, socket.htons(group)) + body
    return NLMSG.pack(NLMSG.size + len(payload), (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG,
                      NLM_F_REQUEST | NLM_F_ACK, seq, 0) + payload


def packet_from_bytes(data: bytes, off: int) -> LoggedPacket:
    """The NFULNL_MSG_PACKET at ``off`` (__build_packet_message())."""
    family, _, attrs = message_attributes(data, off)
    prefix = ""
    if NFULA_PREFIX in attrs:
        start, end = attrs[NFULA_PREFIX]
        raw = bytes(data[start:end])
        if not raw.endswith(b"\0"):
            raise DecodeError(f"NFULA_PREFIX {raw!r} is not NUL-terminated")
        prefix = raw[:-1].decode("utf-8", "replace")
    start, end = attrs.get(NFULA_PAYLOAD, (0, 0))
    return LoggedPacket(family, prefix, bytes(data[start:end]))


class NflogSocket:
    """A NETLINK_NETFILTER socket in network namespace ``netns`` (None: the
    caller's) that binds nfnetlink_log as the logger of ``families`` there
    and receives group 0's packets. Non-blocking: poll fileno(), then read()."""

    def __init__(self, netns: str | None = None,
                 families: tuple[int, ...] = (socket.AF_INET, socket.AF_INET6)) -> None:
        with entered_netns(netns):
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER)
        try:
            sock.bind((0, 0))  # a port id: nfnetlink_log sends the instance's packets to it (peer_portid)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
            self._sock, self._seq = sock, 0
            for family in families:
                self._ask(config_request(family, 0, NFULNL_CFG_CMD_PF_BIND, seq=self._next()), "bind the logger")
            # qthresh 1: nfulnl_log_packet() would take default_loginfo's 1 anyway, but
            # nothing may wait for the instance's flush timer (1 s by default).
            self._ask(config_request(socket.AF_UNSPEC, 0, NFULNL_CFG_CMD_BIND, seq=self._next(),
                                     copy_range=0xFFFF, qthresh=1), "bind group 0")
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self.netns = netns
        self.lost = 0  # times the receive buffer overflowed (ENOBUFS): logs that never came

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def _ask(self, request: bytes, what: str) -> None:
        seq = NLMSG.unpack_from(request, 0)[3]
        self._sock.send(request)
        while True:
            data = self._sock.recv(1 << 16)
            for kind, _, rseq, off in netlink_messages(data):
                if kind == NLMSG_ERROR and rseq == seq:
                    code = -_ERRNO.unpack_from(data, off + NLMSG.size)[0]
                    if code:
                        text = f"nfnetlink_log: {what}: {os.strerror(code)}"
                        meaning = _MEANINGS[what].get(code) or _MEANINGS["*"].get(code)
                        raise NflogError(code, f"{text}: {meaning}" if meaning else text)
                    return

    def fileno(self) -> int:
        return self._sock.fileno()

    def read(self) -> list[LoggedPacket]:
        """Every logged packet queued now (none: an empty list)."""
        out: list[LoggedPacket] = []
        while True:
            try:
                data = self._sock.recv(1 << 17)
            except BlockingIOError:
                return out
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                self.lost += 1
                continue
            for kind, _, _, off in netlink_messages(data):
                if kind == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET:
                    out.append(packet_from_bytes(data, off))

    def close(self) -> None:
        # Closing is enough: NETLINK_URELEASE makes nfulnl_rcv_nl_event() destroy the instance.
        self._sock.close()
