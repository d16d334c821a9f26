"""Fixtures for the VM tests: kernels booted with virtme-ng under QEMU (TCG).

Without vng/QEMU or the kernel image the tests skip, saying what to run
(scripts/setup-kernels.sh).  A boot takes a minute or more, so the default
`pytest` run boots 6.1.192 only for two tests: `sipct run --kernel` on two
examples (one boot) and a small kernel matrix (`sipct conformance --kernel`:
the curated dialogs and 10 generated ones, three boots - default parameters,
conformance/scenarios/params/ (~3 min alone), sip_direct_media=0 - ~6 minutes; CI installs
the kernel with `scripts/setup-kernels.sh linux-image-6.1.0-56-amd64`). tests/reference
boots it once more by default, for the three-way suite (spec, kernel helper,
reference helper).
Tests that need more boots run only when the vm marker is selected
explicitly (`pytest -m vm tests/vm`).
"""

from __future__ import annotations

import pytest

from sipct.harness.vmboot import VmResult, find_vng
from sipct.harness.vmkernels import VmError, VmKernel

KERNEL_6_1_192 = "/boot/vmlinuz-6.1.0-56-amd64"  # linux-image-6.1.0-56-amd64 (6.1.192)
SETUP = "run `scripts/setup-kernels.sh linux-image-6.1.0-56-amd64` as root"

_boots: list[tuple[str, VmResult]] = []


def vm_selected(config: pytest.Config) -> bool:
    """Was the vm marker asked for (``-m vm``, ``-m "vm and ..."``)?"""
    expr = config.getoption("markexpr", "") or ""
    return "vm" in expr.replace("not vm", "")


@pytest.fixture(scope="session")
def vng() -> None:
    try:
        find_vng()
    except VmError as exc:
        pytest.skip(f"{exc} ({SETUP})")


@pytest.fixture(scope="session")
def kernel_6_1_192(vng: None) -> VmKernel:
    try:
        return VmKernel.from_path(KERNEL_6_1_192)
    except VmError as exc:
        pytest.skip(f"{exc} ({SETUP})")


@pytest.fixture
def second_boot(request: pytest.FixtureRequest) -> None:
    """Skip unless the vm tests were selected: the default run boots once."""
    if not vm_selected(request.config):
        pytest.skip("boots another VM (a minute or more): run `pytest -m vm tests/vm`")


@pytest.fixture(scope="session")
def record_boot():
    def record(label: str, result: VmResult) -> VmResult:
        _boots.append((label, result))
        return result
    return record


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not _boots:
        return
    terminalreporter.section("VM boots (wall time)")
    for label, r in _boots:
        t = r.timing()
        dialogs = ", ".join(
            f"{d['dialog']} {max((s['kernel']['elapsed'] for s in d.get('steps', [])), default=0):.1f}s"
            for d in r.results)
        terminalreporter.write_line(
            f"{label}: {r.kernel} boot {t['boot']}s, sipct {t['sipct']}s, total {t['total']}s; "
            f"dialogs (own run time): {dialogs}")
