"""nfnetlink_log's messages as sipct.netlink.nflog writes and reads them (include/uapi/linux/netfilter/nfnetlink_log.h)."""

import socket
import struct

import pytest

from sipct.netlink.nflog import (NFULNL_CFG_CMD_BIND, NFULNL_CFG_CMD_PF_BIND, LoggedPacket, config_request,
                                 packet_from_bytes)
from sipct.netlink.wire import DecodeError


def test_a_pf_bind_is_one_command_for_the_family():
    data = config_request(socket.AF_INET6, 0, NFULNL_CFG_CMD_PF_BIND, seq=7)
    # nlmsghdr: NFNL_SUBSYS_ULOG << 8 | NFULNL_MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK; nfgenmsg; NFULA_CFG_CMD.
    assert data == struct.pack("=IHHII", 28, 0x0401, 0x5, 7, 0) + bytes([socket.AF_INET6, 0, 0, 0]) + \
        struct.pack("=HH", 5, 1) + bytes([NFULNL_CFG_CMD_PF_BIND, 0, 0, 0])


def test_a_group_bind_carries_the_copy_mode_and_the_threshold():
    data = config_request(socket.AF_UNSPEC, 3, NFULNL_CFG_CMD_BIND, seq=1, copy_range=0xFFFF, qthresh=1)
    body = data[20:]
    assert data[16:20] == bytes([0, 0, 0, 3])  # res_id: the group, network order
    # NFULA_CFG_CMD; NFULA_CFG_MODE (struct nfulnl_msg_config_mode: be32 range, u8 mode, pad); NFULA_CFG_QTHRESH.
    assert body == (struct.pack("=HH", 5, 1) + bytes([NFULNL_CFG_CMD_BIND, 0, 0, 0])
                    + struct.pack("=HH", 10, 2) + struct.pack(">IBx", 0xFFFF, 2) + bytes(2)
                    + struct.pack("=HH", 8, 5) + struct.pack(">I", 1))
    assert struct.unpack_from("=I", data)[0] == len(data)


def _packet_message(prefix: bytes | None, payload: bytes) -> bytes:
    def nla(kind, value):
        return struct.pack("=HH", 4 + len(value), kind) + value + bytes(-(4 + len(value)) % 4)
    # __build_packet_message(): NFULA_PACKET_HDR first, then the prefix and the payload.
    body = nla(1, struct.pack(">HBx", 0x0800, 0)) + (nla(10, prefix) if prefix is not None else b"") + nla(9, payload)
    body = bytes([socket.AF_INET, 0, 0, 0]) + body
    return struct.pack("=IHHII", 16 + len(body), 0x0400, 0, 0, 0) + body


def test_a_helpers_log_has_its_reason_and_packet():
    data = _packet_message(b"nf_ct_sip: dropping packet: cannot parse cseq \0", b"\x45packet")
    logged = packet_from_bytes(data, 0)
    assert logged == LoggedPacket(socket.AF_INET, "nf_ct_sip: dropping packet: cannot parse cseq ", b"\x45packet")
    assert logged.drop_reason == "cannot parse cseq"


@pytest.mark.parametrize("prefix", [None, b"nf_ct_proto_17: invalid packet \0", b"dropping packet: x\0"])
def test_other_logs_have_no_drop_reason(prefix):
    assert packet_from_bytes(_packet_message(prefix, b""), 0).drop_reason is None


def test_a_prefix_without_its_nul_is_refused():
    with pytest.raises(DecodeError):
        packet_from_bytes(_packet_message(b"nf_ct_sip: dropping packet: x", b""), 0)
