"""nf_nat_sip in the spec: the rewrites, the NAT expectations, the bindings.

Expected bytes follow net/netfilter/nf_nat_sip.c (6.1.192): map_addr(),
nf_nat_sip(), the sdp_* hooks, nf_nat_sdp_media(), nf_nat_sip_expect(),
nf_nat_sip_expected(), nf_nat_sip_seq_adjust(); the bindings follow
nf_nat_core.c's get_unique_tuple(). The lab runs of the same dialogs are in
spec/examples/nat-*.yaml and conformance/scenarios/nat/.
"""

from __future__ import annotations

import ipaddress
import textwrap

import pytest
from sipct.spec import rules
from sipct.spec.dialog import DialogError, parse_dialog
from sipct.spec.expectation import IP_CT_DIR_ORIGINAL, IP_CT_DIR_REPLY, IPPROTO_UDP, ConnTuple, ExpectNat
from sipct.spec.natmap import DestinationNat, NatClash, NatTopology, SourceNat, translated
from sipct.spec.natsip import sprintf_addr, sprintf_addr_port
from sipct.spec.predict import predict
from sipct.spec.profiles import HARDENED_6_1_192, RUNNING_6_18
from sipct.harness.lab import render_nat_ruleset
from sipct.harness.wire import LAB_WIRE

ip = ipaddress.ip_address
net = ipaddress.ip_network

HEAD = """\
name: t
hosts:
  phone: 192.0.2.10
  pbx: 203.0.113.5
nat:
  - masquerade: 192.0.2.0/24
steps:
"""


def dialog(steps: str, head: str = HEAD):
    return parse_dialog(head + textwrap.indent(textwrap.dedent(steps), "  "))


def invite(sdp: str = "v=0\no=p 1 1 IN IP4 {phone}\ns=-\nc=IN IP4 {phone}\nt=0 0\nm=audio 30000 RTP/AVP 0",
           src: str = "phone:5060", extra: str = "") -> str:
    body = textwrap.indent(sdp, "    ")
    return f"""\
- send: {src} -> pbx:5060
  message: |
    INVITE sip:1@{{pbx.uri}} SIP/2.0
    Via: SIP/2.0/UDP {{phone.uri}}:{src.split(':')[1]};branch=z9hG4bK1
    To: <sip:1@{{pbx.uri}}>
    From: <sip:p@{{phone.uri}}>;tag=1
    Call-ID: c@{{phone}}
    CSeq: 1 INVITE{extra}
    Content-Type: application/sdp
    Content-Length: {{body_length}}

{body}
"""


def received(prediction, index: int) -> bytes:
    step = prediction.steps[index]
    assert step.received is not None, step.packets[0].rule_ids
    return step.received


# --- sip_sprintf_addr() / sip_sprintf_addr_port() ------------------------------------------------
def test_addresses_print_as_the_kernel_prints_them() -> None:
    assert sprintf_addr(ip("2001:db8:a:0:0:0:0:10"), True) == b"[2001:db8:a::10]"  # %pI6c, compressed
    assert sprintf_addr(ip("2001:db8::1"), False) == b"2001:db8::1"
    assert sprintf_addr_port(ip("2001:db8::1"), 5060) == b"[2001:db8::1]:5060"
    assert sprintf_addr_port(ip("192.0.2.1"), 5060) == b"192.0.2.1:5060"


# --- the msg hook -----------------------------------------------------------------------------
def test_a_masqueraded_request_names_the_router_everywhere_it_named_the_phone() -> None:
    p = predict(dialog(invite()), wire=LAB_WIRE)
    data = received(p, 0).decode()
    assert "Via: SIP/2.0/UDP 203.0.113.1:5060;branch" in data
    assert "From: <sip:p@203.0.113.1:5060>" in data  # map_addr always writes the port (5060 was implied)
    assert "o=p 1 1 IN IP4 203.0.113.1" in data and "c=IN IP4 203.0.113.1" in data
    assert "Call-ID: c@192.0.2.10" in data  # never rewritten
    body = data.split("\r\n\r\n", 1)[1]
    assert f"Content-Length: {len(body)}\r\n" in data  # mangle_content_len()
    fired = set(p.steps[0].packets[0].rule_ids)
    assert {rules.NAT_MESSAGE.id, rules.NAT_VIA.id, rules.NAT_FROM_TO.id, rules.NAT_SDP_MEDIA.id,
            rules.NAT_SDP_SESSION.id, rules.NAT_CONTENT_LENGTH.id} <= fired


