"""The nfnetlink_queue codec without a kernel: configurations, queued
packets (with their conntrack, NFQA_CT) and verdicts (with NFQA_EXP) encode
and decode back to themselves, bytes laid out the way the kernel writes them
(nfqnl_build_packet_message(), ctnetlink_glue_build()) decode to what they
say, bytes it would not write are refused, and the requests written with
struct are pyroute2's bytes."""

from __future__ import annotations

import ipaddress
import socket
import struct
import dataclasses
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipct.netlink.conntrack import IPS_CONFIRMED, IPS_EXPECTED, IPS_SEEN_REPLY, KernelConntrack, SeqAdj
from sipct.netlink.ctexp import ExpectMask, ExpectNat, ExpectTuple, KernelExpectation, MasterTuple
from sipct.netlink.nfqueue import (ETH_P_IP, ETH_P_IPV6, NF_ACCEPT, NF_DROP, NF_REPEAT, NFQA_CFG_F_CONNTRACK,
                                   NFQA_CFG_F_FAIL_OPEN, NFQNL_CFG_CMD_BIND, NFQNL_CFG_CMD_UNBIND,
                                   NFQNL_COPY_PACKET, NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_VERDICT_BATCH,
                                   QueueConfig, QueuedPacket, Verdict, config_from_bytes, encode_verdict,
                                   nfq_config_msg, nfq_msg, packet_from_bytes, queue_msg_type, verdict_from_bytes)
from sipct.netlink.wire import DecodeError, netlink_messages
from sipct.reference.packet import TCP_SYN, build_packet, parse_packet
from sipct.spec.expectation import ConnTuple

from tests.support.netlink_bytes import decode, encoded, nla, nlmsg

ip = ipaddress.ip_address
UDP, TCP = 17, 6


# --- queue configuration ---------------------------------------------------------------------------
def test_config_kernel_layout() -> None:
    """struct nfqnl_msg_config_cmd {u8 command, u8 pad, be16 pf} and the
    packed struct nfqnl_msg_config_params {be32 copy_range, u8 copy_mode}."""
    body = (nla(1, struct.pack("!BBH", NFQNL_CFG_CMD_BIND, 0, socket.AF_INET))
            + nla(2, struct.pack("!IB", 0xFFFF, NFQNL_COPY_PACKET))
            + nla(3, struct.pack("!I", 1024))
            + nla(4, struct.pack("!I", 3)) + nla(5, struct.pack("!I", 3)))
    data = nlmsg(queue_msg_type(2), 0, 7, body)
    cfg = QueueConfig.from_msg(decode(nfq_config_msg, data))
    assert cfg == QueueConfig(7, NFQNL_CFG_CMD_BIND, socket.AF_INET, NFQNL_COPY_PACKET, 0xFFFF, 1024, 3, 3)
    assert encoded(cfg.to_msg())[16:] == data[16:]


@pytest.mark.parametrize("cfg", [
    QueueConfig(0, NFQNL_CFG_CMD_BIND, socket.AF_INET, NFQNL_COPY_PACKET, 0xFFFF, 1024,
                NFQA_CFG_F_CONNTRACK | NFQA_CFG_F_FAIL_OPEN, NFQA_CFG_F_CONNTRACK | NFQA_CFG_F_FAIL_OPEN),
    QueueConfig(65535, NFQNL_CFG_CMD_UNBIND, socket.AF_INET),
    QueueConfig(3, flags=NFQA_CFG_F_CONNTRACK, mask=NFQA_CFG_F_CONNTRACK),
    QueueConfig(1, copy_mode=NFQNL_COPY_PACKET, copy_range=1500),
])
def test_config_round_trip(cfg: QueueConfig) -> None:
    assert config_from_bytes(encoded(cfg.to_msg())) == cfg


def test_config_flags_carry_a_mask() -> None:
    """nfqnl_recv_config() refuses NFQA_CFG_FLAGS without NFQA_CFG_MASK."""
    cfg = QueueConfig(0, flags=NFQA_CFG_F_CONNTRACK)
    assert QueueConfig.from_msg(decode(nfq_config_msg, encoded(cfg.to_msg()))).mask == NFQA_CFG_F_CONNTRACK


