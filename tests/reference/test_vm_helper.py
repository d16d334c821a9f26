"""The reference helper against a real kernel: Debian's 6.1.192 in a VM.

The running kernel has no nfnetlink_cthelper (CONFIG_NETFILTER_NETLINK_GLUE_CT
is off), so this boots linux-image-6.1.0-56-amd64 with virtme-ng, keeps
nf_conntrack_sip from loading (it would own the helper name "sip"), and runs
vm_guest.py inside: the lab's router runs ``sipct helper`` in place of the
kernel helper, the bundled dialogs go through it, and the harness compares
each step with the spec exactly as ``sipct run`` does for the kernel helper.

One known difference is allowed, and only where it belongs: when a 200 OK
activates a registration (refresh_signalling_expectation()), the kernel
helper clears NF_CT_EXPECT_INACTIVE in place, while a userspace helper can
only replace the expectation (ctnetlink cannot change flags), so the kernel
reports a destroy and a new event the spec does not predict. The table,
flags and timeouts must still agree.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from sipct.cli.main import examples_dir

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (the guest runs the netns lab as root)"),
]

HERE = Path(__file__).resolve().parent
KERNEL = "/boot/vmlinuz-6.1.0-56-amd64"  # linux-image-6.1.0-56-amd64 (6.1.192)
# Every bundled example (register.yaml must be among them: the restart check
# replays it); SIPCT_REFERENCE_VM_DIALOGS=register.yaml,invite-audio-video.yaml
# runs fewer (one boot either way: 4-6 minutes under TCG).
DIALOGS = sorted(p.name for p in examples_dir().glob("*.yaml"))
GUEST_MODULES = ("nf_conntrack", "nf_tables", "nft_ct", "nf_conntrack_netlink", "nfnetlink_queue",
                 "nfnetlink_cthelper")
TIMEOUT = 900.0

GUEST_SCRIPT = """\
#!/bin/sh
R={share}
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH PYTHONDONTWRITEBYTECODE=1
uname -r > "$R/uname"
# The kernel's own helper registers "sip" as well: keep it (and nf_nat_sip) out.
mkdir -p /etc/modprobe.d
echo "install nf_conntrack_sip /bin/false" > /etc/modprobe.d/sipct-reference.conf
for m in {modules}; do modprobe "$m" 2>> "$R/modprobe.err" || echo "$m" >> "$R/missing-modules"; done
{python} {script} "$R" "$R/helper.toml" {dialogs} > "$R/result.json" 2> "$R/stderr"
echo $? > "$R/rc"
lsmod > "$R/lsmod" 2>&1
dmesg > "$R/dmesg" 2>&1
"""

CONFIG = """\
[helper]
queue = 0
fail_policy = "open"
profile = "auto"
[sip]
ports = [5060]
[log]
level = "debug"
"""


def boot(share: Path, timeout: float = TIMEOUT) -> dict:
    from sipct.harness.vm import VmError, VmKernel, find_vng

    try:
        vng = find_vng()
        kernel = VmKernel.from_path(KERNEL)
    except VmError as exc:
        pytest.skip(f"{exc} (run scripts/setup-kernels.sh as root)")
    (share / "helper.toml").write_text(CONFIG)
    dialogs = []
    names = os.environ.get("SIPCT_REFERENCE_VM_DIALOGS", "").split(",") if \
        os.environ.get("SIPCT_REFERENCE_VM_DIALOGS") else DIALOGS
    for name in names:
        shutil.copyfile(examples_dir() / name, share / name)
        dialogs.append(str(share / name))
    script = GUEST_SCRIPT.format(share=shlex.quote(str(share)), modules=" ".join(GUEST_MODULES),
                                 python=shlex.quote(sys.executable), script=shlex.quote(str(HERE / "vm_guest.py")),
                                 dialogs=" ".join(map(shlex.quote, dialogs)))
    (share / "guest.sh").write_text(script)
    command = [str(vng), "--run", str(kernel.vmlinuz), "--disable-kvm", "--memory", "2G", "--cpus", "2",
               "--user", "root", f"--rwdir={share}", "--exec", f"sh {shlex.quote(str(share / 'guest.sh'))}"]
    env = dict(os.environ, PATH=f"{vng.parent}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}")
    with open(share.parent / "vng.log", "wb") as log:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                cwd=share.parent, env=env, start_new_session=True)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)
    if not (share / "rc").exists():
        tail = (share.parent / "vng.log").read_text(errors="replace")[-3000:]
        stderr = (share / "stderr").read_text(errors="replace")[-3000:] if (share / "stderr").exists() else ""
        pytest.fail(f"the guest did not finish within {timeout:.0f} s: {stderr or tail}")
    text = (share / "result.json").read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        pytest.fail(f"no JSON from the guest: {(share / 'stderr').read_text()[-3000:]} {text[-2000:]}")
    data["uname"] = (share / "uname").read_text().strip()
    data["missing_modules"] = (share / "missing-modules").read_text().split() \
        if (share / "missing-modules").exists() else []
    data["lsmod"] = (share / "lsmod").read_text() if (share / "lsmod").exists() else ""
    return data


def vm_selected(config: pytest.Config) -> bool:
    """Was the vm marker asked for (``-m vm``)? As in tests/vm: the default
    run boots at most once, and that boot is tests/vm's."""
    expr = config.getoption("markexpr", "") or ""
    return "vm" in expr.replace("not vm", "")