def test_the_nat_expectation_keeps_the_sdp_address_as_its_saved_part() -> None:
    p = predict(dialog(invite()), wire=LAB_WIRE)
    (rtp, rtcp) = sorted(p.steps[0].expectations, key=lambda e: e.tuple.dport)
    assert rtp.tuple.dst == ip("203.0.113.1") and rtp.tuple.dport == 30000
    # exp->dir = !dir: the media comes in the master's reply direction.
    assert rtp.nat == ExpectNat(IP_CT_DIR_REPLY, ip("192.0.2.10"), 30000)
    assert rtcp.nat == ExpectNat(IP_CT_DIR_REPLY, ip("192.0.2.10"), 30001)


def test_a_header_of_a_third_party_is_left_alone() -> None:
    p = predict(dialog(invite(extra="\n    Contact: <sip:p@198.51.100.9:5060>")), wire=LAB_WIRE)
    assert b"Contact: <sip:p@198.51.100.9:5060>" in received(p, 0)


def test_without_translation_no_hook_runs() -> None:
    head = HEAD.replace("  - masquerade: 192.0.2.0/24\n", "  - masquerade: 198.51.100.0/24\n")
    p = predict(dialog(invite(), head), wire=LAB_WIRE)
    assert received(p, 0) == p.dialog.steps[0].payload
    assert not any(r.startswith("nat.") for r in p.steps[0].packets[0].rule_ids)


# --- the drops of the NAT path: every one has a trigger ------------------------------------------
def _two_phones() -> str:
    return HEAD.replace("  pbx: 203.0.113.5\n", "  pbx: 203.0.113.5\n  bob: 192.0.2.11\n")


def _scenario(name: str):
    from pathlib import Path

    import sipct.conformance

    return parse_dialog((Path(sipct.conformance.__file__).parent / "scenarios" / name).read_text())


NAT_DROP_TRIGGERS = {
    # 65,507 bytes of UDP payload: the one byte the Via's rewrite adds is one too many (enlarge_skb()).
    "nat.mangle-failed": lambda: predict(_scenario("nat/too-big-to-grow.yaml"), wire=LAB_WIRE).steps[0],
    "nat.sdp-media-no-port": lambda: predict(dialog(
        invite() + invite(src="phone:5062").replace("c@{phone}", "d@{phone}")), wire=LAB_WIRE).steps[1],
    "nat.sdp-session-no-owner": lambda: predict(dialog(
        invite("v=0\ns=-\nc=IN IP4 {phone}\nt=0 0\nm=audio 30000 RTP/AVP 0")), wire=LAB_WIRE).steps[0],
    "nat.forced-dport-tcp": lambda: predict(dialog("""\
        - connect: phone:5070 -> pbx:5060
        - send: phone:5070 -> pbx:5060
          transport: tcp
          message: |+
            OPTIONS sip:{pbx.uri} SIP/2.0
            Via: SIP/2.0/UDP {phone.uri}:5060;branch=z9hG4bK2
            CSeq: 1 OPTIONS
            Content-Length: 0

        - send: pbx:5060 -> phone:5070
          transport: tcp
          message: |+
            SIP/2.0 200 OK
            Via: SIP/2.0/UDP {phone.public.uri}:5060;branch=z9hG4bK2
            CSeq: 1 OPTIONS
            Content-Length: 0

        """), wire=LAB_WIRE).steps[2],
}


@pytest.mark.parametrize("rule_id", sorted(NAT_DROP_TRIGGERS))
def test_nat_drop_rule(rule_id: str) -> None:
    step = NAT_DROP_TRIGGERS[rule_id]()
    assert step.verdict == "drop"
    assert step.packets[-1].drop_rule.id == rule_id


def test_every_nat_drop_rule_has_a_trigger_or_says_what_it_needs() -> None:
    drops = {r.id for r in rules.RULES.values() if r.drop and r.id.startswith("nat.")}
    untriggered = drops - set(NAT_DROP_TRIGGERS)
    assert untriggered == {rid for rid in untriggered if rules.RULES[rid].needs}


