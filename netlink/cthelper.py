"""nfnetlink_cthelper messages (NFNL_SUBSYS_CTHELPER): userspace conntrack helpers.

Declared from include/uapi/linux/netfilter/nfnetlink_cthelper.h; the layout
follows the kernel's encoder nfnl_cthelper_fill_info() and its parsers
nfnl_cthelper_parse_tuple(), nfnl_cthelper_parse_expect_policy() and
nfnl_cthelper_expect_policy() in net/netfilter/nfnetlink_cthelper.c.

`UserspaceHelper` is the plain-data view of one registration; its
`to_attrs()` emits the attributes in nfnl_cthelper_fill_info() order, so a
kernel message decodes and re-encodes to the same bytes; :func:`helper_from_bytes`
is the decoder (``UserspaceHelper.from_msg()`` applies it to a pyroute2
message's buffer).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyroute2.netlink import NLA_F_NESTED, nla
from pyroute2.netlink.nfnetlink import NFNL_SUBSYS_CTHELPER, nfgen_msg

from sipct.netlink.wire import DecodeError, Span, asciiz, be16, be32, message_attributes, nested, numbers, u8

__all__ = [
    "NFCT_HELPER_STATUS_DISABLED",
    "NFCT_HELPER_STATUS_ENABLED",
    "NFNL_MSG_CTHELPER_DEL",
    "NFNL_MSG_CTHELPER_GET",
    "NFNL_MSG_CTHELPER_NEW",
    "NF_CT_EXPECT_MAX_CNT",
    "NF_CT_HELPER_NAME_LEN",
    "NF_CT_MAX_EXPECT_CLASSES",
    "ExpectPolicy",
    "UserspaceHelper",
    "cthelper_msg",
    "cthelper_msg_type",
    "helper_from_bytes",
]

# enum nfnl_cthelper_msg_types
NFNL_MSG_CTHELPER_NEW = 0
NFNL_MSG_CTHELPER_GET = 1
NFNL_MSG_CTHELPER_DEL = 2

NFCT_HELPER_STATUS_DISABLED = 0
NFCT_HELPER_STATUS_ENABLED = 1

# include/net/netfilter/nf_conntrack_helper.h / nf_conntrack_expect.h
NF_CT_HELPER_NAME_LEN = 16
NF_CT_MAX_EXPECT_CLASSES = 4
NF_CT_EXPECT_MAX_CNT = 255

_POLICY_SETS = ("NFCTH_POLICY_SET1", "NFCTH_POLICY_SET2", "NFCTH_POLICY_SET3", "NFCTH_POLICY_SET4")


def cthelper_msg_type(msg: int) -> int:
    """nlmsg_type of a cthelper message (nfnl_msg_type())."""
    return (NFNL_SUBSYS_CTHELPER << 8) | msg


class cthelper_msg(nfgen_msg):
    """enum nfnl_cthelper_type. Every nest carries NLA_F_NESTED, as
    nla_nest_start() sets it in the kernel's dumps."""

    prefix = "NFCTH_"
    nla_map = (
        ("NFCTH_UNSPEC", "none"),
        ("NFCTH_NAME", "asciiz"),
        ("NFCTH_TUPLE", "nfcth_tuple"),
        ("NFCTH_QUEUE_NUM", "be32"),
        ("NFCTH_POLICY", "nfcth_policy_set"),
        ("NFCTH_PRIV_DATA_LEN", "be32"),
        ("NFCTH_STATUS", "be32"),
    )

    class nfcth_tuple(nla):
        """enum nfnl_cthelper_tuple_type: the l3 number is sent in network
        order (nfnl_cthelper_parse_tuple() reads it with nla_get_be16)."""

        nla_flags = NLA_F_NESTED
        prefix = "NFCTH_TUPLE_"
        nla_map = (
            ("NFCTH_TUPLE_UNSPEC", "none"),
            ("NFCTH_TUPLE_L3PROTONUM", "be16"),
            ("NFCTH_TUPLE_L4PROTONUM", "uint8"),
        )

    class nfcth_policy_set(nla):
        """enum nfnl_cthelper_policy_type: the class count, then one nest per class."""

        nla_flags = NLA_F_NESTED
        prefix = "NFCTH_POLICY_"
        nla_map = (
            ("NFCTH_POLICY_SET_UNSPEC", "none"),
            ("NFCTH_POLICY_SET_NUM", "be32"),
            ("NFCTH_POLICY_SET1", "nfcth_policy"),
            ("NFCTH_POLICY_SET2", "nfcth_policy"),
            ("NFCTH_POLICY_SET3", "nfcth_policy"),
            ("NFCTH_POLICY_SET4", "nfcth_policy"),
        )

        class nfcth_policy(nla):
            """enum nfnl_cthelper_pol_type: one struct nf_conntrack_expect_policy."""

            nla_flags = NLA_F_NESTED
            prefix = "NFCTH_POLICY_"
            nla_map = (
                ("NFCTH_POLICY_UNSPEC", "none"),
                ("NFCTH_POLICY_NAME", "asciiz"),
                ("NFCTH_POLICY_EXPECT_MAX", "be32"),
                ("NFCTH_POLICY_EXPECT_TIMEOUT", "be32"),
            )


