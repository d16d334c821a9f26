"""Run dialogs in another kernel: boot it with virtme-ng and run `sipct run` inside.

The guest is the host's own root filesystem, shared read-only over 9p (the
host's venv and this source tree included), with throw-away overlays on /etc,
/usr, /var, /tmp, /home, /opt, /srv and tmpfs on /run, /var/tmp, /var/cache
and /var/log.  Everything the guest reports is written into one shared
read-write folder (vng's ``--rwdir``), never to stdout: the guest's stdout
reaches the host only through virtio serial ports that need udev in the
guest, and without them virtme-ng falls back to the console and returns 255.

Inside the guest a small shell script (``guest.sh`` in the shared folder)

1. loads ``nf_conntrack_sip`` with the wanted module parameters -- they are
   global and only settable at load time, the reason to boot at all -- and
   then, as far as the kernel has them, ``nf_nat_sip nfnetlink_cthelper
   nfnetlink_queue nf_conntrack_netlink nft_ct``;
2. records what it got (``uname -r``, ``/proc/version``, the module's
   parameters from sysfs, the modules it could not load);
3. runs ``sipct run --json ARGS`` from the host's venv, several dialogs in one
   invocation, and writes its JSON, stderr and exit status (or another sipct
   command: ``sipct conformance --kernel`` runs ``sipct conformance`` there,
   over dialog files the host generated, and reads the report it writes).

The helper's ``ports`` parameter is only passed on when asked for explicitly:
nf_conntrack_sip names its helper "sip" only for port 5060 ("sip-0" etc.
otherwise), and the lab's nft ``ct helper { type "sip" }`` then fails with
ENOENT; the lab attaches the helper to the dialog's own ports instead.

Under TCG (no KVM here) the guest is slow: about 15 s to boot, then ~30 s
before ``sipct`` has imported its modules, then a few seconds per dialog.
"""

from __future__ import annotations

import os
import shlex
import shutil
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from sipct.harness.vmboot import DEFAULT_BOOT_TIMEOUT, VmResult, boot_guest, find_vng, new_guest_workdir, vng_command
from sipct.harness.vmkernels import MODULE, VmError, VmKernel
from sipct.harness.vmstage import (
    GUEST_MODULES,
    GUEST_SYSCTLS,
    copy_outputs,
    format_exports,
    format_params,
    format_sysctls,
    guest_sipct,
    hidden_in_guest,
    stage_input,
    stage_inputs,
)
from sipct.netlink.interrupts import shielded

__all__ = ["run_in_vm"]

DEFAULT_TIMEOUT = 900.0  # seconds for one boot, all its dialogs included


_GUEST_SCRIPT = """\
#!/bin/sh
# Written by sipct.harness.vm; runs as root inside the guest kernel.
R={share}
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH PYTHONDONTWRITEBYTECODE=1
{exports}
up() {{ cut -d' ' -f1 /proc/uptime; }}
up > "$R/t.booted"
uname -r > "$R/uname"
cat /proc/version > "$R/proc-version"
if ! modprobe {module} {params} 2> "$R/modprobe.err"; then
    echo failed > "$R/modprobe.failed"
    exit 0
fi
for m in {optional}; do
    modprobe "$m" 2>> "$R/modprobe-optional.err" || echo "$m" >> "$R/missing-modules"
done
{sysctls}
for f in /sys/module/{module}/parameters/*; do echo "${{f##*/}}=$(cat "$f")"; done > "$R/params"
echo "expect_max=$(cat {expect_max})" >> "$R/params"
up > "$R/t.modules"
cd "$R"
{sipct} {command} {args} > "$R/result.json" 2> "$R/stderr"
echo $? > "$R/rc"
up > "$R/t.done"
dmesg > "$R/dmesg" 2>&1
"""