# --- queued packets --------------------------------------------------------------------------------
# IPCTNL_MSG_CT_GET reply of the 6.18 kernel for a REGISTER's conntrack
# (tests/netlink/test_ctexp_codec.py: KERNEL_CT_GET_REPLY); its attributes are
# what ctnetlink_glue_build() nests in NFQA_CT.
KERNEL_CT_GET_REPLY = bytes.fromhex(
    "b000000000010200070000003025000002000000340001801400018008000100c0000201"
    "08000200c00002021c00028005000100110000000600020013c400000600030013c40000"
    "340002801400018008000100c000020208000200c00002011c0002800500010011000000"
    "0600020013c400000600030013c400000800030000002008080008000000000008000c00"
    "031186aa08000b00000000020800070000000e0f0c0005800800010073697000"
)
REGISTER = b"REGISTER sip:192.0.2.2 SIP/2.0\r\nCSeq: 1 REGISTER\r\n\r\n"


def test_queued_packet_kernel_layout_decodes() -> None:
    """nfqnl_build_packet_message(): PACKET_HDR (packed, 7 bytes), ifindexes,
    MARK, TIMESTAMP, CT + CT_INFO, PAYLOAD - family pf, res_id the queue."""
    ct_attrs = KERNEL_CT_GET_REPLY[20:]
    packet = build_packet(ip("192.0.2.1"), 5060, ip("192.0.2.2"), 5060, UDP, REGISTER)
    body = (nla(1, struct.pack("!IHB", 42, ETH_P_IP, 4))
            + nla(5, struct.pack("!I", 2)) + nla(6, struct.pack("!I", 3)) + nla(3, struct.pack("!I", 7))
            + nla(4, struct.pack("!QQ", 1700000000, 123456))
            + nla(11, ct_attrs, nested=True) + nla(12, struct.pack("!I", 2))
            + nla(10, packet))
    data = nlmsg(queue_msg_type(NFQNL_MSG_PACKET), socket.AF_INET, 3, body)
    pkt = packet_from_bytes(data)
    assert (pkt.queue_num, pkt.family, pkt.packet_id, pkt.hw_protocol, pkt.hook) == (3, socket.AF_INET, 42,
                                                                                     ETH_P_IP, 4)
    assert (pkt.indev, pkt.outdev, pkt.mark, pkt.timestamp, pkt.ctinfo) == (2, 3, 7, (1700000000, 123456), 2)
    assert pkt.payload == packet
    ct = pkt.ct
    assert ct.original == ConnTuple(ip("192.0.2.1"), ip("192.0.2.2"), UDP, 5060, 5060)
    assert ct.reply == ct.original.reply()
    assert ct.status == 0x2008 and ct.confirmed and not ct.expected and not ct.seen_reply
    assert (ct.timeout, ct.id, ct.helper, ct.helper_info) == (3599, 0x031186AA, "sip", None)
    assert parse_packet(pkt.payload).payload == REGISTER


def master_state() -> bytes:
    """12 bytes of a helper's private data (CTA_HELP_INFO), as the reference helper's MasterState packs them."""
    return bytes.fromhex("00000722 0004cb2f 13c6 0100".replace(" ", ""))


PACKETS = [
    QueuedPacket(0, socket.AF_INET, 1, ETH_P_IP, 4,
                 build_packet(ip("192.0.2.2"), 5060, ip("198.51.100.2"), 5060, UDP, REGISTER),
                 KernelConntrack(socket.AF_INET, ConnTuple(ip("192.0.2.2"), ip("198.51.100.2"), UDP, 5060, 5060),
                                 ConnTuple(ip("198.51.100.2"), ip("192.0.2.2"), UDP, 5060, 5060), 77, 0, 0,
                                 helper="sip", helper_info=bytes(12)), 2, indev=2, outdev=3),
    QueuedPacket(9, socket.AF_INET6, 2**32 - 1, ETH_P_IPV6, 4,
                 build_packet(ip("2001:db8::1"), 5060, ip("2001:db8::2"), 5062, TCP, b"", TCP_SYN),
                 KernelConntrack(socket.AF_INET6, ConnTuple(ip("2001:db8::1"), ip("2001:db8::2"), TCP, 5060, 5062),
                                 None, 1, IPS_CONFIRMED | IPS_SEEN_REPLY | IPS_EXPECTED, 431999, mark=5, zone=0,
                                 helper="sip", helper_info=master_state(),
                                 master=ConnTuple(ip("2001:db8::2"), ip("2001:db8::1"), UDP, 5060, 5060)),
                 3, mark=5, cap_len=9000, skb_info=1, timestamp=(1, 2)),
    QueuedPacket(1, socket.AF_INET, 3, ETH_P_IP, 1, b"\x45"),  # no conntrack
]


