"""The expectation and conntrack codecs without a kernel: encode/decode round
trips, the wire layout ctnetlink_exp_dump_expect() produces, bytes cut short,
and messages the 6.18 kernel really sent (captured by test_ctexp_kernel.py's setup: lo of one
namespace, the SIP helper on udp/5060)."""

from __future__ import annotations

import dataclasses
import itertools
import socket
import struct
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyroute2.netlink import NLA_F_NESTED
from pyroute2.netlink.nfnetlink.nfctsocket import nfct_msg

from sipct.netlink.conntrack import (KernelConntrack, SeqAdj, conntrack_from_bytes, conntrack_from_msg, ct_msg,
                                     update_msg)
from sipct.netlink.wire import encode_request
from sipct.netlink.ctexp import (
    CTA_EXPECT_CLASS,
    CTA_EXPECT_MASK,
    CTA_EXPECT_MASTER,
    CTA_EXPECT_TIMEOUT,
    CTA_EXPECT_TUPLE,
    IPCTNL_MSG_EXP_DELETE,
    IPCTNL_MSG_EXP_NEW,
    NF_CT_EXPECT_INACTIVE,
    NF_CT_EXPECT_PERMANENT,
    NF_CT_EXPECT_USERSPACE,
    NFNLGRP_CONNTRACK_EXP_DESTROY,
    NFNLGRP_CONNTRACK_EXP_NEW,
    ExpectMask,
    ExpectNat,
    ExpectTuple,
    KernelExpectation,
    MasterTuple,
    ctexp_msg,
    ctexp_stats_cpu_msg,
    exp_msg_type,
    expectation_from_bytes,
)
from sipct.netlink.wire import DecodeError, netlink_messages
from sipct.spec.expectation import ConnTuple
from tests.support.netlink_bytes import nla

UDP = 17
NLM_F_MULTI = 0x2
NLM_F_EXCL_CREATE = 0x600

# IPCTNL_MSG_EXP_NEW event on NFNLGRP_CONNTRACK_EXP_NEW after
# REGISTER 192.0.2.1:5060 -> 192.0.2.2:5060 (Contact <sip:a@192.0.2.1:5060>).
KERNEL_V4_REGISTER_EVENT = bytes.fromhex(
    "d800000000020006000000000000000002000000340002801400018008000100c0000202"
    "08000200c00002011c000280050001001100000006000200000000000600030013c40000"
    "340003801400018008000100ffffffff08000200ffffffff1c0002800500010011000000"
    "060002000000000006000300ffff0000340001801400018008000100c000020108000200"
    "c00002021c00028005000100110000000600020013c400000600030013c4000008000400"
    "000000b40800050027ef742f080008000000000308000900000000000800060073697000"
)

# One IPCTNL_MSG_EXP_GET dump reply (AF_UNSPEC request) after the IPv6 REGISTER
# [2001:db8::1]:5060 -> [2001:db8::2]:5060.
KERNEL_V6_REGISTER_DUMP = bytes.fromhex(
    "200100000002020001000000492300000a0000004c0002802c0001801400030020010db8"
    "0000000000000000000000021400040020010db80000000000000000000000011c000280"
    "050001001100000006000200000000000600030013c400004c0003802c00018014000300"
    "ffffffffffffffffffffffffffffffff14000400ffffffffffffffffffffffffffffffff"
    "1c0002800500010011000000060002000000000006000300ffff00004c0001802c000180"
    "1400030020010db80000000000000000000000011400040020010db80000000000000000"
    "000000021c00028005000100110000000600020013c400000600030013c4000008000400"
    "000000b308000500827f89a8080008000000000308000900000000000800060073697000"
)

# Dump reply for the RTP expectation of an INVITE whose SDP says
# c=IN IP4 192.0.2.1, m=audio 5000 RTP/AVP 0.
KERNEL_V4_INVITE_RTP_DUMP = bytes.fromhex(
    "d80000000002020001000000d523000002000000340002801400018008000100c0000202"
    "08000200c00002011c000280050001001100000006000200000000000600030013880000"
    "340003801400018008000100ffffffff08000200ffffffff1c0002800500010011000000"
    "060002000000000006000300ffff0000340001801400018008000100c000020108000200"
    "c00002021c00028005000100110000000600020013c400000600030013c4000008000400"
    "000000b30800050087bfe546080008000000000008000900000000010800060073697000"
)

