"""Hypothesis properties of the spec.

The invariants come from the kernel code: process_sdp()/set_expected_rtp_rtcp()
only ever insert (even, even+1) pairs of ports in 1024-65535;
__nf_ct_expect_check()/evict_oldest_expect() keep every master within
sip_exp_policy[]; process_bye_request() flushes all media;
process_register_request() creates nothing when expires is 0; and the state
machines of machines.py, which decide, agree at every moment with the table they changed.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sipct.spec import rules
from sipct.spec.expectation import (
    IPPROTO_TCP,
    IPPROTO_UDP,
    SIP_EXPECT_POLICY,
    ExpectClass,
    ExpectFlag,
)
from sipct.spec.helper import Packet, PacketResult, SipHelper
from sipct.spec.params import ModuleParams
from sipct.spec.profiles import HARDENED_6_1_192, LEGACY_6_1_170, KernelProfile
from sipct.spec.topology import LabRouting

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

HOSTS = {
    4: {"ua": ipaddress.ip_address("192.0.2.2"), "srv": ipaddress.ip_address("198.51.100.2"),
        "other": ipaddress.ip_address("203.0.113.5"), "ua2": ipaddress.ip_address("192.0.2.3")},
    6: {"ua": ipaddress.ip_address("2001:db8:1::2"), "srv": ipaddress.ip_address("2001:db8:2::2"),
        "other": ipaddress.ip_address("2001:db8:3::5"), "ua2": ipaddress.ip_address("2001:db8:1::3")},
}
# (client, client port, server, server port, protocol): the signalling connections
CONNECTIONS = [("ua", 5060, "srv", 5060, IPPROTO_UDP), ("ua", 5070, "srv", 5060, IPPROTO_UDP),
               ("ua2", 5060, "srv", 5060, IPPROTO_UDP), ("other", 5060, "srv", 5060, IPPROTO_UDP),
               ("ua", 5080, "srv", 5060, IPPROTO_TCP)]
profiles = st.sampled_from([LEGACY_6_1_170, HARDENED_6_1_192])


def uri_host(a: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return f"[{a}]" if a.version == 6 else str(a)


# --- realistic messages with random fields -------------------------------------------------------------
TOKENS = [b"\r\n", b"\n", b"\r", b" ", b"\t", b":", b",", b";", b"@", b"<", b">", b"sip:", b"SIP/2.0 ", b"SIP/2.0 200",
          b"INVITE ", b"REGISTER ", b"BYE ", b"ACK ", b"UPDATE ", b"PRACK ", b"CSeq: ", b"Contact: ", b"m: ", b"v: ",
          b"Via: SIP/2.0/UDP ", b"Expires: ", b"Content-Length: ", b"l: ", b"expires=", b"transport=tcp",
          b"transport=udp", b"0", b"1", b"5060", b"5062", b"70000", b"4294967297", b"000000000001", b"192.0.2.2",
          b"198.51.100.2", b"[2001:db8:1::2]", b"2001:db8:1::2", b"v=0", b"c=IN IP4 192.0.2.2",
          b"c=IN IP6 2001:db8:1::2", b"m=audio ", b"m=video ", b"m=image ", b"RTP/AVP 0", b"\r\n\r\n", b"\xe9", b"\x00"]
soup = st.lists(st.sampled_from(TOKENS), max_size=40).map(b"".join)


@st.composite
def sdp_body(draw, fam: int, sender: str, rich: bool = False) -> bytes:
    """``rich``: several media, mostly of one class, with a usable session address
    (to reach the per-class policy limits)."""
    h = HOSTS[fam]
    ip = "IP4" if fam == 4 else "IP6"
    lines = ["v=0", f"o=x 1 1 IN {ip} {h[sender]}"]
    if rich or draw(st.booleans()):
        lines.append(f"c=IN {ip} {h[sender if rich else draw(st.sampled_from([sender, sender, 'other', 'ua', 'srv']))]}")
    favourite = draw(st.sampled_from(["audio", "video", "image"]))
    for _ in range(draw(st.integers(2 if rich else 0, 5))):
        kinds = [favourite] * 4 + ["audio", "video", "image", "text"] if rich else \
            ["audio", "audio", "video", "image", "text"]
        kind = draw(st.sampled_from(kinds))
        port = draw(st.one_of(st.integers(1024, 65535), st.sampled_from([0, 80, 1023, 65536, 5000, 5001, 5002,
                                                                          4294967297, 4294972296])))
        lines.append(f"m={kind} {port} RTP/AVP 0")
        if draw(st.integers(0, 3)) == 0:
            lines.append(f"c=IN {ip} {h[draw(st.sampled_from([sender, 'other']))]}")
    return ("\r\n".join(lines) + "\r\n").encode()


@st.composite
def contact(draw, fam: int, sender: str) -> str:
    h = HOSTS[fam]
    who = draw(st.sampled_from([sender, sender, sender, "other", "srv", "ua"]))
    port = draw(st.sampled_from(["", ":5060", ":5062", ":5064", ":7000", ":1023", ":70000"]))
    params = draw(st.sampled_from(["", "", ";transport=udp", ";transport=tcp"]))
    expires = draw(st.sampled_from(["", "", ";expires=0", ";expires=60", ";expires=3600", ";expires=010",
                                    ";expires=x"]))
    return f"<sip:u@{uri_host(h[who])}{port}{params}>{expires}"


@st.composite
def sip_message(draw, fam: int, sender: str, rich: bool = False) -> bytes:
    """INVITE / UPDATE / ACK / PRACK / BYE / REGISTER / OPTIONS or a response, with random fields."""
    kind = draw(st.sampled_from(["INVITE", "INVITE", "REGISTER", "REGISTER", "BYE", "ACK", "UPDATE", "PRACK",
                                 "OPTIONS", "response", "response", "response"]))
    cseq = draw(st.one_of(st.integers(1, 6), st.sampled_from(["0", "4294967297", "000000000001"])))
    headers = [f"Via: SIP/2.0/UDP {uri_host(HOSTS[fam][sender])}:{draw(st.sampled_from([5060, 5080]))};branch=z9"]
    body = b""
    if kind == "response":
        code = draw(st.sampled_from([100, 180, 183, 200, 200, 202, 401, 404, 486, 487, 500, 603]))
        method = draw(st.sampled_from(["INVITE", "REGISTER", "UPDATE", "PRACK", "BYE"]))
        first = f"SIP/2.0 {code} X"
    else:
        method = kind
        first = f"{kind} sip:x@{uri_host(HOSTS[fam]['srv'])} SIP/2.0"
    headers.append(f"CSeq: {cseq} {method}")
    if method == "REGISTER" or draw(st.integers(0, 4)) == 0:
        contacts = draw(st.lists(contact(fam, sender if kind != "response" else "ua"), min_size=1, max_size=3))
        headers.append("Contact: " + ", ".join(contacts))
        if draw(st.booleans()):
            headers.append(f"Expires: {draw(st.sampled_from([0, 60, 3600, 4294967297]))}")
    if method in ("INVITE", "UPDATE", "ACK", "PRACK") and draw(st.integers(0, 4)) > 0:
        body = draw(sdp_body(fam, sender, rich))
    headers.append(f"Content-Length: {len(body)}")
    return (first + "\r\n" + "\r\n".join(headers) + "\r\n\r\n").encode() + body


@dataclass(frozen=True)
class Step:
    kind: str  # "send" | "wait" | "media"
    conn: int = 0
    reply: bool = False
    payload: bytes = b""
    seconds: float = 0.0
    media: tuple = ()


@st.composite
def dialog(draw, fam: int, *, media_connections: bool = True, max_steps: int = 15, rich: bool = False) -> list[Step]:
    steps = []
    for _ in range(draw(st.integers(1, max_steps))):
        what = draw(st.sampled_from(["send"] * 6 + ["wait"] + (["media"] if media_connections else [])))
        if what == "wait":
            steps.append(Step("wait", seconds=draw(st.sampled_from([1, 30, 120, 179, 180, 181, 400, 3600]))))
        elif what == "media":
            src, dst = draw(st.sampled_from([("srv", "ua"), ("ua", "srv"), ("other", "ua"), ("srv", "ua2")]))
            port = draw(st.sampled_from([5000, 5001, 5060, 5062, 5064, 7000]))
            steps.append(Step("media", media=(src, dst, port)))
        else:
            conn = draw(st.integers(0, len(CONNECTIONS) - 1))
            reply = draw(st.booleans())
            client, _, server, _, _ = CONNECTIONS[conn]
            steps.append(Step("send", conn, reply, draw(sip_message(fam, server if reply else client,
                                                                    rich and draw(st.booleans())))))
    return steps


def run(helper: SipHelper, fam: int, steps: list[Step], check=None) -> None:
    """Drive the helper; ``check(result, step)`` after every packet."""
    now = 0.0
    opened: set[int] = set()
    h = HOSTS[fam]
    for step in steps:
        if step.kind == "wait":
            now += step.seconds
            helper.advance(now)
            if check:
                check(None, step)
            continue
        if step.kind == "media":
            src, dst, port = step.media
            result = helper.packet(Packet(h[src], 7078, h[dst], port, IPPROTO_UDP, b"\x80rtp"), now)
        else:
            client, cport, server, sport, proto = CONNECTIONS[step.conn]
            if proto == IPPROTO_TCP and (step.conn not in opened or
                                         helper.conntrack(Packet(h[client], cport, h[server], sport, proto).tuple)
                                         is None):
                helper.tcp_connect(h[client], cport, h[server], sport, now)  # (again, if it timed out)
                opened.add(step.conn)
            if step.reply:
                pkt = Packet(h[server], sport, h[client], cport, proto, step.payload)
            else:
                pkt = Packet(h[client], cport, h[server], sport, proto, step.payload)
            result = helper.packet(pkt, now)
        assert result.accepted is (result.drop_rule is None)
        assert result.drop_rule is None or result.drop_rule.drop
        if check:
            check(result, step)


def media_rows(helper: SipHelper):
    return [e for e in helper.table.entries() if e.klass != ExpectClass.SIGNALLING]


# --- never raises ----------------------------------------------------------------------------------------
@SETTINGS
@given(profile=profiles, fam=st.sampled_from([4, 6]), proto=st.sampled_from([IPPROTO_UDP, IPPROTO_TCP]),
       payloads=st.lists(st.one_of(st.binary(max_size=400), soup), min_size=1, max_size=4),
       replies=st.lists(st.booleans(), min_size=4, max_size=4))
def test_arbitrary_bytes_never_raise(profile: KernelProfile, fam: int, proto: int, payloads: list[bytes],
                                     replies: list[bool]) -> None:
    h = HOSTS[fam]
    helper = SipHelper(ModuleParams(), profile)
    if proto == IPPROTO_TCP:
        helper.tcp_connect(h["ua"], 5060, h["srv"], 5060, 0)
    for i, payload in enumerate(payloads):
        if replies[i]:
            pkt = Packet(h["srv"], 5060, h["ua"], 5060, proto, payload)
        else:
            pkt = Packet(h["ua"], 5060, h["srv"], 5060, proto, payload)
        if helper.conntrack(pkt.tuple) is None and proto == IPPROTO_TCP:
            helper.tcp_connect(h["ua"], 5060, h["srv"], 5060, i)  # a dropped first segment took the conntrack
        result = helper.packet(pkt, float(i))
        assert isinstance(result, PacketResult)
        assert result.accepted is (result.drop_rule is None)


@SETTINGS
@given(profile=profiles, fam=st.sampled_from([4, 6]), data=st.data())
def test_mutated_messages_never_raise(profile: KernelProfile, fam: int, data: st.DataObject) -> None:
    msg = bytearray(data.draw(sip_message(fam, "ua")))
    for _ in range(data.draw(st.integers(0, 6))):
        pos = data.draw(st.integers(0, len(msg)))
        msg[pos:pos + data.draw(st.integers(0, 3))] = data.draw(st.sampled_from(TOKENS))
    helper = SipHelper(ModuleParams(sip_direct_media=data.draw(st.booleans())), profile)
    h = HOSTS[fam]
    helper.packet(Packet(h["ua"], 5060, h["srv"], 5060, IPPROTO_UDP, bytes(msg)), 0)
    helper.tcp_connect(h["ua"], 5070, h["srv"], 5060, 0)
    helper.packet(Packet(h["ua"], 5070, h["srv"], 5060, IPPROTO_TCP, bytes(msg) * 2), 1)


# --- the expectation table -----------------------------------------------------------------------------------
params_st = st.builds(ModuleParams, sip_direct_media=st.booleans(), sip_direct_signalling=st.booleans(),
                      sip_external_media=st.booleans(), expect_max=st.sampled_from([4096, 4096, 3, 7]),
                      sip_timeout=st.sampled_from([3600, 100]))


@SETTINGS
@given(profile=profiles, fam=st.sampled_from([4, 6]), params=params_st, data=st.data())
def test_media_is_inserted_in_even_odd_pairs_within_range(profile: KernelProfile, fam: int, params: ModuleParams,
                                                          data: st.DataObject) -> None:
    helper = SipHelper(params, profile, LabRouting(HOSTS[fam].values()).same_interface)

    def check(result: PacketResult | None, step: Step) -> None:
        if result is None:
            return
        new = [e.expectation for e in result.events if e.kind == "new" and
               e.expectation.klass != ExpectClass.SIGNALLING]
        # each pair is inserted RTP first, RTCP second; a failed RTCP takes the RTP back
        for e in new:
            assert 1024 <= e.tuple.dport <= 65535
        for e in media_rows(helper):
            assert 1024 <= e.tuple.dport <= 65535
        assert result.rule_ids.count(rules.MEDIA_EXPECT.id) <= 3 * max(1, result.rule_ids.count(rules.TCP_MESSAGE.id))
        inserts = [e for e in new]
        while inserts:
            rtp = inserts.pop(0)
            if rtp.tuple.dport % 2 == 1:  # an RTCP whose RTP was -EALREADY
                continue
            if inserts and inserts[0].tuple.dport == rtp.tuple.dport + 1:
                rtcp = inserts.pop(0)
                assert (rtcp.klass, rtcp.master, rtcp.tuple.dst, rtcp.tuple.src) == \
                    (rtp.klass, rtp.master, rtp.tuple.dst, rtp.tuple.src)

    run(helper, fam, data.draw(dialog(fam)), check)


@SETTINGS
@given(profile=profiles, fam=st.sampled_from([4, 6]), expect_max=st.sampled_from([4096, 5, 8]), data=st.data())
def test_media_pairs_stay_complete_with_full_masks(profile: KernelProfile, fam: int, expect_max: int,
                                                   data: st.DataObject) -> None:
    # sip_direct_media=1 and sip_direct_signalling=1: every mask is full, so no
    # -EBUSY clash can split a pair; without media connections nothing uses one up.
    helper = SipHelper(ModuleParams(expect_max=expect_max), profile)

    def check(result: PacketResult | None, step: Step) -> None:
        ports = Counter((id(e.master), e.klass, e.tuple.src, e.tuple.dst, e.tuple.dport) for e in media_rows(helper))
        for (master, klass, src, dst, port), n in ports.items():
            assert n == 1
            partner = port + 1 if port % 2 == 0 else port - 1
            assert (master, klass, src, dst, partner) in ports, (port, partner)

    run(helper, fam, data.draw(dialog(fam, media_connections=False)), check)


@SETTINGS
@given(profile=profiles, fam=st.sampled_from([4, 6]), params=params_st, data=st.data())
def test_policy_limits_per_master_and_class(profile: KernelProfile, fam: int, params: ModuleParams,
                                            data: st.DataObject) -> None:
    helper = SipHelper(params, profile, LabRouting(HOSTS[fam].values()).same_interface)

    def check(result: PacketResult | None, step: Step) -> None:
        counts = Counter((id(e.master), e.klass) for e in helper.table.entries())
        for (_, klass), n in counts.items():
            assert n <= SIP_EXPECT_POLICY[klass].max_expected
        assert len(helper.table) <= params.expect_max

    run(helper, fam, data.draw(dialog(fam, rich=True)), check)


@SETTINGS
@given(profile=profiles, fam=st.sampled_from([4, 6]), params=params_st, data=st.data())
def test_no_media_after_bye(profile: KernelProfile, fam: int, params: ModuleParams, data: st.DataObject) -> None:
    helper = SipHelper(params, profile)
    h = HOSTS[fam]
    steps = data.draw(dialog(fam, media_connections=False))
    bye = Step("send", 0, data.draw(st.booleans()),
               f"BYE sip:x SIP/2.0\r\nCSeq: {data.draw(st.integers(0, 9))} BYE\r\nContent-Length: 0\r\n\r\n".encode())
    position = data.draw(st.integers(0, len(steps)))
    steps.insert(position, bye)

    def check(result: PacketResult | None, step: Step) -> None:
        if step is bye:
            master = helper.conntrack(Packet(h["ua"], 5060, h["srv"], 5060, IPPROTO_UDP).tuple).master
            assert rules.BYE_FLUSH.id in result.rule_ids
            assert not [e for e in media_rows(helper) if e.master is master]

    run(helper, fam, steps, check)


@SETTINGS
@given(profile=profiles, fam=st.sampled_from([4, 6]), data=st.data(),
       header=st.sampled_from([None, "0", "00"]), param=st.sampled_from(["", ";expires=0", ";expires=00"]))
def test_register_with_expires_zero_creates_nothing(profile: KernelProfile, fam: int, data: st.DataObject,
                                                    header: str | None, param: str) -> None:
    if header is None and not param:
        header = "0"
    helper = SipHelper(ModuleParams(sip_direct_signalling=data.draw(st.booleans())), profile)
    h = HOSTS[fam]
    port = data.draw(st.sampled_from(["", ":5062", ":6000"]))
    transport = data.draw(st.sampled_from(["", ";transport=udp"]))
    lines = ["REGISTER sip:r SIP/2.0", f"CSeq: {data.draw(st.integers(0, 99))} REGISTER",
             f"Contact: <sip:a@{uri_host(h['ua'])}{port}{transport}>{param}"]
    if header is not None:
        lines.append(f"Expires: {header}")
    payload = ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()
    result = helper.packet(Packet(h["ua"], 5060, h["srv"], 5060, IPPROTO_UDP, payload), 0)
    assert result.accepted
    assert [e for e in result.events if e.kind == "new"] == []
    assert rules.REGISTER_UNBIND.id in result.rule_ids
    assert len(helper.table) == 0


# --- the state machines agree with the table ---------------------------------------------------------------------
@SETTINGS
@given(profile=profiles, fam=st.sampled_from([4, 6]), params=params_st, data=st.data())
def test_machines_agree_with_the_table(profile: KernelProfile, fam: int, params: ModuleParams,
                                       data: st.DataObject) -> None:
    # The machines decide, the table is what they did: after every packet the
    # two must tell the same story. Any IllegalTransition fails the test on its own.
    helper = SipHelper(params, profile, LabRouting(HOSTS[fam].values()).same_interface)

    def check(result: PacketResult | None, step: Step) -> None:
        entries = helper.table.entries()
        for entry in entries:
            inactive = bool(entry.flags & ExpectFlag.INACTIVE)
            assert entry.lifecycle.state == ("inactive" if inactive else "active")
        for master in helper.masters():
            mine = [e for e in entries if e.master is master]
            signalling = [e for e in mine if e.klass == ExpectClass.SIGNALLING]
            assert len(signalling) <= 1
            if not signalling:
                assert master.registrar.state == "unregistered" and master.signalling is None
            else:
                assert master.signalling is signalling[0]
                inactive = bool(signalling[0].flags & ExpectFlag.INACTIVE)
                assert master.registrar.state == ("pending" if inactive else "registered")
            if master.invite.state == "idle":
                assert master.invite_cseq == 0
        # every expectation belongs to a live master
        live = {id(m) for m in helper.masters()}
        assert all(id(e.master) in live for e in entries)

    run(helper, fam, data.draw(dialog(fam, max_steps=25, rich=data.draw(st.booleans()))), check)
