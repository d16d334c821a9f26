"""docs/reference-nat.rst against a real Debian kernel: the shipped firewall,
configuration and helper table in a 6.1.192 guest (vm_nat_guest.py), with
``sipct helper --check`` before and after ``modprobe nf_nat_sip``, a
registration and a call through the masquerade, and RTP that gets in only
through the helper's NAT expectation.

The running kernel has no nfnetlink_cthelper, so this needs a VM:
``pytest -m vm tests/reference/test_vm_nat_deployment.py`` (one boot).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (the guest builds network namespaces as root)"),
]

HERE = Path(__file__).resolve().parent
RELEASE = "6.1.0-56-amd64"  # linux-image-6.1.0-56-amd64 (6.1.192)
TIMEOUT = 900.0

# The guide's modules-load.d list but nf_nat_sip, which the guest loads between the two checks.
DEPLOYMENT_MODULES = ("nf_tables", "nft_ct", "nft_masq", "nf_conntrack_netlink", "nfnetlink_queue",
                      "nfnetlink_cthelper")


@pytest.fixture(scope="module")
def deployment(request: pytest.FixtureRequest) -> dict:
    """vm_nat_guest.py in one boot of 6.1.192."""
    from tests.support.vm_guest import guest_result, installed_kernel, vm_selected

    if not vm_selected(request.config):
        pytest.skip("boots a VM (3-5 minutes under TCG): run `pytest -m vm tests/reference/test_vm_nat_deployment.py`")
    kernel = installed_kernel(RELEASE)
    with guest_result(kernel, HERE / "vm_nat_guest.py", DEPLOYMENT_MODULES, TIMEOUT, name="natdeploy",
                      keep_json="SIPCT_NATDEPLOY_JSON") as data:
        assert "error" not in data, data["error"]
        yield data


def _lines(out: str) -> dict[str, str]:
    lines = {}
    for line in out.splitlines():
        mark, _, rest = line.partition(" ")
        if mark in ("ok", "FAIL"):
            what, _, detail = rest.strip().partition(": ")
            lines[what] = f"{mark} {detail}"
    return lines


def test_the_guest_is_debian_6_1_without_nf_nat_sip_at_first(deployment: dict) -> None:
    assert deployment["uname"] == RELEASE
    assert deployment["missing_modules"] == []
    assert deployment["modules_before"] == []
    assert deployment["firewall"] == 0


def test_check_names_nf_nat_sip_until_it_is_loaded(deployment: dict) -> None:
    before, after = deployment["check_before"], deployment["check_after"]
    print(before["out"], after["out"], sep="\n")
    lines = _lines(before["out"])
    assert before["rc"] == 2, before
    assert [k for k, v in lines.items() if v.startswith("FAIL")] == ["nf_nat_sip"], lines
    assert "nat chain inet firewall postrouting" in lines["nf_nat_sip"]
    assert "`modprobe nf_nat_sip`" in lines["nf_nat_sip"]
    assert deployment["modprobe"] == 0
    assert after["rc"] == 0, after
    assert _lines(after["out"])["nf_nat_sip"].startswith("ok loaded")
    assert "all prerequisites hold" in after["out"]


def test_the_shipped_helper_table_loads_once_the_daemon_registered(deployment: dict) -> None:
    assert deployment["helper_table"]["rc"] == 0, deployment["helper_table"]
    assert "ready: profile" in deployment["log"]


def test_the_call_is_rewritten_for_the_outside(deployment: dict) -> None:
    register, ok, invite, answer = deployment["sip"]
    for got in (register, ok, invite, answer):
        assert got is not None, deployment["log"][-3000:]
    assert register["peer"] == ["203.0.113.1", 5060]
    assert "Contact: <sip:phone@203.0.113.1:5060>" in register["text"]
    assert "c=IN IP4 203.0.113.1" in invite["text"] and "192.0.2.10" not in invite["text"].split("\r\n\r\n")[1]
    assert "Via: SIP/2.0/UDP 192.0.2.10:5060" in answer["text"]  # back to the phone's view
    # The INVITE's offer: NAT expectations of the daemon's helper, with nf_nat_sip's expectfn.
    offer = [e for e in deployment["tables"][2] if e["dport"] == 31600]
    assert len(offer) == 1, deployment["tables"][2]
    assert (offer[0]["src"], offer[0]["dst"], offer[0]["helper"], offer[0]["fn"]) == (
        "203.0.113.5", "203.0.113.1", "sipct", "sip")
    assert offer[0]["nat"][1:] == ["192.0.2.10", 31600]


def test_rtp_gets_in_through_the_nat_expectation_and_keeps_its_port(deployment: dict) -> None:
    print(deployment.get("conntracks"))
    assert deployment["rtp_in"] == {"text": "\x80\x00\x00\x01rtp from the pbx", "peer": ["203.0.113.5", 6000]}
    assert deployment["rtp_out"] == {"text": "\x80\x00\x00\x01rtp from the phone", "peer": ["203.0.113.1", 31600]}
    assert not [e for e in deployment["table_after_rtp"] if e["dport"] == 31600]  # used


def test_the_daemon_stops_cleanly(deployment: dict) -> None:
    assert deployment["exit"] == 0, deployment["log"][-3000:]
    for bad in ("error", "Traceback", "refused"):
        assert bad not in deployment["log"], deployment["log"][-3000:]
