"""The nfnetlink_cthelper codec without a kernel: registrations encode and
decode back to themselves, and bytes laid out as nfnl_cthelper_fill_info()
writes them decode to what they say."""

from __future__ import annotations

import socket
import struct

import pytest

from sipct.netlink.cthelper import (NFNL_MSG_CTHELPER_DEL, NFNL_MSG_CTHELPER_GET, NFNL_MSG_CTHELPER_NEW,
                                    ExpectPolicy, UserspaceHelper, cthelper_msg, cthelper_msg_type,
                                    helper_from_bytes)
from sipct.netlink.wire import DecodeError
from sipct.spec.expectation import SIP_EXPECT_POLICY, ExpectClass

from tests.support.netlink_bytes import decode, encoded, nla, nlmsg

UDP, TCP = 17, 6
SIP_POLICIES = tuple(ExpectPolicy(SIP_EXPECT_POLICY[k].name, SIP_EXPECT_POLICY[k].max_expected,
                                  SIP_EXPECT_POLICY[k].timeout) for k in ExpectClass)


SIP_UDP4 = UserspaceHelper("sip", socket.AF_INET, UDP, 3, SIP_POLICIES, 12)  # the reference's MasterState.SIZE


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


def test_a_policy_count_without_its_policies_is_refused() -> None:
    body = nla(1, b"sip\0") + nla(4, nla(1, struct.pack("!I", 2)), nested=True)
    with pytest.raises(DecodeError, match="NFCTH_POLICY_SET1"):
        helper_from_bytes(nlmsg(cthelper_msg_type(NFNL_MSG_CTHELPER_NEW), socket.AF_UNSPEC, 0, body))
