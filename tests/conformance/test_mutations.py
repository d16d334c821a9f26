"""``sipct machines --mutations``: every transition and every guard of the
machines is load-bearing. The whole run takes a few seconds, so CI runs all of it."""

from __future__ import annotations

import json

import pytest
from sipct.cli.main import main
from sipct.conformance import mutations
from sipct.conformance.corpus import scenario_dialogs
from sipct.spec.machines import MACHINES, REGISTRAR


def _mutant(name: str) -> mutations.Mutant:
    return next(m for m in mutations.mutants() if m.name == name)


def test_every_mutant_is_killed_but_the_documented_unreachable_ones() -> None:
    kills, survivors = mutations.run()
    assert len(kills) + len(survivors) >= 30
    assert [m.name for m in survivors] == list(mutations.UNREACHABLE)
    assert {k.mutant.kind for k in kills} == {"remove", "negate"}


def test_a_negated_guard_is_caught_by_what_the_kernel_would_do() -> None:
    mutant = _mutant("RegistrarMachine: pending --response[!cseq_matches_register]--> pending: "
                     "cseq_matches_register negated")
    kills, survivors = mutations.run([mutant], scenario_dialogs())
    assert survivors == []
    (kill,) = kills
    assert kill.how.startswith(("verdict", "expectations", "other table events"))


def test_a_mutant_is_undone_after_its_run() -> None:
    before = {k: v for k, v in REGISTRAR.table.items()}
    for mutant in mutations.mutants([REGISTRAR]):
        with mutations.applied(mutant):
            assert REGISTRAR.table != before
        assert REGISTRAR.table == before


def test_the_unmutated_spec_agrees_with_itself() -> None:
    # No difference without a mutant: a kill always comes from the mutant.
    corpus = scenario_dialogs()
    for dialog, profile in mutations._runs(corpus):
        assert mutations._difference(mutations.observe(dialog, profile), mutations.observe(dialog, profile)) is None


@pytest.mark.parametrize("machine", ["InviteMachine"])
def test_the_command_reports_json(machine: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["machines", "--mutations", "--json", "--machine", machine]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["mutants"] == len(mutations.mutants([MACHINES[machine]])) == report["killed"]
    assert report["survivors"] == [] and all(k["dialog"] for k in report["kills"])
