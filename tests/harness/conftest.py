"""Fixtures of the harness tests that run dialogs through the running kernel."""

from __future__ import annotations

import pytest

from sipct.netlink.kernel import RunningKernel
from sipct.harness.run import DialogRunner


@pytest.fixture(scope="module")
def kernel() -> RunningKernel:
    return RunningKernel.detect()


@pytest.fixture(scope="module")
def runner():
    """One lab for a module's dialogs (DialogRunner builds it lazily)."""
    with DialogRunner() as r:
        yield r