@pytest.mark.parametrize("pkt", PACKETS, ids=["register-new", "ipv6-tcp-expected", "no-ct"])
def test_queued_packet_round_trip(pkt: QueuedPacket) -> None:
    assert QueuedPacket.from_msg(decode(nfq_msg, encoded(pkt.to_msg()))) == pkt


# --- verdicts ----------------------------------------------------------------------------------------
SIGNALLING = KernelExpectation(
    family=socket.AF_INET, proto=UDP,
    master=MasterTuple(ip("0.0.0.0"), ip("0.0.0.0"), None, None, UDP),
    tuple=ExpectTuple(ip("198.51.100.2"), ip("192.0.2.2"), 0, 5060),
    mask=ExpectMask(ip("255.255.255.255"), None), timeout=0, flags=frozenset({"PERMANENT", "INACTIVE"}), klass=0)

VERDICTS = [
    Verdict(0, 1, NF_ACCEPT, socket.AF_INET),
    Verdict(3, 2, NF_DROP, socket.AF_INET, ct_timeout=3600, helper="sip", helper_info=master_state()),
    Verdict(3, 3, NF_REPEAT, socket.AF_INET, ct_timeout=3600, helper="sip", helper_info=master_state(),
            exp=SIGNALLING, exp_helper="sip"),
    Verdict(0, 4, NF_ACCEPT, socket.AF_INET, exp=SIGNALLING),  # NFQA_CT sent (empty) so that NFQA_EXP is read
    Verdict(1, 99, NF_ACCEPT, socket.AF_INET6, mark=3, batch=True),
    Verdict(0, 5, NF_ACCEPT, socket.AF_INET, payload=b"\x45" + bytes(27)),  # NFQA_CT (empty) for seq_adjust
    # The conntrack changed over ctnetlink: no NFQA_CT, so no seq_adjust (IPv6 TCP under NAT).
    Verdict(0, 7, NF_ACCEPT, socket.AF_INET6, payload=b"\x60" + bytes(39), conntrack=False),
    Verdict(0, 6, NF_REPEAT, socket.AF_INET, exp=dataclasses.replace(
        SIGNALLING, nat=ExpectNat(0, ip("192.0.2.10"), 5060), fn="sip"), exp_helper="sip"),
]


@pytest.mark.parametrize("verdict", VERDICTS, ids=["plain", "ct", "ct-exp", "exp", "batch", "payload", "payload-no-ct",
                                                  "exp-nat"])
def test_verdict_round_trip(verdict: Verdict) -> None:
    msg = decode(nfq_msg, encoded(verdict.to_msg()))
    kind = NFQNL_MSG_VERDICT_BATCH if verdict.batch else NFQNL_MSG_VERDICT
    assert msg["header"]["type"] == queue_msg_type(kind)
    assert Verdict.from_msg(msg) == verdict
    names = [a[0] for a in msg["attrs"]]
    assert ("NFQA_CT" in names) == (verdict.ct_attrs() is not None)
    assert ("NFQA_EXP" in names) == (verdict.exp is not None)
    assert ("NFQA_PAYLOAD" in names) == (verdict.payload is not None)


def test_verdict_nat_expectation_layout() -> None:
    """NFQA_EXP's NAT part as ctnetlink_parse_expect_nat() reads it: CTA_EXPECT_NAT
    {DIR be32, TUPLE {IP {V4_SRC saved, V4_DST 0}, PROTO {NUM, SRC_PORT saved,
    DST_PORT 0}}}, then CTA_EXPECT_FN "sip"."""
    data = encoded(VERDICTS[-1].to_msg())
    assert data.endswith(nla(11, b"sip\0"))
    nat = nla(1, struct.pack("!I", 0)) + nla(2, nla(1, nla(1, ip("192.0.2.10").packed) + nla(2, bytes(4)), nested=True)
                                           + nla(2, nla(1, b"\x11") + nla(2, struct.pack("!H", 5060))
                                                 + nla(3, bytes(2)), nested=True), nested=True)
    assert nla(10, nat, nested=True) in data


