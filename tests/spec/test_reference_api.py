"""The spec's API for a helper that learns its conntracks from the kernel
(sipct.reference): SipHelper.adopt/forget, ExpectationTable.lookup/restore/gone.
They add knowledge to the spec without changing what it decides."""

from __future__ import annotations

import ipaddress

from sipct.spec import rules
from sipct.spec.expectation import IPPROTO_UDP, ConnTuple, ExpectClass, ExpectFlag, ExpectTuple
from sipct.spec.helper import UDP_TIMEOUT_UNREPLIED, Packet, SipHelper

ip = ipaddress.ip_address
UA, SRV = ip("192.0.2.2"), ip("198.51.100.2")
MASTER = ConnTuple(UA, SRV, IPPROTO_UDP, 5060, 5060)


def register(cseq: int = 1, contact_port: int = 5060) -> bytes:
    return (f"REGISTER sip:{SRV} SIP/2.0\r\nVia: SIP/2.0/UDP {UA}:5060\r\nCSeq: {cseq} REGISTER\r\n"
            f"Contact: <sip:bob@{UA}:{contact_port}>\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n").encode()


def ok(cseq: int = 1) -> bytes:
    return (f"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {UA}:5060\r\nCSeq: {cseq} REGISTER\r\n"
            f"Contact: <sip:bob@{UA}:5060>;expires=600\r\nContent-Length: 0\r\n\r\n").encode()


def test_adopt_gives_a_master_the_spec_helps() -> None:
    helper = SipHelper()
    master = helper.adopt(MASTER, 10.0)
    assert helper.masters() == [master] and not master.expected
    assert helper.adopt(MASTER, 11.0) is master  # kept as it is
    result = helper.packet(Packet(UA, 5060, SRV, 5060, IPPROTO_UDP, register()), 12.0)
    assert not result.new_conntrack and result.helper_attached
    assert rules.REGISTER_EXPECT.id in result.rule_ids
    assert [e.flags for e in helper.expectations()] == [ExpectFlag.PERMANENT | ExpectFlag.INACTIVE]


def test_an_adopted_expected_master_does_not_register() -> None:
    """process_register_request(): a conntrack created from an expectation
    (IPS_EXPECTED, which the kernel reports) makes no signalling expectation."""
    helper = SipHelper()
    helper.adopt(MASTER, 0.0, expected=True)
    result = helper.packet(Packet(UA, 5060, SRV, 5060, IPPROTO_UDP, register()), 1.0)
    assert rules.REGISTER_EXPECTED_MASTER.id in result.rule_ids and helper.expectations() == []


def test_adopt_on_a_port_the_spec_would_not_help() -> None:
    """nft may attach the helper to any port; the kernel's word is what counts."""
    helper = SipHelper()
    helper.adopt(ConnTuple(UA, SRV, IPPROTO_UDP, 5070, 5070), 0.0)
    result = helper.packet(Packet(UA, 5070, SRV, 5070, IPPROTO_UDP, register()), 1.0)
    assert result.helper_attached and rules.REGISTER_EXPECT.id in result.rule_ids


def test_adopt_replaces_a_stale_conntrack_holding_either_direction() -> None:
    helper = SipHelper()
    helper.packet(Packet(SRV, 5060, UA, 5060, IPPROTO_UDP, b"x"), 0.0)  # the spec thinks SRV started it
    reverse = ConnTuple(SRV, UA, IPPROTO_UDP, 5060, 5060)
    assert helper.conntrack(MASTER).original == reverse
    helper.adopt(MASTER, 1.0)
    assert helper.conntrack(MASTER).original == MASTER


def test_adopt_timeouts() -> None:
    helper = SipHelper()
    helper.adopt(MASTER, 0.0)
    assert helper.conntrack(MASTER).timeout_at == UDP_TIMEOUT_UNREPLIED
    other = ConnTuple(UA, SRV, IPPROTO_UDP, 5062, 5062)
    helper.adopt(other, 0.0, timeout=3000)
    assert helper.conntrack(other).timeout_at == 3000


def test_forget_takes_the_expectations_along() -> None:
    helper = SipHelper()
    helper.packet(Packet(UA, 5060, SRV, 5060, IPPROTO_UDP, register()), 0.0)
    events = helper.forget(MASTER, 1.0)
    assert [(e.kind, e.rule) for e in events] == [("destroy", rules.MASTER_TIMEOUT.id)]
    assert helper.masters() == [] and helper.expectations() == []
    assert helper.forget(MASTER, 2.0) == ()


def test_restore_lookup_and_what_follows() -> None:
    helper = SipHelper()
    master = helper.adopt(MASTER, 0.0)
    t = ExpectTuple(4, IPPROTO_UDP, SRV, UA, 5060)
    journal = len(helper.table.journal)
    entry = helper.table.restore(master, t, ExpectClass.SIGNALLING, ExpectFlag.PERMANENT | ExpectFlag.INACTIVE, 170.0)
    assert len(helper.table.journal) == journal  # the kernel's table did not change
    assert helper.table.lookup(master, t, ExpectClass.SIGNALLING) is entry
    assert helper.table.lookup(master, t, ExpectClass.AUDIO) is None
    master.register_cseq = 1
    # The 200 OK activates the restored expectation as if the spec had made it.
    result = helper.packet(Packet(SRV, 5060, UA, 5060, IPPROTO_UDP, ok()), 1.0)
    assert rules.REG_RESPONSE_REFRESH.id in result.rule_ids
    assert [(e.flags, e.expires) for e in helper.expectations()] == [(ExpectFlag.PERMANENT, 601.0)]
    # A new REGISTER replaces it (__nf_ct_expect_check) like any other.
    result = helper.packet(Packet(UA, 5060, SRV, 5060, IPPROTO_UDP, register(2)), 2.0)
    assert [(e.kind, e.rule) for e in result.events] == [("destroy", rules.EXPECT_REPLACE.id),
                                                        ("new", rules.EXPECT_INSERT.id)]


