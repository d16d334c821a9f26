"""Fixtures for the ctnetlink tests: a throw-away network namespace with the
kernel SIP helper attached to UDP port 5060, and SIP traffic inside it."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator

import pytest

from sipct.netlink.netns import entered_netns

# The helper is attached on output, before the conntrack is confirmed: the
# kernel runs ct helpers from nf_confirm() (postrouting / input).
RULESET = """
table inet t {
    ct helper sip-udp { type "sip" protocol udp; l3proto inet; }
    chain out {
        type filter hook output priority filter;
        udp dport 5060 ct helper set "sip-udp";
    }
}
"""

ADDRESSES = ("192.0.2.1/24", "192.0.2.2/24", "2001:db8::1/64", "2001:db8::2/64")


def _run(*argv: str, stdin: str | None = None) -> None:
    subprocess.run(argv, input=stdin, text=True, check=True, capture_output=True, timeout=30)


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh namespace with the documentation addresses on lo and the
    ruleset above; deleted afterwards whatever the test did."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs the `{tool}` command (Debian: apt-get install iproute2 nftables)")
    name = f"sipct-t{os.getpid()}-{secrets.token_hex(3)}"
    _run("ip", "netns", "add", name)
    try:
        _run("ip", "-n", name, "link", "set", "lo", "up")
        for addr in ADDRESSES:
            extra = ("nodad",) if ":" in addr else ()
            _run("ip", "-n", name, "addr", "add", addr, "dev", "lo", *extra)
        _run("ip", "netns", "exec", name, "nft", "-f", "-", stdin=RULESET)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True, timeout=30)


SendUdp = Callable[[str, str, bytes], None]


@pytest.fixture
def send_udp(netns: str) -> SendUdp:
    """send_udp(src, dst, payload): one datagram src:5060 -> dst:5060 from a
    socket made inside the test namespace."""

    def send(src: str, dst: str, payload: bytes) -> None:
        family = socket.AF_INET6 if ":" in src else socket.AF_INET
        with entered_netns(netns):
            sock = socket.socket(family, socket.SOCK_DGRAM)
        with sock:
            sock.bind((src, 5060))
            sock.sendto(payload, (dst, 5060))

    return send