@pytest.fixture(scope="module")
def guest(request: pytest.FixtureRequest):
    if not vm_selected(request.config):
        pytest.skip("boots a VM (4-6 minutes under TCG): run `pytest -m vm tests/reference`")
    if not Path(KERNEL).exists():
        pytest.skip(f"no {KERNEL}: run scripts/setup-kernels.sh as root")
    work = Path(tempfile.mkdtemp(prefix="sipct-ref-vm-", dir="/tmp"))
    share = work / "share"
    share.mkdir()
    started = time.monotonic()
    try:
        data = boot(share)
        data["wall_seconds"] = round(time.monotonic() - started, 1)
        yield data
    finally:
        if os.environ.get("SIPCT_KEEP_VM"):
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def test_the_guest_ran_the_reference_helper(guest) -> None:
    assert "error" not in guest, guest.get("error", "") + guest.get("log", "")[-3000:]
    assert guest["uname"] == "6.1.0-56-amd64"
    assert guest["missing_modules"] == []
    assert "nf_conntrack_sip" not in guest["lsmod"]  # the helper was ours, not the kernel's
    assert "nfnetlink_cthelper" in guest["lsmod"]


def test_dialogs_give_the_spec_s_table(guest) -> None:
    """Verdicts, payloads, tables, flags, timeouts and events as the spec
    predicts them, step by step (harness.diff.compare)."""
    results = {d["dialog"]: d for d in guest.get("dialogs", [])}
    assert {"register", "invite-audio-video"} <= set(results), sorted(results)
    for name, result in results.items():
        refresh = set(result["refresh_steps"])
        for step in result["steps"]:
            for div in step["divergences"]:
                allowed = div["aspect"] == "events" and step["index"] in refresh
                assert allowed, f"{name} step {step['index']}: {div}\nhelper log:\n{guest['log'][-4000:]}"
    # The one allowed difference does show up where the spec activates a registration.
    assert results["register"]["refresh_steps"] == [1]


def test_a_restart_keeps_the_registration(guest) -> None:
    r = guest["restart"]
    assert r["first_exit"] == 0
    # While the helper is down the expectation stays in the kernel.
    assert [(d, p) for d, p, _ in r["table_while_down"]] == [("192.0.2.2", 5060)]
    after_register, after_ok, _, after_unbind_ok = r["steps"]
    assert all(s["delivered"] for s in r["steps"])
    assert after_register["table"][0][2] == ["INACTIVE", "PERMANENT"]
    # The restarted helper knew the REGISTER's CSeq (private data): the 200 OK activated it.
    (dst, port, flags, timeout), = after_ok["table"]
    assert (dst, port, flags) == ("192.0.2.2", 5060, ["PERMANENT"]) and 590 <= timeout <= 600
    assert after_unbind_ok["table"] == []  # and the unbinding 200 OK removed it


def test_sigterm_unbinds_and_leaves_a_referenced_helper_disabled(guest) -> None:
    assert guest["exit_code"] == 0
    # The lab's nft ct helper objects still referred to it: registered, disabled.
    assert guest["helpers_after_stop"] and not any(h["enabled"] for h in guest["helpers_after_stop"])
    assert "left registered, disabled" in guest["log"]
    # Once the lab was gone it could be unregistered.
    assert all(": " not in u for u in guest["unregistered"]), guest["unregistered"]