def test_verdict_kernel_layout() -> None:
    """What nfqnl_recv_verdict() parses: VERDICT_HDR {be32 verdict, be32 id},
    NFQA_CT {CTA_TIMEOUT, CTA_HELP {NAME, INFO}}, NFQA_EXP {TUPLE, MASK, FLAGS,
    CLASS, HELP_NAME}."""
    verdict = VERDICTS[2]
    data = encoded(verdict.to_msg())
    attrs = data[20:]
    assert attrs[:12] == nla(2, struct.pack("!II", NF_REPEAT, 3))
    help_ = nla(1, b"sip\0") + nla(2, master_state())
    ct = nla(11, nla(7, struct.pack("!I", 3600)) + nla(5, help_, nested=True), nested=True)
    assert attrs[12:12 + len(ct)] == ct
    exp = attrs[12 + len(ct):]
    assert struct.unpack_from("=HH", exp) == (len(exp), 15 | 0x8000)
    assert exp.endswith(nla(8, struct.pack("!I", 3)) + nla(9, struct.pack("!I", 0)) + nla(6, b"sip\0"))


# --- the codec's properties: any packet, verdict and request ------------------------------------------
def _tuples(family: int):
    addrs = (st.ip_addresses(v=4) if family == socket.AF_INET else st.ip_addresses(v=6))
    return st.builds(ConnTuple, addrs, addrs, st.sampled_from([UDP, TCP]), st.integers(0, 65535),
                     st.integers(0, 65535))


s32 = st.integers(-2**31, 2**31 - 1)
seq_adjs = st.builds(SeqAdj, st.integers(0, 2**32 - 1), s32, s32)  # NFQA_CT's CTA_SEQ_ADJ_* (IPS_SEQ_ADJUST)


@st.composite
def queued_packets(draw) -> QueuedPacket:
    family = draw(st.sampled_from([socket.AF_INET, socket.AF_INET6]))
    u32 = st.none() | st.integers(0, 2**32 - 1)
    ct = None
    if draw(st.booleans()):
        ct = KernelConntrack(
            family, draw(_tuples(family)), draw(st.none() | _tuples(family)), draw(u32),
            draw(st.integers(0, 2**32 - 1)), draw(u32), draw(u32), draw(st.none() | st.integers(0, 65535)),
            draw(st.none() | st.sampled_from(["sip", "sipct", "x" * 15])),
            draw(st.none() | st.binary(max_size=40)), draw(st.none() | _tuples(family)),
            draw(st.none() | st.tuples(seq_adjs, seq_adjs)))
        if ct.helper is None:  # CTA_HELP is only sent with a name
            ct = replace(ct, helper_info=None)
    return QueuedPacket(
        draw(st.integers(0, 65535)), family, draw(st.integers(0, 2**32 - 1)),
        ETH_P_IP if family == socket.AF_INET else ETH_P_IPV6, draw(st.integers(0, 4)),
        draw(st.binary(max_size=200)), ct, None if ct is None else draw(st.integers(0, 7)),
        draw(u32), draw(u32), draw(u32), draw(u32), draw(u32),
        draw(st.none() | st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))))


@given(queued_packets())
def test_every_packet_decodes_to_itself(pkt: QueuedPacket) -> None:
    data = encoded(pkt.to_msg())
    assert packet_from_bytes(data) == pkt == QueuedPacket.from_msg(decode(nfq_msg, data))


def test_packets_are_read_where_they_are_in_the_datagram() -> None:
    """recv() gives several messages in one datagram (netlink_messages())."""
    datagram = b"".join(encoded(pkt.to_msg()) for pkt in PACKETS)
    offsets = [off for _, _, _, off in netlink_messages(datagram)]
    assert [packet_from_bytes(datagram, off) for off in offsets] == PACKETS


