"""The reference core on fuzzed messages (sipct.conformance.fuzz), without a kernel.

Every message is queued as the kernel would queue it (a new master's first
packet on an unconfirmed conntrack, NF_REPEAT answered by the same packet on
the confirmed one) and decide() must never fall back to the failure policy:
an internal error would be a bug in the spec or the core, whatever the bytes.
The same messages through a real kernel: tests/reference/test_vm_fuzz.py.
"""

from __future__ import annotations

import socket

import pytest

from sipct.conformance.fuzz import Mutator, default_seeds
from sipct.conformance.fuzz_run import SERVER, UA, UA_PORTS, route
from sipct.reference.core import HelperCore
from sipct.netlink.conntrack import (IP_CT_ESTABLISHED, IP_CT_ESTABLISHED_REPLY, IP_CT_NEW, IPS_CONFIRMED,
                                               IPS_SEEN_REPLY, KernelConntrack)
from sipct.netlink.nfqueue import ETH_P_IP, ETH_P_IPV6, NF_REPEAT, QueuedPacket
from sipct.reference.packet import build_packet
from sipct.spec.expectation import IPPROTO_UDP, ConnTuple
from sipct.spec.params import ModuleParams
from sipct.spec.profiles import HARDENED_6_1_192, LEGACY_6_1_170


@pytest.mark.parametrize("profile", [HARDENED_6_1_192, LEGACY_6_1_170], ids=lambda p: p.name)
def test_fuzzed_messages_never_cause_an_internal_error(profile) -> None:
    mutator = Mutator(default_seeds(), 3)
    core = HelperCore(ModuleParams(expect_max=64), profile, helper_name="sipct")
    seen: set[ConnTuple] = set()
    for msg in mutator.messages(0, mutator.corpus_size + 1500):
        r = route(3, msg, tcp_share=0.0)
        ua, server, port = UA[r.family], SERVER[r.family], UA_PORTS[r.slot]
        original = ConnTuple(ua, server, IPPROTO_UDP, port, 5060)
        data = build_packet(server, 5060, ua, port, IPPROTO_UDP, msg.payload) if r.response else \
            build_packet(ua, port, server, 5060, IPPROTO_UDP, msg.payload)
        new = original not in seen
        seen.add(original)
        family = socket.AF_INET if r.family == 4 else socket.AF_INET6
        ctinfo = IP_CT_NEW if new else (IP_CT_ESTABLISHED_REPLY if r.response else IP_CT_ESTABLISHED)
        status = 0 if new else IPS_CONFIRMED | IPS_SEEN_REPLY
        info = None
        now = msg.index * 0.05
        for _ in range(8):
            ct = KernelConntrack(family, original, original.reply(), 100 + r.slot + 10 * r.family, status, 3600,
                                 helper="sipct", helper_info=info)
            decision = core.decide(QueuedPacket(0, family, msg.index, ETH_P_IP if r.family == 4 else ETH_P_IPV6,
                                                4, data, ct, ctinfo), now)
            assert decision.error is None, (msg.index, msg.seed, msg.mutations, decision.error)
            for op in decision.all_ops:
                core.applied(op)
            if decision.verdict != NF_REPEAT:
                break
            status, info = IPS_CONFIRMED, decision.helper_info
        else:
            pytest.fail(f"message {msg.index} was repeated forever")
    assert core.stats["errors"] == 0 and core.pending == 0
    assert core.stats["verdict.drop"] and core.stats["verdict.accept"] and core.stats["ops.create"]
