"""The helper's netlink codecs without a kernel: every message encodes and
decodes back to itself, and bytes laid out the way the kernel writes them
(nfnl_cthelper_fill_info(), nfqnl_build_packet_message(), ctnetlink) decode
to what they say."""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipct.netlink.ctexp import ExpectMask, ExpectTuple, KernelExpectation, MasterTuple
from sipct.reference.netlink.conntrack import (IPS_CONFIRMED, IPS_EXPECTED, IPS_SEEN_REPLY, KernelConntrack,
                                               MasterState)
from sipct.reference.netlink.cthelper import (NFNL_MSG_CTHELPER_DEL, NFNL_MSG_CTHELPER_GET, NFNL_MSG_CTHELPER_NEW,
                                              ExpectPolicy, UserspaceHelper, cthelper_msg, cthelper_msg_type)
from sipct.reference.netlink.queue import (ETH_P_IP, ETH_P_IPV6, NF_ACCEPT, NF_DROP, NF_REPEAT,
                                           NFQA_CFG_F_CONNTRACK, NFQA_CFG_F_FAIL_OPEN, NFQNL_CFG_CMD_BIND,
                                           NFQNL_CFG_CMD_UNBIND, NFQNL_COPY_PACKET, NFQNL_MSG_PACKET,
                                           NFQNL_MSG_VERDICT, NFQNL_MSG_VERDICT_BATCH, QueueConfig, QueuedPacket,
                                           Verdict, nfq_config_msg, nfq_msg, queue_msg_type)
from sipct.reference.packet import TCP_SYN, build_packet, parse_packet
from sipct.spec.expectation import SIP_EXPECT_POLICY, ConnTuple, ExpectClass

ip = ipaddress.ip_address
UDP, TCP = 17, 6
SIP_POLICIES = tuple(ExpectPolicy(SIP_EXPECT_POLICY[k].name, SIP_EXPECT_POLICY[k].max_expected,
                                  SIP_EXPECT_POLICY[k].timeout) for k in ExpectClass)


# --- building kernel-layout bytes by hand --------------------------------------------------------
def nla(kind: int, payload: bytes, nested: bool = False) -> bytes:
    """struct nlattr + payload + padding to 4 bytes (nla_put / nla_nest_start)."""
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind | (0x8000 if nested else 0)) + payload + bytes(-length % 4)


def nlmsg(kind: int, family: int, res_id: int, body: bytes, flags: int = 0, seq: int = 0) -> bytes:
    """struct nlmsghdr + struct nfgenmsg (nfnl_msg_put()) + attributes."""
    payload = struct.pack("=BBH", family, 0, socket.htons(res_id)) + body
    return struct.pack("=IHHII", 16 + len(payload), kind, flags, seq, 0) + payload


def decode(cls, data: bytes):
    msg = cls(data)
    msg.decode()
    return msg


def encoded(msg) -> bytes:
    msg.encode()
    return bytes(msg.data)


# --- nfnetlink_cthelper ---------------------------------------------------------------------------
SIP_UDP4 = UserspaceHelper("sip", socket.AF_INET, UDP, 3, SIP_POLICIES, MasterState.SIZE)


def test_cthelper_kernel_layout_decodes() -> None:
    """nfnl_cthelper_fill_info(): NAME, QUEUE_NUM, TUPLE{L3 be16, L4 u8},
    POLICY{SET_NUM, SET1..n{NAME, EXPECT_MAX, EXPECT_TIMEOUT}}, PRIV_DATA_LEN, STATUS."""
    policies = b"".join(
        nla(2 + i, nla(1, name.encode() + b"\0") + nla(2, struct.pack("!I", mx)) + nla(3, struct.pack("!I", to)),
            nested=True)
        for i, (name, mx, to) in enumerate([("signalling", 1, 180), ("audio", 4, 180), ("video", 4, 180),
                                            ("image", 2, 180)]))
    body = (nla(1, b"sip\0") + nla(3, struct.pack("!I", 3))
            + nla(2, nla(1, struct.pack("!H", socket.AF_INET)) + nla(2, bytes([UDP])), nested=True)
            + nla(4, nla(1, struct.pack("!I", 4)) + policies, nested=True)
            + nla(5, struct.pack("!I", 12)) + nla(6, struct.pack("!I", 1)))
    data = nlmsg(cthelper_msg_type(NFNL_MSG_CTHELPER_NEW), socket.AF_UNSPEC, 0, body, flags=2)
    helper = UserspaceHelper.from_msg(decode(cthelper_msg, data))
    assert helper == SIP_UDP4
    # and our encoder writes the very same attributes
    assert encoded(SIP_UDP4.to_msg())[16:] == data[16:]


