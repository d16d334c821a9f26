"""SIPp (Debian's sip-tester) as real user agents in the lab's endpoint
namespaces: its built-in uac and uas scenarios (INVITE with SDP, 100/180/200,
ACK, a pause, BYE, 200)."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from sipct.harness.lab import Lab

TRANSPORTS = {"udp": "u1", "tcp": "t1"}  # one socket for every call: one master


class SippUnavailable(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class SippResult:
    returncode: int  # the uac's: 0 when every call succeeded
    output: str


def sipp_path() -> str:
    path = shutil.which("sipp")
    if path is None:
        raise SippUnavailable("sipp is not installed (apt-get install sip-tester, or scripts/setup.sh)")
    return path


def run_calls(lab: Lab, uac: str, uas: str, family: int, transport: str, calls: int, *, workdir: Path,
              rate: float = 10.0, duration_ms: int = 100, while_running=lambda: None) -> SippResult:
    """``calls`` calls from host ``uac`` to host ``uas`` on port 5060;
    ``while_running`` is called every 0.1 s until the uac is done."""
    sipp = sipp_path()
    local, remote = str(lab.address(uac, family)), str(lab.address(uas, family))
    target = f"[{remote}]:5060" if family == 6 else f"{remote}:5060"
    # A deadline for SIPp itself, besides ours: a call the lab lost must not hang the run.
    limit = f"{int(calls / rate + 30)}s"
    common = ["-t", TRANSPORTS[transport], "-m", str(calls), "-nostdin", "-timeout", limit]
    server = subprocess.Popen(["ip", "netns", "exec", lab.host_netns[uas], sipp, "-sn", "uas", "-i", remote,
                               "-p", "5060", *common], cwd=workdir, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_listening(lab, uas, transport)
        client = subprocess.Popen(["ip", "netns", "exec", lab.host_netns[uac], sipp, "-sn", "uac", "-i", local,
                                   "-p", "5060", "-r", f"{rate:g}", "-d", str(duration_ms), *common, target],
                                  cwd=workdir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + calls / rate + 60
        try:
            while client.poll() is None:
                if time.monotonic() > deadline:
                    client.kill()
                    break
                while_running()
                time.sleep(0.1)
            _, stderr = client.communicate(timeout=10)
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
        while_running()
        return SippResult(client.returncode, stderr)
    finally:
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=5)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        if server.stderr is not None:
            server.stderr.close()


def _wait_listening(lab: Lab, host: str, transport: str, timeout: float = 5.0) -> None:
    """Until the uas has bound port 5060 (ss in its namespace)."""
    flag = "-lun" if transport == "udp" else "-ltn"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["ip", "netns", "exec", lab.host_netns[host], "ss", "-H", flag, "sport = :5060"],
                             capture_output=True, text=True, timeout=10).stdout
        if out.strip():
            return
        time.sleep(0.05)
    raise SippUnavailable(f"the SIPp uas in {host} did not listen on port 5060 within {timeout:g} s")