def test_a_dropped_first_invite_takes_its_nat_expectations_along() -> None:
    step = NAT_DROP_TRIGGERS["nat.sdp-session-no-owner"]()
    assert step.expectations == ()
    assert [e.kind for e in step.events] == ["new", "new", "destroy", "destroy"]


# --- REGISTER: nf_nat_sip_expect() ---------------------------------------------------------------
REGISTER = """\
- send: phone:5060 -> pbx:5060
  message: |+
    REGISTER sip:{pbx.uri} SIP/2.0
    Via: SIP/2.0/UDP {phone.uri}:5060;branch=z9hG4bK3
    CSeq: 2 REGISTER
    Contact: <sip:p@{phone.uri}:5060>;expires=60
    Content-Length: 0

"""


def test_a_register_expects_the_registrars_calls_at_the_router() -> None:
    p = predict(dialog(REGISTER), wire=LAB_WIRE)
    (exp,) = p.steps[0].expectations
    assert (exp.tuple.dst, exp.tuple.dport) == (ip("203.0.113.1"), 5060)
    assert exp.nat == ExpectNat(IP_CT_DIR_REPLY, ip("192.0.2.10"), 5060)
    assert b"Contact: <sip:p@203.0.113.1:5060>;expires=60" in received(p, 0)


def test_a_register_with_another_contact_port_keeps_that_port() -> None:
    p = predict(dialog(REGISTER.replace("{phone.uri}:5060>", "{phone.uri}:5070>")), wire=LAB_WIRE)
    (exp,) = p.steps[0].expectations
    assert exp.tuple.dport == 5070 and exp.nat.port == 5070


# --- nf_nat_sip_expected() and the bindings -------------------------------------------------------
def test_the_registrars_call_is_forwarded_to_the_saved_contact() -> None:
    p = predict(dialog(REGISTER + """\
- send: pbx:5060 -> phone:5060
  message: |+
    SIP/2.0 200 OK
    Via: SIP/2.0/UDP {phone.public.uri}:5060;branch=z9hG4bK3
    CSeq: 2 REGISTER
    Contact: <sip:p@{phone.public.uri}:5060>;expires=60
    Content-Length: 0

- send: pbx:5099 -> phone:5060
  message: |+
    OPTIONS sip:p@{phone.public.uri}:5060 SIP/2.0
    Via: SIP/2.0/UDP {pbx.uri}:5099;branch=z9hG4bK4
    CSeq: 3 OPTIONS
    Content-Length: 0

"""), wire=LAB_WIRE)
    arrival = p.steps[2].arrivals[0]
    assert (arrival.host, arrival.dst, arrival.dport) == ("phone", ip("192.0.2.10"), 5060)
    assert rules.NAT_EXPECTED.id in p.steps[2].packets[0].rule_ids
    assert b"OPTIONS sip:p@192.0.2.10:5060 SIP/2.0" in arrival.payload  # the expected master is translated too


def test_source_nat_keeps_the_port_and_refuses_a_random_one() -> None:
    nat = NatTopology((SourceNat(net("192.0.2.0/24")),))
    first = ConnTuple(ip("192.0.2.10"), ip("203.0.113.5"), IPPROTO_UDP, 5060, 5060)
    reply = nat.bind(first)
    assert reply == ConnTuple(ip("203.0.113.5"), ip("203.0.113.1"), IPPROTO_UDP, 5060, 5060)
    assert translated(first, reply)
    other = ConnTuple(ip("192.0.2.11"), ip("203.0.113.5"), IPPROTO_UDP, 5060, 5060)
    with pytest.raises(NatClash):
        nat.bind(other, in_use=[(r.src, r.dst, r.proto, r.sport, r.dport) for r in (reply,)])


def test_a_port_forward_and_the_face_the_outside_sees() -> None:
    pbx = ip("192.0.2.20")
    nat = NatTopology((), (DestinationNat(ip("203.0.113.1"), 5080, pbx, 5060),))
    outside = ip("203.0.113.7")
    assert nat.face(outside, pbx, 5060, IPPROTO_UDP) == (ip("203.0.113.1"), 5080)
    assert nat.face(outside, pbx, 5061, IPPROTO_UDP) == (pbx, 5061)
    reply = nat.bind(ConnTuple(outside, ip("203.0.113.1"), IPPROTO_UDP, 5060, 5080))
    assert (reply.src, reply.sport) == (pbx, 5060)


