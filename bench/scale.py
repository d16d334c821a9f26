"""Cost as work grows: the spec core and the reference core with 1k, 10k and
100k concurrent masters.

At each size the helper is first filled with that many masters, as a busy
registrar-facing firewall holds them: every master has a call up (INVITE and
200 OK with SDP: four media expectations, RTP and RTCP each way) and one in
ten also a registration (REGISTER and 200 OK: one signalling expectation).
Then the same probe - 2,000 more calls of four messages (INVITE+SDP, 200+SDP,
ACK, BYE) on masters of their own - is timed. A per-packet cost that does not
grow with the population means no look-up or scan walks the masters or the
expectation table per packet (the kernel hashes both:
nf_conntrack_find_get(), __nf_ct_expect_find()).

Memory is what tracemalloc counts, in fillings of their own (tracing slows
every allocation down): a master's from as many masters that only saw an
OPTIONS request (a conntrack, its helper data, no expectation), an
expectation's from the filling above less its masters, divided by its
expectations.

The global expectation limit (nf_conntrack_expect_max, 4,096 by default) is
raised to fit, so that every expectation is really held; the per-master
policy (sip_exp_policy[]) stays, and each call is at its limit of two
expectations per media class.

Rates are CPU time of this process; the figure to read is the ratio of the
largest size's per-packet time to the smallest's, measured in one run.
Usage: .venv/bin/python bench/scale.py [--sizes 1000,10000,100000] [--probe 2000] [--reference]
"""

from __future__ import annotations

import argparse
import gc
import re
import socket
import sys
import time
import tracemalloc
from ipaddress import IPv4Address
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import call_dialog  # noqa: E402

from sipct.spec.expectation import ConnTuple  # noqa: E402
from sipct.spec.helper import Packet, SipHelper  # noqa: E402
from sipct.spec.params import ModuleParams  # noqa: E402
from sipct.spec.profiles import DEFAULT_PROFILE, HARDENED_6_1_192  # noqa: E402

SERVER = IPv4Address("198.51.100.2")
REGISTRAR = IPv4Address("203.0.113.2")
PORTS = [p for p in range(1024, 65536, 2) if p != 5060]  # a UA's SIP port; its media ports derived below

REGISTER = (
    "REGISTER sip:{registrar} SIP/2.0\r\n"
    "Via: SIP/2.0/UDP {ua}:{port};branch=z9hG4bK{n}\r\n"
    "From: <sip:u{n}@{registrar}>;tag={n}\r\nTo: <sip:u{n}@{registrar}>\r\n"
    "Call-ID: r{n}@{ua}\r\nCSeq: 1 REGISTER\r\n"
    "Contact: <sip:u{n}@{ua}:{port}>;expires=3600\r\nContent-Length: 0\r\n\r\n")
REGISTER_OK = (
    "SIP/2.0 200 OK\r\n"
    "Via: SIP/2.0/UDP {ua}:{port};branch=z9hG4bK{n}\r\n"
    "From: <sip:u{n}@{registrar}>;tag={n}\r\nTo: <sip:u{n}@{registrar}>;tag=r\r\n"
    "Call-ID: r{n}@{ua}\r\nCSeq: 1 REGISTER\r\n"
    "Contact: <sip:u{n}@{ua}:{port}>;expires=3600\r\nContent-Length: 0\r\n\r\n")


def ua_of(n: int) -> tuple[IPv4Address, int]:
    """Master n's UA: 192.0.2.2-254, a port of its own on that address."""
    per_address = len(PORTS)
    return IPv4Address("192.0.2.2") + n // per_address, PORTS[n % per_address]


def call_payloads() -> list[tuple[bool, bytes]]:
    """The bench call's four messages as templates: (from the UA?, payload)."""
    dialog = call_dialog()
    ua = dialog.hosts["ua"]
    return [(dialog.hosts[s.src.host] == ua, s.payload) for s in dialog.steps]


def call_packets(template: list[tuple[bool, bytes]], n: int) -> list[Packet]:
    """Master n's call: the UA's address and port in the headers, its media
    ports (and the server's) its own, so no two calls expect the same media."""
    ua, port = ua_of(n)
    out = []
    for from_ua, payload in template:
        data = re.sub(rb"m=audio \d+", b"m=audio %d" % port, payload.replace(b"192.0.2.2", str(ua).encode()))
        head, sep, body = data.partition(b"\r\n\r\n")
        data = re.sub(rb"Content-Length: \d+", b"Content-Length: %d" % len(body), head) + sep + body
        if from_ua:
            out.append(Packet(ua, port, SERVER, 5060, socket.IPPROTO_UDP, data))
        else:
            out.append(Packet(SERVER, 5060, ua, port, socket.IPPROTO_UDP, data))
    return out


def register_packets(n: int) -> list[Packet]:
    ua, port = ua_of(n)
    fields = {"registrar": REGISTRAR, "ua": ua, "port": port, "n": n}
    return [Packet(ua, port, REGISTRAR, 5060, socket.IPPROTO_UDP, REGISTER.format(**fields).encode()),
            Packet(REGISTRAR, 5060, ua, port, socket.IPPROTO_UDP, REGISTER_OK.format(**fields).encode())]


OPTIONS = ("OPTIONS sip:{server} SIP/2.0\r\nVia: SIP/2.0/UDP {ua}:{port};branch=z9hG4bK{n}\r\n"
           "From: <sip:u{n}@{ua}>;tag={n}\r\nTo: <sip:{server}>\r\nCall-ID: o{n}@{ua}\r\n"
           "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")


