"""Runs inside a VM guest (root, the host's root filesystem): the reference
helper under faults and overload, in one lab, one daemon after the other.

    python vm_faults.py OUT

With sipct.harness.threeway's ReferenceRunner (the helper registered as
"sipct" next to nf_conntrack_sip, ``sipct helper`` in the lab's router
namespace), four phases:

``kill``
   A REGISTER (ua:5060) and an INVITE with SDP (ua:5070) go through the
   helper; the daemon is stopped (SIGSTOP) while three more packets wait in
   its queue, killed with SIGKILL, a packet is sent while no daemon runs, and
   the same command starts it again (as systemd's Restart= would). Then the
   REGISTER's 200 OK, the INVITE's 200 OK with SDP, RTP to an expectation made
   before the kill, ACK, BYE and a de-registration. SIGTERM at the end.
``enobufs``
   A daemon with ``helper.event_rcvbuf = 4096`` (8 KiB once the kernel doubled
   it); calls up, the daemon stopped (SIGSTOP: a daemon busy with something
   else), every expectation flushed at once (a burst of destroy events the
   socket cannot hold), SIGCONT; then more calls.
``overload-open`` / ``overload-closed``
   ``queue_maxlen = 16`` and a burst of INVITEs on new masters, sent as fast
   as one Python process sends them, then in the same daemon a steady load
   of at most PACED_RATE new calls a second (PACED_RATE * PACED_SECONDS of
   them): what the receiver got, what the kernel counted, what the daemon
   logged, its memory. After the fail-closed phase the daemon is killed once
   more and a call is sent while none runs.

The runner's close() stops the last daemon, removes the lab and unregisters
the helper; what the kernel holds afterwards closes the record. Everything is
printed as one JSON object on stdout.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

BURST = 300  # INVITEs on new masters in an overload burst
PACED_RATE, PACED_SECONDS = 200, 5.0  # then a steady load: INVITEs on new masters per second, for how long
BURST_MAXLEN = 16  # queue_maxlen of the overload phases
ENOBUFS_CALLS = 12  # calls (two audio expectations each) up before the flush
SMALL_RCVBUF = 4096  # helper.event_rcvbuf of the enobufs phase
DRAIN_LIMIT = 120.0  # seconds to wait for a queue to empty after a burst


def queue_lines(pid: int | str = "self") -> list[list[int]]:
    """/proc/PID/net/netfilter/nfnetlink_queue (the namespace of process PID): one list of numbers
    per bound queue (queue, port id, waiting, copy mode, copy range, queue_dropped,
    queue_user_dropped, last packet id, 1)."""
    text = Path(f"/proc/{pid}/net/netfilter/nfnetlink_queue").read_text()
    return [[int(f) for f in line.split()] for line in text.splitlines() if line.strip()]


def rss_kib(pid: int) -> int | None:
    try:
        m = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    except OSError:
        return None
    return int(m.group(1)) if m else None


def dmesg_count(text: str) -> int:
    out = subprocess.run(["dmesg"], capture_output=True, text=True, check=False).stdout
    return out.count(text)


def log_counts(text: str) -> dict[str, int]:
    patterns = {
        "lost_repeats": r"answered with NF_REPEAT did not come back",
        "queue_overflows": r"queue socket overflowed",
        "event_overflows": r"ctnetlink event socket overflowed \(ENOBUFS",
        "resyncs": r"resynchronised \(",
        "policy_verdicts": r"packet \d+: error:",
        "internal_errors": r"internal error",
        "refused_verdicts": r"the kernel refused a verdict",
        "tracebacks": r"Traceback",
        "refusals": r"the kernel refused (create|delete|timeout)",
    }
    return {k: len(re.findall(p, text)) for k, p in patterns.items()}


def main(out: Path) -> dict:
    from sipct.cli.main import examples_dir
    from sipct.harness.threeway import REFERENCE_HELPER, ReferenceDaemon, ReferenceRunner, helper_config
    from sipct.netlink.kernel import RunningKernel
    from sipct.netlink.netns import entered_netns
    from sipct.netlink.socket import CtExpSocket
    from sipct.reference.netlink.socket import HelperSocket
    from sipct.spec.dialog import load_dialog

    kernel = RunningKernel.detect()
    register = load_dialog(examples_dir() / "register.yaml")
    invite = load_dialog(examples_dir() / "invite-audio-video.yaml")
    result: dict = {"profile": kernel.profile.name, "release": os.uname().release,
                    "expect_max": int(Path("/proc/sys/net/netfilter/nf_conntrack_expect_max").read_text()),
                    "rmem_max": int(Path("/proc/sys/net/core/rmem_max").read_text())}
    base_config = helper_config(kernel.params, kernel.profile)

    def helpers() -> list[dict]:
        with HelperSocket() as control:
            return [{"name": h.name, "family": h.family_name, "proto": h.proto_name, "queue": h.queue_num,
                     "enabled": h.enabled} for h in control.helpers() if h.name == REFERENCE_HELPER]

    with ReferenceRunner([register, invite], kernel.params, kernel.profile, workdir=out) as runner, \
            contextlib.ExitStack() as stack:
        lab = runner.lab
        assert lab is not None and runner.daemon is not None
        ns = lab.router_netns
        names = {str(addr): host for host, spec in lab.hosts.items() for addr in spec.addresses}
        ua, server = names["192.0.2.2"], names["198.51.100.2"]
        ua_ip, server_ip = "192.0.2.2", "198.51.100.2"
        drv = lab._driver  # the lab's sockets: one per (host, port), shared with udp_send()
        ctexp = CtExpSocket(ns)
        stack.callback(ctexp.close)
        log = runner.log
        # A process that stays in the router namespace, so its queue counters can be read
        # (/proc/PID/net) quickly and also while no daemon runs.
        sleeper = subprocess.Popen(["ip", "netns", "exec", ns, "sleep", "3600"])
        stack.callback(sleeper.wait)
        stack.callback(sleeper.kill)
        time.sleep(0.5)
        qpid = sleeper.pid

        def table() -> list[list]:
            return sorted([str(e.tuple.dst), e.tuple.dport, sorted(e.flags), e.timeout, e.helper]
                          for e in ctexp.dump())

        def log_since(offset: int) -> str:
            return log.read_text(errors="replace")[offset:]

        def daemon_pid() -> int:
            assert runner.daemon is not None and runner.daemon.proc is not None
            pid = runner.daemon.proc.pid  # `ip netns exec` execs the command: this is sipct helper
            assert b"helper" in Path(f"/proc/{pid}/cmdline").read_bytes()
            return pid

        def restart(config_text: str, name: str) -> dict:
            path = out / f"{name}.toml"
            path.write_text(config_text)
            runner.daemon = ReferenceDaemon(ns, path, log)
            runner.daemon.start()
            return {"ready_seconds": round(runner.daemon.ready_seconds or 0.0, 1)}

        def stop_cleanly() -> dict:
            assert runner.daemon is not None
            code = runner.daemon.stop()
            return {"exit": code, "queues": queue_lines(qpid), "helpers": helpers()}

        def drain(sock: socket.socket) -> int:
            n = 0
            while True:
                try:
                    sock.recv(1 << 16, socket.MSG_DONTWAIT)
                    n += 1
                except BlockingIOError:
                    return n

        reg = [s for s in register.steps if hasattr(s, "segments")]
        inv = [s for s in invite.steps if hasattr(s, "segments")]
        hosts_of = {id(s): register.hosts for s in reg} | {id(s): invite.hosts for s in inv}

        def send_step(step, sport=None, dport=None, timeout=3.0) -> bool:
            hosts = hosts_of[id(step)]
            src, dst = names[str(hosts[step.src.host])], names[str(hosts[step.dst.host])]
            return lab.udp_send(src, sport or step.src.port, dst, dport or step.dst.port, step.payload,
                                timeout=timeout).delivered

        def options(port: int) -> bytes:
            return (f"OPTIONS sip:{server_ip} SIP/2.0\r\nVia: SIP/2.0/UDP {ua_ip}:{port};branch=z9hG4bK{port}\r\n"
                    f"From: <sip:a@{ua_ip}>;tag={port}\r\nTo: <sip:{server_ip}>\r\nCall-ID: opt{port}@{ua_ip}\r\n"
                    f"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()

        def invite_msg(port: int, media: int, cseq: int = 1) -> bytes:
            sdp = (f"v=0\r\no=a {port} {port} IN IP4 {ua_ip}\r\ns=-\r\nc=IN IP4 {ua_ip}\r\nt=0 0\r\n"
                   f"m=audio {media} RTP/AVP 0\r\n")
            return (f"INVITE sip:b@{server_ip} SIP/2.0\r\nVia: SIP/2.0/UDP {ua_ip}:{port};branch=z9hG4bK{port}\r\n"
                    f"From: <sip:a@{ua_ip}>;tag={port}\r\nTo: <sip:b@{server_ip}>\r\nCall-ID: c{port}@{ua_ip}\r\n"
                    f"CSeq: {cseq} INVITE\r\nContact: <sip:a@{ua_ip}:{port}>\r\nContent-Type: application/sdp\r\n"
                    f"Content-Length: {len(sdp)}\r\n\r\n{sdp}").encode()

        def wait_drained(started: float) -> tuple[int, float]:
            """Until the queue has been empty for 3 s (at most DRAIN_LIMIT): the most packets seen
            waiting, and the seconds from ``started`` until it emptied."""
            peak, quiet_since = 0, None
            deadline = time.monotonic() + DRAIN_LIMIT
            while time.monotonic() < deadline:
                lines = queue_lines(qpid)
                waiting = lines[0][2] if lines else 0
                peak = max(peak, waiting)
                if waiting == 0:
                    quiet_since = quiet_since or time.monotonic()
                    if time.monotonic() - quiet_since > 3.0:
                        break
                else:
                    quiet_since = None
                time.sleep(0.01)
            return peak, round((quiet_since or time.monotonic()) - started, 2)

        def ua_socket(port: int) -> socket.socket:
            """A UDP socket of the UA host bound to ``port`` (not the lab's: those stay open)."""
            with entered_netns(lab.host_netns[ua]):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((ua_ip, port))
            return sock

        rx = drv.udp_socket(server, 4, 5060)
        rx.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE: the receiver drops nothing itself
        lab.reset()
        ctexp.flush()

        # --- kill -9 in the middle of a registration and a call, then the same command again --------
        kill: dict = {"fail_policy": "open", "steps": {}}
        result["kill"] = kill
        st = kill["steps"]
        st["register"] = send_step(reg[0])
        st["invite"] = send_step(inv[0], sport=5070)
        kill["table_before"] = table()
        pid = daemon_pid()
        os.kill(pid, signal.SIGSTOP)
        drain(rx)
        for port in (5081, 5082, 5083):
            drv.udp_socket(ua, 4, port).sendto(options(port), (server_ip, 5060))
        time.sleep(1.0)
        kill["queue_while_stopped"] = queue_lines(qpid)
        kill["delivered_while_stopped"] = drain(rx)
        os.kill(pid, signal.SIGKILL)
        assert runner.daemon.proc is not None
        kill["killed_status"] = runner.daemon.proc.wait(10)
        runner.daemon.proc = None
        time.sleep(1.0)
        kill["queued_delivered_after_kill"] = drain(rx)
        kill["queue_after_kill"] = queue_lines(qpid)
        kill["helpers_after_kill"] = helpers()
        kill["table_after_kill"] = table()
        st["options_while_down"] = lab.udp_send(ua, 5084, server, 5060, options(5084), timeout=3.0).delivered
        kill["table_while_down"] = table()
        offset = len(log.read_text(errors="replace"))
        kill["restart"] = restart(base_config, "kill-restart")
        kill["restart_log"] = [line for line in log_since(offset).splitlines()
                               if "registered userspace helper" in line or "ready:" in line][:6]
        kill["queue_after_restart"] = queue_lines(qpid)
        kill["helpers_after_restart"] = helpers()
        st["register_200"] = send_step(reg[1])
        kill["table_after_register_200"] = table()
        st["invite_200"] = send_step(inv[1], dport=5070)
        kill["table_after_invite_200"] = table()
        st["rtp"] = lab.udp_send(server, 40000, ua, 5000, b"\x80\x00" + bytes(170), timeout=3.0).delivered
        kill["table_after_rtp"] = table()
        st["ack"] = send_step(inv[2], sport=5070)
        st["bye"] = send_step(inv[3], sport=5070)
        kill["table_after_bye"] = table()
        st["unregister"] = send_step(reg[2])
        st["unregister_200"] = send_step(reg[3])
        kill["table_after_unregister"] = table()
        kill["log"] = log_counts(log_since(offset))
        kill["stop"] = stop_cleanly()

        # --- ENOBUFS on the event socket -------------------------------------------------------------
        lab.reset()
        ctexp.flush()
        enobufs: dict = {"event_rcvbuf": SMALL_RCVBUF}
        result["enobufs"] = enobufs
        offset = len(log.read_text(errors="replace"))
        small = base_config.replace("[sip]\n", f"event_rcvbuf = {SMALL_RCVBUF}\n[sip]\n", 1)
        enobufs["restart"] = restart(small, "enobufs")
        enobufs["calls_delivered"] = sum(
            lab.udp_send(ua, 21000 + i, server, 5060, invite_msg(21000 + i, 31000 + 4 * i), timeout=3.0).delivered
            for i in range(ENOBUFS_CALLS))
        enobufs["expectations_before"] = len(table())
        pid = daemon_pid()
        os.kill(pid, signal.SIGSTOP)
        ctexp.flush()  # ctnetlink_del_expect() without a tuple: every expectation, one event each
        enobufs["expectations_after_flush"] = len(table())
        os.kill(pid, signal.SIGCONT)
        time.sleep(3.0)  # a housekeeping round (1 s) does the resynchronisation
        text = log_since(offset)
        enobufs["rcvbuf_line"] = next((l for l in text.splitlines() if "event socket: receive buffer" in l), "")
        enobufs["overflow_lines"] = [l for l in text.splitlines() if "ENOBUFS" in l]
        enobufs["resync_lines"] = [l for l in text.splitlines() if "resynchronised (" in l]
        # After the resynchronisation: a retransmitted INVITE of the first call (the shadow must
        # not believe its expectations still exist) and a new call.
        enobufs["retransmit_delivered"] = lab.udp_send(ua, 21000, server, 5060, invite_msg(21000, 31000),
                                                       timeout=3.0).delivered
        enobufs["new_call_delivered"] = lab.udp_send(ua, 21100, server, 5060, invite_msg(21100, 31400),
                                                     timeout=3.0).delivered
        enobufs["table_after"] = table()
        enobufs["log"] = log_counts(log_since(offset))
        enobufs["alive"] = runner.daemon.alive()
        enobufs["stop"] = stop_cleanly()

        # --- overload: a burst above the daemon's rate, fail-open then fail-closed ------------------
        for policy in ("open", "closed"):
            lab.reset()
            ctexp.flush()
            phase: dict = {"fail_policy": policy, "queue_maxlen": BURST_MAXLEN, "sent": BURST}
            result[f"overload-{policy}"] = phase
            offset = len(log.read_text(errors="replace"))
            text = base_config.replace('fail_policy = "open"', f'fail_policy = "{policy}"').replace(
                "[sip]\n", f"queue_maxlen = {BURST_MAXLEN}\n[sip]\n", 1)
            phase["restart"] = restart(text, f"overload-{policy}")
            pid = daemon_pid()
            phase["rss_kib_before"] = rss_kib(pid)
            phase["queue_before"] = queue_lines(qpid)
            full_before = dmesg_count("nf_queue: full at")
            drain(rx)
            senders = [ua_socket(22000 + i) for i in range(BURST)]
            payloads = [invite_msg(22000 + i, 40000 + 2 * i) for i in range(BURST)]
            started = time.monotonic()
            for sock, payload in zip(senders, payloads):
                sock.sendto(payload, (server_ip, 5060))
            phase["send_seconds"] = round(time.monotonic() - started, 3)
            for sock in senders:
                sock.close()
            phase["peak_waiting"], phase["drain_seconds"] = wait_drained(started)
            phase["delivered"] = drain(rx)
            phase["queue_after"] = queue_lines(qpid)
            phase["rss_kib_after"] = rss_kib(pid)
            exps = table()
            phase["expectations"] = len(exps)
            phase["calls_with_media"] = len({p // 2 for _, p, *_ in exps if 40000 <= p < 40000 + 2 * BURST})
            phase["dmesg_full"] = dmesg_count("nf_queue: full at") - full_before
            phase["log"] = log_counts(log_since(offset))
            # A steady load above the daemon's rate, in the same daemon: PACED_RATE new calls a second.
            lab.reset()
            ctexp.flush()
            paced: dict = {"rate": PACED_RATE, "seconds": PACED_SECONDS}
            phase["paced"] = paced
            count = int(PACED_RATE * PACED_SECONDS)
            q0 = queue_lines(qpid)
            full_before = dmesg_count("nf_queue: full at")
            offset = len(log.read_text(errors="replace"))
            payloads = [invite_msg(24000 + i, 50000 + 2 * i) for i in range(count)]
            drain(rx)
            started = time.monotonic()
            peak = 0
            for i, payload in enumerate(payloads):
                delay = started + i / PACED_RATE - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                with ua_socket(24000 + i) as sock:
                    sock.sendto(payload, (server_ip, 5060))
                if i % 10 == 0:
                    lines = queue_lines(qpid)
                    peak = max(peak, lines[0][2] if lines else 0)
            paced["sent"] = count
            paced["send_seconds"] = round(time.monotonic() - started, 2)
            peak_after, paced["drain_seconds"] = wait_drained(started)
            paced["peak_waiting"] = max(peak, peak_after)
            paced["delivered"] = drain(rx)
            paced["queue_before"], paced["queue_after"] = q0, queue_lines(qpid)
            paced["rss_kib_after"] = rss_kib(pid)
            exps = table()
            paced["expectations"] = len(exps)
            paced["calls_with_media"] = len({p // 2 for _, p, *_ in exps if 50000 <= p < 50000 + 2 * count})
            paced["dmesg_full"] = dmesg_count("nf_queue: full at") - full_before
            paced["log"] = log_counts(log_since(offset))
            phase["alive"] = runner.daemon.alive()
            if policy == "closed":
                # kill -9 once more, with packets waiting (the kernel drops them whatever the
                # policy), then with no listener a packet bypasses the queue whatever the policy
                os.kill(pid, signal.SIGSTOP)
                drain(rx)
                for port in (5091, 5092, 5093):
                    drv.udp_socket(ua, 4, port).sendto(options(port), (server_ip, 5060))
                time.sleep(1.0)
                phase["queue_while_stopped"] = queue_lines(qpid)
                os.kill(pid, signal.SIGKILL)
                assert runner.daemon.proc is not None
                phase["killed_status"] = runner.daemon.proc.wait(10)
                runner.daemon.proc = None
                time.sleep(1.0)
                phase["queued_delivered_after_kill"] = drain(rx)
                phase["queue_after_kill"] = queue_lines(qpid)
                phase["invite_while_down"] = lab.udp_send(ua, 23000, server, 5060, invite_msg(23000, 45000),
                                                          timeout=3.0).delivered
                phase["media_while_down"] = [e for e in table() if e[1] in (45000, 45001)]
                phase["restart_after_kill"] = restart(base_config, "final")
            else:
                phase["stop"] = stop_cleanly()
        result["final_log"] = log.read_text(errors="replace")[-4000:]
    result["after_close"] = {"queues": queue_lines(), "helpers": helpers()}
    return result


if __name__ == "__main__":
    out_dir = Path(sys.argv[1])
    try:
        data = main(out_dir)
    except Exception:
        data = {"error": traceback.format_exc()}
        log = out_dir / "helper.log"
        if log.exists():
            data["log"] = log.read_text()[-20000:]
    json.dump(data, sys.stdout, indent=1, default=str)