# --- TCP: nf_nat_sip_seq_adjust() --------------------------------------------------------------------
def test_later_segments_are_shifted_by_what_nat_added_before() -> None:
    d = parse_dialog((pathlib_examples() / "nat-tcp-seq-adjust.yaml").read_text())
    p = predict(d, wire=LAB_WIRE)
    invite_step, bye_step = p.steps[1], p.steps[3]
    grew = len(invite_step.received) - len(invite_step.step.payload)
    assert grew > 0 and invite_step.arrivals[0].seq_shift == 0
    assert bye_step.arrivals[0].seq_shift == grew
    assert rules.NAT_SEQ_ADJUST.id in invite_step.packets[0].rule_ids


def pathlib_examples():
    from pathlib import Path

    import sipct.spec

    return Path(sipct.spec.__file__).parent / "examples"


# --- the dialog format and the lab's nat chains ---------------------------------------------------
@pytest.mark.parametrize("rules_text, error", [
    ("  - snat: 192.0.2.0/24\n", "snat needs to:"),
    ("  - dnat: 203.0.113.1\n    to: pbx:5060\n", "give the port too"),
    ("  - masquerade: 192.0.2.0/24\n    to: 203.0.113.1\n", "unknown key 'to'"),
    ("  - snat: 192.0.2.0/24\n    to: 203.0.113.77\n", "nothing would answer for it"),
    ("  - masquerade: nobody\n", "expected a network, HOST or HOST:PORT"),
    # What people outside the team wrote from the docs: each error says what to write instead.
    ("  - masqurade: 192.0.2.0/24\n", "unknown key 'masqurade'; did you mean 'masquerade'?"),
    ("  - snat: phone\n    to: pbx\n", "'pbx' is a host; NAT maps to an address"),
    ("  - masquerade: 192.0.2.10/24\n", "host bits set: write the network (192.0.2.0/24)"),
    ("  - snat: 192.0.2.0/24\n    transprot: udp\n    to: 203.0.113.1\n", "did you mean 'transport'?"),
    ("  - dnat: [2001:db8::1]:5060\n    to: pbx:5060\n", 'must be quoted: "[2001:db8::1]:5060"'),
])
def test_bad_nat_rules_name_the_line(rules_text: str, error: str) -> None:
    text = HEAD.replace("  - masquerade: 192.0.2.0/24\n", rules_text) + textwrap.indent(REGISTER, "  ")
    with pytest.raises(DialogError) as info:
        parse_dialog(text, "t.yaml")
    assert error in str(info.value) and info.value.line


def test_the_nat_chains_nft_gets() -> None:
    nat = NatTopology((SourceNat(net("192.0.2.0/24")),
                       SourceNat(net("192.0.2.0/24"), ip("203.0.113.1"), 40000, ip("192.0.2.10"), 5060, IPPROTO_UDP)),
                      (DestinationNat(ip("203.0.113.1"), 5060, ip("192.0.2.20"), 5060),))
    text = render_nat_ruleset(nat)
    assert "ip daddr 203.0.113.1 meta l4proto { tcp, udp } th dport 5060 dnat ip to 192.0.2.20:5060" in text
    assert "ip saddr 192.0.2.0/24 ip daddr != 192.0.2.0/24 masquerade" in text
    assert "ip saddr 192.0.2.10 ip daddr != 192.0.2.0/24 meta l4proto udp th sport 5060 snat ip to " \
           "203.0.113.1:40000" in text
    assert render_nat_ruleset(NatTopology()).count("table inet sipct_nat") == 2  # create-then-delete: no chains


def test_profiles_agree_on_the_nat_path_of_the_examples() -> None:
    d = parse_dialog((pathlib_examples() / "nat-masquerade-call.yaml").read_text())
    a, b = predict(d, RUNNING_6_18, wire=LAB_WIRE), predict(d, HARDENED_6_1_192, wire=LAB_WIRE)
    assert [s.received for s in a.steps] == [s.received for s in b.steps]
    assert IP_CT_DIR_ORIGINAL == 0


# --- where a step goes, and what the outputs say about it -----------------------------------------
NO_NAT_HEAD = HEAD.replace("nat:\n  - masquerade: 192.0.2.0/24\n", "")


