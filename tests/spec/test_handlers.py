"""The helper end to end: SipHelper.packet(Packet(...), now) against the kernel.

Expected verdicts, expectation tables and master fields follow the kernel
code: sip_help_udp()/sip_help_tcp(), process_sip_msg(), process_sip_request(),
process_sip_response(), the sip_handlers[] functions, process_sdp(),
set_expected_rtp_rtcp(), process_register_request()/_response() and
refresh_signalling_expectation() in net/netfilter/nf_conntrack_sip.c, and
__nf_ct_expect_check(), evict_oldest_expect(), __nf_ct_expect_find() and
nf_ct_find_expectation() in net/netfilter/nf_conntrack_expect.c (6.1.192;
6.1.170 where a test says so). Rule ids name the path the kernel takes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import pytest
from sipct.spec import rules
from sipct.spec.expectation import IPPROTO_TCP, IPPROTO_UDP, Address, Expectation
from sipct.spec.helper import Packet, PacketResult, SipHelper, SpecError
from sipct.spec.master import Master
from sipct.spec.params import ModuleParams
from sipct.spec.profiles import HARDENED_6_1_192, LEGACY_6_1_170, KernelProfile
from sipct.spec.topology import LabRouting

ip = ipaddress.ip_address
UA, UA_2, SRV, OTHER = ip("192.0.2.2"), ip("192.0.2.3"), ip("198.51.100.2"), ip("203.0.113.5")
UA6, SRV6 = ip("2001:db8:1::2"), ip("2001:db8:2::2")
PROFILES = pytest.mark.parametrize("profile", [LEGACY_6_1_170, HARDENED_6_1_192], ids=lambda p: p.name)


# --- building messages ---------------------------------------------------------------------------------
def host(a: Address) -> str:
    return f"[{a}]" if a.version == 6 else str(a)


def message(first: str, headers: list[str] | tuple[str, ...] = (), body: bytes = b"", *,
            content_length: bool = True, eol: bytes = b"\r\n") -> bytes:
    lines = [first, *headers]
    if content_length:
        lines.append(f"Content-Length: {len(body)}")
    return eol.join(line.encode("latin-1") for line in lines) + eol + eol + body


def sdp(*media: tuple, c: Address | None = UA, eol: bytes = b"\r\n") -> bytes:
    """SDP with a session c= (unless None) and m= lines: (type, port[, media c= address])."""
    fam = "IP4" if (c or UA).version == 4 else "IP6"
    lines = ["v=0", f"o=x 1 1 IN {fam} {c or UA}", "s=-"]
    if c is not None:
        lines.append(f"c=IN {fam} {c}")
    lines.append("t=0 0")
    for m in media:
        lines.append(f"m={m[0]} {m[1]} RTP/AVP 0")
        if len(m) > 2:
            lines.append(f"c=IN {'IP4' if m[2].version == 4 else 'IP6'} {m[2]}")
    return eol.join(line.encode() for line in lines) + eol


def request(method: str, cseq: object = 1, body: bytes = b"", headers: tuple[str, ...] = (),
            cseq_method: str | None = None) -> bytes:
    hdrs = [f"Via: SIP/2.0/UDP {host(UA)}:5060;branch=z9hG4bK1", f"CSeq: {cseq} {cseq_method or method}", *headers]
    return message(f"{method} sip:bob@{host(SRV)} SIP/2.0", hdrs, body)


def invite(cseq: object = 1, *media: tuple, c: Address | None = UA, method: str = "INVITE") -> bytes:
    return request(method, cseq, sdp(*media, c=c) if media or c else b"")


def response(code: object, cseq: object, method: str, headers: tuple[str, ...] = (), body: bytes = b"") -> bytes:
    return message(f"SIP/2.0 {code} X", [f"CSeq: {cseq} {method}", *headers], body)


def register(cseq: object = 1, contact: str = f"<sip:alice@{UA}:5062>", expires: object = 3600,
             extra: tuple[str, ...] = ()) -> bytes:
    headers = [f"Contact: {contact}", *extra]
    if expires is not None:
        headers.append(f"Expires: {expires}")
    return request("REGISTER", cseq, headers=tuple(headers))


# --- driving the helper -----------------------------------------------------------------------------------
class Lab:
    """One namespace: a SipHelper plus a clock; ua:5060 -> srv:5060 is the default master."""

    def __init__(self, profile: KernelProfile = HARDENED_6_1_192, routing: bool = False, **params: object) -> None:
        self.params = ModuleParams(**params)  # type: ignore[arg-type]
        same_interface = LabRouting([UA, SRV, UA6, SRV6]).same_interface if routing else None
        self.helper = SipHelper(self.params, profile, same_interface)
        self.now = 0.0

    def send(self, payload: bytes, src: Address = UA, sport: int = 5060, dst: Address = SRV, dport: int = 5060,
             proto: int = IPPROTO_UDP, at: float | None = None) -> PacketResult:
        if at is not None:
            self.now = at
        return self.helper.packet(Packet(src, sport, dst, dport, proto, payload), self.now)

    def reply(self, payload: bytes, **kw: object) -> PacketResult:
        """From srv:5060 back to ua:5060 (the reply direction of the default master)."""
        kw.setdefault("src", SRV)
        kw.setdefault("dst", UA)
        return self.send(payload, **kw)  # type: ignore[arg-type]

    def connect(self, src: Address = UA, sport: int = 5060, dst: Address = SRV, dport: int = 5060,
                at: float | None = None) -> PacketResult:
        if at is not None:
            self.now = at
        return self.helper.tcp_connect(src, sport, dst, dport, self.now)

    def advance(self, to: float) -> list[str]:
        self.now = to
        return self.helper.advance(to).rule_ids

    def table(self) -> list[str]:
        return sorted(row(e) for e in self.helper.expectations())

    def rows(self) -> list[tuple]:
        return sorted((row(e), e.expires) for e in self.helper.expectations())

    def master(self, src: Address = UA, sport: int = 5060, dst: Address = SRV, dport: int = 5060,
               proto: int = IPPROTO_UDP) -> Master:
        ct = self.helper.conntrack(Packet(src, sport, dst, dport, proto).tuple)
        assert ct is not None and ct.master is not None
        return ct.master


def row(e: Expectation) -> str:
    t = e.tuple
    flags = ",".join(e.flags.labels())
    proto = "udp" if t.proto == IPPROTO_UDP else "tcp"
    return f"{proto} {t.src or '*'} -> {host(t.dst)}:{t.dport} {e.klass.label}" + (f" {flags}" if flags else "")


def audio(dst: Address, port: int, src: Address | None = SRV, klass: str = "audio") -> list[str]:
    return [f"udp {src or '*'} -> {host(dst)}:{port} {klass}", f"udp {src or '*'} -> {host(dst)}:{port + 1} {klass}"]


def sig(dst: Address = UA, port: int = 5062, src: Address | None = SRV, flags: str = "PERMANENT,INACTIVE",
        proto: str = "udp") -> str:
    return f"{proto} {src or '*'} -> {host(dst)}:{port} signalling" + (f" {flags}" if flags else "")


def accepted(r: PacketResult) -> PacketResult:
    assert r.accepted, (r.drop_rule, r.rule_ids)
    return r


# --- every dropping rule -------------------------------------------------------------------------------------
# The nf_ct_helper_log() text the kernel prints for each drop (grep nf_conntrack_sip.c).
KERNEL_LOG = {
    "request.no-cseq": "cannot parse cseq",
    "request.bad-cseq": "cannot get cseq",
    "response.no-code": "cannot get code",
    "response.no-cseq": "cannot parse cseq",
    "response.bad-cseq": "cannot get cseq",
    "sdp.media-port-range": "wrong port",
    "sdp.no-connection": "cannot parse SDP message",
    "media.failed": "cannot add expectation for voice",
    "register.bad-contact": "cannot parse contact",
    "register.bad-expires": "cannot parse expires",
    "register.failed": "cannot add expectation",
    "register-response.bad-contact": "cannot parse contact",
    "register-response.bad-expires": "cannot parse expires",
}


def _no_cseq(lab: Lab) -> PacketResult:
    return lab.send(message(f"INVITE sip:b@{SRV} SIP/2.0", ["Via: SIP/2.0/UDP 192.0.2.2"]))


def _bad_cseq(lab: Lab) -> PacketResult:
    return lab.send(request("BYE", 4294967296))  # wraps to 0 on 6.1.170, overflows sip_strtouint() on 6.1.192


def _no_code(lab: Lab) -> PacketResult:
    lab.send(request("OPTIONS"))
    return lab.reply(response("abc", 1, "INVITE"))


def _response_no_cseq(lab: Lab) -> PacketResult:
    lab.send(request("OPTIONS"))
    return lab.reply(message("SIP/2.0 200 OK", ["Via: x"]))


def _response_bad_cseq(lab: Lab) -> PacketResult:
    lab.send(request("OPTIONS"))
    return lab.reply(response(200, 4294967296, "INVITE"))


def _media_port(lab: Lab) -> PacketResult:
    return lab.send(invite(1, ("audio", 80)))


def _no_connection(lab: Lab) -> PacketResult:
    return lab.send(invite(1, ("audio", 5000), c=None))


def _media_failed(lab: Lab) -> PacketResult:
    # -EBUSY: with sip_direct_media=0 the RTP tuple (any source) overlaps the
    # REGISTER's signalling expectation (source = registrar) under the
    # intersected masks: expect_clash() in __nf_ct_expect_check().
    accepted(lab.send(register(1, f"<sip:a@{UA}:5062>")))
    return lab.send(invite(2, ("audio", 5062)))


def _register_bad_contact(lab: Lab) -> PacketResult:
    return lab.send(register(1, f"<sip:a@{UA}:70000>"))  # 6.1.170 only: epaddr_len() skipped the digits


def _register_bad_expires(lab: Lab) -> PacketResult:
    return lab.send(register(1, f"<sip:a@{UA}:5062>;expires=never"))


def _register_failed(lab: Lab) -> PacketResult:
    # Another master already expects the same signalling tuple: flags 0 (no
    # NF_CT_EXP_F_SKIP_MASTER), so master_matches() fails and expect_clash() hits.
    accepted(lab.send(register(1, f"<sip:a@{UA}:5062>")))
    return lab.send(register(1, f"<sip:a@{UA}:5062>"), sport=5070)


def _reg_response_bad_contact(lab: Lab) -> PacketResult:
    accepted(lab.send(register(7)))
    return lab.reply(response(200, 7, "REGISTER", (f"Contact: <sip:a@{UA}:70000>",)))


def _reg_response_bad_expires(lab: Lab) -> PacketResult:
    accepted(lab.send(register(7)))
    return lab.reply(response(200, 7, "REGISTER", (f"Contact: <sip:a@{UA}:5062>;expires=soon",)))


DROP_TRIGGERS: dict[str, tuple[Callable[[Lab], PacketResult], tuple[KernelProfile, ...], dict]] = {
    "request.no-cseq": (_no_cseq, (LEGACY_6_1_170, HARDENED_6_1_192), {}),
    "request.bad-cseq": (_bad_cseq, (LEGACY_6_1_170, HARDENED_6_1_192), {}),
    "response.no-code": (_no_code, (LEGACY_6_1_170, HARDENED_6_1_192), {}),
    "response.no-cseq": (_response_no_cseq, (LEGACY_6_1_170, HARDENED_6_1_192), {}),
    "response.bad-cseq": (_response_bad_cseq, (LEGACY_6_1_170, HARDENED_6_1_192), {}),
    "sdp.media-port-range": (_media_port, (LEGACY_6_1_170, HARDENED_6_1_192), {}),
    "sdp.no-connection": (_no_connection, (LEGACY_6_1_170, HARDENED_6_1_192), {}),
    "media.failed": (_media_failed, (LEGACY_6_1_170, HARDENED_6_1_192), {"sip_direct_media": False}),
    # On hardened kernels the walk's epaddr_len() applies the same address and port
    # checks as ct_sip_parse_header_uri(), so "cannot parse contact" needs 6.1.170.
    "register.bad-contact": (_register_bad_contact, (LEGACY_6_1_170,), {}),
    "register.bad-expires": (_register_bad_expires, (LEGACY_6_1_170, HARDENED_6_1_192), {}),
    "register.failed": (_register_failed, (LEGACY_6_1_170, HARDENED_6_1_192), {}),
    "register-response.bad-contact": (_reg_response_bad_contact, (LEGACY_6_1_170,), {}),
    "register-response.bad-expires": (_reg_response_bad_expires, (LEGACY_6_1_170, HARDENED_6_1_192), {}),
}


def test_every_drop_rule_has_a_trigger() -> None:
    # nf_nat_sip's drops have their triggers in tests/spec/test_nat.py.
    assert set(DROP_TRIGGERS) == {r.id for r in rules.RULES.values() if r.drop and not r.id.startswith("nat.")}
    assert set(KERNEL_LOG) == set(DROP_TRIGGERS)


@pytest.mark.parametrize("rule_id, profile", [(rid, p) for rid, (_, ps, _) in DROP_TRIGGERS.items() for p in ps],
                         ids=lambda x: x if isinstance(x, str) else x.name)
def test_drop_rule(rule_id: str, profile: KernelProfile) -> None:
    trigger, _, params = DROP_TRIGGERS[rule_id]
    result = trigger(Lab(profile, **params))
    assert result.accepted is False
    assert result.drop_rule is not None and result.drop_rule.id == rule_id
    assert rule_id in result.rule_ids  # the deciding rule is part of the trace
    assert result.drop_rule.log == KERNEL_LOG[rule_id]


def test_hardened_kernel_never_drops_for_an_unparsable_contact() -> None:
    # The same messages on 6.1.192: the contact does not count, nothing is dropped.
    lab = Lab(HARDENED_6_1_192)
    r = accepted(_register_bad_contact(lab))
    assert rules.REGISTER_NO_CONTACT.id in r.rule_ids
    r = accepted(_reg_response_bad_contact(Lab(HARDENED_6_1_192)))
    assert rules.REG_RESPONSE_NO_MATCH.id in r.rule_ids


def test_drop_of_a_first_packet_takes_its_expectations_along() -> None:
    # The dropped first packet frees its unconfirmed conntrack, and with it the
    # expectations it created moments earlier (nf_ct_remove_expectations()).
    lab = Lab()
    r = lab.send(invite(1, ("audio", 5000), ("audio", 80)))
    assert r.accepted is False and r.drop_rule is rules.SDP_MEDIA_PORT_RANGE
    assert rules.UNCONFIRMED_DROP.id in r.rule_ids
    assert lab.table() == []
    assert [e.kind for e in r.events] == ["new", "new", "destroy", "destroy"]
    assert lab.send(request("OPTIONS")).new_conntrack is True


def test_drop_on_a_confirmed_master_keeps_what_was_created() -> None:
    lab = Lab()
    accepted(lab.send(request("OPTIONS")))
    r = lab.send(invite(1, ("audio", 5000), ("audio", 80)))
    assert r.accepted is False and rules.UNCONFIRMED_DROP.id not in r.rule_ids
    assert lab.table() == audio(UA, 5000)
    assert lab.master().invite_cseq == 0  # process_invite_request() stores it only on NF_ACCEPT


# --- dispatch --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("first, handled", [
    (f"INVITE sip:b@{SRV} SIP/2.0", True),
    (f"invite sip:b@{SRV} SIP/2.0", True),  # strncasecmp
    ("INVITE \xe9x SIP/2.0", True),  # isalpha() of the kernel's Latin-1 ctype
    (f"INVITE  sip:b@{SRV} SIP/2.0", False),  # the method must be followed by SP and a letter
    (f"INVITE\tsip:b@{SRV} SIP/2.0", False),
    ("INVITE 5060 SIP/2.0", False),
    ("INVITE \xd7x SIP/2.0", False),
    (f"INVITEX sip:b@{SRV} SIP/2.0", False),
    (f" INVITE sip:b@{SRV} SIP/2.0", False),
    (f"ACKNOWLEDGE sip:b@{SRV} SIP/2.0", False),
])
def test_request_dispatch(first: str, handled: bool) -> None:
    lab = Lab()
    accepted(lab.send(invite(1, ("audio", 5000))))
    r = accepted(lab.send(message(first, ["CSeq: 2 INVITE"])))
    assert (rules.INVITE_FLUSH.id in r.rule_ids) is handled
    assert (rules.UNHANDLED_METHOD.id in r.rule_ids) is not handled
    assert lab.table() == ([] if handled else audio(UA, 5000))


def test_unhandled_methods_need_no_cseq() -> None:
    r = accepted(Lab().send(message(f"OPTIONS sip:b@{SRV} SIP/2.0")))
    assert r.rule_ids[-1] == rules.UNHANDLED_METHOD.id


@pytest.mark.parametrize("cseq_line, handled", [
    ("CSeq: 1 INVITE", True),
    ("CSeq: 1 invite", True),
    ("CSeq: 1\tINVITE", True),  # exactly one character - any character - after the number
    ("CSeq: 1xINVITE", True),
    ("CSeq: 1  INVITE", False),
    ("CSeq: 1 BYE", False),  # BYE and ACK have no response handler
    ("CSeq: 1 ACK", False),
    ("CSeq: 1 CANCEL", False),
])
def test_response_dispatch(cseq_line: str, handled: bool) -> None:
    lab = Lab()
    accepted(lab.send(request("OPTIONS")))
    r = accepted(lab.reply(message("SIP/2.0 200 OK", [cseq_line], sdp(("audio", 6000), c=SRV))))
    assert (rules.RESPONSE_SDP.id in r.rule_ids) is handled
    assert lab.table() == (audio(SRV, 6000, src=UA) if handled else [])


def test_response_method_must_fit_in_the_message() -> None:
    # *datalen < matchend + handler->len: a truncated method is no method.
    lab = Lab()
    accepted(lab.send(request("OPTIONS")))
    r = accepted(lab.reply(b"SIP/2.0 200 OK\r\nCSeq: 1 INVIT"))
    assert r.rule_ids[-1] == rules.RESPONSE_UNHANDLED.id


def test_response_prefix_is_case_insensitive() -> None:
    lab = Lab()
    accepted(lab.send(request("OPTIONS")))
    r = accepted(lab.reply(message("sip/2.0 183 X", ["CSeq: 1 INVITE"], sdp(("audio", 6000), c=SRV))))
    assert rules.RESPONSE.id in r.rule_ids
    assert lab.table() == audio(SRV, 6000, src=UA)


def test_short_payload_is_not_parsed() -> None:
    r = accepted(Lab().send(b"INVITE x\r\n"))  # 10 bytes < strlen("SIP/2.0 200")
    assert r.rule_ids == [rules.REFRESH_MASTER.id, rules.SHORT_PAYLOAD.id]


# --- INVITE, BYE and the answers ---------------------------------------------------------------------------------
def test_invite_flushes_then_processes() -> None:
    lab = Lab()
    accepted(lab.send(invite(1, ("audio", 5000))))
    assert lab.table() == audio(UA, 5000)
    r = accepted(lab.send(invite(2, ("video", 6000))))
    assert r.rule_ids.index(rules.INVITE_FLUSH.id) < r.rule_ids.index(rules.MEDIA_EXPECT.id)
    assert lab.table() == audio(UA, 6000, klass="video")
    assert lab.master().invite_cseq == 2
    accepted(lab.send(request("INVITE", 3)))  # no SDP: flush, accept, store
    assert lab.table() == [] and lab.master().invite_cseq == 3
    accepted(lab.send(invite(4, ("audio", 5000))))
    assert lab.send(invite(5, ("audio", 99))).accepted is False
    assert lab.table() == [] and lab.master().invite_cseq == 4


def test_invite_flush_spares_signalling_and_other_masters() -> None:
    lab = Lab()
    accepted(lab.send(register(1)))
    accepted(lab.send(invite(1, ("audio", 7000), c=UA_2), src=UA_2))
    accepted(lab.send(invite(2, ("audio", 5000))))
    accepted(lab.send(request("INVITE", 3)))
    assert lab.table() == sorted([sig(), *audio(UA_2, 7000)])


def test_bye_flushes_media() -> None:
    lab = Lab()
    accepted(lab.send(invite(1, ("audio", 5000), ("video", 6000))))
    accepted(lab.reply(response(200, 1, "INVITE", body=sdp(("audio", 7000), c=SRV))))
    assert len(lab.table()) == 6
    r = accepted(lab.reply(request("BYE", 2)))  # from either side
    assert rules.BYE_FLUSH.id in r.rule_ids
    assert lab.table() == []


def test_bye_without_cseq_is_dropped_before_flushing() -> None:
    lab = Lab()
    accepted(lab.send(invite(1, ("audio", 5000))))
    r = lab.send(message(f"BYE sip:b@{SRV} SIP/2.0"))
    assert r.drop_rule is rules.REQUEST_NO_CSEQ
    assert lab.table() == audio(UA, 5000)


@pytest.mark.parametrize("method", ["INVITE", "UPDATE", "PRACK"])
def test_error_responses_flush_only_on_the_invite_cseq(method: str) -> None:
    # process_invite_response(), process_update_response() and
    # process_prack_response() all compare with invite_cseq.
    lab = Lab()
    accepted(lab.send(invite(10, ("audio", 5000))))
    r = accepted(lab.reply(response(486, 11, method)))
    assert rules.RESPONSE_ERROR_OTHER.id in r.rule_ids
    assert lab.table() == audio(UA, 5000)
    r = accepted(lab.reply(response(486, 10, method)))
    assert rules.RESPONSE_ERROR_FLUSH.id in r.rule_ids
    assert lab.table() == []


@pytest.mark.parametrize("code, sdp_processed", [
    (100, True), (180, True), (199, True), (200, True), (299, True),
    (300, False), (401, False), (487, False), (600, False), (99, False),
])
def test_response_code_classes(code: int, sdp_processed: bool) -> None:
    lab = Lab()
    accepted(lab.send(invite(10, ("audio", 5000))))
    accepted(lab.reply(response(code, 10, "INVITE", body=sdp(("audio", 6000), c=SRV))))
    assert lab.table() == (sorted(audio(UA, 5000) + audio(SRV, 6000, src=UA)) if sdp_processed else [])


def test_answers_need_no_matching_cseq() -> None:
    lab = Lab()
    accepted(lab.send(invite(10, ("audio", 5000))))
    accepted(lab.reply(response(200, 99, "UPDATE", body=sdp(("audio", 6000), c=SRV))))
    assert lab.table() == sorted(audio(UA, 5000) + audio(SRV, 6000, src=UA))


@pytest.mark.parametrize("method", ["UPDATE", "ACK", "PRACK"])
def test_sdp_requests_do_not_flush(method: str) -> None:
    lab = Lab()
    accepted(lab.send(invite(1, ("audio", 5000))))
    r = accepted(lab.send(invite(2, ("video", 6000), method=method)))
    assert rules.SDP_REQUEST.id in r.rule_ids
    assert lab.table() == sorted(audio(UA, 5000) + audio(UA, 6000, klass="video"))
    assert lab.master().invite_cseq == 1


# --- process_sdp(): at most three media with expectations ---------------------------------------------------------
def test_at_most_three_media_per_message() -> None:
    lab = Lab()
    r = accepted(lab.send(invite(1, ("audio", 5000), ("video", 6000), ("image", 7000), ("audio", 8000))))
    assert lab.table() == sorted(audio(UA, 5000) + audio(UA, 6000, klass="video") + audio(UA, 7000, klass="image"))
    assert rules.SDP_MEDIA_LIMIT.id in r.rule_ids


def test_unknown_types_and_port_zero_do_not_count() -> None:
    lab = Lab()
    r = accepted(lab.send(invite(1, ("text", 9000), ("audio", 0), ("Audio", 4000), ("audio", 5000),
                                 ("video", 6000), ("image", 7000))))
    assert lab.table() == sorted(audio(UA, 5000) + audio(UA, 6000, klass="video") + audio(UA, 7000, klass="image"))
    assert r.rule_ids.count(rules.SDP_MEDIA_UNKNOWN.id) == 2
    assert rules.SDP_MEDIA_PORT_ZERO.id in r.rule_ids


def test_a_media_skipped_by_direct_media_still_counts() -> None:
    # set_expected_rtp_rtcp() returns NF_ACCEPT without an expectation, and
    # process_sdp() counts it (i++) all the same.
    lab = Lab()
    accepted(lab.send(invite(1, ("audio", 5000, OTHER), ("audio", 6000), ("video", 7000), ("image", 8000))))
    assert lab.table() == sorted(audio(UA, 6000) + audio(UA, 7000, klass="video"))


def test_odd_port_gives_the_even_pair() -> None:
    lab = Lab()
    accepted(lab.send(invite(1, ("audio", 5001))))
    assert lab.table() == audio(UA, 5000)
    accepted(lab.send(invite(2, ("audio", 65535))))
    assert lab.table() == audio(UA, 65534)
    accepted(lab.send(invite(3, ("audio", 1024))))
    assert lab.table() == audio(UA, 1024)
    assert lab.send(invite(4, ("audio", 1023))).drop_rule is rules.SDP_MEDIA_PORT_RANGE
    assert lab.send(invite(5, ("audio", 65536))).drop_rule is rules.SDP_MEDIA_PORT_RANGE


def test_media_connection_overrides_session_connection() -> None:
    lab = Lab(sip_direct_media=False)
    accepted(lab.send(invite(1, ("audio", 5000, OTHER), ("video", 6000))))
    assert lab.table() == sorted(audio(OTHER, 5000, src=None) + audio(UA, 6000, src=None, klass="video"))


# --- module parameters ---------------------------------------------------------------------------------------
def test_direct_media() -> None:
    lab = Lab(sip_direct_media=True)
    r = accepted(lab.send(invite(1, ("audio", 5000, OTHER), ("audio", 6000))))
    assert rules.MEDIA_NOT_DIRECT.id in r.rule_ids
    assert lab.table() == audio(UA, 6000, src=SRV)  # source restricted to the signalling peer
    lab = Lab(sip_direct_media=False)
    accepted(lab.send(invite(1, ("audio", 5000, OTHER), ("audio", 6000))))
    assert lab.table() == sorted(audio(OTHER, 5000, src=None) + audio(UA, 6000, src=None))


def test_direct_media_in_the_reply_direction() -> None:
    lab = Lab()
    accepted(lab.send(request("OPTIONS")))
    accepted(lab.reply(response(200, 1, "INVITE", body=sdp(("audio", 6000), c=SRV))))
    accepted(lab.reply(response(200, 1, "INVITE", body=sdp(("audio", 7000), c=UA))))  # not the sender
    assert lab.table() == audio(SRV, 6000, src=UA)


@pytest.mark.parametrize("media, expected", [
    (ip("198.51.100.7"), False),  # routed through the packet's own output interface (srv's network)
    (UA_2, True),  # another interface
    (OTHER, True),  # no route at all: nf_ip_route() gives no dst, nothing is skipped
])
def test_external_media(media: Address, expected: bool) -> None:
    lab = Lab(routing=True, sip_direct_media=False, sip_external_media=True)
    r = accepted(lab.send(invite(1, ("audio", 5000, media))))
    assert lab.table() == (audio(media, 5000, src=None) if expected else [])
    assert (rules.MEDIA_EXTERNAL_SAME_IF.id in r.rule_ids) is not expected


def test_external_media_is_ignored_with_direct_media() -> None:
    lab = Lab(routing=True, sip_direct_media=True, sip_external_media=True)
    accepted(lab.send(invite(1, ("audio", 5000))))
    assert lab.table() == audio(UA, 5000)
    lab = Lab(routing=True, sip_direct_media=False, sip_external_media=False)
    accepted(lab.send(invite(1, ("audio", 5000, ip("198.51.100.7")))))
    assert lab.table() == audio(ip("198.51.100.7"), 5000, src=None)


@pytest.mark.parametrize("direct, src", [(True, SRV), (False, None)])
def test_direct_signalling(direct: bool, src: Address | None) -> None:
    lab = Lab(sip_direct_signalling=direct)
    accepted(lab.send(register(1)))
    assert lab.table() == [sig(src=src)]


# --- REGISTER ---------------------------------------------------------------------------------------------------
def test_register_creates_an_inactive_permanent_expectation() -> None:
    lab = Lab()
    r = accepted(lab.send(register(5, expires=3600), at=10))
    assert rules.REGISTER_EXPECT.id in r.rule_ids
    assert lab.rows() == [(sig(), 190)]  # the policy timeout (180 s), not the Expires value
    assert lab.master().register_cseq == 5


def test_register_without_any_expires_is_an_unbind() -> None:
    # process_register_request() starts from "unsigned int expires = 0".
    lab = Lab()
    r = accepted(lab.send(register(5, expires=None)))
    assert rules.REGISTER_UNBIND.id in r.rule_ids
    assert lab.table() == [] and lab.master().register_cseq == 5


@pytest.mark.parametrize("contact, header, created", [
    (f"<sip:a@{UA}:5062>;expires=60", 0, True),  # the contact parameter overrides the header
    (f"<sip:a@{UA}:5062>;expires=0", 60, False),
    (f"<sip:a@{UA}:5062>", 0, False),
    (f"<sip:a@{UA}:5062;expires=60>", None, True),  # a URI parameter is found as well
])
def test_register_expires_sources(contact: str, header: int | None, created: bool) -> None:
    lab = Lab()
    accepted(lab.send(register(5, contact, expires=header)))
    assert lab.table() == ([sig()] if created else [])
    assert lab.master().register_cseq == 5


@pytest.mark.parametrize("contact, rule", [
    (f"<sip:a@{OTHER}:5062>", rules.REGISTER_THIRD_PARTY),
    (f"<sip:a@{UA}:5062;transport=tcp>", rules.REGISTER_TRANSPORT),
    (f"<sip:a@{UA}:5062;transport=sctp>", rules.REGISTER_TRANSPORT),
    ("<tel:+123>", rules.REGISTER_NO_CONTACT),
])
def test_register_ignored_without_storing_the_cseq(contact: str, rule: rules.Rule) -> None:
    lab = Lab()
    r = accepted(lab.send(register(5, contact)))
    assert r.rule_ids[-1] == rule.id
    assert lab.table() == [] and lab.master().register_cseq == 0
    r = accepted(lab.reply(response(200, 5, "REGISTER", (f"Contact: {contact}",))))
    assert rules.REG_RESPONSE_STALE.id in r.rule_ids


def test_register_over_tcp_uses_the_contact_transport() -> None:
    lab = Lab()
    lab.connect()
    accepted(lab.send(register(1, f"<sip:a@{UA}:5062;transport=TCP>"), proto=IPPROTO_TCP))
    assert lab.table() == [sig(proto="tcp")]


def test_register_2xx_refreshes_and_activates() -> None:
    lab = Lab()
    accepted(lab.send(register(5), at=0))
    # The INACTIVE expectation lets nothing in yet.
    r = accepted(lab.send(request("INVITE"), src=SRV, sport=5060, dst=UA, dport=5062, at=1))
    assert r.related_to is None
    r = accepted(lab.reply(response(200, 5, "REGISTER", (f"Contact: <sip:a@{UA}:5062>;expires=600",)), at=2))
    assert rules.REG_RESPONSE_REFRESH.id in r.rule_ids
    assert lab.rows() == [(sig(flags="PERMANENT"), 602)]  # timeout = now + the contact's expires
    # Now the registrar can call: a new connection to the contact is RELATED,
    # gets the helper (assign_helper), and the PERMANENT expectation stays.
    r = accepted(lab.send(request("OPTIONS"), src=SRV, sport=5070, dst=UA, dport=5062, at=3))
    assert r.related_to is not None and r.helper_attached and r.new_conntrack
    assert lab.table() == [sig(flags="PERMANENT")]
    expected_master = lab.master(SRV, 5070, UA, 5062)
    assert expected_master.expected is True
    # An expected connection cannot register (IPS_EXPECTED).
    r = accepted(lab.send(register(1, f"<sip:a@{SRV}:5064>"), src=SRV, sport=5070, dst=UA, dport=5062))
    assert r.rule_ids[-1] == rules.REGISTER_EXPECTED_MASTER.id
    assert lab.table() == [sig(flags="PERMANENT")]


def test_register_2xx_uses_the_expires_header_without_a_parameter() -> None:
    lab = Lab()
    accepted(lab.send(register(5), at=0))
    accepted(lab.reply(response(200, 5, "REGISTER", (f"Contact: <sip:a@{UA}:5062>", "Expires: 300")), at=1))
    assert lab.rows() == [(sig(flags="PERMANENT"), 301)]


def test_register_2xx_walks_all_contacts() -> None:
    lab = Lab()
    accepted(lab.send(register(5), at=0))
    contacts = f"Contact: <sip:b@{OTHER}:5062>;expires=30, <sip:a@{UA}:5064>;expires=40, <sip:a@{UA}:5062>;expires=50"
    r = accepted(lab.reply(response(200, 5, "REGISTER", (contacts,)), at=1))
    assert r.rule_ids.count(rules.REG_RESPONSE_SKIP_CONTACT.id) == 1  # OTHER; UA:5064 matches no expectation
    assert lab.rows() == [(sig(flags="PERMANENT"), 51)]


@pytest.mark.parametrize("code", [300, 401, 403, 500, 603])
def test_register_non_2xx_flushes(code: int) -> None:
    lab = Lab()
    accepted(lab.send(register(5)))
    r = accepted(lab.reply(response(code, 5, "REGISTER")))
    assert rules.REG_RESPONSE_ERROR.id in r.rule_ids
    assert lab.table() == []


@pytest.mark.parametrize("contact", [f"<sip:a@{OTHER}:5062>", f"<sip:a@{UA}:5064>", f"<sip:a@{UA}:5062;transport=tcp>",
                                     "<tel:1>"])
def test_register_2xx_without_a_matching_contact_flushes(contact: str) -> None:
    lab = Lab()
    accepted(lab.send(register(5)))
    r = accepted(lab.reply(response(200, 5, "REGISTER", (f"Contact: {contact};expires=60",))))
    assert rules.REG_RESPONSE_NO_MATCH.id in r.rule_ids
    assert lab.table() == []


def test_register_2xx_with_expires_zero_unbinds() -> None:
    lab = Lab()
    accepted(lab.send(register(5)))
    r = accepted(lab.reply(response(200, 5, "REGISTER", (f"Contact: <sip:a@{UA}:5062>;expires=0",))))
    assert rules.REG_RESPONSE_UNBIND.id in r.rule_ids
    assert lab.table() == []


def test_register_response_with_a_stale_cseq_is_ignored() -> None:
    lab = Lab()
    accepted(lab.send(register(5)))
    for cseq in (4, 6):
        r = accepted(lab.reply(response(200, cseq, "REGISTER", (f"Contact: <sip:a@{UA}:5062>;expires=60",))))
        assert r.rule_ids[-1] == rules.REG_RESPONSE_STALE.id
        r = accepted(lab.reply(response(401, cseq, "REGISTER")))
        assert r.rule_ids[-1] == rules.REG_RESPONSE_STALE.id
    assert lab.table() == [sig()]


@pytest.mark.parametrize("code", [100, 180, 199])
def test_register_1xx_is_ignored(code: int) -> None:
    lab = Lab()
    accepted(lab.send(register(5)))
    r = accepted(lab.reply(response(code, 5, "REGISTER", (f"Contact: <sip:a@{UA}:5062>;expires=0",))))
    assert r.rule_ids[-1] == rules.REG_RESPONSE_PROVISIONAL.id
    assert lab.table() == [sig()]
    accepted(lab.reply(response(200, 5, "REGISTER", (f"Contact: <sip:a@{UA}:5062>;expires=60",))))
    assert lab.table() == [sig(flags="PERMANENT")]


def test_second_register_replaces_the_signalling_expectation() -> None:
    # max_expected 1 for signalling: evict_oldest_expect()
    lab = Lab()
    accepted(lab.send(register(1, f"<sip:a@{UA}:5062>")))
    r = accepted(lab.send(register(2, f"<sip:a@{UA}:5064>")))
    assert rules.EXPECT_EVICT.id in r.rule_ids
    assert lab.table() == [sig(port=5064)]


def test_same_register_again_replaces_its_expectation() -> None:
    # Same master, class, tuple and mask: unlinked and inserted anew with a fresh timeout.
    lab = Lab()
    accepted(lab.send(register(1), at=0))
    accepted(lab.reply(response(200, 1, "REGISTER", (f"Contact: <sip:a@{UA}:5062>;expires=60",)), at=1))
    r = accepted(lab.send(register(2), at=30))
    assert rules.EXPECT_REPLACE.id in r.rule_ids
    assert lab.rows() == [(sig(), 210)]  # INACTIVE again, 180 s from now


# --- the expectation table ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("klass, limit", [("audio", 4), ("video", 4), ("image", 2)])
def test_policy_max_expected_evicts_the_oldest(klass: str, limit: int) -> None:
    lab = Lab()
    r = accepted(lab.send(invite(1, (klass, 5000), (klass, 6000), (klass, 7000))))
    kept = [7000] if limit == 2 else [6000, 7000]
    assert lab.table() == sorted(x for p in kept for x in audio(UA, p, klass=klass))
    assert r.rule_ids.count(rules.EXPECT_EVICT.id) == 6 - limit


def test_eviction_is_per_master_and_class() -> None:
    lab = Lab()
    accepted(lab.send(invite(1, ("audio", 5000), ("audio", 6000), ("video", 7000))))
    accepted(lab.send(invite(1, ("audio", 8000), c=UA_2), src=UA_2))
    accepted(lab.send(invite(2, ("audio", 9000), method="UPDATE")))
    assert lab.table() == sorted(audio(UA, 6000) + audio(UA, 9000) + audio(UA, 7000, klass="video")
                                 + audio(UA_2, 8000))


def test_the_same_media_offered_again_is_replaced() -> None:
    lab = Lab()
    accepted(lab.send(invite(1, ("audio", 5000)), at=0))
    r = accepted(lab.send(invite(2, ("audio", 5000), method="UPDATE"), at=100))
    assert r.rule_ids.count(rules.EXPECT_REPLACE.id) == 2
    assert lab.rows() == [(x, 280) for x in audio(UA, 5000)]


def test_same_media_from_two_masters() -> None:
    # __nf_ct_expect_find() finds the first master's expectation (same class and
    # helper): the second master adds nothing and owns nothing.
    lab = Lab()
    accepted(lab.send(invite(1, ("audio", 5000))))
    r = accepted(lab.send(invite(1, ("audio", 5000)), sport=5070))
    assert rules.MEDIA_OTHER_MASTER.id in r.rule_ids and rules.EXPECT_INSERT.id not in r.rule_ids
    assert lab.table() == audio(UA, 5000)
    assert all(e.master == Packet(UA, 5060, SRV, 5060, IPPROTO_UDP).tuple for e in lab.helper.expectations())
    accepted(lab.send(request("BYE", 2), sport=5070))  # the second master's BYE removes nothing
    assert lab.table() == audio(UA, 5000)


def test_same_media_from_another_class_or_helper_is_already_there() -> None:
    # Not skipped (other class, or the TCP helper), so nf_ct_expect_related()
    # runs and returns -EALREADY, which counts as success.
    lab = Lab()
    accepted(lab.send(invite(1, ("audio", 5000))))
    r = accepted(lab.send(invite(1, ("video", 5000)), sport=5070))
    assert r.rule_ids.count(rules.EXPECT_ALREADY.id) == 2 and rules.MEDIA_ALREADY.id in r.rule_ids
    lab.connect(sport=5080)
    r = accepted(lab.send(invite(1, ("audio", 5000)), sport=5080, proto=IPPROTO_TCP))
    assert rules.MEDIA_OTHER_MASTER.id not in r.rule_ids and rules.MEDIA_ALREADY.id in r.rule_ids
    assert lab.table() == audio(UA, 5000)


def test_table_full_drops() -> None:
    lab = Lab(expect_max=3)
    accepted(lab.send(request("OPTIONS")))
    r = lab.send(invite(1, ("audio", 5000), ("video", 6000)))
    assert r.drop_rule is rules.MEDIA_FAILED
    assert rules.EXPECT_TABLE_FULL.id in r.rule_ids
    # The RTP expectation of the failed pair is taken back: nf_ct_unexpect_related().
    assert lab.table() == audio(UA, 5000)


def test_expectations_expire_after_180_seconds() -> None:
    lab = Lab()
    accepted(lab.send(invite(1, ("audio", 5000)), at=0))
    accepted(lab.send(register(1), sport=5070, at=10))
    lab.advance(179.5)
    assert len(lab.table()) == 3
    assert lab.advance(180).count(rules.EXPECT_EXPIRE.id) == 2  # timeout - now <= 0
    assert lab.table() == [sig()]
    assert lab.master().invite.state == "invited"  # expiry leaves invite_cseq alone
    assert lab.master(sport=5070).registrar.state == "pending"
    lab.advance(190)
    assert lab.table() == []
    # The lifecycle's expire told the registrar: a late 200 finds nothing to refresh.
    assert lab.master(sport=5070).registrar.state == "unregistered"
    assert lab.master(sport=5070).signalling is None


def test_master_timeout_removes_its_expectations() -> None:
    lab = Lab(sip_timeout=100)
    accepted(lab.send(invite(1, ("audio", 5000)), at=0))
    lab.advance(49)
    assert lab.table() == audio(UA, 5000)
    accepted(lab.send(request("OPTIONS"), at=50))  # every payload refreshes the master
    lab.advance(100)
    assert lab.table() == audio(UA, 5000)
    lab.advance(149)
    assert lab.table() == audio(UA, 5000)  # still within 180 s of the INVITE
    trace = lab.advance(150)
    assert rules.MASTER_TIMEOUT.id in trace
    assert lab.table() == []
    assert lab.helper.conntrack(Packet(UA, 5060, SRV, 5060, IPPROTO_UDP).tuple) is None


def test_packets_without_payload_do_not_refresh_the_master() -> None:
    # sip_help_udp() returns before nf_ct_refresh() when there is no data, and the
    # UDP tracker sets its own timeout: 30 s, as IPS_SEEN_REPLY is only set after
    # the tracker has seen the first reply (nf_conntrack_in()).
    lab = Lab()
    accepted(lab.send(invite(1, ("audio", 5000)), at=0))
    r = accepted(lab.reply(b"", at=1))
    assert rules.NO_PAYLOAD.id in r.rule_ids and rules.REFRESH_MASTER.id not in r.rule_ids
    lab.advance(30.5)
    assert lab.table() == audio(UA, 5000)
    assert rules.MASTER_TIMEOUT.id in lab.advance(31)
    assert lab.table() == []


def test_udp_stream_timeout_after_a_reply() -> None:
    # nf_conntrack_udp_packet(): UDP_CT_REPLIED (120 s) once a reply was seen and
    # the flow is older than 2 s (time_after(jiffies, ct->proto.udp.stream_ts));
    # until then UDP_CT_UNREPLIED (30 s).
    key = Packet(UA, 5060, SRV, 5060, IPPROTO_UDP).tuple
    lab = Lab()
    accepted(lab.send(request("OPTIONS"), at=0))
    lab.reply(b"", at=1)  # the first reply: 30 s (IPS_SEEN_REPLY is set after the tracker ran)
    lab.send(b"", at=1.5)  # reply seen, but within 2 s of the first packet: 30 s
    lab.advance(31.4)
    assert lab.helper.conntrack(key) is not None
    lab.advance(31.5)
    assert lab.helper.conntrack(key) is None
    lab = Lab()
    accepted(lab.send(request("OPTIONS"), at=0))
    lab.reply(b"", at=1)
    lab.send(b"", at=3)  # now a stream: 120 s
    lab.advance(122.9)
    assert lab.helper.conntrack(key) is not None
    lab.advance(123)
    assert lab.helper.conntrack(key) is None


def test_media_connection_uses_up_its_expectation() -> None:
    lab = Lab()
    accepted(lab.send(invite(1, ("audio", 5000))))
    r = accepted(lab.send(b"rtp", src=SRV, sport=7000, dst=UA, dport=5000))
    assert r.related_to is not None and r.helper_attached is False
    assert lab.table() == audio(UA, 5000)[1:]
    r = lab.send(b"rtp", src=OTHER, sport=7000, dst=UA, dport=5001)  # direct media: source must be srv
    assert r.related_to is None


def test_forced_dport_from_via() -> None:
    lab = Lab()
    accepted(lab.send(request("OPTIONS")))
    assert lab.master().forced_dport == 0
    via = f"Via: SIP/2.0/UDP {UA}:5080;branch=z"
    r = accepted(lab.send(message(f"OPTIONS sip:b@{SRV} SIP/2.0", [via])))
    assert rules.VIA_FORCED_DPORT.id in r.rule_ids
    assert lab.master().forced_dport == 5080
    accepted(lab.send(message(f"OPTIONS sip:b@{SRV} SIP/2.0", [f"Via: SIP/2.0/UDP {OTHER}:5090"])))
    accepted(lab.send(message(f"OPTIONS sip:b@{SRV} SIP/2.0", [f"Via: SIP/2.0/TCP {UA}:5090"])))
    assert lab.master().forced_dport == 5080


def test_time_cannot_go_backwards() -> None:
    lab = Lab()
    lab.advance(10)
    with pytest.raises(SpecError):
        lab.send(request("OPTIONS"), at=5)


# --- sip_help_tcp() framing --------------------------------------------------------------------------------------
def tcp(lab: Lab, payload: bytes) -> PacketResult:
    return lab.send(payload, proto=IPPROTO_TCP)


def test_tcp_data_without_a_conntrack_is_picked_up_but_not_processed() -> None:
    # nf_conntrack_tcp_loose: the first packet makes a conntrack in IP_CT_NEW,
    # and sip_help_tcp() only works on ESTABLISHED ones.
    lab = Lab()
    r = accepted(tcp(lab, invite(1, ("audio", 5000))))
    assert rules.TCP_NOT_ESTABLISHED.id in r.rule_ids
    assert rules.TCP_MESSAGE.id not in r.rule_ids
    assert lab.table() == []


def test_tcp_one_message() -> None:
    lab = Lab()
    lab.connect()
    r = accepted(tcp(lab, invite(1, ("audio", 5000))))
    assert r.rule_ids.count(rules.TCP_MESSAGE.id) == 1
    assert lab.table() == audio(UA, 5000)


def test_tcp_connection_survives_idle_time() -> None:
    # After the three-way handshake the conntrack is ESTABLISHED (5 days).
    lab = Lab()
    lab.connect(at=0)
    lab.advance(600)
    accepted(tcp(lab, invite(1, ("audio", 5000))))
    assert lab.table() == audio(UA, 5000)


def test_tcp_requires_content_length() -> None:
    lab = Lab()
    lab.connect()
    r = accepted(tcp(lab, message(f"INVITE sip:b@{SRV} SIP/2.0", ["CSeq: 1 INVITE"], sdp(("audio", 5000)),
                                  content_length=False)))
    assert r.rule_ids[-1] == rules.TCP_NO_CONTENT_LENGTH.id
    assert lab.table() == []
    r = accepted(tcp(lab, message(f"INVITE sip:b@{SRV} SIP/2.0", ["CSeq: 1 INVITE", "l: 0"],
                                  content_length=False)))
    assert rules.TCP_MESSAGE.id in r.rule_ids  # the compact form counts


def test_tcp_requires_crlf_crlf() -> None:
    lab = Lab()
    lab.connect()
    r = accepted(tcp(lab, message(f"INVITE sip:b@{SRV} SIP/2.0", ["CSeq: 1 INVITE"], sdp(("audio", 5000)),
                                  eol=b"\n")))
    assert r.rule_ids[-1] == rules.TCP_NO_BLANK_LINE.id
    assert lab.table() == []


def test_tcp_several_messages_in_one_segment() -> None:
    lab = Lab()
    lab.connect()
    r = accepted(tcp(lab, invite(1, ("audio", 5000)) + invite(2, ("video", 6000), method="UPDATE")
                     + register(3)))
    assert r.rule_ids.count(rules.TCP_MESSAGE.id) == 3
    # (the contact has no transport=: the master's protocol, TCP)
    assert lab.table() == sorted(audio(UA, 5000) + audio(UA, 6000, klass="video") + [sig(proto="tcp")])
    r = accepted(tcp(lab, request("BYE", 4) + request("OPTIONS", 5)))
    assert r.rule_ids.count(rules.TCP_MESSAGE.id) == 2
    assert lab.table() == [sig(proto="tcp")]


def test_tcp_message_running_past_the_segment() -> None:
    lab = Lab()
    lab.connect()
    whole = invite(1, ("audio", 5000))
    r = accepted(tcp(lab, whole[:-10]))  # Content-Length fits in the segment, the body does not
    assert r.rule_ids[-1] == rules.TCP_PAST_SEGMENT.id
    assert lab.table() == []
    r = accepted(tcp(lab, invite(1, ("audio", 5000)) + whole[:-10]))
    assert r.rule_ids.count(rules.TCP_MESSAGE.id) == 1 and r.rule_ids[-1] == rules.TCP_PAST_SEGMENT.id
    assert lab.table() == audio(UA, 5000)


def test_tcp_content_length_larger_than_the_segment() -> None:
    lab = Lab()
    lab.connect()
    payload = message(f"INVITE sip:b@{SRV} SIP/2.0", ["CSeq: 1 INVITE", "Content-Length: 100000"],
                      sdp(("audio", 5000)), content_length=False)
    r = accepted(tcp(lab, payload))
    assert r.rule_ids[-1] == rules.TCP_CONTENT_LENGTH_TOO_BIG.id
    assert lab.table() == []


def test_tcp_content_length_is_looked_up_across_the_segment() -> None:
    # ct_sip_get_header(..., SIP_HDR_CONTENT_LENGTH) runs over the rest of the
    # segment: a message without one borrows the next message's, and the two
    # are processed as one message - the BYE inside is never seen.
    lab = Lab()
    lab.connect()
    accepted(tcp(lab, invite(1, ("audio", 5000))))
    r = accepted(tcp(lab, message(f"OPTIONS sip:b@{SRV} SIP/2.0", ["CSeq: 2 OPTIONS"], content_length=False)
                     + request("BYE", 3)))
    assert r.rule_ids.count(rules.TCP_MESSAGE.id) == 1
    assert rules.BYE_FLUSH.id not in r.rule_ids
    assert lab.table() == audio(UA, 5000)


def test_tcp_drop_stops_the_segment() -> None:
    lab = Lab()
    lab.connect()
    r = tcp(lab, invite(1, ("audio", 80)) + register(2))
    assert r.drop_rule is rules.SDP_MEDIA_PORT_RANGE
    assert lab.table() == []


# --- kernel versions ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cseq, legacy, hardened", [
    ("1", 1, 1),
    ("0", 0, 0),  # 6.1.170 accepts a 0 only when the text starts with '0'
    ("00000000001", 1, 1),
    ("000000000001", 1, None),  # 12 characters: sip_strtouint() refuses
    ("4294967295", 4294967295, 4294967295),
    ("4294967296", None, None),  # 6.1.170: wraps to 0 and does not start with '0'
    ("4294967297", 1, None),  # 6.1.170: unsigned int truncation
])
def test_cseq_per_version(cseq: str, legacy: int | None, hardened: int | None) -> None:
    for profile, want in ((LEGACY_6_1_170, legacy), (HARDENED_6_1_192, hardened)):
        lab = Lab(profile)
        accepted(lab.send(request("OPTIONS")))
        r = lab.send(invite(cseq, ("audio", 5000)))
        if want is None:
            assert r.drop_rule is rules.REQUEST_BAD_CSEQ, profile.name
            assert lab.table() == []
        else:
            accepted(r)
            assert lab.master().invite_cseq == want, profile.name
            r = accepted(lab.reply(response(486, cseq, "INVITE")))
            assert rules.RESPONSE_ERROR_FLUSH.id in r.rule_ids, profile.name


@pytest.mark.parametrize("port, legacy, hardened", [
    ("5000", 5000, 5000),
    ("4294972296", 5000, None),  # 6.1.170 truncates to 5000; 6.1.192 overflows, so "no port": skipped
    ("4294967297", "drop", None),  # 6.1.170: port 1, "wrong port"
    ("000000005000", 5000, None),  # 12 characters
    ("0", None, None),
])
def test_media_port_per_version(port: str, legacy: object, hardened: object) -> None:
    for profile, want in ((LEGACY_6_1_170, legacy), (HARDENED_6_1_192, hardened)):
        lab = Lab(profile)
        r = lab.send(invite(1, ("audio", port)))
        if want == "drop":
            assert r.drop_rule is rules.SDP_MEDIA_PORT_RANGE, profile.name
        else:
            accepted(r)
            assert lab.table() == ([] if want is None else audio(UA, want)), profile.name


@pytest.mark.parametrize("param, legacy, hardened", [
    ("60", 60, 60),
    ("010", 8, 10),  # 6.1.170 parsed expires= with simple_strtoul(..., 0): octal
    ("0x20", 32, 0),  # hex on 6.1.170; "0" then 'x' on 6.1.192
    ("08", 0, 8),
    ("000000000060", 48, "drop"),
    ("4294967297", 1, "drop"),  # sip_strtouint() overflow: start == end, "cannot parse expires"
])
def test_contact_expires_per_version(param: str, legacy: object, hardened: object) -> None:
    for profile, want in ((LEGACY_6_1_170, legacy), (HARDENED_6_1_192, hardened)):
        lab = Lab(profile)
        accepted(lab.send(register(5), at=0))
        r = lab.reply(response(200, 5, "REGISTER", (f"Contact: <sip:a@{UA}:5062>;expires={param}",)), at=1)
        if want == "drop":
            assert r.drop_rule is rules.REG_RESPONSE_BAD_EXPIRES, profile.name
            assert lab.table() == [sig()]
        elif want == 0:
            assert rules.REG_RESPONSE_UNBIND.id in accepted(r).rule_ids, profile.name
            assert lab.table() == []
        else:
            accepted(r)
            assert lab.rows() == [(sig(flags="PERMANENT"), 1 + want)], profile.name


@pytest.mark.parametrize("header, legacy, hardened", [
    ("3600", True, True),
    ("0", False, False),
    ("4294967297", True, False),  # 1 on 6.1.170; 0 (overflow) on 6.1.192: an unbind
    ("4294967296", False, False),
    ("000000000060", True, False),
])
def test_expires_header_per_version(header: str, legacy: bool, hardened: bool) -> None:
    for profile, created in ((LEGACY_6_1_170, legacy), (HARDENED_6_1_192, hardened)):
        lab = Lab(profile)
        accepted(lab.send(register(5, expires=header)))
        assert lab.table() == ([sig()] if created else []), profile.name
        assert lab.master().register_cseq == 5


@pytest.mark.parametrize("contact_port, legacy, hardened", [
    (":5062", 5062, 5062),
    (":4294972296", 5000, None),
    (":050620", 50620, None),
    (":70000", "drop", None),
])
def test_contact_port_per_version(contact_port: str, legacy: object, hardened: object) -> None:
    for profile, want in ((LEGACY_6_1_170, legacy), (HARDENED_6_1_192, hardened)):
        lab = Lab(profile)
        r = lab.send(register(5, f"<sip:a@{UA}{contact_port}>"))
        if want == "drop":
            assert r.drop_rule is rules.REGISTER_BAD_CONTACT, profile.name
        else:
            accepted(r)
            assert lab.table() == ([] if want is None else [sig(port=want)]), profile.name


def test_status_code_per_version() -> None:
    for profile, ok in ((LEGACY_6_1_170, True), (HARDENED_6_1_192, False)):
        lab = Lab(profile)
        accepted(lab.send(request("OPTIONS")))
        r = lab.reply(response("000000000200", 1, "INVITE", body=sdp(("audio", 6000), c=SRV)))
        if ok:
            accepted(r)
            assert lab.table() == audio(SRV, 6000, src=UA)
        else:
            assert r.drop_rule is rules.RESPONSE_NO_CODE
        # 4294967496 is 200 after truncation on 6.1.170
        r = lab.reply(response("4294967496", 1, "INVITE"))
        assert r.accepted is ok, profile.name


def test_content_length_per_version() -> None:
    for profile, processed in ((LEGACY_6_1_170, True), (HARDENED_6_1_192, False)):
        lab = Lab(profile)
        lab.connect()
        payload = message(f"INVITE sip:b@{SRV} SIP/2.0", ["CSeq: 1 INVITE", "Content-Length: 18446744073709551616"],
                          content_length=False) + invite(2, ("audio", 5000))
        r = accepted(tcp(lab, payload))
        # 6.1.170: unsigned long wraps to 0, so the first message is complete.
        # 6.1.192: too many digits, the segment is not processed.
        assert (rules.TCP_MESSAGE.id in r.rule_ids) is processed, profile.name
        assert lab.table() == (audio(UA, 5000) if processed else []), profile.name
        if not processed:
            assert r.rule_ids[-1] == rules.TCP_BAD_CONTENT_LENGTH.id


def test_ipv6_master() -> None:
    lab = Lab()
    body = sdp(("audio", 5000), c=UA6)
    accepted(lab.send(request("INVITE", 1, body), src=UA6, dst=SRV6))
    assert lab.table() == audio(UA6, 5000, src=SRV6)
    accepted(lab.send(register(2, f"<sip:a@[{UA6}]:5062>"), src=UA6, dst=SRV6))
    assert sig(dst=UA6, src=SRV6) in lab.table()
    # An IPv6 master searches "IN IP6 " only: an IN IP4 c= line is no connection
    # address at all, so the media has none and the INVITE is dropped.
    r = lab.send(request("INVITE", 3, sdp(("audio", 6000), c=UA)), src=UA6, dst=SRV6)
    assert r.drop_rule is rules.SDP_NO_CONNECTION
    assert lab.table() == [sig(dst=UA6, src=SRV6)]  # the INVITE flushed the media first


def test_tcp_segments_after_a_dropped_one_are_still_helped() -> None:
    """sip_help_tcp() has no stream state: a segment sent after one it dropped
    passes conntrack (it is in window) and is parsed on its own."""
    lab = Lab(HARDENED_6_1_192)
    lab.connect()
    assert lab.send(invite(1, ("audio", 80)), proto=IPPROTO_TCP).drop_rule is rules.SDP_MEDIA_PORT_RANGE
    later = lab.send(invite(2, ("audio", 4000)), proto=IPPROTO_TCP)
    assert later.accepted
    assert rules.MEDIA_EXPECT.id in {f.rule.id for f in later.firings}