def test_restored_media_are_evicted_oldest_first() -> None:
    helper = SipHelper()
    master = helper.adopt(MASTER, 0.0)
    for port in (4000, 4002, 4004, 4006):  # the audio class holds 4
        helper.table.restore(master, ExpectTuple(4, IPPROTO_UDP, SRV, UA, port), ExpectClass.AUDIO,
                             ExpectFlag.NONE, 100.0)
    body = f"v=0\r\nc=IN IP4 {SRV}\r\nm=audio 5000 RTP/AVP 0\r\n".encode()  # the sender's media
    invite_ok = (f"SIP/2.0 200 OK\r\nCSeq: 1 UPDATE\r\nContent-Type: application/sdp\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    result = helper.packet(Packet(SRV, 5060, UA, 5060, IPPROTO_UDP, invite_ok), 1.0)
    evicted = [e.expectation.tuple.dport for e in result.events if e.rule == rules.EXPECT_EVICT.id]
    assert evicted == [4000, 4002]


def test_gone_picks_the_kernels_likeliest_reason() -> None:
    helper = SipHelper()
    master = helper.adopt(MASTER, 0.0)
    table = helper.table
    media = table.restore(master, ExpectTuple(4, IPPROTO_UDP, SRV, UA, 4000), ExpectClass.AUDIO, ExpectFlag.NONE,
                          100.0)
    late = table.restore(master, ExpectTuple(4, IPPROTO_UDP, SRV, UA, 4002), ExpectClass.AUDIO, ExpectFlag.NONE,
                         50.0)
    sig = table.restore(master, ExpectTuple(4, IPPROTO_UDP, SRV, UA, 5060), ExpectClass.SIGNALLING,
                        ExpectFlag.PERMANENT, 500.0)
    table.gone(media, 10.0)
    table.gone(late, 60.0)
    table.gone(sig, 10.0)
    table.gone(sig, 11.0)  # twice: nothing more
    assert [(e.expectation.tuple.dport, e.rule) for e in table.journal] == [
        (4000, rules.EXPECT_MATCH.id), (4002, rules.EXPECT_EXPIRE.id), (5060, rules.MASTER_TIMEOUT.id)]
    assert len(table) == 0


def test_deadline_heaps_stay_bounded_under_refreshes():
    # A long-running helper refreshes one master per message: the spec's timer
    # heaps must not keep an entry per refresh.
    from ipaddress import ip_address

    from sipct.spec.expectation import IPPROTO_UDP
    from sipct.spec.helper import Packet, SipHelper

    helper = SipHelper()
    ua, server = ip_address("192.0.2.2"), ip_address("198.51.100.2")
    options = b"OPTIONS sip:x SIP/2.0\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    for i in range(5000):
        helper.packet(Packet(ua, 5060, server, 5060, IPPROTO_UDP, options), float(i))
    assert len(helper._deadlines) <= 64 + 4 * 2
    assert len(helper.table._deadlines) <= 64


def test_the_journal_says_what_a_mirroring_helper_needs() -> None:
    """refresh_signalling_expectation() is journalled as a refresh - before
    and after - which ctnetlink's view leaves out; an RTCP expectation names
    the RTP one set_expected_rtp_rtcp() takes back with it; removals the
    kernel makes by itself say so; a refusal drops under the spec's rule."""
    from sipct.spec.table import NEW, REFRESH, refusal_rule

    helper = SipHelper()
    helper.packet(Packet(UA, 5060, SRV, 5060, IPPROTO_UDP, register()), 0.0)
    start = len(helper.table.journal)
    result = helper.packet(Packet(SRV, 5060, UA, 5060, IPPROTO_UDP, ok()), 1.0)
    (refresh,) = helper.table.journal[start:]
    assert (refresh.kind, refresh.rule) == (REFRESH, rules.REG_RESPONSE_REFRESH.id)
    assert (refresh.before.flags, refresh.before.expires) == (ExpectFlag.PERMANENT | ExpectFlag.INACTIVE, 180.0)
    assert (refresh.expectation.flags, refresh.expectation.expires) == (ExpectFlag.PERMANENT, 601.0)
    assert result.events == () and not refresh.caused_by_kernel

    body = f"v=0\r\nc=IN IP4 {UA}\r\nm=audio 5000 RTP/AVP 0\r\n".encode()
    invite = (f"INVITE sip:bob@{SRV} SIP/2.0\r\nVia: SIP/2.0/UDP {UA}:5060\r\nCSeq: 1 INVITE\r\n"
              f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    rtp, rtcp = helper.packet(Packet(UA, 5060, SRV, 5060, IPPROTO_UDP, invite), 2.0).events
    assert (rtp.kind, rtp.expectation.tuple.dport, rtp.pair) == (NEW, 5000, None)
    assert (rtcp.kind, rtcp.expectation.tuple.dport, rtcp.pair) == (NEW, 5001, rtp.expectation)
    assert not rtcp.caused_by_kernel

    gone = helper.forget(MASTER, 3.0)
    assert len(gone) == 3 and all(ev.caused_by_kernel for ev in gone)
    assert refusal_rule(ExpectClass.SIGNALLING) is rules.REGISTER_FAILED
    assert refusal_rule(ExpectClass.AUDIO) is rules.MEDIA_FAILED