# IPCTNL_MSG_CT_GET reply for the REGISTER's conntrack (CTA_HELP nested).
KERNEL_CT_GET_REPLY = bytes.fromhex(
    "b000000000010200070000003025000002000000340001801400018008000100c0000201"
    "08000200c00002021c00028005000100110000000600020013c400000600030013c40000"
    "340002801400018008000100c000020208000200c00002011c0002800500010011000000"
    "0600020013c400000600030013c400000800030000002008080008000000000008000c00"
    "031186aa08000b00000000020800070000000e0f0c0005800800010073697000"
)

# IPCTNL_MSG_EXP_GET_STATS_CPU dump: one message per CPU (two CPUs).
KERNEL_EXP_STATS_CPU = bytes.fromhex(
    "2c0000000301020008000000302500000000000008000100000000000800020000000002"
    "08000300000000012c000000030102000800000030250000000000010800010000000000"
    "08000200000000000800030000000000"
)

V4_REGISTER = KernelExpectation(
    family=socket.AF_INET,
    proto=UDP,
    master=MasterTuple(ip_address("192.0.2.1"), ip_address("192.0.2.2"), 5060, 5060, UDP),
    tuple=ExpectTuple(ip_address("192.0.2.2"), ip_address("192.0.2.1"), 0, 5060),
    mask=ExpectMask(ip_address("255.255.255.255"), 0),
    timeout=180,
    flags=frozenset({"PERMANENT", "INACTIVE"}),
    klass=0,
    helper="sip",
    id=0x27EF742F,
)