@pytest.mark.parametrize("msg_type", [NFNL_MSG_CTHELPER_NEW, NFNL_MSG_CTHELPER_GET, NFNL_MSG_CTHELPER_DEL])
@pytest.mark.parametrize("helper", [
    SIP_UDP4,
    UserspaceHelper("sip", socket.AF_INET6, TCP, 0, SIP_POLICIES, 12, enabled=False),
    UserspaceHelper("sip-lab", socket.AF_INET, TCP, 65535, SIP_POLICIES[:1], 0),
], ids=str)
def test_cthelper_round_trip(msg_type: int, helper: UserspaceHelper) -> None:
    back = decode(cthelper_msg, encoded(helper.to_msg(msg_type)))
    assert back["header"]["type"] == cthelper_msg_type(msg_type)
    assert UserspaceHelper.from_msg(back) == helper


def test_cthelper_key_only_messages() -> None:
    """GET/DEL select by name and tuple (nfnl_cthelper_get/_del())."""
    msg = decode(cthelper_msg, encoded(SIP_UDP4.to_msg(NFNL_MSG_CTHELPER_DEL, attrs=SIP_UDP4.key_attrs())))
    assert [a[0] for a in msg["attrs"]] == ["NFCTH_NAME", "NFCTH_TUPLE"]
    assert msg.get_attr("NFCTH_TUPLE").get_attr("NFCTH_TUPLE_L3PROTONUM") == socket.AF_INET


def test_cthelper_limits() -> None:
    with pytest.raises(ValueError, match="max_expected"):
        ExpectPolicy("audio", 256, 180)  # NF_CT_EXPECT_MAX_CNT
    with pytest.raises(ValueError, match="at most 4"):
        UserspaceHelper("sip", 2, 17, 0, SIP_POLICIES + SIP_POLICIES[:1])  # NF_CT_MAX_EXPECT_CLASSES
    with pytest.raises(ValueError, match="name"):
        UserspaceHelper("a-very-long-helper", 2, 17)  # NF_CT_HELPER_NAME_LEN


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
    assert QueueConfig.from_msg(decode(nfq_config_msg, encoded(cfg.to_msg()))) == cfg


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
    pkt = QueuedPacket.from_msg(decode(nfq_msg, data))
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
    return MasterState(1826, 314159, 5062).pack()


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


def test_master_state() -> None:
    assert MasterState.unpack(master_state()) == MasterState(1826, 314159, 5062)
    assert MasterState.unpack(bytes(12)) is None  # a fresh helper area: no state yet
    assert MasterState.unpack(None) is None and MasterState.unpack(b"\1\2") is None


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
]


@pytest.mark.parametrize("verdict", VERDICTS, ids=["plain", "ct", "ct-exp", "exp", "batch"])
def test_verdict_round_trip(verdict: Verdict) -> None:
    msg = decode(nfq_msg, encoded(verdict.to_msg()))
    kind = NFQNL_MSG_VERDICT_BATCH if verdict.batch else NFQNL_MSG_VERDICT
    assert msg["header"]["type"] == queue_msg_type(kind)
    assert Verdict.from_msg(msg) == verdict
    names = [a[0] for a in msg["attrs"]]
    assert ("NFQA_CT" in names) == (verdict.ct_attrs() is not None)
    assert ("NFQA_EXP" in names) == (verdict.exp is not None)


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


# --- the packet headers ------------------------------------------------------------------------------
@given(st.sampled_from(["192.0.2.1", "2001:db8::1"]), st.integers(1, 65535), st.integers(1, 65535),
       st.sampled_from([UDP, TCP]), st.binary(max_size=300), st.integers(0, 0x3F))
def test_packet_headers_round_trip(src: str, sport: int, dport: int, proto: int, payload: bytes, flags: int) -> None:
    a = ip(src)
    b = ip("198.51.100.2") if a.version == 4 else ip("2001:db8::2")
    pkt = parse_packet(build_packet(a, sport, b, dport, proto, payload, flags))
    assert (pkt.src, pkt.sport, pkt.dst, pkt.dport, pkt.proto, pkt.payload) == (a, sport, b, dport, proto, payload)
    assert pkt.tcp_flags == (flags if proto == TCP else 0)


def test_ipv6_extension_headers_are_skipped() -> None:
    inner = build_packet(ip("2001:db8::1"), 5060, ip("2001:db8::2"), 5060, UDP, b"x")
    udp = inner[40:]
    hop = bytes([UDP, 0]) + bytes(6)  # hop-by-hop options, 8 bytes, next header UDP
    header = bytearray(inner[:40])
    header[6] = 0
    struct.pack_into("!H", header, 4, len(hop) + len(udp))
    assert parse_packet(bytes(header) + hop + udp).payload == b"x"


@pytest.mark.parametrize("data", [b"", b"\x45\x00", b"\x60" + bytes(10), b"\x75" + bytes(40),
                                  build_packet(ip("192.0.2.1"), 1, ip("192.0.2.2"), 2, UDP)[:24]])
def test_bad_packets_are_refused(data: bytes) -> None:
    from sipct.reference.packet import PacketError
    with pytest.raises(PacketError):
        parse_packet(data)