@dataclass(frozen=True, slots=True)
class ExpectPolicy:
    """struct nf_conntrack_expect_policy: per expectation class, how many a
    master may have at once and how long a new one lives (seconds)."""

    name: str
    max_expected: int
    timeout: int

    def __post_init__(self) -> None:
        if not self.name or len(self.name.encode()) >= NF_CT_HELPER_NAME_LEN:
            raise ValueError(f"policy name {self.name!r}: 1 to {NF_CT_HELPER_NAME_LEN - 1} bytes")
        if not 0 <= self.max_expected <= NF_CT_EXPECT_MAX_CNT:
            # nfnl_cthelper_expect_policy() refuses more with EINVAL.
            raise ValueError(f"policy {self.name}: max_expected {self.max_expected} is not 0-{NF_CT_EXPECT_MAX_CNT}")
        if not 0 <= self.timeout <= 0xFFFFFFFF:
            raise ValueError(f"policy {self.name}: timeout {self.timeout} is not a u32")


@dataclass(frozen=True, slots=True)
class UserspaceHelper:
    """One userspace helper registration (struct nf_conntrack_helper with
    NF_CT_HELPER_F_USERSPACE): its name and (l3num, l4proto) tuple, the
    NFQUEUE its packets go to, its expectation policies (one per class), the
    bytes of private data it keeps per conntrack, and whether it is enabled
    (NF_CT_HELPER_F_CONFIGURED: a disabled one lets packets pass unqueued)."""

    name: str
    l3num: int  # AF_INET / AF_INET6
    l4proto: int  # IPPROTO_UDP / IPPROTO_TCP
    queue_num: int = 0
    policies: tuple[ExpectPolicy, ...] = ()
    priv_data_len: int = 0
    enabled: bool = True

    def __post_init__(self) -> None:
        if not self.name or len(self.name.encode()) >= NF_CT_HELPER_NAME_LEN:
            raise ValueError(f"helper name {self.name!r}: 1 to {NF_CT_HELPER_NAME_LEN - 1} bytes")
        if len(self.policies) > NF_CT_MAX_EXPECT_CLASSES:
            # nfnl_cthelper_parse_expect_policy(): EOVERFLOW.
            raise ValueError(f"helper {self.name}: at most {NF_CT_MAX_EXPECT_CLASSES} policies")

    @property
    def family_name(self) -> str:
        return {socket.AF_INET: "ipv4", socket.AF_INET6: "ipv6"}.get(self.l3num, str(self.l3num))

    @property
    def proto_name(self) -> str:
        return {socket.IPPROTO_UDP: "udp", socket.IPPROTO_TCP: "tcp"}.get(self.l4proto, str(self.l4proto))

    def __str__(self) -> str:
        return f"{self.name} {self.family_name}/{self.proto_name} queue {self.queue_num}"

    def tuple_attr(self) -> dict[str, Any]:
        return {"attrs": [["NFCTH_TUPLE_L3PROTONUM", self.l3num], ["NFCTH_TUPLE_L4PROTONUM", self.l4proto]]}

    def policy_attr(self) -> dict[str, Any]:
        attrs: list[list[Any]] = [["NFCTH_POLICY_SET_NUM", len(self.policies)]]
        for key, p in zip(_POLICY_SETS, self.policies):
            attrs.append([key, {"attrs": [
                ["NFCTH_POLICY_NAME", p.name],
                ["NFCTH_POLICY_EXPECT_MAX", p.max_expected],
                ["NFCTH_POLICY_EXPECT_TIMEOUT", p.timeout],
            ]}])
        return {"attrs": attrs}

    def to_attrs(self) -> list[list[Any]]:
        """Every attribute, in nfnl_cthelper_fill_info() order."""
        return [
            ["NFCTH_NAME", self.name],
            ["NFCTH_QUEUE_NUM", self.queue_num],
            ["NFCTH_TUPLE", self.tuple_attr()],
            ["NFCTH_POLICY", self.policy_attr()],
            ["NFCTH_PRIV_DATA_LEN", self.priv_data_len],
            ["NFCTH_STATUS", NFCT_HELPER_STATUS_ENABLED if self.enabled else NFCT_HELPER_STATUS_DISABLED],
        ]

    def key_attrs(self) -> list[list[Any]]:
        """Name and tuple: what NFNL_MSG_CTHELPER_GET/_DEL select by."""
        return [["NFCTH_NAME", self.name], ["NFCTH_TUPLE", self.tuple_attr()]]

    def to_msg(self, msg_type: int = NFNL_MSG_CTHELPER_NEW, flags: int = 0, *,
               attrs: list[list[Any]] | None = None) -> cthelper_msg:
        """A message about this helper (AF_UNSPEC, NFNETLINK_V0, res_id 0, as
        nfnl_cthelper_fill_info() writes them); ``attrs`` defaults to all."""
        msg = cthelper_msg()
        msg["header"]["type"] = cthelper_msg_type(msg_type)
        msg["header"]["flags"] = flags
        msg["nfgen_family"] = socket.AF_UNSPEC
        msg["version"] = 0
        msg["res_id"] = 0
        msg["attrs"] = self.to_attrs() if attrs is None else attrs
        return msg

    @classmethod
    def from_msg(cls, msg: Any) -> UserspaceHelper:
        """A pyroute2 cthelper_msg, decoded from its own buffer (encoded first if it was built, not received)."""
        if not msg.data:
            msg.encode()
        return helper_from_bytes(msg.data, msg.offset)


