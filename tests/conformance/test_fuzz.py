"""The fuzzer's pure parts: the mutator and the spec check of observations."""

from __future__ import annotations

import ipaddress
import random

import pytest

from sipct.conformance.fuzz import MAX_SIZE, MUTATIONS, Mutator, Seed, default_seeds, mutate, sdp_offers
from sipct.conformance.fuzz_check import check
from sipct.conformance.fuzz_run import UA_PORTS, expectation_key, route
from sipct.spec.expectation import IPPROTO_TCP, IPPROTO_UDP
from sipct.spec.helper import Packet, SipHelper
from sipct.spec.params import ModuleParams
from sipct.spec.profiles import HARDENED_6_1_192

ODD = [b"", b"\r\n", b"\x00" * 10, b"SIP/2.0", b"INVITE", b"\xff" * 50, b"a:b\r\n\r\n", b"m=audio \r\nc=IN IP4"]


def test_a_run_is_a_function_of_its_seed() -> None:
    seeds = default_seeds()
    a, b = Mutator(seeds, 7), Mutator(seeds, 7)
    assert [m.payload for m in a.messages(0, 400)] == [m.payload for m in b.messages(0, 400)]
    # message i depends on (seed, i) alone: a slice is the same messages
    assert a.message(350) == Mutator(seeds, 7).messages(350, 351)[0]
    other = Mutator(seeds, 8)
    corpus = a.corpus_size
    assert [m.payload for m in a.messages(corpus, corpus + 50)] != \
        [m.payload for m in other.messages(corpus, corpus + 50)]


def test_the_corpus_comes_first_unchanged() -> None:
    seeds = sdp_offers()
    m = Mutator(seeds, 1)
    assert [x.payload for x in m.messages(0, len(seeds))] == [s.payload for s in seeds]
    assert all(x.mutations == () for x in m.messages(0, len(seeds)))
    assert Mutator(seeds, 1, corpus=False).message(0).mutations != ()


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_every_mutation_is_total_and_gives_bytes(name: str) -> None:
    rng = random.Random(name)
    for data in ODD + [s.payload for s in sdp_offers()]:
        for _ in range(30):
            out = MUTATIONS[name](rng, data)
            assert isinstance(out, bytes)


def test_mutations_change_messages_and_respect_the_size_limit() -> None:
    rng = random.Random(3)
    offer = sdp_offers()[1].payload
    changed = 0
    for _ in range(500):
        out, names = mutate(rng, offer * 20, 3)
        assert len(out) <= MAX_SIZE and len(names) == 3
        changed += out != (offer * 20)[:MAX_SIZE]
    assert changed > 450
    m = Mutator(default_seeds(), 11)
    kinds = {n for x in m.messages(m.corpus_size, m.corpus_size + 2000) for n in x.mutations}
    assert kinds == set(MUTATIONS) | {"splice"}


def test_no_seeds_is_an_error() -> None:
    with pytest.raises(ValueError, match="no seed"):
        Mutator([], 1)


def test_routes_are_deterministic_and_keep_tcp_segments_small() -> None:
    m = Mutator(default_seeds(), 5)
    msgs = m.messages(0, 3000)
    routes = [route(5, x, tcp_share=0.2) for x in msgs]
    assert routes == [route(5, x, tcp_share=0.2) for x in msgs]
    assert {r.proto for r in routes} == {IPPROTO_UDP, IPPROTO_TCP} and {r.family for r in routes} == {4, 6}
    assert all(0 < len(x.payload) <= 1400 for x, r in zip(msgs, routes) if r.proto == IPPROTO_TCP)
    assert all(r.response == x.payload.startswith(b"SIP/") for x, r in zip(msgs, routes))


def _observation(index: int, t: float, delivered: bool, new: list) -> dict:
    return {"index": index, "t": t, "family": 4, "proto": IPPROTO_UDP, "ua_port": UA_PORTS[0], "response": False,
            "delivered": delivered, "exact": delivered, "new": new, "destroyed": 0, "connect_t": None,
            "reset_t": None}


def test_the_check_finds_what_the_spec_does_not_predict() -> None:
    offer = Mutator(sdp_offers(), 1).message(0)
    spec = SipHelper(ModuleParams(), HARDENED_6_1_192)
    from sipct.conformance.fuzz_run import SERVER, UA
    predicted = spec.packet(Packet(UA[4], UA_PORTS[0], SERVER[4], 5060, IPPROTO_UDP, offer.payload), 0.0)
    new = [expectation_key(ev.expectation) for ev in predicted.events if ev.kind == "new"]
    assert new  # the offer's audio RTP/RTCP
    good, _ = check([offer], [_observation(0, 0.0, True, new)], ModuleParams(), HARDENED_6_1_192)
    assert good.mismatches == 0 and good.kernel_new == good.spec_new == len(new)
    wrong = [list(k) for k in new]
    wrong[0][3] += 100  # another port
    bad, _ = check([offer], [_observation(0, 0.0, False, wrong)], ModuleParams(), HARDENED_6_1_192)
    assert bad.counts == {"verdict": 1, "unexpected": 1, "missing": 1}
    assert {m.kind for m in bad.examples} == {"verdict", "unexpected", "missing"}


