"""The reference helper's core without sockets: decisions equal the spec's predictions.

Every dialog runs twice: through the spec alone (``predict``), and through
HelperCore wired to FakeKernel (tests/support/reference.py), a small model of the
kernel around a userspace helper - ctnetlink's errors, NFQA_EXP,
NF_REPEAT, expectation matching and expiry, destroy events. After every
step the fake kernel's expectation table must be the spec's, and every
verdict the spec's verdict.
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import socket
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings

from tests.support.reference import FakeKernel, StepOutcome, identities, run_dialog
from sipct.conformance.generate import dialogs
from sipct.reference.core import CTNETLINK, VERDICT, Decision, ExpectOp, HelperCore, Phase, plan
from sipct.reference.execute import resync
from sipct.netlink.conntrack import IPS_CONFIRMED, IPS_SEQ_ADJUST, KernelConntrack
from sipct.netlink.nfqueue import ETH_P_IP, NF_ACCEPT, NF_DROP, NF_REPEAT, QueuedPacket
from sipct.reference.master_state import MasterState
from sipct.reference.packet import build_packet, parse_packet
from sipct.spec import rules
from sipct.spec.dialog import Dialog, Send, load_dialog
from sipct.spec.expectation import ConnTuple, ExpectClass, Expectation, ExpectFlag, ExpectTuple, expectation_key
from sipct.spec.predict import Prediction, Unpredictable, predict
from sipct.spec.profiles import HARDENED_6_1_192, profile_named
from sipct.spec.topology import LabRouting
from sipct.harness.wire import LAB_WIRE

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "spec" / "examples").glob("*.yaml"))
SCENARIOS = sorted((ROOT / "conformance" / "scenarios").rglob("*.yaml"))
ip = ipaddress.ip_address


def make(dialog: Dialog, profile=HARDENED_6_1_192, **kwargs) -> tuple[HelperCore, FakeKernel]:
    params = dialog.effective_params
    core = HelperCore(params, profile, same_interface=LabRouting(dialog.hosts.values()).same_interface, **kwargs)
    routing = LabRouting(dialog.hosts.values())
    return core, FakeKernel(core, params.ports, nat=dialog.nat, router_owns=routing.router_owns if dialog.nat else None)


def assert_same(prediction: Prediction, outcomes: list[StepOutcome], start: int = 0) -> None:
    dialog = prediction.dialog
    for predicted, observed in zip(prediction.steps[start:], outcomes):
        where = f"{dialog.name} step {predicted.index} (line {getattr(predicted.step, 'line', '?')})"
        if isinstance(predicted.step, Send):
            assert observed.delivered == predicted.delivered, f"{where}: verdict"
        assert identities(observed.table) == identities(predicted.expectations), f"{where}: table"
        spec_left = sorted((str(e.tuple), round(e.expires, 3)) for e in predicted.expectations)
        kernel_left = sorted((str(e.tuple), round(e.expires, 3)) for e in observed.table)
        for (t, a), (_, b) in zip(spec_left, kernel_left):
            assert abs(a - b) <= 1, f"{where}: timeout of {t}: spec {a}, kernel {b}"
        assert nat_parts(observed.table) == nat_parts(predicted.expectations), f"{where}: NAT parts"
        if predicted.arrivals and predicted.delivered:
            left = [parse_packet(p) for p in observed.left]
            assert [(p.src, p.sport, p.dst, p.dport, p.payload) for p in left] == \
                [(a.src, a.sport, a.dst, a.dport, a.payload) for a in predicted.arrivals], f"{where}: packets"
            # TCP: what seqadj added to each segment's sequence number (nf_ct_seq_adjust()).
            assert observed.shifts == [a.seq_shift for a in predicted.arrivals], f"{where}: sequence shifts"


def nat_parts(table) -> list[tuple]:
    return sorted((expectation_key(e), None if e.nat is None else (e.nat.dir, str(e.nat.addr), e.nat.port))
                  for e in table)


# --- the bundled dialogs ------------------------------------------------------------------------
# The fake kernel models the helper's path and the router's NAT only, not a router firewall
# (forward: drop) or routing (a via: to the router's own address).
PLAIN = [p for p in EXAMPLES + SCENARIOS if not (d := load_dialog(p)).nat and d.forward == "accept"
         and not any(getattr(s, "via", None) for s in d.steps)]
NATTED = [p for p in EXAMPLES + SCENARIOS if (d := load_dialog(p)).nat and d.forward == "accept"
          and not any(getattr(s, "via", None) for s in d.steps)]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(dialog=dialogs(nat=True))
def test_generated_nat_dialogs_equal_the_spec(dialog: Dialog) -> None:
    """Hypothesis' dialogs behind masquerade, a port forward or a source NAT
    (those where the kernel would pick a port at random are no test)."""
    try:
        prediction = predict(dialog, HARDENED_6_1_192, wire=LAB_WIRE)
    except Unpredictable:
        assume(False)
    core, kernel = make(dialog)
    outcomes = run_dialog(kernel, dialog)
    assert_same(prediction, outcomes)
    assert core.stats["errors"] == 0


def _decisions_equal_the_spec(path: Path) -> None:
    dialog = load_dialog(path)
    profile = profile_named("6.1.192")
    core, kernel = make(dialog, profile)
    outcomes = run_dialog(kernel, dialog)
    assert_same(predict(dialog, profile, wire=LAB_WIRE), outcomes)
    assert not kernel.refusals, kernel.refusals
    assert core.stats["errors"] == 0


@pytest.mark.parametrize("path", NATTED, ids=lambda p: p.stem)
def test_nat_decisions_equal_the_spec(path: Path) -> None:
    """Behind a NAT router: the kernel's binding reaches the shadow, the verdicts
    carry nf_nat_sip's rewrites (the packets that leave are the spec's, headers
    and payload) and the expectations their NAT part."""
    _decisions_equal_the_spec(path)


@pytest.mark.parametrize("path", PLAIN, ids=lambda p: p.stem)
def test_decisions_equal_the_spec(path: Path) -> None:
    _decisions_equal_the_spec(path)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(dialog=dialogs(nat=False))
def test_generated_dialogs_equal_the_spec(dialog: Dialog) -> None:
    """Hypothesis' dialogs: registrations, calls, re-INVITEs, media that
    consumes expectations, incoming calls over the registration, TCP."""
    core, kernel = make(dialog)
    outcomes = run_dialog(kernel, dialog)
    assert_same(predict(dialog, HARDENED_6_1_192, wire=LAB_WIRE), outcomes)
    assert core.stats["errors"] == 0


# --- how operations reach the kernel -------------------------------------------------------------
def test_register_rides_in_the_verdict_and_activation_repeats() -> None:
    dialog = load_dialog(ROOT / "spec" / "examples" / "register.yaml")
    _, kernel = make(dialog)
    register, ok, _, *_ = run_dialog(kernel, dialog, dialog.steps[:3])
    (decision,) = register.decisions
    # process_register_request(): one PERMANENT|INACTIVE signalling expectation,
    # in NFQA_EXP, with the helper for the registrar's later connection.
    assert decision.verdict == NF_ACCEPT and decision.ops == ()
    assert decision.exp.kind == "create" and decision.exp.via == VERDICT and decision.exp.helper == "sip"
    assert decision.exp.expectation.flags == ExpectFlag.PERMANENT | ExpectFlag.INACTIVE
    assert decision.ct_timeout == 3600  # nf_ct_refresh(ct, skb, sip_timeout * HZ)
    assert MasterState.unpack(decision.helper_info) == MasterState(register_cseq=1826)
    # refresh_signalling_expectation(): INACTIVE cleared and 600 s - delete, NFQA_EXP, NF_REPEAT, then the timeout.
    first, second = ok.decisions
    assert first.verdict == NF_REPEAT and [op.kind for op in first.ops] == ["delete"]
    assert first.exp.kind == "create" and first.exp.expectation.flags == ExpectFlag.PERMANENT
    assert second.verdict == NF_ACCEPT and second.pass_no == 2
    assert [(op.kind, op.timeout) for op in second.ops] == [("timeout", 600)]
    assert [e.flags for e in kernel.table()] == [ExpectFlag.PERMANENT]


def test_media_on_a_new_master_waits_for_confirmation() -> None:
    dialog = load_dialog(ROOT / "spec" / "examples" / "invite-audio-video.yaml")
    _, kernel = make(dialog)
    (invite,) = run_dialog(kernel, dialog, dialog.steps[:1])
    first, second = invite.decisions
    # ctnetlink_create_expect() finds only confirmed masters: NF_REPEAT first.
    assert (first.verdict, first.ops, first.exp) == (NF_REPEAT, (), None)
    assert second.verdict == NF_ACCEPT
    assert [(op.kind, op.via, op.expectation.tuple.dport) for op in second.ops] == [
        ("create", CTNETLINK, 5000), ("create", CTNETLINK, 5001), ("create", CTNETLINK, 7000),
        ("create", CTNETLINK, 7001)]


def test_plan() -> None:
    e = Expectation(ExpectTuple(4, 17, None, ip("192.0.2.2"), 5000), ExpectClass.AUDIO, ExpectFlag.NONE,
                    ConnTuple(ip("192.0.2.2"), ip("198.51.100.2"), 17, 5060, 5060), 180)
    media = ExpectOp("create", e, CTNETLINK, "expect.insert")
    gone = ExpectOp("delete", e, CTNETLINK, "bye.flush-media")
    sig = ExpectOp("create", e, VERDICT, "expect.insert", helper="sip")
    assert plan([], NF_ACCEPT, False) == [Phase((), None, NF_ACCEPT)]
    assert plan([media], NF_DROP, False) == [Phase((), None, NF_DROP)]  # it all dies with the conntrack
    assert plan([sig], NF_ACCEPT, False) == [Phase((), sig, NF_ACCEPT)]
    assert plan([media], NF_ACCEPT, False) == [Phase((), None, NF_REPEAT), Phase((media,), None, NF_ACCEPT)]
    assert plan([gone, media], NF_DROP, True) == [Phase((gone, media), None, NF_DROP)]
    assert plan([gone, sig, media], NF_ACCEPT, True) == [Phase((gone,), sig, NF_REPEAT),
                                                         Phase((media,), None, NF_ACCEPT)]


def test_operations_carry_both_ports_in_tuple_and_mask() -> None:
    """ctnetlink_parse_tuple() -> nf_ct_port_nlattr_to_tuple() wants
    CTA_PROTO_SRC_PORT and _DST_PORT in the tuple and in the mask (EINVAL
    otherwise, and for NFQA_EXP a silent failure): a wildcard port is 0."""
    from sipct.netlink.ctexp import CTA_EXPECT_MASK, CTA_EXPECT_TUPLE
    from sipct.netlink.cttuple import decode_tuple
    from sipct.netlink.wire import message_attributes

    k = _media(5000).kernel("sip")
    data = bytes(encoded(k.to_msg()))
    family, _, attrs = message_attributes(data, 0)
    # decode_tuple() gives None for a port the tuple does not carry
    src, _, sport, dport, _ = decode_tuple(data, attrs[CTA_EXPECT_TUPLE], family)
    assert (sport, dport) == (0, 5000)
    src, _, sport, dport, _ = decode_tuple(data, attrs[CTA_EXPECT_MASK], family)
    assert (sport, dport) == (0, 0xFFFF)
    assert str(src) == "0.0.0.0"  # any source


def encoded(msg):
    msg.encode()
    return msg.data


# --- the kernel's own doings ----------------------------------------------------------------------
def test_media_used_by_a_connection_leaves_the_shadow_too() -> None:
    dialog = load_dialog(ROOT / "spec" / "examples" / "invite-audio-video.yaml")
    core, kernel = make(dialog)
    run_dialog(kernel, dialog, dialog.steps[:2])
    ua, server = dialog.hosts["ua"], dialog.hosts["server"]
    before = len(core.shadow.expectations())
    # RTP from the callee to the caller's port 5000: nf_ct_find_expectation() unlinks it, no helper, not queued.
    kernel.send(server, 40000, ua, 5000, 17, b"rtp")
    assert len(kernel.table()) == before - 1
    assert identities(core.shadow.expectations()) == identities(kernel.table())
    assert core.stats["events.destroy"] == 1


def test_own_removals_are_not_news() -> None:
    dialog = load_dialog(ROOT / "spec" / "examples" / "invite-audio-video.yaml")
    core, kernel = make(dialog)
    *_, before_bye, bye = run_dialog(kernel, dialog)  # BYE: flush_expectations(ct, true)
    assert len(before_bye.table) == 6 and bye.table == []
    assert core.stats["ops.delete"] == 6 and core.stats["events.destroy"] == 0  # our own, not news
    assert not core._own_deletes
    assert len(core.shadow.table.journal) <= 6  # a long-running helper keeps only the last packet's


def test_a_killed_master_is_replaced_by_the_next_conntrack_on_its_tuple() -> None:
    dialog = load_dialog(ROOT / "spec" / "examples" / "invite-audio-video.yaml")
    core, kernel = make(dialog)
    run_dialog(kernel, dialog, dialog.steps[:1])
    (master,) = core.shadow.masters()
    kernel.kill(master.original)  # conntrack -D
    assert core.shadow.expectations() == []  # learnt from the destroy events
    # The same INVITE again: a new conntrack (new id) on the same tuple.
    outcome, = run_dialog(kernel, dialog, dialog.steps[:1])
    assert outcome.delivered and len(kernel.table()) == 4
    assert core.stats["masters.replaced"] == 1
    assert identities(core.shadow.expectations()) == identities(kernel.table())


@pytest.mark.parametrize("recycle_ids", [True, False], ids=["same-id", "new-id"])
def test_a_deleted_tcp_master_is_succeeded_by_a_conntrack_picked_up_mid_stream(recycle_ids: bool) -> None:
    """conntrack -D of a TCP master: the caller's next segment makes a new
    conntrack (nf_conntrack_tcp_loose) whose id is often the old one's. Its
    status (unconfirmed, no reply seen) tells it apart: the shadow forgets the
    old master and adopts the new one, so the re-INVITE's ctinfo is
    IP_CT_NEW for the spec too and nothing is expected
    (helper.tcp-not-established)."""
    dialog = load_dialog(ROOT / "conformance" / "scenarios" / "midstream" / "tcp-conntrack-deleted.yaml")
    prediction = predict(dialog, HARDENED_6_1_192, wire=LAB_WIRE)
    core, kernel = make(dialog)
    kernel.recycle_ids = recycle_ids
    connect, invite, delete, reinvite, ok = run_dialog(kernel, dialog)
    (old,) = {d.key[0] for d in invite.decisions}
    (new,) = {d.key[0] for d in reinvite.decisions}
    assert (old == new) is recycle_ids
    assert rules.TCP_NOT_ESTABLISHED.id in reinvite.decisions[0].result.rule_ids
    assert reinvite.table == [] and len(ok.table) == 2
    assert core.stats["masters.replaced"] == 1
    assert_same(prediction, [connect, invite, delete, reinvite, ok])
    assert identities(core.shadow.expectations()) == identities(kernel.table())


# --- restart -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,split", [("register.yaml", 2), ("invite-audio-video.yaml", 2),
                                        ("invite-cancel.yaml", 1)])
def test_restart_keeps_calls_working(name: str, split: int) -> None:
    """A new helper rebuilds its shadow from the kernel (ctnetlink dump,
    master conntracks with their private data) and finishes the dialog as
    if it had seen it all."""
    dialog = load_dialog(ROOT / "spec" / "examples" / name)
    prediction = predict(dialog, HARDENED_6_1_192, wire=LAB_WIRE)
    _, kernel = make(dialog)
    run_dialog(kernel, dialog, dialog.steps[:split])
    fresh = HelperCore(dialog.effective_params, HARDENED_6_1_192,
                       same_interface=LabRouting(dialog.hosts.values()).same_interface)
    kernel.core = fresh
    report = resync(fresh, kernel, lambda: kernel.now)
    assert report.added == len(kernel.expectations) and report.unknown_masters == 0
    assert identities(fresh.shadow.expectations()) == identities(kernel.table())
    rest = run_dialog(kernel, dialog, dialog.steps[split:])
    assert_same(prediction, rest, start=split)
    assert not kernel.refusals


def test_reconcile_drops_what_the_kernel_lost() -> None:
    dialog = load_dialog(ROOT / "spec" / "examples" / "invite-audio-video.yaml")
    core, kernel = make(dialog)
    run_dialog(kernel, dialog, dialog.steps[:1])
    kernel.expectations.pop()  # lost without an event (no event cache on the master)
    report = core.reconcile(kernel.dump_expectations(), {}, kernel.now)
    assert (report.removed, report.added) == (1, 0)
    assert identities(core.shadow.expectations()) == identities(kernel.table())


# --- failures ------------------------------------------------------------------------------------------
def queued(payload: bytes = b"OPTIONS sip:x SIP/2.0\r\nCSeq: 1 OPTIONS\r\n\r\n", status: int = IPS_CONFIRMED,
           ct: bool = True) -> QueuedPacket:
    a, b = ip("192.0.2.2"), ip("198.51.100.2")
    facts = KernelConntrack(socket.AF_INET, ConnTuple(a, b, 17, 5060, 5060), None, 7, status, 30, helper="sip")
    return QueuedPacket(0, socket.AF_INET, 1, ETH_P_IP, 4, build_packet(a, 5060, b, 5060, 17, payload),
                        facts if ct else None, 0 if ct else None)


@pytest.mark.parametrize("fail_open,verdict", [(True, NF_ACCEPT), (False, NF_DROP)])
def test_an_exception_in_the_spec_gives_the_policy_verdict(monkeypatch, fail_open: bool, verdict: int) -> None:
    core = HelperCore(HARDENED_6_1_192 and load_dialog(EXAMPLES[0]).effective_params, HARDENED_6_1_192,
                      fail_open=fail_open)

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(core.shadow, "packet", broken)
    decision = core.decide(queued(), 1.0)
    assert decision.verdict == verdict and "RuntimeError: boom" in decision.error
    assert core.needs_resync and core.stats["errors"] == 1
    monkeypatch.undo()
    assert core.decide(queued(), 2.0).verdict == NF_ACCEPT  # and it goes on


def test_bad_input_gives_the_policy_verdict() -> None:
    core = HelperCore(load_dialog(EXAMPLES[0]).effective_params, HARDENED_6_1_192, fail_open=False)
    assert core.decide(queued(ct=False), 1.0).verdict == NF_DROP
    broken = queued()
    broken = QueuedPacket(0, 2, 2, ETH_P_IP, 4, b"\x45\x00", broken.ct, 0)
    decision = core.decide(broken, 2.0)
    assert decision.verdict == NF_DROP and "unreadable packet" in decision.error


def _decision_with(*ops: ExpectOp) -> Decision:
    return Decision(NF_ACCEPT, tuple(ops))


def _media(port: int) -> ExpectOp:
    e = Expectation(ExpectTuple(4, 17, None, ip("192.0.2.2"), port), ExpectClass.AUDIO, ExpectFlag.NONE,
                    ConnTuple(ip("192.0.2.2"), ip("198.51.100.2"), 17, 5060, 5060), 180)
    return ExpectOp("create", e, CTNETLINK, "expect.insert")


def test_refusals_mean_what_the_spec_says() -> None:
    core = HelperCore(load_dialog(EXAMPLES[0]).effective_params, HARDENED_6_1_192)
    rtp = _media(5000)
    rtcp = dataclasses.replace(_media(5001), pair=rtp.expectation)  # the spec's TableEvent.pair
    decision = _decision_with(rtp, rtcp)
    gone = ExpectOp("delete", rtp.expectation, CTNETLINK, "bye.flush-media")
    assert core.failed(decision, gone, errno.ENOENT).verdict is None  # already gone: fine
    assert core.failed(decision, rtp, errno.EEXIST).verdict is None  # already expected: media.already
    assert core.needs_resync
    # set_expected_rtp_rtcp(): RTCP refused -> take back RTP, drop the packet.
    failure = core.failed(decision, rtcp, errno.EBUSY)
    assert failure.verdict == NF_DROP and failure.stop
    assert [(u.kind, u.expectation.tuple.dport) for u in failure.undo] == [("delete", 5000)]
    assert failure.reason.startswith(rules.MEDIA_FAILED.id)
    assert core.failed(decision, _media(5003), errno.EBUSY).undo == ()  # no pair: nothing to take back
    for code in (errno.EMFILE, errno.ENOSPC, errno.ESHUTDOWN, errno.ENOENT):
        assert core.failed(decision, rtp, code).verdict == NF_DROP
    # Anything else: the failure policy.
    assert core.failed(decision, rtp, errno.EPERM).verdict == NF_ACCEPT
    closed = HelperCore(load_dialog(EXAMPLES[0]).effective_params, HARDENED_6_1_192, fail_open=False)
    assert closed.failed(decision, rtp, errno.EPERM).verdict == NF_DROP


def test_a_refused_creation_drops_like_the_kernel_helper() -> None:
    """The shadow thinks an RTCP port is free but the kernel has another
    master's expectation from a given source there, which clashes with ours
    from any source (sip_direct_media=0): EBUSY, RTP taken back, packet dropped."""
    from sipct.spec.params import ModuleParams

    dialog = load_dialog(ROOT / "spec" / "examples" / "invite-audio-video.yaml")
    core = HelperCore(ModuleParams(sip_direct_media=False), HARDENED_6_1_192)
    kernel = FakeKernel(core)
    ua = dialog.hosts["ua"]
    stranger = Expectation(ExpectTuple(4, 17, ip("203.0.113.9"), ua, 5001), ExpectClass.AUDIO, ExpectFlag.NONE,
                           ConnTuple(ip("203.0.113.9"), ua, 17, 1, 1), 1000)
    kernel.plant(ExpectOp("create", stranger, CTNETLINK, "-").kernel("sip"), stranger.expires)
    (invite,) = run_dialog(kernel, dialog, dialog.steps[:1])
    assert not invite.delivered
    assert [(exp.tuple.dport, err) for exp, err in kernel.refusals] == [(5001, errno.EBUSY)]
    assert [e.tuple.dport for e in kernel.table()] == [5001]  # only the stranger's: RTP was taken back
    assert core.needs_resync


def test_a_repeat_that_never_comes_back_expires() -> None:
    dialog = load_dialog(ROOT / "spec" / "examples" / "invite-audio-video.yaml")
    core, _ = make(dialog)
    ua, server = dialog.hosts["ua"], dialog.hosts["server"]
    step = dialog.steps[0]
    facts = KernelConntrack(socket.AF_INET, ConnTuple(ua, server, 17, 5060, 5060), None, 5, 0, 0, helper="sip")
    pkt = QueuedPacket(0, 2, 1, ETH_P_IP, 4, build_packet(ua, 5060, server, 5060, 17, step.payload), facts, 2)
    assert core.decide(pkt, 0.0).verdict == NF_REPEAT
    assert core.pending == 1 and core.expire_pending(1.0) == 0
    assert core.expire_pending(10.0) == 1 and core.pending == 0 and core.needs_resync


def test_a_late_destroy_event_of_an_expired_predecessor_keeps_the_successor() -> None:
    """Debian 6.1.192/6.12 unlink an expired expectation lazily: the refresh
    REGISTER's new expectation meets the expired one in its hash bucket and
    the kernel reports the old one's destroy only then - with timeout 0. It
    must not take the new one out of the shadow (or the 200 OK would find
    nothing to activate); a destroy of the live one still does."""
    from dataclasses import replace as replaced

    dialog = load_dialog(ROOT / "conformance" / "scenarios" / "rfc3665" / "registration-expiry-refresh.yaml")
    core, kernel = make(dialog, profile_named("6.1.192"))
    run_dialog(kernel, dialog, dialog.steps[:4])  # REGISTER, 200 OK (expires=2), 3 s, refresh REGISTER
    [live] = kernel.expectations
    event = live.kernel(kernel.now)
    assert event.timeout > 1
    assert core.expectation_destroyed(replaced(event, timeout=0), kernel.now) is False
    assert [e.tuple for e in core.shadow.expectations()] == [live.value.tuple]
    assert core.stats["events.stale"] == 1
    assert core.expectation_destroyed(event, kernel.now) is True
    assert core.shadow.expectations() == []


def test_a_rewrite_leaves_with_the_last_pass_only() -> None:
    """An INVITE on a new master behind NAT: its media wait for the second pass
    (NF_REPEAT confirms the master); the rewritten packet goes with the final
    verdict, so seq_adjust sees one length change and the second pass is
    recognised as the same packet."""
    dialog = load_dialog(ROOT / "spec" / "examples" / "nat-ipv6-masquerade.yaml")
    core, kernel = make(dialog)
    (invite, *_) = run_dialog(kernel, dialog, dialog.steps[:1])
    first, last = invite.decisions
    assert first.verdict == NF_REPEAT and first.packet is None
    assert last.verdict == NF_ACCEPT and last.packet is not None
    assert kernel.verdict_payloads == [None, last.packet]
    assert parse_packet(last.packet).payload == predict(dialog, HARDENED_6_1_192, wire=LAB_WIRE).steps[0].packets[0].out_payload


# --- TCP sequence adjustment ---------------------------------------------------------------------------
NAT_TCP = [ROOT / "spec" / "examples" / "nat-tcp-seq-adjust.yaml",
           ROOT / "conformance" / "scenarios" / "nat" / "ipv6-tcp-seq-adjust.yaml"]


def tcp_master(kernel: FakeKernel):
    (ct,) = [ct for ct, reply in kernel.conntracks.values() if not reply and ct.original.proto == 6]
    return ct


@pytest.mark.parametrize("path", NAT_TCP, ids=["ipv4", "ipv6"])
def test_a_length_change_reaches_the_conntracks_seqadj(path: Path) -> None:
    """IPv4: the verdict's NFQA_CT carries it (ctnetlink_glue_seqadj()). IPv6:
    a ctnetlink update before a verdict without NFQA_CT. Either way the
    core's record is the kernel's and the segments leave shifted as the
    spec says (assert_same)."""
    dialog = load_dialog(path)
    profile = profile_named("6.1.192")
    core, kernel = make(dialog, profile)
    assert_same(predict(dialog, profile, wire=LAB_WIRE), run_dialog(kernel, dialog))
    ct = tcp_master(kernel)
    assert ct.status & IPS_SEQ_ADJUST and core.seqadj(ct.original) == tuple(ct.seq_adj)
    assert ct.seq_adj[0].offset_after and ct.seq_adj[1].offset_after
    v6 = dialog.family == 6
    rewrites = [with_ct for with_ct, p in zip(kernel.verdict_cts, kernel.verdict_payloads) if p is not None]
    assert rewrites and all(with_ct != v6 for with_ct in rewrites)
    assert len(kernel.updates) == (len(rewrites) if v6 else 0)
    assert core.stats["seqadj.ctnetlink" if v6 else "seqadj.verdict"] == len(rewrites)
    assert not kernel.refusals and core.stats["errors"] == 0


def test_the_verdicts_seqadj_misreads_an_ipv6_segment(monkeypatch) -> None:
    """Why IPv6 goes over ctnetlink: left to NFQA_CT, nf_ct_tcp_seqadj_set()
    takes the correction position from the IPv6 header (ip_hdrlen()), and
    the later segments leave shifted by the wrong offset."""
    dialog = load_dialog(NAT_TCP[1])
    profile = profile_named("6.1.192")
    core, kernel = make(dialog, profile)
    ours = core._seq_adjust

    def by_verdict(*args):
        change = ours(*args)
        return None if change is None else dataclasses.replace(change, via=VERDICT)

    monkeypatch.setattr(core, "_seq_adjust", by_verdict)
    outcomes = run_dialog(kernel, dialog)
    with pytest.raises(AssertionError, match="sequence shifts"):
        assert_same(predict(dialog, profile, wire=LAB_WIRE), outcomes)


@pytest.mark.parametrize("path", NAT_TCP, ids=["ipv4", "ipv6"])
def test_a_restart_mid_tcp_dialog_keeps_the_offset(path: Path) -> None:
    """After the INVITE and its 200 OK both directions have an offset; a new
    helper reads it with the master (CTA_SEQ_ADJ_*) into its record and the
    shadow, and the ACK, BYE and 200 OK after it leave shifted right."""
    dialog = load_dialog(path)
    profile = profile_named("6.1.192")
    prediction = predict(dialog, profile, wire=LAB_WIRE)
    _, kernel = make(dialog, profile)
    split = 3
    run_dialog(kernel, dialog, dialog.steps[:split])
    ct = tcp_master(kernel)
    assert all(s.offset_after for s in ct.seq_adj)
    fresh = HelperCore(dialog.effective_params, profile,
                       same_interface=LabRouting(dialog.hosts.values()).same_interface)
    kernel.core = fresh
    assert resync(fresh, kernel, lambda: kernel.now).adopted == 1
    assert fresh.seqadj(ct.original) == tuple(ct.seq_adj)
    assert fresh.shadow.conntrack(ct.original).seq_offset == [s.offset_after for s in ct.seq_adj]
    assert_same(prediction, run_dialog(kernel, dialog, dialog.steps[split:]), start=split)
    assert fresh.seqadj(ct.original) == tuple(ct.seq_adj)
    assert not kernel.refusals and fresh.stats["errors"] == 0


@pytest.mark.parametrize("fail_open", [True, False])
def test_a_refused_conntrack_update_lets_the_segment_go_unchanged_or_drops_it(fail_open: bool) -> None:
    """The IPv6 INVITE's update is refused: the failure policy's verdict, with
    NFQA_CT (timeout, private data) but without the rewritten segment, whose
    length change no seqadj record would know."""
    dialog = load_dialog(NAT_TCP[1])
    core, kernel = make(dialog, profile_named("6.1.192"), fail_open=fail_open)
    run_dialog(kernel, dialog, dialog.steps[:1])
    kernel.refuse_updates = errno.ENOENT
    (invite,) = run_dialog(kernel, dialog, dialog.steps[1:2])
    assert invite.delivered is fail_open
    assert kernel.verdict_payloads[-1] is None and kernel.verdict_cts[-1]
    if fail_open:
        (left,) = invite.left
        assert parse_packet(left).payload == dialog.steps[1].segments[0]
    assert not tcp_master(kernel).status & IPS_SEQ_ADJUST and kernel.updates == []
    assert core.stats["refused.update.ENOENT"] == 1 and core.stats["errors"] == 1 and core.needs_resync
    assert core.seqadj(tcp_master(kernel).original) is None


def test_plan_keeps_nfqa_exp_out_of_a_pass_without_nfqa_ct() -> None:
    """A segment whose seqadj goes over ctnetlink (IPv6): its last verdict
    carries no NFQA_CT, so an NFQA_EXP moves to a pass of its own before it,
    and on an unconfirmed master the update waits for the second pass."""
    e = Expectation(ExpectTuple(4, 17, None, ip("192.0.2.2"), 5060), ExpectClass.SIGNALLING, ExpectFlag.NONE,
                    ConnTuple(ip("192.0.2.2"), ip("198.51.100.2"), 6, 5060, 5060), 180)
    sig = ExpectOp("create", e, VERDICT, "expect.insert", helper="sip")
    media = ExpectOp("create", e, CTNETLINK, "expect.insert")
    assert plan([sig], NF_ACCEPT, True, ct_update=True) == [Phase((), sig, NF_REPEAT), Phase((), None, NF_ACCEPT)]
    assert plan([sig, media], NF_ACCEPT, True, ct_update=True) == [Phase((), sig, NF_REPEAT),
                                                                   Phase((media,), None, NF_ACCEPT)]
    assert plan([], NF_ACCEPT, False, ct_update=True) == [Phase((), None, NF_REPEAT), Phase((), None, NF_ACCEPT)]
    assert plan([], NF_ACCEPT, True, ct_update=True) == [Phase((), None, NF_ACCEPT)]
