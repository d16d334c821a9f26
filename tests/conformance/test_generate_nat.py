"""Generated NAT dialogs (conformance/generate.py): they load, predict, and
address the hosts across the router by their faces."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings

from sipct.conformance.generate import (HOSTS, NAT_KINDS, Context, MasterView, dialogs, master_view,
                                        predictable_prefix)
from sipct.conformance.suite import Suite, generate_dialogs
from sipct.spec.dialog import Dialog, Endpoint, Send, dump_dialog, parse_dialog
from sipct.spec.expectation import IPPROTO_UDP
from sipct.spec.natmap import DestinationNat, NatTopology, SourceNat
from sipct.spec.params import ModuleParams
from sipct.spec.predict import Unpredictable, predict
from sipct.spec.profiles import DEFAULT_PROFILE, PROFILES
from sipct.spec.topology import network_of, router_address
from sipct.harness.wire import LAB_WIRE


def _steps(d: Dialog) -> tuple:
    return tuple(dataclasses.replace(s, line=0) for s in d.steps)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(dialog=dialogs(nat=True))
def test_generated_nat_dialogs_load_and_predict(dialog: Dialog) -> None:
    assert dialog.nat
    # As a file (what a minimal divergent dialog and --dialog-files are): the same dialog.
    back = parse_dialog(dump_dialog(dialog), "<dumped>") if dialog.steps else dialog
    assert back.nat == dialog.nat and back.hosts == dialog.hosts and _steps(back) == _steps(dialog)
    # The generator cut what the default profile cannot predict.
    prediction = predict(back, DEFAULT_PROFILE, wire=LAB_WIRE)
    for step in prediction.steps:
        if isinstance(step.step, Send):
            assert len(step.arrivals) == len(step.packets)  # where each packet went, under NAT
    for profile in PROFILES.values():
        try:
            predict(back, profile, wire=LAB_WIRE)
        except Unpredictable:
            pass  # the suite leaves such a dialog out and counts it


def test_a_generated_batch_has_every_nat_topology_and_media():
    batch = generate_dialogs(400, 5)
    nat = [d for d in batch if d.nat]
    assert len(nat) >= len(batch) // 5
    kinds = Counter()
    for d in nat:
        masq = any(r.to is None for r in d.nat.snat)
        snat = any(r.to is not None for r in d.nat.snat)
        kinds["masquerade" if masq else "snat" if snat else ""] += 1
        kinds["dnat"] += bool(d.nat.dnat)
        kinds[f"ipv{d.family}"] += 1
    assert all(kinds[k] for k in ("masquerade", "snat", "dnat", "ipv4", "ipv6")), kinds
    assert any(r.port is not None and r.port != r.sport for d in nat for r in d.nat.snat)  # port translation
    assert any(d.nat.snat and d.nat.dnat for d in nat)  # both on one router
    # RTP after an answered offer: from a media port, some across the NAT at a face (via:).
    rtp = [s for d in batch for s in d.steps if isinstance(s, Send) and s.payload.startswith(b"\x80\x00\x00")]
    assert rtp and any(s.via is not None for s in rtp)
    assert set(NAT_KINDS) == {"masquerade", "snat", "dnat", "snat+dnat", "masquerade+dnat"}


def _context(nat: NatTopology, family: int = 4) -> Context:
    hosts = {n: ipaddress.ip_address(a) for n, a in HOSTS[family].items()}
    return Context(family, IPPROTO_UDP, hosts, nat=nat)


@pytest.mark.parametrize("family", [4, 6])
def test_faces_across_a_masquerade(family):
    ctx = _context(NatTopology((SourceNat(network_of(ipaddress.ip_address(HOSTS[family]["ua"]))),)), family)
    ua, server = Endpoint("ua", 5062), Endpoint("server", 5060)
    ctx.views[(ua, server)] = master_view(ctx.nat, ctx.hosts, ua, server, IPPROTO_UDP)
    ctx.on(server, ua)
    outside = router_address(network_of(ctx.addr("server")))
    assert ctx.seen("ua", 5062, "server") == (outside, 5062)  # the port is kept
    assert ctx.seen("ua", 10000, "server") == (outside, 10000)  # media: the same translated address
    assert ctx.seen("ua", 5062, "ua") == (ctx.addr("ua"), 5062)  # its own address, to itself
    assert ctx.seen("server", 5060, "ua") == (ctx.addr("server"), 5060)  # the server is not NATed
    # NatTopology.face already takes the server there: no via:.
    assert ctx.dialled(server, ua, IPPROTO_UDP) is None


def test_faces_across_a_fixed_port_snat_and_a_port_forward():
    hosts = {n: ipaddress.ip_address(a) for n, a in HOSTS[4].items()}
    outside = router_address(network_of(hosts["server"]))
    inside = router_address(network_of(hosts["ua"]))
    nat = NatTopology((SourceNat(network_of(hosts["ua"]), outside, 40002, hosts["ua"], 5060),),
                      (DestinationNat(inside, 8060, hosts["server"], 5060),))
    ctx = _context(nat)
    ua, server = Endpoint("ua", 5060), Endpoint("server", 5060)
    view = master_view(nat, hosts, ua, server, IPPROTO_UDP)
    assert view == MasterView(ua, server, (outside, 40002), (inside, 8060))
    ctx.views[(ua, server)] = view
    ctx.on(ua, server)
    assert ctx.seen("ua", 5060, "server") == (outside, 40002)
    assert ctx.seen("server", 5060, "ua") == (inside, 8060)
    # The caller's media port is no rule's: the lab would dial the host itself, the generator the face.
    assert ctx.dialled(Endpoint("server", 20000), Endpoint("ua", 10000), IPPROTO_UDP) == (outside, 10000)
    assert ctx.dialled(Endpoint("ua", 10000), Endpoint("server", 20000), IPPROTO_UDP) == (inside, 20000)
    assert ctx.dialled(server, ua, IPPROTO_UDP) is None  # NatTopology.face finds the snat's port


def _register(src: str, dst: str, port: int = 5060) -> bytes:
    return (f"REGISTER sip:b@{dst} SIP/2.0\r\nVia: SIP/2.0/UDP {src}:{port};branch=z9hG4bK1\r\n"
            f"From: <sip:a@{src}>;tag=1\r\nTo: <sip:b@{dst}>\r\nCall-ID: 1@{src}\r\nCSeq: x REGISTER\r\n"
            f"Contact: <sip:a@{src}:{port}>\r\nContent-Length: 0\r\n\r\n").encode()


def _clashing_dialog() -> Dialog:
    """The caller's first REGISTER is dropped (no CSeq number), so its
    conntrack is never confirmed; the registrar then sends to the caller's
    face, a conntrack of the router's own; the caller's next packet needs
    that tuple: masquerade would take a random port."""
    hosts = {n: ipaddress.ip_address(a) for n, a in HOSTS[4].items()}
    nat = NatTopology((SourceNat(network_of(hosts["ua"])),))
    ua, server = Endpoint("ua", 5060), Endpoint("server", 5060)
    steps = (Send(1, ua, server, IPPROTO_UDP, (_register("192.0.2.2", "198.51.100.2"),)),
             Send(2, server, ua, IPPROTO_UDP, (_register("198.51.100.2", "198.51.100.1"),)),
             Send(3, ua, server, IPPROTO_UDP, (_register("192.0.2.2", "198.51.100.2"),)))
    return Dialog("clash", "<test>", 4, hosts, steps, nat=nat)


def test_the_generator_cuts_a_dialog_before_the_kernel_picks_a_random_port():
    dialog = _clashing_dialog()
    with pytest.raises(Unpredictable, match="random"):
        predict(dialog, wire=LAB_WIRE)
    assert _steps(predictable_prefix(dialog)) == _steps(dialog)[:2]
    predict(predictable_prefix(dialog), wire=LAB_WIRE)


class _Kernel:
    release = "test"

    def params_for(self, params):
        return params or ModuleParams()

    def conflicts(self, params):
        return []


def test_the_suite_leaves_out_and_counts_what_the_spec_cannot_predict():
    suite = Suite(_Kernel(), DEFAULT_PROFILE, [])  # type: ignore[arg-type]
    try:
        assert suite.check(_clashing_dialog(), "generated") == []
    finally:
        suite.close()
    assert suite.stats.unpredictable == Counter(generated=1)
    assert "random" in suite.stats.unpredictable_reasons[0]
    assert sum(suite.stats.dialogs.values()) == 0


def test_the_cut_is_tagged_and_the_tag_is_the_suites():
    from sipct.conformance.generate import CUT_TAG
    from sipct.conformance.suite import NAT_CUT_TAG

    assert CUT_TAG == NAT_CUT_TAG
    assert CUT_TAG in predictable_prefix(_clashing_dialog()).tags
    dialog = dataclasses.replace(_clashing_dialog(), steps=_clashing_dialog().steps[:2])
    assert predictable_prefix(dialog) is dialog  # nothing to cut, no tag


@pytest.mark.parametrize(("share", "nat"), [("only", True), ("none", False)])
def test_nat_share_makes_every_or_no_generated_dialog_natted(share, nat):
    from argparse import Namespace

    from sipct.conformance.cli import nat_share

    batch = generate_dialogs(60, 4, nat=nat_share(Namespace(nat=share)))
    assert batch and all(bool(d.nat) is nat for d in batch)


def test_nat_share_is_in_the_matrix_command_and_options():
    from argparse import Namespace

    from sipct.conformance.cli import nat_share
    from sipct.conformance.matrixjson import command_line, run_options

    args = Namespace(preset="debian", kernels=[], dialog_files=None, examples=1000, seed=3, nat="only",
                     no_curated=False, slow=False, no_reproducers=False, no_host=True, scenarios=[],
                     profile="auto", helper="kernel", docs=None, generated_sha256="x")
    assert "--nat only" in command_line(args)
    assert run_options(args)["nat"] == "only"
    assert "--nat" not in command_line(Namespace(**{**vars(args), "nat": "mixed"}))
    assert nat_share(Namespace()) is None  # an older shard's options: mixed


def test_a_dialog_the_lab_cannot_carry_is_one_finding_and_the_run_goes_on():
    """A socket error in the middle of a dialog (a connection reset) is
    reported at its step as an unregistered finding of that dialog; the suite
    runs the next dialog (it used to end the whole run, losing its results)."""
    from sipct.harness.run import LabCannotCarry
    from sipct.cli.main import examples_dir
    from sipct.spec.dialog import load_dialog

    dialog = load_dialog(examples_dir() / "nat-tcp-seq-adjust.yaml")

    class _Resetting:
        calls = 0

        def run(self, d, ports, expected, predicted=None):
            self.calls += 1
            raise LabCannotCarry(d, 2, d.steps[2], "ConnectionResetError: [Errno 104] Connection reset by peer")

    suite = Suite(_Kernel(), DEFAULT_PROFILE, [])  # type: ignore[arg-type]
    runner = _Resetting()
    try:
        (finding,) = suite.check(dialog, "generated", runner)  # type: ignore[arg-type]
        assert suite.check(dialog, "generated", runner)  # the next dialog runs
    finally:
        suite.close()
    assert runner.calls == 2
    assert (finding.step, finding.aspect, finding.known) == (2, "lab", None)
    assert "Connection reset" in finding.kernel and finding.line == dialog.steps[2].line
    assert suite.stats.dialogs == Counter(generated=2) and suite.stats.nat == Counter(generated=2)
    assert len(suite.stats.failed_dialogs) == 2 and len(suite.stats.findings) == 2
