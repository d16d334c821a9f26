"""A conntrack as the helper sees it: ctnetlink conntrack attributes as plain data.

The same attributes (enum ctattr_type) arrive nested in NFQA_CT of a queued
packet (ctnetlink_glue_build() -> __ctnetlink_glue_build()) and as the body
of IPCTNL_MSG_CT_NEW replies to a conntrack GET (ctnetlink_fill_info()); both
are decoded with the harness's ``ct_msg`` attribute table, which knows that
CTA_HELP is nested (ctnetlink_dump_helpinfo()).

The helper's private data (``CTA_HELP`` / ``CTA_HELP_INFO``): the kernel keeps
``priv_data_len`` bytes per conntrack for a userspace helper
(nfnl_cthelper_to_nlattr() / _from_nlattr()); `MasterState` is what this
helper keeps there - ``struct nf_ct_sip_master`` - so that a restarted helper
finds each master's CSeqs again in its next queued packet.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Any

from sipct.netlink.ctexp import _decode_tuple, attr_tree
from sipct.spec.expectation import ConnTuple

__all__ = [
    "IPS_ASSURED",
    "IPS_CONFIRMED",
    "IPS_DYING",
    "IPS_EXPECTED",
    "IPS_HELPER",
    "IPS_SEEN_REPLY",
    "IP_CT_ESTABLISHED",
    "IP_CT_ESTABLISHED_REPLY",
    "IP_CT_IS_REPLY",
    "IP_CT_NEW",
    "IP_CT_RELATED",
    "IP_CT_RELATED_REPLY",
    "KernelConntrack",
    "MasterState",
    "conntrack_from_tree",
    "help_attr",
    "hex_bytes",
    "tuple_attr",
]

# enum ip_conntrack_status (include/uapi/linux/netfilter/nf_conntrack_common.h)
IPS_EXPECTED = 1 << 0
IPS_SEEN_REPLY = 1 << 1
IPS_ASSURED = 1 << 2
IPS_CONFIRMED = 1 << 3
IPS_DYING = 1 << 9
IPS_HELPER = 1 << 13

# enum ip_conntrack_info
IP_CT_ESTABLISHED = 0
IP_CT_RELATED = 1
IP_CT_NEW = 2
IP_CT_IS_REPLY = 3
IP_CT_ESTABLISHED_REPLY = IP_CT_ESTABLISHED + IP_CT_IS_REPLY
IP_CT_RELATED_REPLY = IP_CT_RELATED + IP_CT_IS_REPLY


def _conn_tuple(tree: dict[str, Any] | None, family: int) -> ConnTuple | None:
    if tree is None:
        return None
    src, dst, sport, dport, proto = _decode_tuple(tree, family)
    return ConnTuple(src, dst, proto, sport or 0, dport or 0)


def tuple_attr(t: ConnTuple) -> dict[str, Any]:
    """A conntrack tuple as the nested value of CTA_TUPLE_ORIG/_REPLY/_MASTER."""
    from sipct.netlink.ctexp import MasterTuple
    return MasterTuple(t.src, t.dst, t.sport, t.dport, t.proto).to_attr()


def help_attr(name: str, info: bytes | None = None) -> dict[str, Any]:
    """CTA_HELP { CTA_HELP_NAME, CTA_HELP_INFO }: what ctnetlink_change_helper()
    reads - the name must be the conntrack's helper, the info is copied into
    the helper's private area (nfnl_cthelper_from_nlattr())."""
    attrs: list[list[Any]] = [["CTA_HELP_NAME", name]]
    if info is not None:
        attrs.append(["CTA_HELP_INFO", bytes(info)])  # "hex" encodes raw bytes
    return {"attrs": attrs}