V6_REGISTER = KernelExpectation(
    family=socket.AF_INET6,
    proto=UDP,
    master=MasterTuple(ip_address("2001:db8::1"), ip_address("2001:db8::2"), 5060, 5060, UDP),
    tuple=ExpectTuple(ip_address("2001:db8::2"), ip_address("2001:db8::1"), 0, 5060),
    mask=ExpectMask(ip_address("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), 0),
    timeout=179,
    flags=frozenset({"PERMANENT", "INACTIVE"}),
    klass=0,
    helper="sip",
    id=0x827F89A8,
)

V4_INVITE_RTP = KernelExpectation(
    family=socket.AF_INET,
    proto=UDP,
    master=MasterTuple(ip_address("192.0.2.1"), ip_address("192.0.2.2"), 5060, 5060, UDP),
    tuple=ExpectTuple(ip_address("192.0.2.2"), ip_address("192.0.2.1"), 0, 5000),
    mask=ExpectMask(ip_address("255.255.255.255"), 0),
    timeout=179,
    flags=frozenset(),
    klass=1,
    helper="sip",
    id=0x87BFE546,
)

KERNEL_MESSAGES = [
    pytest.param(
        KERNEL_V4_REGISTER_EVENT, V4_REGISTER, IPCTNL_MSG_EXP_NEW, NLM_F_EXCL_CREATE, id="v4-register-event"
    ),
    pytest.param(
        KERNEL_V6_REGISTER_DUMP, V6_REGISTER, IPCTNL_MSG_EXP_NEW, NLM_F_MULTI, id="v6-register-dump"
    ),
    pytest.param(
        KERNEL_V4_INVITE_RTP_DUMP, V4_INVITE_RTP, IPCTNL_MSG_EXP_NEW, NLM_F_MULTI, id="v4-invite-dump"
    ),
]


def decode(data: bytes, offset: int = 0) -> ctexp_msg:
    msg = ctexp_msg(data, offset=offset)
    msg.decode()
    return msg


def encode(
    exp: KernelExpectation, msg_type: int = IPCTNL_MSG_EXP_NEW, flags: int = 0, seq: int = 0, pid: int = 0
) -> bytes:
    msg = exp.to_msg(msg_type, flags)
    msg["header"]["sequence_number"] = seq
    msg["header"]["pid"] = pid
    msg.encode()
    return bytes(msg.data)


def nlas(data: bytes, offset: int = 20) -> list[tuple[int, bytes]]:
    """(nla_type with its flag bits, payload) of consecutive attributes; by
    default those after nlmsghdr + nfgenmsg."""
    out = []
    while offset < len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        out.append((kind, data[offset + 4 : offset + length]))
        offset += (length + 3) & ~3
    return out


# -- real kernel bytes -------------------------------------------------------------


@pytest.mark.parametrize(("raw", "expected", "msg_type", "flags"), KERNEL_MESSAGES)
def test_decodes_kernel_bytes(raw: bytes, expected: KernelExpectation, msg_type: int, flags: int) -> None:
    msg = decode(raw)
    assert msg["header"]["type"] == exp_msg_type(msg_type)
    assert msg["header"]["flags"] == flags
    assert KernelExpectation.from_msg(msg) == expected


@pytest.mark.parametrize(("raw", "expected", "msg_type", "flags"), KERNEL_MESSAGES)
def test_reencodes_kernel_bytes_exactly(
    raw: bytes, expected: KernelExpectation, msg_type: int, flags: int
) -> None:
    header = decode(raw)["header"]
    assert encode(expected, msg_type, flags, header["sequence_number"], header["pid"]) == raw


def test_ct_msg_decodes_nested_cta_help() -> None:
    msg = ct_msg(KERNEL_CT_GET_REPLY)
    msg.decode()
    assert msg.get_attr("CTA_HELP").get_attr("CTA_HELP_NAME") == "sip"
    assert msg.get_attr("CTA_TUPLE_ORIG").get_attr("CTA_TUPLE_PROTO").get_attr("CTA_PROTO_DST_PORT") == 5060
    # pyroute2's own class reads the nest as a string: the reason ct_msg exists.
    theirs = nfct_msg(KERNEL_CT_GET_REPLY)
    theirs.decode()
    assert theirs.get_attr("CTA_HELP") != "sip"


def test_stats_cpu_reply() -> None:
    first = ctexp_stats_cpu_msg(KERNEL_EXP_STATS_CPU)
    first.decode()
    second = ctexp_stats_cpu_msg(KERNEL_EXP_STATS_CPU, offset=first["header"]["length"])
    second.decode()
    # ctnetlink_exp_stat_fill_info() puts the CPU in res_id and tags the
    # reply with subsystem CTNETLINK (0x103), not CTNETLINK_EXP.
    assert first["header"]["type"] == second["header"]["type"] == 0x103
    assert (
        first["res_id"],
        first.get_attr("CTA_STATS_EXP_CREATE"),
        first.get_attr("CTA_STATS_EXP_DELETE"),
    ) == (0, 2, 1)
    assert (second["res_id"], second.get_attr("CTA_STATS_EXP_CREATE")) == (1, 0)


# -- wire layout ----------------------------------------------------------------------


def test_layout_matches_ctnetlink_exp_dump_expect() -> None:
    data = encode(V4_REGISTER)
    top = nlas(data)
    assert [kind for kind, _ in top[:3]] == [
        CTA_EXPECT_TUPLE | NLA_F_NESTED,
        CTA_EXPECT_MASK | NLA_F_NESTED,
        CTA_EXPECT_MASTER | NLA_F_NESTED,
    ]
    payload = {kind & ~NLA_F_NESTED: body for kind, body in top}
    assert payload[CTA_EXPECT_TIMEOUT] == (180).to_bytes(4, "big")
    assert payload[CTA_EXPECT_CLASS] == bytes(4)
    # Every level of a tuple is a nest with NLA_F_NESTED, as nla_nest_start() makes it.
    (ip_kind, _), (proto_kind, proto) = nlas(payload[CTA_EXPECT_TUPLE], 0)
    assert (ip_kind, proto_kind) == (1 | NLA_F_NESTED, 2 | NLA_F_NESTED)
    assert nlas(proto, 0) == [(1, bytes([UDP])), (2, (0).to_bytes(2, "big")), (3, (5060).to_bytes(2, "big"))]


def test_mask_carries_ones_where_the_kernel_stores_nothing() -> None:
    msg = decode(encode(V4_REGISTER))
    mask = msg.get_attr("CTA_EXPECT_MASK")
    assert mask.get_attr("CTA_TUPLE_IP").get_attr("CTA_IP_V4_DST") == "255.255.255.255"
    proto = mask.get_attr("CTA_TUPLE_PROTO")
    assert (proto.get_attr("CTA_PROTO_NUM"), proto.get_attr("CTA_PROTO_DST_PORT")) == (UDP, 0xFFFF)


def test_message_types_and_groups() -> None:
    assert exp_msg_type(IPCTNL_MSG_EXP_NEW) == 0x200
    assert exp_msg_type(IPCTNL_MSG_EXP_DELETE) == 0x202
    assert (NFNLGRP_CONNTRACK_EXP_NEW, NFNLGRP_CONNTRACK_EXP_DESTROY) == (4, 6)


# -- round trips ----------------------------------------------------------------------

FLAG_BITS = (NF_CT_EXPECT_PERMANENT, NF_CT_EXPECT_INACTIVE, NF_CT_EXPECT_USERSPACE)
FLAG_SETS = [sum(combo) for n in range(4) for combo in itertools.combinations(FLAG_BITS, n)]


def sample(family: int, flags: int, wildcard: bool) -> KernelExpectation:
    if family == socket.AF_INET:
        a, b, ones, zero = (
            ip_address("192.0.2.1"),
            ip_address("192.0.2.2"),
            IPv4Address(2**32 - 1),
            IPv4Address(0),
        )
    else:
        a, b, ones, zero = (
            ip_address("2001:db8::1"),
            ip_address("2001:db8::2"),
            IPv6Address(2**128 - 1),
            IPv6Address(0),
        )
    return KernelExpectation(
        family=family,
        proto=UDP,
        master=MasterTuple(a, b, 5060, 5060, UDP),
        tuple=ExpectTuple(b, a, 0 if wildcard else 5062, 5000),
        mask=ExpectMask(zero, 0) if wildcard else ExpectMask(ones, 0xFFFF),
        timeout=42,
        flags=flags,
        klass=1,
        helper="sip",
        id=7,
    )


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["v4", "v6"])
@pytest.mark.parametrize("flags", FLAG_SETS)
@pytest.mark.parametrize("wildcard", [True, False], ids=["wildcard", "specific"])
def test_round_trip(family: int, flags: int, wildcard: bool) -> None:
    exp = sample(family, flags, wildcard)
    back = KernelExpectation.from_msg(decode(encode(exp)))
    assert back == exp
    assert back.flag_bits == flags
    assert back.mask.src_is_wildcard is wildcard and back.mask.sport_is_wildcard is wildcard


def test_optional_attributes_round_trip() -> None:
    exp = dataclasses.replace(
        sample(socket.AF_INET, NF_CT_EXPECT_PERMANENT, False),
        helper=None,
        id=None,
        fn="nat-follow-master",
        nat=ExpectNat(dir=1, src=ip_address("198.51.100.7"), sport=40000),
    )
    data = encode(exp)
    assert KernelExpectation.from_msg(decode(data)) == exp
    nat = decode(data).get_attr("CTA_EXPECT_NAT").get_attr("CTA_EXPECT_NAT_TUPLE")
    assert nat.get_attr("CTA_TUPLE_IP").get_attr("CTA_IP_V4_DST") == "0.0.0.0"


def test_flags_by_bits_or_names_are_the_same() -> None:
    by_bits = sample(socket.AF_INET, NF_CT_EXPECT_PERMANENT | NF_CT_EXPECT_USERSPACE, True)
    by_names = dataclasses.replace(by_bits, flags={"PERMANENT", "USERSPACE"})
    assert by_bits == by_names
    assert by_names.flags == frozenset({"PERMANENT", "USERSPACE"})


def test_unknown_flag_bits_survive_and_unknown_names_do_not() -> None:
    exp = sample(socket.AF_INET, NF_CT_EXPECT_PERMANENT | 0x8, True)
    assert exp.flags == frozenset({"PERMANENT", "0x8"})
    assert KernelExpectation.from_msg(decode(encode(exp))).flag_bits == 0x9
    with pytest.raises(ValueError):
        dataclasses.replace(exp, flags={"STICKY"})


def test_family_must_be_inet() -> None:
    with pytest.raises(ValueError):
        dataclasses.replace(sample(socket.AF_INET, 0, True), family=socket.AF_UNSPEC).to_attrs()


@pytest.mark.parametrize("missing", ["CTA_EXPECT_TUPLE", "CTA_EXPECT_MASK", "CTA_EXPECT_MASTER"])
def test_message_without_tuple_is_refused(missing: str) -> None:
    msg = V4_REGISTER.to_msg()
    msg["attrs"] = [a for a in msg["attrs"] if a[0] != missing]
    msg.encode()
    with pytest.raises(DecodeError, match="lacks"):
        expectation_from_bytes(bytes(msg.data))


@pytest.mark.parametrize("raw", [KERNEL_V4_REGISTER_EVENT, KERNEL_V6_REGISTER_DUMP, KERNEL_V4_INVITE_RTP_DUMP])
def test_kernel_bytes_cut_short_are_refused(raw: bytes) -> None:
    """A message whose attributes run past its end gives DecodeError (a ValueError), never another exception."""
    for cut in range(20, len(raw), 4):
        data = bytearray(raw[:cut])
        struct.pack_into("=I", data, 0, cut)  # the nlmsghdr's length stays right, as recv() gives it
        try:
            expectation_from_bytes(bytes(data))
        except ValueError:
            pass


ports = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)


