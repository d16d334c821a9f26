"""The router's drop log: a logged drop ends a step's wait at once, and only the wait of its own packet."""

import os
import select
import shutil
import time
from ipaddress import ip_address

import pytest

from sipct.harness.diff import compare
from sipct.harness.droplog import SentPacket
from sipct.harness.lab import HostSpec, Lab
from sipct.harness.run import DialogRunner
from sipct.harness.wire import LAB_WIRE
from sipct.spec.dialog import parse_dialog
from sipct.spec.expectation import IPPROTO_TCP, IPPROTO_UDP
from sipct.spec.predict import predict
from sipct.spec.rules import REQUEST_NO_CSEQ

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(shutil.which("nft") is None, reason="needs nft (apt-get install nftables)"),
]

# A REGISTER without CSeq: process_sip_request() drops it, "cannot parse cseq" (rule request.no-cseq).
NO_CSEQ = b"""REGISTER sip:198.51.100.2 SIP/2.0\r
Via: SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bKnocseq\r
To: <sip:bob@198.51.100.2>\r
From: <sip:bob@198.51.100.2>;tag=1\r
Call-ID: nocseq@192.0.2.2\r
Contact: <sip:bob@192.0.2.2:5060>\r
Content-Length: 0\r
\r
"""
GOOD = NO_CSEQ.replace(b"Content-Length", b"CSeq: 1 REGISTER\r\nContent-Length").replace(b"nocseq", b"good")

DIALOG = """\
name: register-without-cseq
transport: %s
hosts:
  ua: 192.0.2.2
  registrar: 198.51.100.2
steps:
  - send: ua:5060 -> registrar:5060
    message: |+
      REGISTER sip:{registrar.uri} SIP/2.0
      Via: SIP/2.0/%s {ua.uri}:5060;branch=z9hG4bKnocseq
      To: <sip:bob@{registrar.uri}>
      From: <sip:bob@{registrar.uri}>;tag=1
      Call-ID: nocseq@{ua}
      Contact: <sip:bob@{ua.uri}:5060>
      Content-Length: 0

    expect: {verdict: drop, rules: [request.no-cseq]}
"""
CONNECT = """\
  - connect: ua:5060 -> registrar:5060
"""

# Far longer than a step through the lab takes: a step that ends well before
# it was ended by the log, not by the time-out.
LONG = 5.0


def _dialog(proto: str):
    text = DIALOG % (proto, proto.upper())
    if proto == "tcp":
        head, steps = text.split("steps:\n")
        text = head + "steps:\n" + CONNECT + steps
    return parse_dialog(text, f"<{proto} register without CSeq>")


@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_a_logged_drop_is_not_delivered_with_the_kernels_reason_at_once(kernel, proto):
    dialog = _dialog(proto)
    prediction = predict(dialog, kernel.profile, kernel.params_for(dialog.params), wire=LAB_WIRE)
    with DialogRunner(drop_timeout=LONG) as runner:
        started = time.monotonic()
        run = runner.run(dialog, (5060,), [s.delivered for s in prediction.steps], predicted=prediction.steps)
        took = time.monotonic() - started
    comparison = compare(prediction, run, kernel.release)
    assert comparison.agree, [(s.index, v) for s in comparison.steps for v in s.divergences]
    last = run.steps[-1]
    assert last.delivered is False and last.data is None
    assert last.dropped == REQUEST_NO_CSEQ.log
    assert took < LONG / 5, f"the dialog took {took:.2f} s: the time-out, not the log, ended the wait"


@pytest.fixture()
def lab():
    with Lab([HostSpec("ua", (ip_address("192.0.2.2"),)), HostSpec("registrar", (ip_address("198.51.100.2"),))],
             timeout=LONG) as lab:
        if lab.drops is None:
            pytest.skip(f"no drop log: {lab.drops_unavailable}")
        yield lab


def _log_arrives(lab, seconds=LONG):
    """Wait for the drop log to have something to read (the dropped packet's log)."""
    poller = select.poll()
    poller.register(lab.drops.fileno(), select.POLLIN)
    assert poller.poll(int(seconds * 1000)), "the kernel logged nothing"


def test_another_packets_log_does_not_end_the_wait(lab):
    ua = lab.address("ua")
    # The drop log watches for GOOD; the packet the kernel drops is NO_CSEQ, from the same socket.
    lab.drops.expect(SentPacket(IPPROTO_UDP, (str(ua), 5060), ("198.51.100.2", 5060), GOOD))
    lab._driver.udp_socket("ua", 4, 5060).sendto(NO_CSEQ, ("198.51.100.2", 5060))
    _log_arrives(lab)
    assert lab.drops.dropped() is None
    # The same log, watched for, says why.
    lab.drops.expect(SentPacket(IPPROTO_UDP, (str(ua), 5060), ("198.51.100.2", 5060), NO_CSEQ))
    lab._driver.udp_socket("ua", 4, 5060).sendto(NO_CSEQ, ("198.51.100.2", 5060))
    _log_arrives(lab)
    assert lab.drops.dropped() == "cannot parse cseq"


def test_a_straggling_log_is_discarded_when_the_next_step_starts(lab):
    lab._driver.udp_socket("ua", 4, 5060).sendto(NO_CSEQ, ("198.51.100.2", 5060))
    _log_arrives(lab)
    # The same bytes from the same socket, now to an address the router has no route for: the router drops
    # them before any helper sees them, so nothing is logged and only the time-out ends the wait - the log
    # of the earlier packet, queued when this send starts, must not.
    started = time.monotonic()
    delivery = lab.udp_send("ua", 5060, "registrar", 5060, NO_CSEQ, timeout=0.3, to=("203.0.113.99", 5060))
    assert (delivery.delivered, delivery.dropped) == (False, None)
    assert time.monotonic() - started >= 0.3


def test_a_logged_drop_ends_a_send_and_keeps_its_reason(lab):
    started = time.monotonic()
    delivery = lab.udp_send("ua", 5060, "registrar", 5060, NO_CSEQ)
    assert (delivery.delivered, delivery.dropped) == (False, "cannot parse cseq")
    assert time.monotonic() - started < LONG / 5


def test_sent_packets_match_their_own_logs_only():
    from sipct.reference.packet import build_packet

    ua, registrar, router = ip_address("192.0.2.2"), ip_address("198.51.100.2"), ip_address("198.51.100.1")
    sent = SentPacket(IPPROTO_UDP, ("192.0.2.2", 5060), ("198.51.100.2", 5060), NO_CSEQ)
    assert sent.is_logged(build_packet(ua, 5060, registrar, 5060, IPPROTO_UDP, NO_CSEQ))
    # Source NAT rewrote the sender's end, destination NAT the dialled one: one unchanged end is enough.
    assert sent.is_logged(build_packet(router, 1024, registrar, 5060, IPPROTO_UDP, NO_CSEQ))
    assert sent.is_logged(build_packet(ua, 5060, router, 5080, IPPROTO_UDP, NO_CSEQ))
    assert not sent.is_logged(build_packet(router, 1024, router, 5080, IPPROTO_UDP, NO_CSEQ))
    assert not sent.is_logged(build_packet(ua, 5060, registrar, 5060, IPPROTO_UDP, GOOD))
    assert not sent.is_logged(build_packet(ua, 5060, registrar, 5060, IPPROTO_TCP, NO_CSEQ))
    # nfnetlink_log copies at most NFULNL_COPY_RANGE_MAX bytes: a cut packet is no proof.
    assert not sent.is_logged(build_packet(ua, 5060, registrar, 5060, IPPROTO_UDP, NO_CSEQ)[:-1])
    assert not sent.is_logged(b"")
