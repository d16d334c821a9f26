"""check_prerequisites: one clear message, with the fix, per missing piece."""

from __future__ import annotations

import pytest
from sipct.harness import prereq
from sipct.harness.prereq import PrerequisiteError, check_prerequisites


def test_not_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prereq.os, "geteuid", lambda: 1000)
    with pytest.raises(PrerequisiteError, match="needs root") as info:
        check_prerequisites()
    assert info.value.missing == "root"


@pytest.mark.parametrize(
    ("tool", "fix"), [("nft", "apt-get install nftables"), ("ip", "apt-get install iproute2")]
)
def test_missing_tool(monkeypatch: pytest.MonkeyPatch, tool: str, fix: str) -> None:
    monkeypatch.setattr(prereq.os, "geteuid", lambda: 0)
    real_which = prereq.shutil.which
    monkeypatch.setattr(
        prereq.shutil, "which", lambda name: None if name == tool else real_which(name)
    )
    with pytest.raises(PrerequisiteError, match=fix) as info:
        check_prerequisites()
    assert info.value.missing == tool
    assert "\n" not in str(info.value)


@pytest.mark.netns
def test_this_machine_has_everything() -> None:
    check_prerequisites()


@pytest.mark.netns
def test_a_kernel_without_the_helper_is_named_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    # Ask nft for a helper type no kernel has: the same refusal a kernel
    # without nf_conntrack_sip gives for "sip".
    monkeypatch.setattr(
        prereq, "_SIP_HELPER_PROBE", prereq._SIP_HELPER_PROBE.replace('"sip"', '"nosuchhelper"')
    )
    with pytest.raises(PrerequisiteError) as info:
        check_prerequisites()
    assert info.value.missing == "sip-helper"
    assert "CONFIG_NF_CONNTRACK_SIP" in str(info.value)
    assert "modprobe nf_conntrack_sip" in str(info.value)
    assert "\n" not in str(info.value)
