"""One boot of a VM kernel running a Python script of the tests as root:
the fixtures of the reference helper's VM tests (lifecycle, faults, the NAT
deployment) share it. The script gets the share folder as its argument and
prints its result as JSON."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

GUEST_SCRIPT = """\
#!/bin/sh
R={share}
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH PYTHONDONTWRITEBYTECODE=1
uname -r > "$R/uname"
for m in {modules}; do
    modprobe "$m" 2>> "$R/modprobe.err" || echo "$m" >> "$R/missing-modules"
done
{python} {script} "$R" > "$R/result.json" 2> "$R/stderr"
echo $? > "$R/rc"
lsmod > "$R/lsmod" 2>&1
"""


def vm_selected(config: pytest.Config) -> bool:
    """Was the vm marker asked for (``-m vm``)? The default run boots at most
    once, and that boot is tests/vm's."""
    expr = config.getoption("markexpr", "") or ""
    return "vm" in expr.replace("not vm", "")


def installed_kernel(release: str):
    """The VmKernel of /boot/vmlinuz-RELEASE with vng, or a skip that says what to install."""
    from sipct.harness.vmboot import find_vng
    from sipct.harness.vmkernels import VmError, VmKernel

    try:
        find_vng()
        return VmKernel.from_path(f"/boot/vmlinuz-{release}")
    except VmError as exc:
        pytest.skip(f"{exc} (run scripts/setup-kernels.sh linux-image-{release} as root)")


@contextmanager
def guest_result(kernel, script: Path, modules: Sequence[str], timeout: float, *, name: str,
                 keep_json: str | None = None) -> Iterator[dict]:
    """Boot ``kernel``, load ``modules``, run ``script``: its JSON result with
    the guest's ``uname``, ``missing_modules`` and ``lsmod``. ``keep_json``:
    an environment variable naming a file to copy the result to."""
    from sipct.harness.vmboot import boot_script

    work = Path(tempfile.mkdtemp(prefix=f"sipct-{name}-vm-", dir="/tmp"))
    share = work / "share"
    share.mkdir()
    try:
        (share / "guest.sh").write_text(GUEST_SCRIPT.format(
            share=shlex.quote(str(share)), python=shlex.quote(sys.executable), script=shlex.quote(str(script)),
            modules=" ".join(modules)))
        if not boot_script(kernel, share, timeout):
            pytest.fail(f"the guest did not finish: {(work / 'vng.log').read_text(errors='replace')[-3000:]}")
        text = (share / "result.json").read_text() if (share / "result.json").exists() else ""
        if not text:
            pytest.fail(f"no result: {(share / 'stderr').read_text(errors='replace')[-3000:]}")
        data = json.loads(text)
        data["uname"] = (share / "uname").read_text().strip()
        data["missing_modules"] = (share / "missing-modules").read_text().split() \
            if (share / "missing-modules").exists() else []
        data["lsmod"] = (share / "lsmod").read_text() if (share / "lsmod").exists() else ""
        if keep_json and os.environ.get(keep_json):
            Path(os.environ[keep_json]).write_text(json.dumps(data, indent=1))
        yield data
    finally:
        if os.environ.get("SIPCT_KEEP_VM"):
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
