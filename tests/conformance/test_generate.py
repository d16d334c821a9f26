"""conformance/generate.py makes each strategy of constant arguments once
(_MadeOnce); the dialogs of a seed are those of Hypothesis's own strategies."""

from __future__ import annotations

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as hypothesis_strategies

from sipct.conformance import generate


def _dialogs(seed_value: int, n: int) -> list[str]:
    out: list[str] = []

    @seed(seed_value)
    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(generate.dialogs())
    def collect(dialog) -> None:
        out.append(repr(dialog))

    collect()
    return out


def test_strategies_made_once_draw_the_same_dialogs(monkeypatch) -> None:
    made_once = [_dialogs(s, 60) for s in (1, 2)]
    monkeypatch.setattr(generate, "st", hypothesis_strategies)
    fresh = [_dialogs(s, 60) for s in (1, 2)]
    assert made_once == fresh
    assert len(set(made_once[0])) > 30  # really 60 dialogs, not one


def test_a_strategy_is_made_once_per_arguments() -> None:
    st = generate.st
    assert st.integers(0, 9) is st.integers(0, 9) and st.integers(0, 9) is not st.integers(0, 8)
    assert st.sampled_from([1, 2]) is st.sampled_from([1, 2])
    assert st.just(200) is not st.just(200)  # one_of(just(200), just(200), ...) weighs 200 twice
    assert st.sampled_from([{1}, {2}]) is not st.sampled_from([{1}, {2}])  # unhashable: fresh each time