@dataclass(frozen=True, slots=True)
class KernelConntrack:
    """One struct nf_conn as ctnetlink reports it (the fields a helper needs).

    ``timeout`` is whole seconds left; an unconfirmed conntrack (the first
    packet still on its way) reports 0. ``helper_info`` is the helper's
    private data (CTA_HELP_INFO), ``master`` the original tuple of the
    conntrack that expected this one (CTA_TUPLE_MASTER)."""

    family: int  # AF_INET / AF_INET6
    original: ConnTuple
    reply: ConnTuple | None = None
    id: int | None = None
    status: int = 0
    timeout: int | None = None
    mark: int | None = None
    zone: int | None = None
    helper: str | None = None
    helper_info: bytes | None = None
    master: ConnTuple | None = None

    @property
    def expected(self) -> bool:
        return bool(self.status & IPS_EXPECTED)

    @property
    def confirmed(self) -> bool:
        return bool(self.status & IPS_CONFIRMED)

    @property
    def seen_reply(self) -> bool:
        return bool(self.status & IPS_SEEN_REPLY)

    def to_attrs(self) -> list[list[Any]]:
        """Attributes in __ctnetlink_glue_build() order (the ones held here)."""
        attrs: list[list[Any]] = [["CTA_TUPLE_ORIG", tuple_attr(self.original)]]
        if self.reply is not None:
            attrs.append(["CTA_TUPLE_REPLY", tuple_attr(self.reply)])
        if self.zone is not None:
            attrs.append(["CTA_ZONE", self.zone])
        if self.id is not None:
            attrs.append(["CTA_ID", self.id])
        attrs.append(["CTA_STATUS", self.status])
        if self.timeout is not None:
            attrs.append(["CTA_TIMEOUT", self.timeout])
        if self.helper is not None:
            attrs.append(["CTA_HELP", help_attr(self.helper, self.helper_info)])
        if self.master is not None:
            attrs.append(["CTA_TUPLE_MASTER", tuple_attr(self.master)])
        if self.mark is not None:
            attrs.append(["CTA_MARK", self.mark])
        return attrs


def conntrack_from_tree(tree: dict[str, Any], family: int) -> KernelConntrack:
    """Mirror of the kernel's conntrack dump for an attribute tree (attr_tree())."""
    original = _conn_tuple(tree.get("CTA_TUPLE_ORIG"), family)
    if original is None:
        raise ValueError("conntrack attributes lack CTA_TUPLE_ORIG")
    help_ = tree.get("CTA_HELP") or {}
    info = help_.get("CTA_HELP_INFO")
    return KernelConntrack(
        family=family,
        original=original,
        reply=_conn_tuple(tree.get("CTA_TUPLE_REPLY"), family),
        id=tree.get("CTA_ID"),
        status=tree.get("CTA_STATUS", 0),
        timeout=tree.get("CTA_TIMEOUT"),
        mark=tree.get("CTA_MARK"),
        zone=tree.get("CTA_ZONE"),
        helper=help_.get("CTA_HELP_NAME"),
        helper_info=None if info is None else hex_bytes(info),
        master=_conn_tuple(tree.get("CTA_TUPLE_MASTER"), family),
    )


def conntrack_from_msg(msg: Any) -> KernelConntrack:
    """A decoded ctnetlink conntrack message (ct_msg)."""
    return conntrack_from_tree(attr_tree(msg), msg["nfgen_family"])


def hex_bytes(value: str | bytes) -> bytes:
    """pyroute2's "hex" atom decodes to "aa:bb:..." text."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return bytes.fromhex(value.replace(":", ""))


@dataclass(frozen=True, slots=True)
class MasterState:
    """struct nf_ct_sip_master in the helper's private data: the CSeqs of the
    last REGISTER and INVITE and the Via port nf_nat_sip would use.

    Layout (12 bytes, network order): register_cseq u32, invite_cseq u32,
    forced_dport u16, version u8, pad u8. Version 0 is the all-zero area
    the kernel gives a new conntrack (nf_ct_helper_ext_add()): no state yet.
    """

    register_cseq: int = 0
    invite_cseq: int = 0
    forced_dport: int = 0

    LAYOUT = struct.Struct("!IIHBx")
    VERSION = 1
    SIZE = LAYOUT.size

    def pack(self) -> bytes:
        return self.LAYOUT.pack(self.register_cseq & 0xFFFFFFFF, self.invite_cseq & 0xFFFFFFFF,
                                self.forced_dport & 0xFFFF, self.VERSION)

    @classmethod
    def unpack(cls, data: bytes | None) -> MasterState | None:
        """The state in ``data``, None when there is none (absent, zeroed, or
        written by something else)."""
        if not data or len(data) < cls.SIZE:
            return None
        register, invite, dport, version = cls.LAYOUT.unpack_from(data)
        if version != cls.VERSION:
            return None
        return cls(register, invite, dport)


AF_NAMES = {socket.AF_INET: "ipv4", socket.AF_INET6: "ipv6"}