def bare_masters(size: int) -> list[Packet]:
    """A master each, with no expectation: an OPTIONS request."""
    out = []
    for n in range(size):
        ua, port = ua_of(n)
        data = OPTIONS.format(server=SERVER, ua=ua, port=port, n=n).encode()
        out.append(Packet(ua, port, SERVER, 5060, socket.IPPROTO_UDP, data))
    return out


def population(size: int) -> list[Packet]:
    template = call_payloads()
    packets: list[Packet] = []
    for n in range(size):
        packets += call_packets(template, n)[:2]  # INVITE, 200 OK: the call is up
        if n % 10 == 0:
            packets += register_packets(n)
    return packets


def probe(size: int, calls: int) -> list[Packet]:
    template = call_payloads()
    return [p for n in range(size, size + calls) for p in call_packets(template, n)]


# --- the spec core ---------------------------------------------------------------------------
def fill_spec(size: int, packets: list[Packet]) -> SipHelper:
    helper = SipHelper(params=ModuleParams(expect_max=8 * size + 10_000), profile=DEFAULT_PROFILE)
    for pkt in packets:
        assert helper.packet(pkt, 0.0).accepted
    return helper


def time_spec(helper: SipHelper, packets: list[Packet]) -> float:
    gc.collect()
    started = time.process_time()
    for pkt in packets:
        helper.packet(pkt, 1.0)
    return (time.process_time() - started) / len(packets)


# --- the reference core ----------------------------------------------------------------------
def queued(packets: list[Packet]) -> list:
    """The packets as the kernel would queue them for the reference helper:
    each master's first packet twice (unconfirmed, then confirmed after
    NF_REPEAT), the others on an established conntrack."""
    from sipct.netlink.conntrack import (IP_CT_ESTABLISHED, IP_CT_ESTABLISHED_REPLY, IP_CT_NEW,
                                                   IPS_CONFIRMED, IPS_SEEN_REPLY, KernelConntrack)
    from sipct.netlink.nfqueue import ETH_P_IP, QueuedPacket
    from sipct.reference.packet import build_packet

    out = []
    ids: dict[ConnTuple, int] = {}
    for pkt in packets:
        forward = ConnTuple(pkt.src, pkt.dst, pkt.proto, pkt.sport, pkt.dport)
        original = forward if forward.reply() not in ids else forward.reply()
        data = build_packet(pkt.src, pkt.sport, pkt.dst, pkt.dport, pkt.proto, pkt.payload)
        if original not in ids:
            ids[original] = len(ids) + 1
            for status in (0, IPS_CONFIRMED):
                ct = KernelConntrack(socket.AF_INET, original, original.reply(), ids[original], status, 0,
                                     helper="sip", helper_info=bytes(12))
                out.append(QueuedPacket(0, socket.AF_INET, len(out), ETH_P_IP, 4, data, ct, IP_CT_NEW))
            continue
        reply = original != forward
        ct = KernelConntrack(socket.AF_INET, original, original.reply(), ids[original],
                             IPS_CONFIRMED | IPS_SEEN_REPLY, 3600, helper="sip", helper_info=bytes(12))
        out.append(QueuedPacket(0, socket.AF_INET, len(out), ETH_P_IP, 4, data, ct,
                                IP_CT_ESTABLISHED_REPLY if reply else IP_CT_ESTABLISHED))
    return out


def fill_reference(size: int, packets: list):
    from sipct.reference.core import HelperCore

    core = HelperCore(ModuleParams(expect_max=8 * size + 10_000), HARDENED_6_1_192)
    run_reference(core, packets, 0.0)
    return core


def run_reference(core, packets: list, now: float) -> None:
    for pkt in packets:
        decision = core.decide(pkt, now)
        assert decision.error is None, decision.error
        for op in decision.ops:
            core.applied(op)


def time_reference(core, packets: list) -> float:
    gc.collect()
    started = time.process_time()
    run_reference(core, packets, 1.0)
    return (time.process_time() - started) / len(packets)


def memory(fill, size: int, packets: list) -> tuple[int, object]:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    held = fill(size, packets)
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return used, held


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="masters, comma-separated")
    parser.add_argument("--probe", type=int, default=2000, help="calls timed at each size")
    parser.add_argument("--reference", action="store_true", help="the reference core too")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    cores = [("spec core", fill_spec, time_spec, lambda p: p)]
    if args.reference:
        cores.append(("reference core", fill_reference, time_reference, queued))
    for name, fill, timed, prepare in cores:
        per_packet = {}
        for size in sizes:
            filling, probing = prepare(population(size)), prepare(probe(size, args.probe))
            bare, held = memory(fill, size, prepare(bare_masters(size)))
            per_master = bare / len(shadow(held).masters())
            used, held = memory(fill, size, filling)
            masters, expectations = len(shadow(held).masters()), len(shadow(held).expectations())
            per_expectation = (used - masters * per_master) / expectations
            del held
            per_packet[size] = timed(fill(size, filling), probing)
            print(f"{name}, {size:>7,} calls up ({masters:,} masters, {expectations:,} expectations): "
                  f"{per_packet[size] * 1e6:6.1f} us a packet ({1 / per_packet[size]:,.0f} messages/s); "
                  f"{per_master:,.0f} bytes a master, {per_expectation:,.0f} bytes an expectation")
        smallest, largest = sizes[0], sizes[-1]
        print(f"{name}: per-packet time at {largest:,} / at {smallest:,} calls up = "
              f"{per_packet[largest] / per_packet[smallest]:.2f} (flat: about 1)")


def shadow(held) -> SipHelper:
    """The spec's state: the helper itself, or the reference core's shadow of the kernel."""
    return held if isinstance(held, SipHelper) else held.shadow


if __name__ == "__main__":
    main()