@pytest.mark.parametrize("head", [NO_NAT_HEAD, HEAD])
def test_a_via_to_the_routers_own_address_is_not_forwarded_with_or_without_nat(head: str) -> None:
    d = dialog("""
        - send: phone:5060 -> pbx:5060
          via: 203.0.113.1:5060
          message: |+
            OPTIONS sip:{pbx.uri} SIP/2.0
            Content-Length: 0

        """, head)
    step = predict(d, wire=LAB_WIRE).steps[0]
    assert step.verdict == "drop" and step.packets[0].local
    from sipct.spec.report import step_json

    assert step_json(d, step, LAB_WIRE)["why"] == "addressed to the router itself: not forwarded"


def test_the_prediction_json_shows_what_nat_rewrote() -> None:
    from sipct.spec.report import prediction_json

    d = dialog(REGISTER)
    data = prediction_json(predict(d, wire=LAB_WIRE))["steps"][0]
    assert data["why"] is None
    assert "Via: SIP/2.0/UDP 203.0.113.1:5060;branch=z9hG4bK3" in data["rewritten"]
    assert data["received"].startswith("REGISTER sip:203.0.113.5 SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.1:5060")
    plain = prediction_json(predict(dialog(REGISTER, NO_NAT_HEAD), wire=LAB_WIRE))["steps"][0]
    assert "received" not in plain and "rewritten" not in plain


# --- nf_nat_exp_find_port()'s random draws -----------------------------------------------------
def _register_from(host: str, sport: int) -> bytes:
    return (f"REGISTER sip:203.0.113.5 SIP/2.0\r\nVia: SIP/2.0/UDP {host}:{sport};branch=z9hG4bK{sport}\r\n"
            f"CSeq: 1 REGISTER\r\nContact: <sip:p@{host}:5070>;expires=60\r\nContent-Length: 0\r\n\r\n").encode()


def _two_phones_register(choice):
    """Two masqueraded phones register the same Contact port: the second's
    NAT expectation (pbx:* -> 203.0.113.1:5070) is another master's (-EBUSY)."""
    from sipct.spec.helper import Packet, SipHelper
    from sipct.spec.params import ModuleParams

    helper = SipHelper(ModuleParams(), HARDENED_6_1_192, nat=NatTopology(snat=(SourceNat(net("192.0.2.0/24")),)),
                       nat_port_choice=choice)
    first = helper.packet(Packet(ip("192.0.2.10"), 5060, ip("203.0.113.5"), 5060, IPPROTO_UDP,
                                 _register_from("192.0.2.10", 5060)), 0.0)
    second = helper.packet(Packet(ip("192.0.2.11"), 5062, ip("203.0.113.5"), 5060, IPPROTO_UDP,
                                  _register_from("192.0.2.11", 5062)), 1.0)
    return first, second


def test_a_register_port_another_master_holds_is_drawn_by_the_caller() -> None:
    from sipct.spec.natsip import NatUnpredictable

    with pytest.raises(NatUnpredictable, match="random ports after -EBUSY"):
        _two_phones_register(None)  # the kernel draws at random: no prediction
    draws = []

    def choice(refused, attempt: int) -> int | None:
        draws.append((refused.dport, attempt))
        return {1: 5070 + 0, 2: 6099}.get(attempt)  # the first draw hits the taken port again

    first, second = _two_phones_register(choice)
    assert draws == [(5070, 1), (5070, 2)]
    assert first.accepted and second.accepted
    (exp,) = [ev.expectation for ev in second.events if ev.kind == "new"]
    assert (exp.tuple.dst, exp.tuple.dport) == (ip("203.0.113.1"), 6099)
    assert exp.nat == ExpectNat(IP_CT_DIR_REPLY, ip("192.0.2.11"), 5070)  # where the call must go
    assert b"Contact: <sip:p@203.0.113.1:6099>;expires=60" in second.out_payload


def test_a_register_whose_draws_all_fail_is_dropped() -> None:
    _, second = _two_phones_register(lambda refused, attempt: None)
    assert not second.accepted and second.drop_rule is rules.NAT_REGISTER_NO_PORT


def test_the_reference_helper_draws_the_next_free_port() -> None:
    from sipct.reference.core import next_port

    _, second = _two_phones_register(next_port)
    (exp,) = [ev.expectation for ev in second.events if ev.kind == "new"]
    assert exp.tuple.dport == 5071 and b"203.0.113.1:5071>" in second.out_payload
