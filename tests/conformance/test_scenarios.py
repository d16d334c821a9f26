"""The curated conformance scenarios (conformance/scenarios/): each one loads,
is written the way the suite expects, and its ``expect:`` assertions - derived
from the kernel source - hold in the spec.

Pure: no root, no network, no kernel. Running the scenarios through a real
kernel belongs to the conformance suite (``sipct run`` / ``sipct conformance``).
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest
import yaml

from sipct.spec.dialog import Send, Wait, load_dialog
from sipct.spec.predict import predict
from sipct.spec.profiles import PROFILES
from sipct.spec.topology import network_of, router_address
from sipct.harness.wire import LAB_WIRE

SCENARIOS = Path(__file__).resolve().parents[2] / "conformance" / "scenarios"
# machines/: the dialogs that kill the mutants of `sipct machines --mutations` no other one does.
GROUPS = ("rfc3665", "seed", "versions", "params", "slow", "midstream", "rare", "machines", "nat", "outside")
FILES = sorted(SCENARIOS.glob("**/*.yaml"))

DOCUMENTATION = [ipaddress.ip_network(n) for n in
                 ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")]
MAX_WAIT = 3.0  # seconds: a kernel run waits in real time
# A scenario may wait past a master's sip_timeout (params/: 10 s); longer waits
# (expectation timeouts, 180 s) only in dialogs tagged slow, which a
# conformance run leaves out unless given --slow.
MAX_WAIT_PARAMS = 12.0

# A kernel function named in a description: process_sdp(), sip_help_tcp, ...
KERNEL_FUNCTION = re.compile(
    r"\b(?:nf_nat_\w+|process_\w+|sip_help_(?:udp|tcp)|set_expected_rtp_rtcp|flush_expectations|"
    r"refresh_signalling_expectation|ct_sip_\w+|ct_sdp_\w+|sdp_\w+|sip_parse_\w+|epaddr_len|"
    r"skp_epaddr_len|nf_ct_expect_\w+|__nf_ct_expect_\w+|evict_oldest_expect|expect_clash)\b")


def _id(path: Path) -> str:
    return str(path.relative_to(SCENARIOS))


def raw_text(path: Path) -> str:
    return path.read_text()


def _raw(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def test_every_group_has_scenarios():
    for group in GROUPS:
        assert sorted((SCENARIOS / group).glob("*.yaml")), f"no scenarios in {group}/"


def test_scenario_names_are_unique():
    names = [_raw(p)["name"] for p in FILES]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


@pytest.mark.parametrize("path", FILES, ids=_id)
def test_scenario_expectations_hold_in_the_spec(path: Path):
    dialog = load_dialog(path)
    prediction = predict(dialog, wire=LAB_WIRE)
    failures = [f"step {i} (line {dialog.steps[i].line}): {text}" for i, text in prediction.failures]
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("path", FILES, ids=_id)
def test_scenario_expectations_hold_for_every_profile(path: Path):
    """The scenarios stay on behaviour every modelled kernel shares, unless
    they name the kernels they are for."""
    dialog = load_dialog(path)
    for name in dialog.kernels or tuple(PROFILES):
        prediction = predict(dialog, PROFILES[name], wire=LAB_WIRE)
        assert not prediction.failures, (name, prediction.failures)


@pytest.mark.parametrize("path", FILES, ids=_id)
def test_scenario_is_curated(path: Path):
    raw = _raw(path)
    dialog = load_dialog(path)
    assert path.parent.name in GROUPS, f"{path.parent.name}/ is not a scenario group"
    assert raw.get("name"), "a scenario names itself"
    assert dialog.name.startswith(f"{path.parent.name}-"), "the name starts with the group"
    sends = [s for s in dialog.steps if isinstance(s, Send)]
    assert sends, "a scenario sends something"
    if path.parent.name == "outside":
        # Kept as their authors wrote them (README.md there): who wrote it, and what it is about.
        assert raw_text(path).startswith("# Written from the user docs alone"), "an outside dialog says so"
        assert len(dialog.description) > 60, "a scenario says what it shows"
    else:
        assert len(dialog.description) > 80, "a scenario says what it shows"
        assert KERNEL_FUNCTION.search(dialog.description), "the description names the kernel functions it exercises"
        assert any(s.expect is not None for s in sends), "a scenario asserts something"
        assert any(s.expect is not None and (s.expect.expectations is not None or s.expect.rules)
                   for s in sends), "a scenario asserts expectations or rules, not only verdicts"
    limit = MAX_WAIT_PARAMS if dialog.params is not None else MAX_WAIT
    for step in dialog.steps:
        if isinstance(step, Wait) and "slow" not in dialog.tags:
            assert step.seconds <= limit, f"line {step.line}: wait {step.seconds}s is too long for a kernel run"
    if "slow" in dialog.tags:
        assert path.parent.name == "slow" and sum(s.seconds for s in dialog.steps if isinstance(s, Wait)) > 60

    for name, addr in dialog.hosts.items():
        assert any(addr in net for net in DOCUMENTATION), f"{name}: {addr} is not a documentation address"
        assert addr != router_address(network_of(addr)), f"{name}: {addr} is the lab router's address"


@pytest.mark.parametrize("path", sorted((SCENARIOS / "seed").glob("*.yaml")), ids=_id)
def test_seed_scenarios_state_the_address_mapping_and_missing_nat(path: Path):
    description = load_dialog(path).description
    assert "Address mapping" in description
    assert "NAT" in description


def test_params_scenarios_share_one_boot():
    """Every params/ scenario loads the module the same way: one VM boot runs them all."""
    from sipct.harness.vmstage import module_params_for

    sets = {tuple(sorted(module_params_for(load_dialog(p).params).items()))
            for p in (SCENARIOS / "params").glob("*.yaml")}
    assert sets == {(("expect_max", 8), ("sip_direct_media", 0), ("sip_external_media", 1), ("sip_timeout", 10))}


@pytest.mark.parametrize("name, rule", [
    ("external-media-same-interface", "media.external-same-interface"),
    ("media-clash", "media.failed"),
    ("expect-table-full", "expect.table-full"),
    ("master-timeout", "master.timeout"),
])
def test_params_scenarios_reach_their_rule(name: str, rule: str):
    dialog = load_dialog(SCENARIOS / "params" / f"{name}.yaml")
    fired = {f.rule.id for s in predict(dialog, wire=LAB_WIRE).steps for f in s.firings}
    assert rule in fired
    # ... and not with the module's defaults: that is why they need a VM boot.
    from dataclasses import replace

    defaults = predict(replace(dialog, params=None), wire=LAB_WIRE)
    assert rule not in {f.rule.id for s in defaults.steps for f in s.firings}


def test_the_slow_scenario_expires_an_inactive_registration():
    dialog = load_dialog(SCENARIOS / "slow" / "registration-unanswered-expires.yaml")
    transitions = {t for s in predict(dialog, wire=LAB_WIRE).steps for t in s.transitions}
    assert ("ExpectationLifecycle", "inactive", "expire") in transitions


def test_a_deleted_tcp_conntrack_is_picked_up_mid_stream():
    dialog = load_dialog(SCENARIOS / "midstream" / "tcp-conntrack-deleted.yaml")
    steps = predict(dialog, wire=LAB_WIRE).steps
    assert [e.kind for e in steps[2].events] == ["destroy", "destroy"]  # nf_ct_remove_expectations
    assert "helper.tcp-not-established" in {f.rule.id for f in steps[3].firings}


def test_delete_conntrack_steps_are_checked_and_written_back():
    from sipct.spec.dialog import DeleteConntrack, DialogError, dump_dialog, parse_dialog

    text = ("hosts: {ua: 192.0.2.2, server: 198.51.100.2}\nsteps:\n"
            "  - delete-conntrack: ua:5060 -> server:5060\n")
    (step,) = parse_dialog(text).steps
    assert isinstance(step, DeleteConntrack) and step.proto == 17 and step.line == 3
    again = parse_dialog(dump_dialog(parse_dialog(text))).steps[0]
    assert isinstance(again, DeleteConntrack) and (again.src, again.dst, again.proto) == (step.src, step.dst, 17)
    with pytest.raises(DialogError, match=r"<dialog>:4: steps\[0\]: unknown key 'message'"):
        parse_dialog(text + "    message: x\n")
    with pytest.raises(DialogError, match="exactly one of send, connect, wait, delete-conntrack"):
        parse_dialog(text.replace("delete-conntrack", "delete"))