@st.composite
def expectations(draw: st.DrawFn) -> KernelExpectation:
    family = draw(st.sampled_from([socket.AF_INET, socket.AF_INET6]))
    address_class = IPv4Address if family == socket.AF_INET else IPv6Address
    all_ones = 2 ** (32 if family == socket.AF_INET else 128) - 1
    addr = st.integers(0, all_ones).map(address_class)
    proto = draw(st.sampled_from([6, 17, 132]))
    return KernelExpectation(
        family=family,
        proto=proto,
        master=MasterTuple(draw(addr), draw(addr), draw(ports), draw(ports), proto),
        tuple=ExpectTuple(draw(addr), draw(addr), draw(ports), draw(ports)),
        mask=ExpectMask(
            address_class(draw(st.sampled_from([0, all_ones]))), draw(st.sampled_from([0, 0xFFFF]))
        ),
        timeout=draw(u32),
        flags=draw(st.integers(0, 7)),
        klass=draw(st.integers(0, 3)),
        helper=draw(st.one_of(st.none(), st.sampled_from(["sip", "ftp", "h323"]))),
        id=draw(st.one_of(st.none(), u32)),
    )


@given(expectations())
def test_round_trip_property(exp: KernelExpectation) -> None:
    assert KernelExpectation.from_msg(decode(encode(exp))) == exp