def test_a_run_without_nat_routes_as_before_and_nat_routes_are_udp_on_the_masqueraded_ports() -> None:
    from sipct.conformance.fuzz_run import NAT_PORTS

    msgs = Mutator(default_seeds(), 5).messages(0, 2000)
    plain = [route(5, x, tcp_share=0.2) for x in msgs]
    mixed = [route(5, x, tcp_share=0.2, nat_share=0.4) for x in msgs]
    # The NAT draw comes last: a message keeps its family, transport and direction.
    assert [(r.family, r.proto, r.response) for r in plain] == [(r.family, r.proto, r.response) for r in mixed]
    assert all(r.slot == p.slot and not r.nat for r, p in zip(mixed, plain) if not r.nat)
    nat = [r for r in mixed if r.nat]
    assert 0.3 < len(nat) / sum(r.proto == IPPROTO_UDP for r in mixed) < 0.5
    assert all(r.proto == IPPROTO_UDP and r.ua_port in NAT_PORTS for r in nat)
    assert {r.ua_port for r in nat} == set(NAT_PORTS) and not any(r.nat for r in plain)


def _nat_spec() -> SipHelper:
    from sipct.conformance.fuzz_run import SERVER, UA, fuzz_nat
    from sipct.spec.topology import LabRouting

    routing = LabRouting([*UA.values(), *SERVER.values()])
    return SipHelper(ModuleParams(), HARDENED_6_1_192, routing.same_interface, fuzz_nat(), routing.router_owns)


def _nat_observation(index: int, t: float, port: int, response: bool, result, sent: bytes, **kw) -> dict:
    """What fuzz_run._send_nat records when the kernel does what ``result`` says."""
    obs = _observation(index, t, True, [expectation_key(ev.expectation) for ev in result.events if ev.kind == "new"])
    out = result.out_tuple
    data = result.out_payload if result.out_payload is not None else sent
    obs.update(ua_port=port, response=response, nat=True, exact=data == sent, stale=0,
               received=None if data == sent else data.decode("latin-1"),
               seen=[str(out.src), out.sport, out.dport])
    obs.update(kw)
    return obs