def test_the_kernel_layout_with_an_attribute_the_codec_skips() -> None:
    packet = build_packet(ip("192.0.2.1"), 5060, ip("192.0.2.2"), 5060, UDP, REGISTER)
    body = (nla(1, struct.pack("!IHB", 42, ETH_P_IP, 4)) + nla(5, struct.pack("!I", 2))
            + nla(9, struct.pack("!HH8s", 6, 0, bytes(range(6)) + bytes(2)))  # NFQA_HWADDR: skipped
            + nla(4, struct.pack("!QQ", 1700000000, 123456))
            + nla(11, KERNEL_CT_GET_REPLY[20:], nested=True) + nla(12, struct.pack("!I", 2)) + nla(10, packet))
    pkt = packet_from_bytes(nlmsg(queue_msg_type(NFQNL_MSG_PACKET), socket.AF_INET, 3, body))
    assert (pkt.queue_num, pkt.packet_id, pkt.indev, pkt.timestamp, pkt.ctinfo) == (3, 42, 2, (1700000000, 123456), 2)
    assert pkt.ct.helper == "sip" and pkt.ct.id == 0x031186AA and pkt.payload == packet


@given(queued_packets(), st.data())
def test_mangled_packets_decode_or_are_refused_with_a_decode_error(pkt: QueuedPacket, data) -> None:
    """Bytes the kernel would not write give a packet or a DecodeError
    (a ValueError, as a missing attribute is), never another exception."""
    raw = bytearray(encoded(pkt.to_msg()))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(16, len(raw) - 1))
        how = data.draw(st.sampled_from(["byte", "cut", "grow"]))
        if how == "byte":
            raw[at] = data.draw(st.integers(0, 255))
        elif how == "cut":
            del raw[at:at + data.draw(st.integers(1, 8))]
        else:
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=8))
    struct.pack_into("=I", raw, 0, len(raw))  # the nlmsghdr's length stays right, as recv() gives it
    try:
        assert isinstance(packet_from_bytes(bytes(raw)), QueuedPacket)
    except ValueError:
        pass


def test_a_message_cut_short_is_refused() -> None:
    data = encoded(PACKETS[0].to_msg())
    with pytest.raises(DecodeError):
        packet_from_bytes(data[:-8])  # the nlmsghdr's length says more than there is
    with pytest.raises(DecodeError, match="NFQA_PACKET_HDR"):
        packet_from_bytes(nlmsg(queue_msg_type(NFQNL_MSG_PACKET), socket.AF_INET, 0, nla(10, b"\x45")))


verdicts = st.builds(
    Verdict, st.integers(0, 65535), st.integers(0, 2**32 - 1), st.sampled_from([NF_ACCEPT, NF_DROP, NF_REPEAT]),
    st.sampled_from([socket.AF_INET, socket.AF_INET6]), ct_timeout=st.none() | st.integers(0, 2**32 - 1),
    helper=st.none() | st.sampled_from(["sip", "sipct", "h" * 15]), helper_info=st.none() | st.binary(max_size=40),
    mark=st.none() | st.integers(0, 2**32 - 1), batch=st.booleans())


@given(verdicts)
def test_every_verdict_decodes_to_itself(verdict: Verdict) -> None:
    if verdict.helper is None:
        verdict = replace(verdict, helper_info=None)  # CTA_HELP_INFO only goes inside CTA_HELP
    assert verdict_from_bytes(encode_verdict(verdict, 1, 2, 3)) == verdict


