"""Fixtures for the netns lab tests.

Tests marked `netns` need root and a kernel with netns, veth, nftables, the
SIP helper and ctnetlink.  Without root they are skipped; any other missing
prerequisite is an error with the fix in its message, so a badly set-up CI
machine cannot pass by skipping.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sipct.harness.lab import Lab
from sipct.harness.prereq import PrerequisiteError, check_prerequisites

from tests.support.lab import SERVER, UA, own_namespaces


@pytest.fixture(scope="session")
def netns_prerequisites() -> None:
    try:
        check_prerequisites()
    except PrerequisiteError as exc:
        if exc.missing == "root":
            pytest.skip(str(exc))
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(autouse=True)
def _netns_marked(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("netns") is not None:
        request.getfixturevalue("netns_prerequisites")


@pytest.fixture(autouse=True, scope="session")
def _no_namespace_left_behind() -> Iterator[None]:
    yield
    assert own_namespaces() == [], "a lab namespace outlived the test session"


@pytest.fixture(scope="module")
def lab(netns_prerequisites: None) -> Iterator[Lab]:
    """ua (192.0.2.2, 2001:db8:1::2) and server (198.51.100.2, 2001:db8:2::2)
    on both sides of a router with the SIP helper on port 5060."""
    with Lab([UA, SERVER]) as lab:
        yield lab


@pytest.fixture
def clean_lab(lab: Lab) -> Lab:
    lab.reset()
    return lab