def test_kernel_bytes_are_read_where_they_are_in_the_datagram() -> None:
    """A dump's datagram holds several messages; each decodes at its offset (netlink_messages())."""
    datagram = KERNEL_V4_REGISTER_EVENT + KERNEL_V6_REGISTER_DUMP + KERNEL_V4_INVITE_RTP_DUMP
    offsets = [off for _, _, _, off in netlink_messages(datagram)]
    assert [expectation_from_bytes(datagram, off) for off in offsets] == [V4_REGISTER, V6_REGISTER, V4_INVITE_RTP]
    # and a received pyroute2 message is decoded from that buffer at its offset
    assert KernelExpectation.from_msg(decode(datagram, offsets[1])) == V6_REGISTER


def test_conntrack_from_kernel_bytes() -> None:
    """The IPCTNL_MSG_CT_GET reply of the REGISTER's conntrack (ctnetlink_fill_info())."""
    ct = conntrack_from_bytes(KERNEL_CT_GET_REPLY)
    ua, registrar = ip_address("192.0.2.1"), ip_address("192.0.2.2")
    assert ct.original == ConnTuple(ua, registrar, UDP, 5060, 5060)
    assert ct.reply == ConnTuple(registrar, ua, UDP, 5060, 5060)
    assert (ct.status, ct.timeout, ct.id, ct.helper, ct.helper_info) == (0x2008, 3599, 0x031186AA, "sip", None)
    msg = ct_msg(KERNEL_CT_GET_REPLY)
    msg.decode()
    assert conntrack_from_msg(msg) == ct


def _seq_adj_nest(kind: int, pos: int, before: int, after: int) -> bytes:
    """dump_ct_seq_adj(): nla_nest_start(type), then CORRECTION_POS, OFFSET_BEFORE, OFFSET_AFTER as be32."""
    inner = (nla(1, struct.pack("!I", pos)) + nla(2, struct.pack("!i", before))
             + nla(3, struct.pack("!i", after)))
    return nla(kind, inner, nested=True)


