"""The helper's ctnetlink operations against the running kernel (netns, root).

The running kernel cannot queue packets to a userspace helper, but its
ctnetlink is the same: in a namespace where the kernel's own SIP helper is
attached (so that a master conntrack with a helper exists), the daemon's
expectation operations - create, new timeout, delete, in the exact encoding
the daemon's executor sends through its NetlinkPort - and the destroy events the core reads are
checked for real. (A tuple or mask without both ports is refused with
EINVAL by ctnetlink_parse_tuple(): this is where such a mistake shows.)
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import socket
import subprocess
import time

import pytest

from sipct.netlink.netns import entered_netns
from sipct.reference.core import CTNETLINK, ExpectOp, HelperCore
from sipct.reference.execute import apply
from sipct.reference.netlink.port import NetlinkPort
from sipct.reference.netlink.socket import ExpectationSocket
from sipct.spec.params import ModuleParams
from sipct.spec.expectation import ConnTuple, ExpectClass, Expectation, ExpectFlag, ExpectTuple
from sipct.spec.profiles import HARDENED_6_1_192

pytestmark = pytest.mark.netns

ip = ipaddress.ip_address
A, B = ip("192.0.2.1"), ip("192.0.2.2")
RULESET = """
table inet t {
    ct helper sip-udp { type "sip" protocol udp; l3proto inet; }
    chain out {
        type filter hook output priority filter;
        udp dport 5060 ct helper set "sip-udp";
    }
}
"""
OPTIONS = b"OPTIONS sip:192.0.2.2 SIP/2.0\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"


def _run(*argv: str, stdin: str | None = None) -> None:
    subprocess.run(argv, input=stdin, text=True, check=True, capture_output=True, timeout=30)


# The master source-NATed after the helper is attached: nf_nat_setup_info() then
# gives it the seqadj extension (nfct_seqadj_ext_add(), for a conntrack with a helper).
NAT_RULESET = RULESET + """
table ip n {
    chain post {
        type nat hook postrouting priority srcnat;
        udp dport 5060 snat to 192.0.2.3
    }
}
"""


@pytest.fixture
def master_netns():
    """A namespace with one UDP master conntrack carrying the kernel's "sip"
    helper, and an expectation-destroy listener that joined before the
    master was made (with nf_conntrack_events=2 a conntrack gets its event
    cache only if a listener exists when it is created - the reason the
    daemon subscribes first thing)."""
    yield from _master_netns(RULESET)


@pytest.fixture
def natted_master_netns():
    """master_netns with the master source-NATed (IPS_SRC_NAT, a seqadj extension)."""
    yield from _master_netns(NAT_RULESET)


def _master_netns(ruleset: str):
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    if shutil.which("nft") is None or shutil.which("ip") is None:
        pytest.skip("needs `ip` and `nft`")
    name = f"sipct-ref{os.getpid()}-{secrets.token_hex(3)}"
    _run("ip", "netns", "add", name)
    try:
        _run("ip", "-n", name, "link", "set", "lo", "up")
        for addr in ("192.0.2.1/24", "192.0.2.2/24", "192.0.2.3/24"):
            _run("ip", "-n", name, "addr", "add", addr, "dev", "lo")
        try:
            _run("ip", "netns", "exec", name, "nft", "-f", "-", stdin=ruleset)
        except subprocess.CalledProcessError as exc:
            pytest.skip(f"no kernel SIP helper to attach here: {exc.stderr.strip()}")
        events = ExpectationSocket(name)
        events.subscribe_destroy_events()
        with entered_netns(name):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with sock:
            sock.bind((str(A), 5060))
            sock.sendto(OPTIONS, (str(B), 5060))
        try:
            yield name, events
        finally:
            events.close()
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True, timeout=30)


def media(port: int, src=B) -> ExpectOp:
    e = Expectation(ExpectTuple(4, 17, src, A, port), ExpectClass.AUDIO, ExpectFlag.NONE,
                    ConnTuple(A, B, 17, 5060, 5060), 180)
    return ExpectOp("create", e, CTNETLINK, "expect.insert")


def test_create_timeout_delete_and_the_destroy_event(master_netns) -> None:
    name, events = master_netns
    ops = ExpectationSocket(name)
    port = NetlinkPort(None, ops, "sip")  # type: ignore[arg-type] - no queue: ctnetlink only
    core = HelperCore(ModuleParams(expect_max=4096), HARDENED_6_1_192)
    try:
        rtp, any_source = media(5000), media(5002, src=None)
        for op in (rtp, any_source):
            apply(port, op, "sip")
        table = {e.tuple.dport: e for e in ops.dump()}
        assert set(table) == {5000, 5002}
        assert table[5000].mask.src == ip("255.255.255.255") and table[5002].mask.src == ip("0.0.0.0")
        assert table[5000].helper == "sip" and table[5000].klass == int(ExpectClass.AUDIO)
        assert 170 <= table[5000].timeout <= 180  # the helper's policy timeout (sip_exp_policy[])

        apply(port, ExpectOp("timeout", rtp.expectation, CTNETLINK, "register-response.refresh", timeout=600), "sip")
        assert 590 <= {e.tuple.dport: e for e in ops.dump()}[5000].timeout <= 600

        gone = ExpectOp("delete", rtp.expectation, CTNETLINK, "bye.flush-media")
        apply(port, gone, "sip")
        core.applied(gone)
        assert [e.tuple.dport for e in port.dump_expectations()] == [5002]
        deadline = time.monotonic() + 2
        seen = []
        while time.monotonic() < deadline and not seen:
            seen = [e for kind, e in events.drain_events() if kind == "destroy"]
        assert [e.tuple.dport for e in seen] == [5000]
        assert core.expectation_destroyed(seen[0], 1.0) is False  # our own removal: not news
    finally:
        ops.close()


def test_a_mask_without_source_port_is_refused(master_netns) -> None:
    """Why ExpectOp.kernel() always writes both ports: ctnetlink_parse_tuple()
    -> nf_ct_port_nlattr_to_tuple() answers EINVAL otherwise."""
    import errno

    from pyroute2.netlink.exceptions import NetlinkError

    from sipct.netlink.ctexp import ExpectMask

    name, _ = master_netns
    k = media(5000).kernel("sip")
    with ExpectationSocket(name) as ops:
        with pytest.raises(NetlinkError) as info:
            ops.create(k.master, k.tuple, proto=k.proto, mask=ExpectMask(k.mask.src, None), klass=k.klass)
        assert info.value.code == errno.EINVAL
        assert ops.dump() == []


def test_a_nat_expectation_is_created_with_its_nat_part_and_expectfn(master_netns) -> None:
    """ExpectOp.kernel()'s CTA_EXPECT_NAT and CTA_EXPECT_FN "sip" as ctnetlink
    takes them (ctnetlink_alloc_expect() -> ctnetlink_parse_expect_nat(),
    nf_ct_helper_expectfn_find_by_name()) and reports them back in a dump."""
    import dataclasses
    import errno

    from pyroute2.netlink.exceptions import NetlinkError

    from sipct.spec.expectation import ExpectNat

    name, _ = master_netns
    op = media(5000)
    op = dataclasses.replace(op, expectation=dataclasses.replace(op.expectation, nat=ExpectNat(1, B, 49170)))
    with ExpectationSocket(name) as ops:
        port = NetlinkPort(None, ops, "sip")  # type: ignore[arg-type] - no queue: ctnetlink only
        try:
            apply(port, op, "sip")
        except NetlinkError as exc:
            if exc.code == errno.EINVAL:
                pytest.skip("no expectfn \"sip\" in this kernel (nf_nat_sip not loaded)")
            raise
        (got,) = ops.dump()
        assert got.fn == "sip"
        assert (got.nat.dir, got.nat.src, got.nat.sport) == (1, B, 49170)


def test_a_conntrack_update_sets_the_seqadj_record_and_reads_back(natted_master_netns) -> None:
    """The request the daemon sends for an IPv6 TCP rewrite, against the real
    ctnetlink: IPCTNL_MSG_CT_NEW on the existing master with CTA_HELP,
    CTA_TIMEOUT and CTA_SEQ_ADJ_REPLY (ctnetlink_change_conntrack() ->
    ctnetlink_change_seq_adj(), which does not ask the protocol), then a
    CT_GET reports the record back with IPS_SEQ_ADJUST (ctnetlink_dump_ct_seq_adj())."""
    from sipct.netlink.conntrack import IPS_SEQ_ADJUST, IPS_SRC_NAT, SeqAdj

    name, _ = natted_master_netns
    master = ConnTuple(A, B, 17, 5060, 5060)
    with ExpectationSocket(name) as ops:
        before = ops.conntrack(master)
        assert before is not None and before.status & IPS_SRC_NAT and before.seq_adj is None
        record = SeqAdj(3_000_000_001, 0, -7)
        ops.update_conntrack(master, timeout=1234, helper="sip", seq_adj={True: record})
        after = ops.conntrack(master)
        assert after.status & IPS_SEQ_ADJUST
        assert after.seq_adj == (SeqAdj(), record)
        assert 1230 <= after.timeout <= 1234


def test_a_conntrack_update_of_no_conntrack_is_enoent(master_netns) -> None:
    """What the executor hands to HelperCore.update_failed(): ENOENT, explained."""
    import errno

    from pyroute2.netlink.exceptions import NetlinkError

    from sipct.netlink.conntrack import SeqAdj

    name, _ = master_netns
    with ExpectationSocket(name) as ops:
        with pytest.raises(NetlinkError) as info:
            ops.update_conntrack(ConnTuple(A, B, 6, 5070, 5060), timeout=60, seq_adj={False: SeqAdj(1, 0, 3)})
        assert info.value.code == errno.ENOENT
        assert "no confirmed conntrack with that original tuple" in str(info.value)