# encode_request() writes requests from the pyroute2 message objects' own tables and leaves to pyroute2 what it
# does not write: the bytes it writes are pyroute2's.
@given(verdicts, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_the_verdict_is_pyroute2s_byte_for_byte(verdict: Verdict, seq: int, pid: int) -> None:
    from pyroute2.netlink import NLM_F_REQUEST

    if verdict.helper is None:
        verdict = replace(verdict, helper_info=None)  # CTA_HELP_INFO only goes inside CTA_HELP
    msg = verdict.to_msg()
    msg["header"].update(flags=NLM_F_REQUEST, sequence_number=seq, pid=pid)
    assert encode_verdict(verdict, NLM_F_REQUEST, seq, pid) == encoded(msg)


@pytest.mark.parametrize("verdict", VERDICTS, ids=["plain", "ct", "ct-exp", "exp", "batch", "payload", "payload-no-ct",
                                                  "exp-nat"])
def test_every_verdict_is_written_as_pyroute2_writes_it(verdict: Verdict) -> None:
    msg = verdict.to_msg()
    msg["header"].update(flags=1, sequence_number=7, pid=9)
    assert encode_verdict(verdict, 1, 7, 9) == encoded(msg)


def _addresses(family: int):
    return st.ip_addresses(v=4 if family == socket.AF_INET else 6)


@st.composite
def expectations(draw) -> KernelExpectation:
    family = draw(st.sampled_from([socket.AF_INET, socket.AF_INET6]))
    addr, port = _addresses(family), st.none() | st.integers(0, 65535)
    proto = draw(st.sampled_from([UDP, TCP]))
    return KernelExpectation(
        family=family, proto=proto,
        master=MasterTuple(draw(addr), draw(addr), draw(port), draw(port), proto),
        tuple=ExpectTuple(draw(addr), draw(addr), draw(port), draw(port)),
        mask=ExpectMask(draw(addr), draw(port)), timeout=draw(st.integers(0, 2**32 - 1)),
        flags=draw(st.integers(0, 7)), klass=draw(st.integers(0, 3)), id=draw(st.none() | st.integers(0, 2**32 - 1)))


@given(expectations(), st.sampled_from(["create", "delete", "timeout", "verdict"]), st.integers(0, 2**32 - 1))
def test_expectation_requests_are_written_as_pyroute2_writes_them(exp: KernelExpectation, op: str, seq: int) -> None:
    """The attribute lists of CtExpSocket.create/delete, ExpectationSocket.set_timeout and
    an NFQA_EXP verdict: the hot path's bytes are pyroute2's."""
    from sipct.netlink.ctexp import IPCTNL_MSG_EXP_DELETE, IPCTNL_MSG_EXP_NEW, ctexp_msg, exp_msg_type
    from sipct.netlink.wire import encode_request

    if op == "verdict":
        msg = Verdict(1, seq, NF_ACCEPT, exp.family, exp=exp, exp_helper="sip").to_msg()
        kind = msg["header"]["type"]
    else:
        msg = ctexp_msg()
        msg["nfgen_family"], msg["version"], msg["res_id"] = exp.family, 0, 0
        attrs = [["CTA_EXPECT_TUPLE", exp.tuple_attr()]]
        if op == "create":
            attrs += [["CTA_EXPECT_MASK", exp.mask_attr()], ["CTA_EXPECT_MASTER", exp.master_attr()],
                      ["CTA_EXPECT_FLAGS", exp.flag_bits], ["CTA_EXPECT_CLASS", exp.klass]]
        elif op == "timeout":
            attrs += [["CTA_EXPECT_MASK", exp.mask_attr()], ["CTA_EXPECT_MASTER", exp.master_attr()],
                      ["CTA_EXPECT_TIMEOUT", exp.timeout]]
        elif exp.id is not None:
            attrs.append(["CTA_EXPECT_ID", exp.id])
        msg["attrs"] = attrs
        kind = exp_msg_type(IPCTNL_MSG_EXP_DELETE if op == "delete" else IPCTNL_MSG_EXP_NEW)
    fast = encode_request(msg, kind, 5, seq, 77)
    msg["header"].update(type=kind, flags=5, sequence_number=seq, pid=77)
    assert fast == encoded(msg)


def test_an_attribute_the_hot_path_does_not_write_is_left_to_pyroute2() -> None:
    from sipct.netlink.wire import encode_request

    for cfg in (QueueConfig(0, NFQNL_CFG_CMD_BIND, socket.AF_INET, NFQNL_COPY_PACKET, 0xFFFF, 1024,
                            NFQA_CFG_F_CONNTRACK, NFQA_CFG_F_CONNTRACK | NFQA_CFG_F_FAIL_OPEN),
                QueueConfig(7, NFQNL_CFG_CMD_UNBIND, socket.AF_INET6)):  # struct ("fields") attributes
        msg = cfg.to_msg()
        fast = encode_request(msg, msg["header"]["type"], 1, 2, 3)
        msg["header"].update(flags=1, sequence_number=2, pid=3)
        assert fast == encoded(msg)
    msg = nfq_msg()
    msg["nfgen_family"], msg["version"], msg["res_id"] = socket.AF_INET, 0, 0
    msg["attrs"] = [["NFQA_VLAN", {"attrs": [["NFQA_VLAN_TCI", 5]]}], ["NFQA_NO_SUCH", 1]]
    assert encode_request(msg, 0, 1, 1, 1) is None
