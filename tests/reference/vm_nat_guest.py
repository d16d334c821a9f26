"""Runs inside a VM guest (root, the host's root filesystem, a Debian
kernel with modules): docs/reference-nat.rst's deployment, as shipped.

    python vm_nat_guest.py OUT

Three namespaces: a phone (192.0.2.10) behind a router whose lan0 and wan0
are veths, a PBX (203.0.113.5) outside. In the router, the steps of the
guide: the firewall (reference/examples/nftables-nat.conf), ``sipct helper
--check`` before and after ``modprobe nf_nat_sip``, the daemon with the
shipped configuration, then the shipped helper table, unchanged; then a
registration and a call (spec/examples/nat-masquerade-call.yaml's messages)
and RTP that the PBX sends first, so that it gets in only through the
helper's NAT expectation and the firewall's ``ct state related``.

Everything is printed as one JSON object on stdout.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "reference" / "examples"
ROUTER, PHONE, PBX = "nat-router", "nat-phone", "nat-pbx"
WAIT = 20.0  # seconds for a datagram: every SIP message is a trip through the daemon under TCG


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=120)


def build() -> None:
    for ns in (ROUTER, PHONE, PBX):
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh("ip", "-n", ROUTER, "link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", PHONE)
    sh("ip", "-n", ROUTER, "link", "add", "wan0", "type", "veth", "peer", "name", "eth0", "netns", PBX)
    for ns, dev, addr in ((ROUTER, "lan0", "192.0.2.1/24"), (ROUTER, "wan0", "203.0.113.1/24"),
                          (PHONE, "eth0", "192.0.2.10/24"), (PBX, "eth0", "203.0.113.5/24")):
        sh("ip", "-n", ns, "addr", "add", addr, "dev", dev)
        sh("ip", "-n", ns, "link", "set", dev, "up")
    sh("ip", "-n", PHONE, "route", "add", "default", "via", "192.0.2.1")
    sh("ip", "netns", "exec", ROUTER, "sysctl", "-qw", "net.ipv4.ip_forward=1")


def udp(ns: str, addr: str, port: int) -> socket.socket:
    from sipct.netlink.netns import entered_netns

    with entered_netns(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((addr, port))
    sock.settimeout(WAIT)
    return sock


def receive(sock: socket.socket) -> tuple[str, tuple[str, int]] | None:
    try:
        data, peer = sock.recvfrom(65535)
    except TimeoutError:
        return None
    return data.decode("latin-1"), peer  # RTP is bytes; each byte one code point


def table(netns: str) -> list[dict]:
    from sipct.netlink.socket import CtExpSocket

    with CtExpSocket(netns) as ctexp:
        return [{"src": str(e.tuple.src), "dst": str(e.tuple.dst), "dport": e.tuple.dport, "class": e.klass,
                 "flags": sorted(e.flags), "helper": e.helper, "fn": e.fn,
                 "nat": None if e.nat is None else [e.nat.dir, str(e.nat.src), e.nat.sport]}
                for e in ctexp.dump()]


def main(out: Path) -> dict:
    from sipct.harness.threeway import ReferenceDaemon
    from sipct.spec.dialog import load_dialog

    sipct = str(Path(sys.executable).parent / "sipct")
    config = EXAMPLES / "sipct-helper-nat.toml"
    result: dict = {"modules_before": sorted(m for m in ("nf_nat_sip", "nf_conntrack_sip")
                                             if Path(f"/sys/module/{m}").exists())}
    build()
    result["firewall"] = sh("ip", "netns", "exec", ROUTER, "nft", "-f", str(EXAMPLES / "nftables-nat.conf"),
                            check=False).returncode
    for when in ("before", "after"):
        if when == "after":
            result["modprobe"] = sh("modprobe", "nf_nat_sip", check=False).returncode
        proc = sh(sipct, "helper", "--config", str(config), "--netns", ROUTER, "--check", check=False)
        result[f"check_{when}"] = {"rc": proc.returncode, "out": proc.stdout, "err": proc.stderr}

    daemon = ReferenceDaemon(ROUTER, config, out / "helper.log")
    daemon.start()
    result["ready_seconds"] = round(daemon.ready_seconds or 0.0, 1)
    try:
        proc = sh("ip", "netns", "exec", ROUTER, "nft", "-f", str(EXAMPLES / "sipct-helper-nat.nft"), check=False)
        result["helper_table"] = {"rc": proc.returncode, "err": proc.stderr}
        dialog = load_dialog(ROOT / "spec" / "examples" / "nat-masquerade-call.yaml")
        phone_sip, pbx_sip = udp(PHONE, "192.0.2.10", 5060), udp(PBX, "203.0.113.5", 5060)
        result["sip"] = []
        for step in dialog.steps[:4]:  # REGISTER, 200 OK, INVITE, 200 OK
            if step.src.host == "phone":
                phone_sip.sendto(step.payload, ("203.0.113.5", 5060))
                got = receive(pbx_sip)
            else:
                pbx_sip.sendto(step.payload, ("203.0.113.1", 5060))
                got = receive(phone_sip)
            result["sip"].append(None if got is None else {"text": got[0], "peer": list(got[1])})
            result.setdefault("tables", []).append(table(ROUTER))
        phone_rtp, pbx_rtp = udp(PHONE, "192.0.2.10", 31600), udp(PBX, "203.0.113.5", 6000)
        pbx_rtp.sendto(b"\x80\x00\x00\x01rtp from the pbx", ("203.0.113.1", 31600))
        got = receive(phone_rtp)
        result["rtp_in"] = None if got is None else {"text": got[0], "peer": list(got[1])}
        phone_rtp.sendto(b"\x80\x00\x00\x01rtp from the phone", ("203.0.113.5", 6000))
        got = receive(pbx_rtp)
        result["rtp_out"] = None if got is None else {"text": got[0], "peer": list(got[1])}
        result["table_after_rtp"] = table(ROUTER)
        result["conntracks"] = sh("ip", "netns", "exec", ROUTER, "conntrack", "-L", check=False).stdout \
            if Path("/usr/sbin/conntrack").exists() else None
    finally:
        result["exit"] = daemon.stop()
        result["log"] = daemon.log_tail(20000)
    return result


if __name__ == "__main__":
    out = Path(sys.argv[1])
    try:
        data = main(out)
    except Exception:
        data = {"error": traceback.format_exc()}
    json.dump(data, sys.stdout, indent=1)
    sys.stdout.flush()
    os._exit(0)