def test_the_check_holds_nat_routes_to_the_rewrite_the_nat_part_and_the_address() -> None:
    from sipct.conformance.fuzz_run import NAT_PORTS, SERVER, UA, WARM_UP, nat_face

    offer = Mutator(sdp_offers(), 1).message(0)  # names 192.0.2.2:5060 in Via, Contact, o= and c=
    port = NAT_PORTS[1]
    spec = _nat_spec()
    invite = spec.packet(Packet(UA[4], port, SERVER[4], 5060, IPPROTO_UDP, offer.payload), 0.0)
    assert invite.accepted and invite.out_payload is not None and b"198.51.100.1" in invite.out_payload
    new = [expectation_key(ev.expectation) for ev in invite.events if ev.kind == "new"]
    assert new and all(k[13] >= 0 for k in new)  # the media expectations carry their NAT part
    good_obs = _nat_observation(0, 0.0, port, False, invite, offer.payload)
    good, _ = check([offer], [good_obs], ModuleParams(), HARDENED_6_1_192)
    assert good.mismatches == 0 and good.nat == 1 and good.rewritten == 1 and good.spec_new == len(new)

    # Bytes as sent (no rewrite), seen from the UA's own address, and no NAT part on one expectation.
    wrong_new = [list(k) for k in new]
    wrong_new[0][13:16] = [-1, -1, -1]
    bad_obs = dict(good_obs, received=None, exact=True, seen=[str(UA[4]), port, 5060], new=wrong_new)
    bad, _ = check([offer], [bad_obs], ModuleParams(), HARDENED_6_1_192)
    assert bad.counts == {"bytes": 1, "address": 1, "unexpected": 1, "missing": 1}

    # A response to a masqueraded port whose master never passed a request reaches the
    # router itself: the warm-up comes first, and then the response is forwarded to the UA.
    ringing = (b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 198.51.100.1:21001;branch=z9hG4bK1\r\n"
               b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
    reply = Mutator([Seed("ringing", ringing)], 1).message(0)
    alone, _ = check([reply], [_observation(0, 1.0, False, []) | {"ua_port": port, "response": True, "nat": True,
                                                                     "stale": 0}], ModuleParams(), HARDENED_6_1_192)
    assert alone.mismatches == 0  # not forwarded, not delivered: as the spec says
    spec = _nat_spec()
    warm = spec.packet(Packet(UA[4], port, SERVER[4], 5060, IPPROTO_UDP, WARM_UP), 1.0)
    to = nat_face(4, port)
    assert to == (ipaddress.ip_address("198.51.100.1"), port)
    back = spec.packet(Packet(SERVER[4], 5060, to[0], to[1], IPPROTO_UDP, ringing), 1.5)
    assert back.accepted and back.out_tuple.dst == UA[4]
    observed = [_nat_observation(0, 1.0, port, False, warm, WARM_UP, payload=WARM_UP.decode("latin-1")),
                _nat_observation(0, 1.5, port, True, back, ringing)]
    after, _ = check([reply], observed, ModuleParams(), HARDENED_6_1_192)
    assert after.mismatches == 0 and after.warm_ups == 1 and after.messages == 1 and after.delivered == 1
    late, _ = check([reply], [observed[0], dict(observed[1], stale=1)], ModuleParams(), HARDENED_6_1_192)
    assert late.counts == {"stale": 1} and late.stale == 1


def test_a_reply_forced_to_a_port_nobody_listens_on_is_counted_not_compared() -> None:
    from sipct.conformance.fuzz_run import NAT_PORTS, SERVER, UA, nat_face

    port = NAT_PORTS[2]
    invite = Mutator(sdp_offers(), 1).message(0).payload.replace(b"192.0.2.2:5060", b"192.0.2.2:5999")
    reply = b"SIP/2.0 100 Trying\r\nVia: SIP/2.0/UDP 198.51.100.1:5999;branch=z9hG4bK1\r\nCSeq: 1 INVITE\r\n" \
            b"Content-Length: 0\r\n\r\n"
    spec = _nat_spec()
    first = spec.packet(Packet(UA[4], port, SERVER[4], 5060, IPPROTO_UDP, invite), 0.0)
    to = nat_face(4, port)
    back = spec.packet(Packet(SERVER[4], 5060, to[0], to[1], IPPROTO_UDP, reply), 0.5)
    assert back.accepted and back.out_tuple.dport == 5999  # forced_dport: the Via's port
    m = Mutator([Seed("invite", invite), Seed("reply", reply)], 1)
    msgs = [m.message(0), m.message(1)]
    observed = [_nat_observation(0, 0.0, port, False, first, invite),
                _observation(1, 0.5, False, []) | {"ua_port": port, "response": True, "nat": True, "stale": 0}]
    report, _ = check(msgs, observed, ModuleParams(), HARDENED_6_1_192)
    assert report.mismatches == 0 and report.unobservable == 1


def test_a_register_port_the_helper_drew_after_ebusy_is_taken_from_the_kernel() -> None:
    """Two masqueraded masters register the same Contact: the second's NAT
    port is drawn (nf_nat_exp_find_port()); the check takes the draw from
    the helper's expectation, and holds the rewrite to it."""
    from sipct.conformance.fuzz_run import NAT_PORTS, SERVER, UA
    from sipct.reference.core import next_port

    def register(sport: int) -> bytes:
        return (f"REGISTER sip:198.51.100.2 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.2:{sport};branch=z9hG4bK{sport}\r\n"
                f"CSeq: 1 REGISTER\r\nContact: <sip:a@192.0.2.2:5060>\r\nExpires: 60\r\nContent-Length: 0\r\n\r\n"
                ).encode()

    m = Mutator([Seed("first", register(NAT_PORTS[0])), Seed("second", register(NAT_PORTS[1]))], 1)
    msgs = [m.message(0), m.message(1)]
    kernel = _nat_spec()
    kernel.nat_port_choice = next_port  # the reference helper's draw
    results = [kernel.packet(Packet(UA[4], port, SERVER[4], 5060, IPPROTO_UDP, msg.payload), t)
               for msg, port, t in ((msgs[0], NAT_PORTS[0], 0.0), (msgs[1], NAT_PORTS[1], 0.5))]
    assert [ev.expectation.tuple.dport for ev in results[1].events if ev.kind == "new"] == [5061]
    observed = [_nat_observation(0, 0.0, NAT_PORTS[0], False, results[0], msgs[0].payload),
                _nat_observation(1, 0.5, NAT_PORTS[1], False, results[1], msgs[1].payload)]
    report, _ = check(msgs, observed, ModuleParams(), HARDENED_6_1_192)
    assert report.mismatches == 0 and report.drawn_ports == 1 and report.rewritten == 2
    # Had the helper kept the taken port's rewrite, the bytes would not be the spec's.
    wrong = dict(observed[1], received=results[1].out_payload.replace(b":5061>", b":5060>").decode("latin-1"))
    bad, _ = check(msgs, [observed[0], wrong], ModuleParams(), HARDENED_6_1_192)
    assert bad.counts == {"bytes": 1}


def test_a_slice_the_spec_cannot_replay_is_reported_and_nothing_is_lost(tmp_path, capsys) -> None:
    """The guests' observations are written first, the check's failure is a
    problem of the run (exit 1, no traceback), and the report keeps what was
    compared."""
    import argparse
    import json

    from sipct.conformance.fuzz_cli import finish

    offer = Mutator(sdp_offers(), 1).message(0)
    broken = {k: v for k, v in _observation(0, 1.0, True, []).items() if k != "family"}
    data = {"observations": [_observation(0, 0.0, True, []), broken], "expect_max": 4096, "profile": "6.1.192",
            "log_counts": {}, "alive": True, "exit_code": 0, "kernel": "6.1.0-56-amd64", "seconds": 1.0,
            "queue": {"dropped": 0, "user_dropped": 0, "id_sequence": 2, "waiting": 0}}
    args = argparse.Namespace(json=tmp_path / "fuzz.json", observations=tmp_path / "obs.jsonl", seed=1,
                              nat_share=0.0)
    assert finish(args, [data], [offer]) == 1
    out = capsys.readouterr().out
    assert "could not replay the slice after 1 message(s) (KeyError: 'family')" in out and "Traceback" not in out
    assert len(args.observations.read_text().splitlines()) == 2
    report = json.loads(args.json.read_text())
    assert report["report"]["messages"] == 1 and report["problems"]


def test_a_slow_nat_delivery_is_matched_to_its_message_by_the_rewritten_bytes() -> None:
    """The receiver takes the first datagram that comes: A's came during B's
    wait and B's before C's send (stale) - both late, no mismatch. A datagram
    that never comes is a verdict mismatch at the end of the slice."""
    from sipct.conformance.fuzz_run import NAT_PORTS, SERVER, UA

    seeds = [Seed(f"s{i}", Mutator(sdp_offers(), 1).message(0).payload.replace(b"CSeq: 1 ", f"CSeq: {i} ".encode()))
             for i in (1, 2, 3)]
    m = Mutator(seeds, 1)
    msgs = [m.message(i) for i in range(3)]
    spec = _nat_spec()
    port = NAT_PORTS[0]
    results = [spec.packet(Packet(UA[4], port, SERVER[4], 5060, IPPROTO_UDP, x.payload), float(i))
               for i, x in enumerate(msgs)]
    a, b, c = (_nat_observation(i, float(i), port, False, r, x.payload) for i, (r, x) in enumerate(zip(results, msgs)))
    a.update(delivered=False, exact=False, received=None, seen=None)
    b.update(received=results[0].out_payload.decode("latin-1"))  # A's bytes, during B's wait
    c.update(stale=1, stale_data=[results[1].out_payload.decode("latin-1")])  # B's, before C went
    report, _ = check(msgs, [a, b, c], ModuleParams(), HARDENED_6_1_192)
    assert report.mismatches == 0, report.examples
    assert (report.late, report.delivered, report.dropped) == (2, 3, 0)
    lost, _ = check(msgs, [a, dict(b, received=results[1].out_payload.decode("latin-1"))], ModuleParams(),
                    HARDENED_6_1_192)
    assert lost.counts == {"verdict": 1} and lost.examples[0].index == 0


def test_a_dropped_first_packet_s_expectations_are_not_missing() -> None:
    """SDP without o= behind NAT: the kernel helper creates the media
    expectations, then nf_nat_sdp_session() fails and the first packet of the
    master is dropped - they die with the unconfirmed conntrack, and a
    userspace helper does not create them."""
    from sipct.conformance.fuzz_run import NAT_PORTS, SERVER, UA

    offer = Mutator(sdp_offers(), 1).message(0)
    no_owner = Mutator([Seed("no-o", offer.payload.replace(b"o=a 1 1", b"=a 1 1"))], 1).message(0)
    result = _nat_spec().packet(Packet(UA[4], NAT_PORTS[3], SERVER[4], 5060, IPPROTO_UDP, no_owner.payload), 0.0)
    assert not result.accepted and result.new_conntrack and [ev for ev in result.events if ev.kind == "new"]
    obs = _observation(0, 0.0, False, []) | {"ua_port": NAT_PORTS[3], "nat": True, "stale": 0}
    report, _ = check([no_owner], [obs], ModuleParams(), HARDENED_6_1_192)
    assert report.mismatches == 0 and report.short_lived == 2
