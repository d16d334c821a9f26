"""The fuzzer's pure parts: the mutator and the spec check of observations."""

from __future__ import annotations

import random

import pytest

from sipct.conformance.fuzz import MAX_SIZE, MUTATIONS, Mutator, default_seeds, mutate, sdp_offers
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
