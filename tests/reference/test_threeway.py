"""``--helper reference`` without a VM: options, the error on a kernel without
nfnetlink_cthelper, the three-way report shapes, the reference lab's pieces.

The three-way runs themselves boot a kernel: tests/reference/test_vm_helper.py (-m vm).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from sipct.cli.main import EXIT_ERROR, build_parser, examples_dir, main
from sipct.conformance.matrixjson import matrix_json
from sipct.conformance.matrixplan import boot_groups, guest_argv
from sipct.conformance.matrixrow import KernelReport
from sipct.conformance.matrixtable import print_matrix
from sipct.conformance.registry import RegistryError, for_helper, load_registry
from sipct.conformance.suite import Finding, Stats
from sipct.harness.diff import compare
from sipct.harness.lab import render_ruleset
from sipct.harness.report import add_reference, comparison_json, print_run_json
from sipct.harness.run import KernelEvent, KernelRun, StepObservation
from sipct.reference.config import parse_config
from sipct.harness.threeway import REFERENCE_HELPER, ReferenceUnavailable, as_kernel_helper, check_kernel, \
    helper_config, lab_hosts
from sipct.spec.dialog import load_dialog
from sipct.spec.params import ModuleParams
from sipct.spec.predict import predict
from sipct.spec.profiles import PROFILES
from sipct.harness.wire import LAB_WIRE

PROFILE = PROFILES["6.1.192"]


def has_cthelper() -> bool:
    try:
        check_kernel()
    except ReferenceUnavailable:
        return False
    return True




def observed_as_predicted(dialog, *, helper: str = "sip", drop_step: int | None = None) -> KernelRun:
    """What a helper that does exactly what the spec predicts would show
    (``drop_step``: except that it delivers that step's packet)."""
    prediction = predict(dialog, PROFILE, wire=LAB_WIRE)
    steps = []
    for p in prediction.steps:
        delivered = p.delivered if p.index != drop_step else not p.delivered
        table = tuple(replace(e, helper=helper) if e.helper == "sip" else e for e in p.expectations)
        events = tuple(KernelEvent(ev.kind, replace(ev.expectation, helper=helper) if ev.expectation.helper == "sip"
                                   else ev.expectation) for ev in p.events)
        data = p.step.payload if delivered and hasattr(p.step, "payload") else None
        steps.append(StepObservation(p.index, p.time, p.time, delivered, data, table, events))
    return KernelRun(dialog, steps)


# -- options and errors ------------------------------------------------------------------------------


def test_helper_option_defaults_to_the_kernel():
    parser = build_parser()
    assert parser.parse_args(["run"]).helper == "kernel"
    assert parser.parse_args(["conformance"]).helper == "kernel"
    assert parser.parse_args(["run", "--helper", "reference"]).helper == "reference"
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--helper", "conntrackd"])


@pytest.mark.parametrize("argv", [["run", "--helper", "reference", str(examples_dir() / "register.yaml")],
                                  ["conformance", "--helper", "reference", "--examples", "0"]])
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (the prerequisites are checked first)")
def test_reference_without_cthelper_is_refused_with_what_to_do(argv, capsys):
    if has_cthelper():
        pytest.skip("this kernel has nfnetlink_cthelper")
    assert main(argv) == EXIT_ERROR
    err = " ".join(capsys.readouterr().err.split())
    for needed in ("nfnetlink_cthelper", "CONFIG_NETFILTER_NETLINK_GLUE_CT", "--kernel", "scripts/setup-kernels.sh"):
        assert needed in err, err


# -- the reference lab's pieces ------------------------------------------------------------------------


def test_the_daemon_config_mirrors_the_module_parameters():
    params = ModuleParams(ports=(5060,), sip_timeout=600, sip_direct_media=False)
    config = parse_config(helper_config(params, PROFILE), "helper.toml")
    assert config.name == REFERENCE_HELPER != "sip"
    assert config.profile == "6.1.192"
    assert (config.params.ports, config.params.sip_timeout, config.params.sip_direct_media,
            config.params.sip_direct_signalling) == ((5060,), 600, False, True)


def test_the_lab_attaches_the_reference_helper_by_its_name():
    ruleset = render_ruleset((5060,), True, REFERENCE_HELPER)
    assert 'type "sipct" protocol udp' in ruleset and 'type "sipct" protocol tcp' in ruleset
    assert 'type "sip" protocol' in render_ruleset((5060,), True)


def test_one_lab_host_per_address_of_all_dialogs():
    dialogs = [load_dialog(p) for p in sorted(examples_dir().glob("*.yaml"))]
    hosts = lab_hosts(dialogs)
    addresses = [a for h in hosts for a in h.addresses]
    assert len(addresses) == len(set(addresses)) == len({str(a) for d in dialogs for a in d.hosts.values()})


def test_the_reference_s_expectations_compare_under_the_kernel_helper_s_name():
    dialog = load_dialog(examples_dir() / "register.yaml")
    run = observed_as_predicted(dialog, helper=REFERENCE_HELPER)
    # helper "sipct" is not the spec's "sip"
    assert not compare(predict(dialog, PROFILE, wire=LAB_WIRE), run, "x").agree
    mapped = as_kernel_helper(run, REFERENCE_HELPER)
    assert any(e.helper == "sip" for s in mapped.steps for e in s.expectations)
    assert compare(predict(dialog, PROFILE, wire=LAB_WIRE), mapped, "x").agree


# -- sipct.run/1 with a reference column ----------------------------------------------------------------


def test_three_way_json_keeps_the_kernel_fields_and_adds_the_reference():
    dialog = load_dialog(examples_dir() / "register.yaml")
    prediction = predict(dialog, PROFILE, wire=LAB_WIRE)
    kernel = compare(prediction, observed_as_predicted(dialog), "6.1.0-56-amd64")
    reference = compare(prediction, observed_as_predicted(dialog, drop_step=0), "6.1.0-56-amd64")
    plain = comparison_json(kernel)
    data = json.loads(json.dumps(add_reference(plain, reference)))
    assert data["format"] == "sipct.run/1" and data["helper"] == "reference"
    assert {k: v for k, v in data.items() if k not in ("helper", "reference", "steps")} == \
        {k: v for k, v in plain.items() if k != "steps"}
    assert data["agree"] is True and data["reference"] == {"helper": "sipct", "agree": False,
                                                          "kernel": "6.1.0-56-amd64"}
    first = data["steps"][0]
    assert first["kernel"] == plain["steps"][0]["kernel"] and first["divergences"] == []
    assert first["reference"]["delivered"] is not first["kernel"]["delivered"]
    assert [d["aspect"] for d in first["reference_divergences"]][0] == "verdict"

    console = Console(width=200, record=True)
    print_run_json(data, console)
    text = console.export_text()
    assert "kernel helper agree" in text and "reference helper DIVERGE" in text
    assert "reference" in text and "verdict" in text and "as spec" in text


# -- the registry and the matrix ------------------------------------------------------------------------

ENTRY = """\
- id: x
  kernels: ["6.1.192"]
  aspect: events
  rules: [register-response.refresh]
  reason: userspace-limit
  reference: "test"
  explanation: "test"
"""


def test_registry_entries_name_their_helpers(tmp_path):
    path = tmp_path / "reg.yaml"
    path.write_text(ENTRY + ENTRY.replace("id: x", "id: y") + "  helpers: [reference]\n"
                    + ENTRY.replace("id: x", "id: z") + "  helpers: [kernel, reference]\n")
    entries = load_registry(path)
    assert [e.id for e in for_helper(entries, "kernel")] == ["x", "z"]
    assert [e.id for e in for_helper(entries, "reference")] == ["y", "z"]
    path.write_text(ENTRY + "  helpers: [conntrackd]\n")
    with pytest.raises(RegistryError, match=r"reg.yaml:1: helpers must be a list of kernel, reference"):
        load_registry(path)


def test_the_shipped_registry_has_reference_entries_with_reproducers():
    reference = for_helper(load_registry(), "reference")
    assert reference and all(e.reproducer is None or e.reproducer.is_file() for e in reference)


def _stats(kernel: str, agreeing: int, unregistered: int = 0) -> Stats:
    s = Stats("6.1.192", kernel, {"ports": [5060]})
    s.dialogs, s.agreeing = Counter(curated=2, generated=8), Counter(curated=2, generated=agreeing - 2)
    s.findings = [Finding(f"g{i}", f"g{i}.yaml", "generated", 1, 3, "events", "new: -", "new: x",
                          ("register-response.refresh",), None) for i in range(unregistered)]
    return s


def test_the_matrix_shows_both_helpers_per_kernel(capsys):
    args = build_parser().parse_args(["conformance", "--kernel", "x", "--helper", "reference", "--examples", "8"])
    argv, _ = guest_argv(args, boot_groups([])[0])
    assert argv[argv.index("--helper") + 1] == "reference"
    assert argv[argv.index("--reference-log-level") + 1] == "info"
    debug = build_parser().parse_args(["conformance", "--kernel", "x", "--helper", "reference",
                                       "--reference-log-level", "debug"])
    assert guest_argv(debug, boot_groups([])[0])[0][argv.index("--reference-log-level") + 1] == "debug"
    reports = [
        KernelReport("6.18.44", "6.18.44", _stats("6.18.44", 10), host=True, three_way=True),
        KernelReport("6.1.0-56-amd64", "6.1.192-2", _stats("6.1.0-56-amd64", 10), three_way=True,
                     reference=_stats("6.1.0-56-amd64 reference helper", 9, unregistered=1),
                     reference_logs=["out/6.1.0-56-amd64-reference-helper"]),
        KernelReport("6.12.117+deb12-amd64", "6.12.117", _stats("6.12", 10), three_way=True,
                     reference=_stats("6.12 reference helper", 10)),
    ]
    assert reports[0].ok and not reports[1].ok and reports[2].ok
    print_matrix(reports, Console(width=250), three_way=True)
    out = capsys.readouterr().out
    assert "6.1.0-56-amd64: the reference helper's config and log: out/6.1.0-56-amd64-reference-helper" in out
    assert "reference agreement" in out and "n/a (no nfnetlink_cthelper)" in out
    assert "9/10" in out and "register-response.refresh" in out and "reference helper: g0" in out
    data = matrix_json(reports, args, 1.0)
    assert data["command"].endswith("--helper reference")
    assert data["kernels"][0]["reference"] is None
    assert data["kernels"][1]["reference"]["format"] == "sipct.conformance/1"
    assert data["kernels"][1]["reference_logs"] == ["out/6.1.0-56-amd64-reference-helper"]
    rows = data["matrix"]["rows"]
    assert rows[1]["agreeing"] == 10 and rows[1]["reference"]["agreeing"] == 9
    assert rows[1]["reference"]["divergences"]["unregistered"] == {"register-response.refresh": 1}
    assert data["ok"] is False


def test_a_dialog_only_the_reference_diverges_on_is_kept_with_how_to_reproduce(tmp_path):
    from sipct.conformance.matrixrun import _keep_divergent

    generated = tmp_path / "generated"
    generated.mkdir()
    source = generated / "g0.yaml"
    source.write_text((examples_dir() / "register.yaml").read_text())
    reference = _stats("6.1.0-56-amd64 reference helper", 9, unregistered=1)
    reference.findings = [replace(reference.findings[0], source=str(source))]
    report = KernelReport("6.1.0-56-amd64", "6.1.192-2", _stats("6.1.0-56-amd64", 10), three_way=True,
                          vmlinuz="/boot/vmlinuz-6.1.0-56-amd64", reference=reference)
    [kept] = _keep_divergent(report, tmp_path / "out", generated, reference=True)
    assert kept.endswith("6.1.0-56-amd64-reference-g0.yaml")
    text = Path(kept).read_text()
    assert "sipct run --helper reference --kernel /boot/vmlinuz-6.1.0-56-amd64" in text
    assert "/ reference new: x" in text
    assert reference.findings[0].source == kept
    assert load_dialog(Path(kept)).name == "register"


@pytest.mark.netns
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (builds a lab)")
def test_the_reference_lab_routes_with_a_locked_minimum_rto():
    """TCP in the hosts must not retransmit a segment (and have it helped
    again) while its ACK waits in the userspace helper's queue."""
    import ipaddress
    import subprocess

    from sipct.harness.lab import HostSpec, Lab
    from sipct.harness.lab import TCP_RTO_MIN

    hosts = [HostSpec("a", (ipaddress.ip_address("192.0.2.2"), ipaddress.ip_address("2001:db8:1::2"))),
             HostSpec("b", (ipaddress.ip_address("198.51.100.2"),))]
    with Lab(hosts, tcp_rto_min=TCP_RTO_MIN) as lab:
        for family in ("-4", "-6"):
            routes = subprocess.run(["ip", "-n", lab.host_netns["a"], family, "route", "show", "default"],
                                    capture_output=True, text=True, check=True).stdout
            assert f"rto_min lock {TCP_RTO_MIN:g}s" in routes, routes
        probe = subprocess.run(["ip", "netns", "exec", lab.host_netns["a"], "sysctl", "-n",
                                "net.ipv4.tcp_early_retrans"], capture_output=True, text=True, check=True)
        assert probe.stdout.strip() == "0"  # no tail loss probe resending a segment the helper still holds
    with Lab(hosts[1:]) as lab:  # every lab: a late ACK under load must not make a retransmission either
        routes = subprocess.run(["ip", "-n", lab.host_netns["b"], "route", "show", "default"],
                                capture_output=True, text=True, check=True).stdout
        assert f"rto_min lock {TCP_RTO_MIN:g}s" in routes, routes
    with Lab(hosts[1:], tcp_rto_min=None) as lab:
        routes = subprocess.run(["ip", "-n", lab.host_netns["b"], "route", "show", "default"],
                                capture_output=True, text=True, check=True).stdout
        assert "rto_min" not in routes
        probe = subprocess.run(["ip", "netns", "exec", lab.host_netns["b"], "sysctl", "-n",
                                "net.ipv4.tcp_early_retrans"], capture_output=True, text=True, check=True)
        assert probe.stdout.strip() != "0"