# --- the hot path: NFQNL_MSG_PACKET read with struct (fastpacket.py) -----------------------------------
def _pyroute2_packet(data: bytes) -> QueuedPacket | Exception:
    try:
        return QueuedPacket.from_msg(decode(nfq_msg, data))
    except Exception as exc:  # what the daemon's receive() would meet
        return exc


def _tuples(family: int):
    addrs = (st.ip_addresses(v=4) if family == socket.AF_INET else st.ip_addresses(v=6))
    return st.builds(ConnTuple, addrs, addrs, st.sampled_from([UDP, TCP]), st.integers(0, 65535),
                     st.integers(0, 65535))


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
            draw(st.none() | st.binary(max_size=40)), draw(st.none() | _tuples(family)))
        if ct.helper is None:  # CTA_HELP is only sent with a name
            ct = replace(ct, helper_info=None)
    return QueuedPacket(
        draw(st.integers(0, 65535)), family, draw(st.integers(0, 2**32 - 1)),
        ETH_P_IP if family == socket.AF_INET else ETH_P_IPV6, draw(st.integers(0, 4)),
        draw(st.binary(max_size=200)), ct, None if ct is None else draw(st.integers(0, 7)),
        draw(u32), draw(u32), draw(u32), draw(u32), draw(u32),
        draw(st.none() | st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))))


@given(queued_packets())
def test_the_fast_decoder_reads_what_pyroute2_reads(pkt: QueuedPacket) -> None:
    from sipct.reference.netlink.hotpath import decode_packet

    data = encoded(pkt.to_msg())
    assert decode_packet(data, 0, len(data)) == pkt == _pyroute2_packet(data)


def test_the_fast_decoder_reads_the_kernel_layout() -> None:
    from sipct.reference.netlink.hotpath import decode_packet

    packet = build_packet(ip("192.0.2.1"), 5060, ip("192.0.2.2"), 5060, UDP, REGISTER)
    body = (nla(1, struct.pack("!IHB", 42, ETH_P_IP, 4)) + nla(5, struct.pack("!I", 2))
            + nla(9, struct.pack("!HH8s", 6, 0, bytes(range(6)) + bytes(2)))  # NFQA_HWADDR: skipped
            + nla(4, struct.pack("!QQ", 1700000000, 123456))
            + nla(11, KERNEL_CT_GET_REPLY[20:], nested=True) + nla(12, struct.pack("!I", 2)) + nla(10, packet))
    data = nlmsg(queue_msg_type(NFQNL_MSG_PACKET), socket.AF_INET, 3, body)
    fast = decode_packet(data, 0, len(data))
    assert fast == _pyroute2_packet(data)
    assert fast.ct.helper == "sip" and fast.ct.id == 0x031186AA and fast.payload == packet
    # Inside a receive buffer: the message at its offset.
    assert decode_packet(b"\0" * 8 + data, 8, len(data)) == fast


@given(queued_packets(), st.data())
def test_mangled_packets_decode_as_pyroute2_decodes_them_or_go_to_pyroute2(pkt: QueuedPacket, data) -> None:
    """Whatever the fast decoder returns for mangled bytes is what pyroute2
    makes of them; everything else it leaves to pyroute2 (None)."""
    from sipct.reference.netlink.hotpath import decode_packet

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
    fast = decode_packet(bytes(raw), 0, len(raw))
    if fast is not None:
        assert fast == _pyroute2_packet(bytes(raw))


verdicts = st.builds(
    Verdict, st.integers(0, 65535), st.integers(0, 2**32 - 1), st.sampled_from([NF_ACCEPT, NF_DROP, NF_REPEAT]),
    st.sampled_from([socket.AF_INET, socket.AF_INET6]), ct_timeout=st.none() | st.integers(0, 2**32 - 1),
    helper=st.none() | st.sampled_from(["sip", "sipct", "h" * 15]), helper_info=st.none() | st.binary(max_size=40),
    mark=st.none() | st.integers(0, 2**32 - 1), batch=st.booleans())


@given(verdicts, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_the_fast_verdict_is_pyroute2s_byte_for_byte(verdict: Verdict, seq: int, pid: int) -> None:
    from pyroute2.netlink import NLM_F_REQUEST

    from sipct.reference.netlink.hotpath import encode_verdict

    if verdict.helper is None:
        verdict = replace(verdict, helper_info=None)  # CTA_HELP_INFO only goes inside CTA_HELP
    msg = verdict.to_msg()
    msg["header"].update(flags=NLM_F_REQUEST, sequence_number=seq, pid=pid)
    assert encode_verdict(verdict, NLM_F_REQUEST, seq, pid) == encoded(msg)


@pytest.mark.parametrize("verdict", VERDICTS, ids=["plain", "ct", "ct-exp", "exp", "batch"])
def test_every_verdict_is_written_as_pyroute2_writes_it(verdict: Verdict) -> None:
    from sipct.reference.netlink.hotpath import encode_verdict

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
