"""Coverage across the rows of a kernel matrix (conformance/coverage.py)."""

from collections import Counter

from sipct.conformance.coverage import NOT_EXERCISED, all_transitions, coverage_rst, coverage_text, union_coverage
from sipct.conformance.suite import Stats
from sipct.spec.rules import RULES


def _stats(profile: str, rules: list[str], transitions: set) -> Stats:
    s = Stats(profile, f"kernel-{profile}", {})
    s.rules = Counter(rules)
    s.transitions = transitions
    return s


def test_rows_are_united_and_every_missing_rule_says_why():
    some = sorted(all_transitions())
    host = _stats("6.18", ["register.expect", "media.expect"], set(some[:3]))
    vm = _stats("6.1.192", ["media.expect", "media.external-same-interface"], set(some[2:5]))
    cov = union_coverage([host, vm])
    assert cov["rules_total"] == len(RULES)
    assert cov["rules_exercised"] == 3
    assert {"register.expect", "media.expect", "media.external-same-interface"}.isdisjoint(cov["rules_never"])
    assert set(cov["rules_never"]) == set(RULES) - {"register.expect", "media.expect",
                                                    "media.external-same-interface"}
    assert cov["transitions_total"] == len(some)
    assert len(cov["transitions_never"]) == len(some) - 5
    # The catalogue's reasons: a profile none of the kernels has, a stated need, parameters.
    assert "6.1.170" in cov["rules_never"]["register.bad-contact"]
    assert cov["rules_never"]["expect.table-full"] == RULES["expect.table-full"].needs
    assert cov["rules_never"]["bye.flush-media"] == NOT_EXERCISED
    assert "bye.flush-media" in cov["rules_reachable_never"]
    assert "expect.table-full" not in cov["rules_reachable_never"]


def test_a_profile_in_the_run_makes_its_rules_reachable():
    cov = union_coverage([_stats("6.1.170", [], set())])
    assert cov["rules_never"]["register.bad-contact"] == NOT_EXERCISED


def test_text_and_docs_name_what_is_missing():
    cov = union_coverage([_stats("6.18", ["media.expect"], set())])
    text = "\n".join(coverage_text(cov))
    assert f"1 of {len(RULES)}" in text and "rule no kernel exercised: bye.flush-media" in text
    rst = "\n".join(coverage_rst(cov))
    assert rst.startswith("Coverage\n--------") and "* :rule:`bye.flush-media`" in rst
    assert union_coverage([])["rules_exercised"] == 0