def run_in_vm(
    kernel: VmKernel | str | os.PathLike[str],
    argv: Sequence[str],
    *,
    module_params: Mapping[str, object] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    boot_timeout: float = DEFAULT_BOOT_TIMEOUT,
    memory: str = "2G",
    cpus: int = 2,
    console: bool = False,
    keep: bool = False,
    command: Sequence[str] = ("run", "--json"),
    inputs: Mapping[str, str | os.PathLike[str]] | None = None,
    json_file: str | None = None,
    env: Mapping[str, str] | None = None,
    outputs: Mapping[str, str | os.PathLike[str]] | None = None,
    cancel: threading.Event | None = None,
) -> VmResult:
    """Boot ``kernel`` and run ``sipct run --json ARGV`` in it after ``modprobe
    nf_conntrack_sip MODULE_PARAMS``.

    ``argv`` holds `sipct run` arguments: dialog files (copied into the shared
    folder, so any host path works) and options such as ``--profile``.  The
    whole QEMU process group is killed after ``timeout`` seconds (or
    ``boot_timeout`` without the guest's script starting).  ``console`` adds
    the kernel console to ``vng_log``; ``keep`` keeps the work folder
    (``VmResult.workdir``, or named in the VmError).

    Another sipct command: ``command`` replaces ``run --json``; ``inputs``
    (name -> host file or folder) are copied into the shared folder as
    ``in/NAME``, which ``argv`` names by that relative path (the guest runs
    in the shared folder, where relative output paths land too); with
    ``json_file`` the JSON is read from that file (relative to the shared
    folder) instead of sipct's stdout.  ``env`` is exported to the guest's
    sipct (e.g. SIPCT_SHARED: the host's shared corpus, which the guest finds
    by the package's location only when it runs from the repository).  ``VmResult.host_path`` maps the
    guest's paths of staged inputs back.  ``outputs`` (a file or folder the
    guest may write, relative to the shared folder -> host path) are copied
    out after the boot, also after a failed one, when the guest wrote them.
    ``cancel``: set by another thread (``--jobs``: the main one, interrupted)
    to end the boot - only the thread that started QEMU knows its group.
    """
    if not isinstance(kernel, VmKernel):
        kernel = VmKernel.from_path(kernel)
    params_args = format_params(module_params)
    for name in outputs or {}:
        if Path(name).is_absolute() or ".." in Path(name).parts or not Path(name).parts:
            raise ValueError(f"output {name!r}: not a path inside the shared folder")
    vng = find_vng()
    sipct = guest_sipct()

    workdir = new_guest_workdir(kernel.release)
    share = workdir / "share"
    try:
        if hidden_in_guest(workdir):
            raise VmError(f"the temporary folder {workdir} is not visible in the guest: set TMPDIR to "
                          "a folder under /tmp")
        share.mkdir()
        guest_args, sources = stage_inputs(argv, share / "in")
        for name, source in (inputs or {}).items():
            sources.update(stage_input(Path(source), share / "in", name))
        script = _GUEST_SCRIPT.format(
            share=shlex.quote(str(share)), module=MODULE, params=" ".join(params_args),
            sysctls=format_sysctls(module_params), expect_max=GUEST_SYSCTLS["expect_max"],
            optional=" ".join(GUEST_MODULES), sipct=shlex.quote(str(sipct)), exports=format_exports(env),
            command=" ".join(shlex.quote(c) for c in command),
            args=" ".join(shlex.quote(a) for a in guest_args))
        (share / "guest.sh").write_text(script)
        boot_command = vng_command(vng, kernel, share, memory, cpus)
        if console:
            boot_command.insert(1, "--verbose")
        try:
            result = boot_guest(kernel, boot_command, workdir, share, timeout, boot_timeout, params_args, json_file,
                                cancel)
        except VmError as exc:
            if keep:
                raise VmError(f"{exc} (files kept in {workdir})") from exc
            raise
        result.module_params = dict(module_params or {})
        result.workdir = workdir if keep else None
        result.sources = sources
        for item in result.results:
            if isinstance(item, dict) and item.get("source") in sources:
                item["source"] = sources[item["source"]]
        return result
    finally:
        with shielded():
            copy_outputs(share, outputs or {})
            if not keep:
                shutil.rmtree(workdir, ignore_errors=True)