_TOP = numbers(cthelper_msg)
_TUPLE = numbers(cthelper_msg.nfcth_tuple)
_SET = numbers(cthelper_msg.nfcth_policy_set)
_POLICY = numbers(cthelper_msg.nfcth_policy_set.nfcth_policy)


def helper_from_bytes(data: bytes, off: int = 0) -> UserspaceHelper:
    """Decode the cthelper message at ``off`` of a datagram (nfnl_cthelper_fill_info());
    what it leaves out takes the defaults nfnl_cthelper_create() would."""
    _, _, attrs = message_attributes(data, off)

    def get(table: dict[int, Span], number: int, read: Callable[[bytes, Span], Any], default: Any) -> Any:
        span = table.get(number)
        return default if span is None else read(data, span)

    tup = get(attrs, _TOP["NFCTH_TUPLE"], nested, {})
    policy = get(attrs, _TOP["NFCTH_POLICY"], nested, {})
    count = get(policy, _SET["NFCTH_POLICY_SET_NUM"], be32, 0)
    policies = []
    for key in _POLICY_SETS[:count]:
        span = policy.get(_SET[key])
        if span is None:
            raise DecodeError(f"cthelper message: NFCTH_POLICY_SET_NUM is {count} but {key} is missing")
        p = nested(data, span)
        policies.append(ExpectPolicy(get(p, _POLICY["NFCTH_POLICY_NAME"], asciiz, ""),
                                     get(p, _POLICY["NFCTH_POLICY_EXPECT_MAX"], be32, 0),
                                     get(p, _POLICY["NFCTH_POLICY_EXPECT_TIMEOUT"], be32, 0)))
    status = get(attrs, _TOP["NFCTH_STATUS"], be32, NFCT_HELPER_STATUS_ENABLED)
    return UserspaceHelper(
        name=get(attrs, _TOP["NFCTH_NAME"], asciiz, ""),
        l3num=get(tup, _TUPLE["NFCTH_TUPLE_L3PROTONUM"], be16, 0),
        l4proto=get(tup, _TUPLE["NFCTH_TUPLE_L4PROTONUM"], u8, 0),
        queue_num=get(attrs, _TOP["NFCTH_QUEUE_NUM"], be32, 0),
        policies=tuple(policies),
        priv_data_len=get(attrs, _TOP["NFCTH_PRIV_DATA_LEN"], be32, 0),
        enabled=status == NFCT_HELPER_STATUS_ENABLED,
    )