def test_conntrack_seq_adj_from_kernel_bytes() -> None:
    """A conntrack with IPS_SEQ_ADJUST: ctnetlink_dump_ct_seq_adj() appends
    CTA_SEQ_ADJ_ORIG (15) and _REPLY (16); the offsets are s32 (a shrinking
    direction's is negative), the position a u32."""
    attrs = _seq_adj_nest(15, 0xFFFFFFF0, 0, 8) + _seq_adj_nest(16, 3_000_000_001, -2, -5)
    data = bytearray(KERNEL_CT_GET_REPLY + attrs)
    struct.pack_into("=I", data, 0, len(data))
    ct = conntrack_from_bytes(bytes(data))
    assert ct.seq_adj == (SeqAdj(0xFFFFFFF0, 0, 8), SeqAdj(3_000_000_001, -2, -5))
    assert conntrack_from_bytes(KERNEL_CT_GET_REPLY).seq_adj is None  # no IPS_SEQ_ADJUST, no attributes
    assert dataclasses.replace(ct, seq_adj=None) == conntrack_from_bytes(KERNEL_CT_GET_REPLY)


def test_conntrack_update_request_layout() -> None:
    """IPCTNL_MSG_CT_NEW (NLM_F_REQUEST|NLM_F_ACK, no CREATE/EXCL: ctnetlink_change_conntrack())
    for an IPv6 master: CTA_TUPLE_ORIG, CTA_HELP {NAME, INFO}, CTA_TIMEOUT,
    CTA_SEQ_ADJ_REPLY {CORRECTION_POS, OFFSET_BEFORE, OFFSET_AFTER}, byte for byte
    as pyroute2 writes it too."""
    a, b = ip_address("2001:db8:a::10"), ip_address("2001:db8:b::5")
    original = ConnTuple(a, b, 6, 5070, 5060)
    msg = update_msg(original, timeout=3600, helper="sipct", helper_info=bytes(12),
                     seq_adj={True: SeqAdj(3_000_000_001, 0, -1)})
    data = encode_request(msg, (1 << 8) | 0, 0x5, 7, 9)
    tuple_ = nla(1, nla(3, a.packed) + nla(4, b.packed), nested=True) + nla(
        2, nla(1, b"\x06") + nla(2, struct.pack("!H", 5070)) + nla(3, struct.pack("!H", 5060)), nested=True)
    body = (nla(1, tuple_, nested=True) + nla(5, nla(1, b"sipct\0") + nla(2, bytes(12)), nested=True)
            + nla(7, struct.pack("!I", 3600))
            + nla(16, nla(1, struct.pack("!I", 3_000_000_001)) + nla(2, bytes(4)) + nla(3, struct.pack("!i", -1))))
    assert data == struct.pack("=IHHIIBBH", 20 + len(body), 0x100, 0x5, 7, 9, socket.AF_INET6, 0, 0) + body
    msg["header"]["type"], msg["header"]["flags"] = 0x100, 0x5
    msg["header"]["sequence_number"], msg["header"]["pid"] = 7, 9
    msg.encode()
    assert bytes(msg.data) == data


s32 = st.integers(-2**31, 2**31 - 1)
seq_adjs = st.builds(SeqAdj, st.integers(0, 2**32 - 1), s32, s32)


@given(st.sampled_from([socket.AF_INET, socket.AF_INET6]), st.data())
def test_conntrack_round_trip(family: int, data: st.DataObject) -> None:
    bits = 32 if family == socket.AF_INET else 128
    addr = st.integers(0, 2**bits - 1).map(IPv4Address if family == socket.AF_INET else IPv6Address)
    tuples = st.builds(ConnTuple, addr, addr, st.sampled_from([6, 17]), ports, ports)
    ct = KernelConntrack(family, data.draw(tuples), data.draw(st.none() | tuples), data.draw(st.none() | u32),
                         data.draw(u32), data.draw(st.none() | u32), data.draw(st.none() | u32),
                         data.draw(st.none() | ports), data.draw(st.none() | st.sampled_from(["sip", "h" * 15])),
                         None, data.draw(st.none() | tuples), data.draw(st.none() | st.tuples(seq_adjs, seq_adjs)))
    msg = ct_msg()
    msg["nfgen_family"], msg["version"], msg["res_id"] = family, 0, 0
    msg["attrs"] = ct.to_attrs()
    msg.encode()
    assert conntrack_from_bytes(bytes(msg.data)) == ct
