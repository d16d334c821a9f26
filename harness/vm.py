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

import json
import os
import re
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sipct.harness.groups import start_group, stop_group
from sipct.harness.sweep import GUEST_PREFIX, write_guest_owner
from sipct.netlink.interrupts import doing, shielded

__all__ = [
    "GUEST_MODULES",
    "PRESETS",
    "VmError",
    "VmKernel",
    "VmResult",
    "find_vng",
    "group_by_module_params",
    "installed_kernels",
    "kernel_preset",
    "module_params_for",
    "new_guest_workdir",
    "run_in_vm",
    "start_guest",
    "timeout_for",
]

VNG_TESTED = "1.42"  # the virtme-ng version this runner was written against (pyproject: sipct[vm])
SETUP_HINT = "scripts/setup-kernels.sh as root"
MODULE = "nf_conntrack_sip"
# Loaded after nf_conntrack_sip when the kernel has them; only the helper itself is required.
GUEST_MODULES = ("nf_nat_sip", "nfnetlink_cthelper", "nfnetlink_queue", "nf_conntrack_netlink", "nft_ct")
MODULE_PARAMS = ("ports", "sip_timeout", "sip_direct_signalling", "sip_direct_media", "sip_external_media")
# Dialog parameters that are sysctls of the guest's initial namespace, written
# after the module is loaded: nf_conntrack_expect_max is global (the per-netns
# table is checked against it in __nf_ct_expect_check()) and read-only in
# every other namespace (nf_conntrack_standalone.c), so only a guest may set it.
GUEST_SYSCTLS = {"expect_max": "/proc/sys/net/netfilter/nf_conntrack_expect_max"}
DEFAULT_TIMEOUT = 900.0  # seconds for one boot, all its dialogs included
DEFAULT_BOOT_TIMEOUT = 240.0  # seconds until the guest runs its script
MODULES_ROOT = Path("/lib/modules")

# Folders that the guest does not see as the host has them (tmpfs in the guest).
_GUEST_HIDDEN = ("/run", "/var/tmp", "/var/cache", "/var/log", "/var/lib/apt", "/dev", "/proc", "/sys")


class VmError(RuntimeError):
    """A kernel could not be booted or could not run the dialogs; the message
    names the kernel and what to do about it."""

    def __init__(self, message: str, *, kernel: str | None = None) -> None:
        super().__init__(f"kernel {kernel}: {message}" if kernel else message)
        self.kernel = kernel


# -- the kernel image ------------------------------------------------------------------------------


def read_image_banner(path: Path) -> str:
    """The version banner of an x86 bzImage (what ``file`` shows), e.g.
    ``6.1.0-56-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2 (...)``.

    Documentation/arch/x86/boot.rst: the setup header carries the magic
    "HdrS" at 0x202 and, at 0x20e, the offset (minus 0x200) of a
    NUL-terminated version string.
    """
    with open(path, "rb") as f:
        header = f.read(0x210)
        if len(header) < 0x210 or header[0x202:0x206] != b"HdrS":
            raise ValueError(f"{path} is not an x86 bzImage (no HdrS setup header)")
        (offset,) = struct.unpack_from("<H", header, 0x20E)
        f.seek(offset + 0x200)
        text = f.read(256).split(b"\0", 1)[0]
    banner = text.decode("ascii", "replace").strip()
    if not banner:
        raise ValueError(f"{path} has an empty version string")
    return banner


@dataclass(frozen=True)
class VmKernel:
    """A bootable kernel image and its modules on this machine."""

    vmlinuz: Path
    release: str  # `uname -r` in the guest, the /lib/modules folder: 6.1.0-56-amd64
    banner: str  # the image's version string
    modules_dir: Path

    @property
    def version(self) -> str:
        """The upstream version: Debian's (6.1.192 for 6.1.0-56-amd64), else the release's."""
        m = re.search(r"#\d+\b.*\bDebian (\d+\.\d+\.\d+)", self.banner)
        if m:
            return m.group(1)
        m = re.match(r"\d+\.\d+(?:\.\d+)?", self.release)
        return m.group(0) if m else self.release

    @property
    def package_version(self) -> str | None:
        """Debian's package version (6.1.192-2), when the image says it."""
        m = re.search(r"#\d+\b.*\bDebian (\S+)", self.banner)
        return m.group(1) if m else None

    @property
    def package(self) -> str:
        return f"linux-image-{self.release}"

    def __str__(self) -> str:
        pv = self.package_version
        return f"{self.release} (Debian {pv})" if pv else self.release

    @classmethod
    def from_path(cls, image: str | os.PathLike[str], *, modules_root: Path = MODULES_ROOT) -> "VmKernel":
        """A kernel by its image path, or by its release (``6.1.0-56-amd64`` means
        ``/boot/vmlinuz-6.1.0-56-amd64``).  Raises VmError if the image or its
        modules are missing."""
        text = os.fspath(image)
        path = Path(text)
        if not path.exists() and "/" not in text:
            boot = Path("/boot") / f"vmlinuz-{text.removeprefix('vmlinuz-')}"
            if boot.exists():
                path = boot
            else:
                release = text.removeprefix("vmlinuz-").removeprefix("linux-image-")
                raise VmError(f"no kernel image {text} (nor {boot}): install it with "
                              f"`apt-get install --no-install-recommends linux-image-{release}` "
                              f"or run {SETUP_HINT}", kernel=text)
        name = path.name.removeprefix("vmlinuz-")
        if not path.exists():
            raise VmError(
                f"no kernel image {path}: install it with `apt-get install --no-install-recommends "
                f"linux-image-{name}` or run {SETUP_HINT}" if path.name.startswith("vmlinuz-") else
                f"no kernel image {path}: give a vmlinuz path such as /boot/vmlinuz-6.1.0-56-amd64 "
                f"(run {SETUP_HINT} to install the kernels)", kernel=text)
        if not path.is_file():
            raise VmError(f"{path} is not a file (give a vmlinuz image)", kernel=name)
        try:
            banner = read_image_banner(path)
        except PermissionError as exc:
            raise VmError(f"cannot read {path} ({exc.strerror}): run as root", kernel=name) from exc
        except (OSError, ValueError) as exc:
            raise VmError(f"cannot read the version of {path}: {exc}", kernel=name) from exc
        release = banner.split()[0]
        modules_dir = modules_root / release
        package = f"linux-image-{release}"
        if not (modules_dir / "modules.dep").is_file():
            raise VmError(
                f"{path} has no modules in {modules_dir} (the guest loads nf_conntrack_sip and the "
                f"9p/virtio drivers from there): install `apt-get install {package}` "
                f"or run {SETUP_HINT}", kernel=release)
        netfilter = modules_dir / "kernel" / "net" / "netfilter"
        if not any(netfilter.glob(f"{MODULE}.ko*")) and MODULE not in _builtin(modules_dir):
            raise VmError(f"{modules_dir} has no {MODULE} module (CONFIG_NF_CONNTRACK_SIP): use a "
                          f"generic Debian image such as linux-image-6.1.0-56-amd64", kernel=release)
        return cls(path, release, banner, modules_dir)


def _builtin(modules_dir: Path) -> str:
    try:
        return (modules_dir / "modules.builtin").read_text()
    except OSError:
        return ""


# -- virtme-ng --------------------------------------------------------------------------------------


def find_vng() -> Path:
    """The `vng` command: this venv's, else the PATH's; VmError with the fix if absent."""
    candidates = [Path(sys.prefix) / "bin" / "vng"]
    found = shutil.which("vng")
    if found:
        candidates.append(Path(found))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            break
    else:
        raise VmError(f"virtme-ng (vng) is not installed: run {SETUP_HINT}, or "
                      f"`.venv/bin/pip install 'virtme-ng=={VNG_TESTED}'` plus `apt-get install "
                      "qemu-system-x86 busybox-static`")
    if shutil.which("qemu-system-x86_64") is None:
        raise VmError(f"QEMU is not installed (no qemu-system-x86_64): run {SETUP_HINT} "
                      "or `apt-get install qemu-system-x86`")
    if not any(shutil.which(b) for b in ("busybox", "busybox-static", "busybox.static")):
        raise VmError(f"busybox is not installed (virtme-ng builds the guest's initramfs with it): "
                      f"run {SETUP_HINT} or `apt-get install busybox-static`")
    return c


def _guest_sipct() -> Path:
    """The sipct command the guest runs: this venv's (the guest sees the host's root)."""
    own = Path(sys.prefix) / "bin" / "sipct"
    found = own if own.exists() else (Path(p) if (p := shutil.which("sipct")) else None)
    if found is None:
        raise VmError("no sipct command in this venv or on PATH: run scripts/setup.sh")
    found = found.absolute()
    if _hidden_in_guest(found):
        raise VmError(f"{found} is not visible in the guest ({', '.join(_GUEST_HIDDEN)} are the "
                      "guest's own): install sipct elsewhere")
    return found


def _hidden_in_guest(path: Path) -> bool:
    text = os.path.realpath(path)
    return any(text == h or text.startswith(h + "/") for h in _GUEST_HIDDEN)


# -- module parameters ------------------------------------------------------------------------------


def _format_params(params: Mapping[str, object] | None) -> list[str]:
    out = []
    for name, value in (params or {}).items():
        if name in GUEST_SYSCTLS:
            continue
        if name not in MODULE_PARAMS:
            raise VmError(f"unknown {MODULE} parameter {name!r} (known: {', '.join((*MODULE_PARAMS, *GUEST_SYSCTLS))})")
        if isinstance(value, bool):
            text = str(int(value))
        elif isinstance(value, int):
            text = str(value)
        elif isinstance(value, (list, tuple)):
            text = ",".join(str(int(v)) for v in value)
        else:
            text = str(value)
        if not re.fullmatch(r"[0-9]+(,[0-9]+)*", text):
            raise VmError(f"{MODULE} parameter {name}={value!r}: expected a number (ports: numbers, comma-separated)")
        out.append(f"{name}={text}")
    return out


def module_params_for(params: Any) -> dict[str, int]:
    """The modprobe parameters a dialog needs: its load-time parameters that
    differ from the module's defaults (``params`` is a dialog's ModuleParams
    or None), plus ``expect_max`` when it asks for a table size (a sysctl the
    guest writes, :data:`GUEST_SYSCTLS`).  ``ports`` is left out on purpose
    (see the module docstring)."""
    from sipct.netlink.kernel import LOAD_TIME_PARAMS, wanted_expect_max
    from sipct.spec.params import DEFAULT_PARAMS

    if params is None:
        return {}
    out: dict[str, int] = {}
    for name in LOAD_TIME_PARAMS:
        value, default = getattr(params, name), getattr(DEFAULT_PARAMS, name)
        if value != default:
            out[name] = int(value)
    expect_max = wanted_expect_max(params)
    if expect_max is not None:
        out["expect_max"] = expect_max
    return out


def _format_sysctls(params: Mapping[str, object] | None) -> str:
    """The guest's shell lines writing the sysctls among ``params``."""
    lines = []
    for name, value in (params or {}).items():
        if name in GUEST_SYSCTLS:
            if isinstance(value, bool) or not str(value).isdigit():
                raise VmError(f"{name}={value!r}: expected a positive number")
            path = GUEST_SYSCTLS[name]
            lines.append(f'echo {int(value)} > {path} 2>> "$R/modprobe.err" || echo {name} > "$R/sysctl.failed"')
    return "\n".join(lines)


def group_by_module_params(dialogs: Iterable[Any]) -> list[tuple[dict[str, int], list[Any]]]:
    """Dialogs grouped by the modprobe parameters they need, in first-seen order:
    one boot per group."""
    groups: dict[tuple[tuple[str, int], ...], tuple[dict[str, int], list[Any]]] = {}
    for dialog in dialogs:
        params = module_params_for(dialog.params)
        key = tuple(sorted(params.items()))
        groups.setdefault(key, (params, []))[1].append(dialog)
    return list(groups.values())


# -- one boot ---------------------------------------------------------------------------------------


@dataclass
class VmResult:
    """What one boot produced.  ``results`` are the guest's ``sipct run --json``
    objects (format sipct.run/1), one per dialog, with the host's dialog paths
    as their ``source``."""

    kernel: VmKernel
    module_params: dict[str, object]
    exit_code: int  # the guest sipct's exit status (0 agree, 1 diverged, 2 error)
    json: Any  # the parsed JSON as sipct printed it (an object for one dialog, else a list)
    stdout: str  # sipct's stdout (the JSON text)
    stderr: str  # sipct's stderr
    guest_release: str  # uname -r in the guest
    guest_version: str  # /proc/version in the guest
    loaded_params: dict[str, str]  # /sys/module/nf_conntrack_sip/parameters after modprobe
    missing_modules: list[str]  # optional modules (GUEST_MODULES) the guest could not load
    boot_seconds: float  # host wall time from starting vng until the guest script ran
    total_seconds: float  # host wall time of the whole boot
    guest_times: dict[str, float] = field(default_factory=dict)  # guest uptime at: booted, modules, done
    vng_log: str = ""  # vng's output (the kernel console too with console=True)
    command: list[str] = field(default_factory=list)  # the vng command line
    workdir: Path | None = None  # the kept work folder (keep=True): guest.sh, vng.log, share/
    sources: dict[str, str] = field(default_factory=dict)  # guest path of a staged input -> host path

    def host_path(self, text: str) -> str:
        """The host path of a file the guest named (a staged input or a file
        in one); other text unchanged."""
        if text in self.sources:
            return self.sources[text]
        for guest, host in self.sources.items():
            if text.startswith(guest.rstrip("/") + "/"):
                return host.rstrip("/") + text[len(guest.rstrip("/")):]
        return text

    @property
    def results(self) -> list[dict[str, Any]]:
        return [self.json] if isinstance(self.json, dict) else list(self.json or [])

    @property
    def run_seconds(self) -> float | None:
        """Guest time spent in `sipct run` (imports included)."""
        t = self.guest_times
        return t["done"] - t["modules"] if "done" in t and "modules" in t else None

    def timing(self) -> dict[str, float | None]:
        return {"boot": round(self.boot_seconds, 1), "total": round(self.total_seconds, 1),
                "sipct": None if self.run_seconds is None else round(self.run_seconds, 1)}


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
    params_args = _format_params(module_params)
    for name in outputs or {}:
        if Path(name).is_absolute() or ".." in Path(name).parts or not Path(name).parts:
            raise ValueError(f"output {name!r}: not a path inside the shared folder")
    vng = find_vng()
    sipct = _guest_sipct()

    workdir = new_guest_workdir(kernel.release)
    share = workdir / "share"
    try:
        if _hidden_in_guest(workdir):
            raise VmError(f"the temporary folder {workdir} is not visible in the guest: set TMPDIR to "
                          "a folder under /tmp")
        share.mkdir()
        guest_args, sources = _stage_inputs(argv, share / "in")
        for name, source in (inputs or {}).items():
            sources.update(_stage_input(Path(source), share / "in", name))
        script = _GUEST_SCRIPT.format(
            share=shlex.quote(str(share)), module=MODULE, params=" ".join(params_args),
            sysctls=_format_sysctls(module_params), expect_max=GUEST_SYSCTLS["expect_max"],
            optional=" ".join(GUEST_MODULES), sipct=shlex.quote(str(sipct)), exports=_format_exports(env),
            command=" ".join(shlex.quote(c) for c in command),
            args=" ".join(shlex.quote(a) for a in guest_args))
        (share / "guest.sh").write_text(script)
        vng_command = _vng_command(vng, kernel, share, memory, cpus)
        if console:
            vng_command.insert(1, "--verbose")
        try:
            result = _boot(kernel, vng_command, workdir, share, timeout, boot_timeout, params_args, json_file,
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
            _copy_outputs(share, outputs or {})
            if not keep:
                shutil.rmtree(workdir, ignore_errors=True)


def _copy_outputs(share: Path, outputs: Mapping[str, str | os.PathLike[str]]) -> None:
    """Copy what the guest wrote at ``outputs``' relative paths to their host paths."""
    for name, target in outputs.items():
        source, target = share / name, Path(target)
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        elif source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)


def _stage_input(source: Path, folder: Path, name: str) -> dict[str, str]:
    """Copy a host file or folder to ``folder/name``; the guest paths (absolute
    and as ``in/NAME``, relative to the shared folder) mapped to the host's."""
    if "/" in name or name in ("", ".", ".."):
        raise VmError(f"input name {name!r}: a plain file name")
    folder.mkdir(exist_ok=True)
    target = folder / name
    if source.is_dir():
        shutil.copytree(source, target)
    elif source.is_file():
        shutil.copyfile(source, target)
    else:
        raise VmError(f"no file or folder {source} to give the guest")
    host = str(source)
    return {str(target): host, f"{folder.name}/{name}": host}


def _stage_inputs(argv: Sequence[str], folder: Path) -> tuple[list[str], dict[str, str]]:
    """Copy the files among argv into the shared folder; the guest's argv and
    a map from guest paths back to the given ones."""
    folder.mkdir()
    out, sources = [], {}
    for i, arg in enumerate(argv):
        path = Path(arg)
        if not arg.startswith("-") and path.is_file():
            copy = folder / f"{i:03d}-{path.name}"
            shutil.copyfile(path, copy)
            out.append(str(copy))
            sources[str(copy)] = arg
        else:
            out.append(arg)
    return out, sources


def _vng_command(vng: Path, kernel: VmKernel, share: Path, memory: str = "2G", cpus: int = 2) -> list[str]:
    """Boot ``kernel`` under TCG (KVM hangs in nested VMs) and run ``share/guest.sh``."""
    return [str(vng), "--run", str(kernel.vmlinuz), "--disable-kvm", "--memory", memory, "--cpus", str(cpus),
            "--user", "root", f"--rwdir={share}", "--exec", f"sh {shlex.quote(str(share / 'guest.sh'))}"]


def _vng_env(vng: Path) -> dict[str, str]:
    # vng runs virtme-run from PATH: the venv's bin folder must be on it.
    return dict(os.environ, PATH=f"{vng.parent}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}")


def new_guest_workdir(kernel: str) -> Path:
    """A new work folder for one boot (``sipct-vm-*`` in the temporary folder),
    marked as this process's (sipct.harness.sweep: a SIGKILLed owner's guest
    is ended and its folder removed by the next run or `sipct clean`)."""
    workdir = Path(tempfile.mkdtemp(prefix=GUEST_PREFIX))
    try:
        write_guest_owner(workdir, kernel=kernel)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return workdir


def start_guest(command: Sequence[str], workdir: Path, kernel: str, **popen: Any) -> subprocess.Popen:
    """Start vng (``command``, sharing ``workdir/share``) as the leader of a
    process group of its own (groups.start_group), and record the group in
    ``workdir``'s owner marker.  A SIGKILL between the two leaves the group
    unrecorded; the sweeper then finds it by its command line."""
    proc = start_group(command, **popen)
    with shielded():
        try:
            write_guest_owner(workdir, kernel=kernel, pgid=proc.pid)
        except BaseException:
            stop_group(proc)
            raise
    return proc


def boot_script(kernel: VmKernel, share: Path, timeout: float) -> bool:
    """Boot ``kernel`` and run ``share/guest.sh``, a script the caller wrote
    (for scripts other than sipct's own: bench/router.py, the reference
    helper's VM test); ``share`` is ``FOLDER/share``, FOLDER the caller's
    work folder, marked as this process's (a SIGKILLed owner's guest is
    ended and FOLDER removed by the sweeper). The QEMU process group is
    killed after ``timeout`` seconds; vng's output goes to ``FOLDER/vng.log``. True when the script
    got to write ``share/rc``."""
    vng = find_vng()
    if share.name != "share":
        raise ValueError(f"{share}: the shared folder must be called share (FOLDER/share)")
    write_guest_owner(share.parent, kernel=kernel.release)  # FOLDER is removed if this process is SIGKILLed
    with open(share.parent / "vng.log", "wb") as log, doing(f"kernel {kernel.release}: {share / 'guest.sh'}"):
        proc = start_guest(_vng_command(vng, kernel, share), share.parent, kernel.release,
                           stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=share.parent,
                           env=_vng_env(vng))
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:
            stop_group(proc)
    return (share / "rc").exists()


def _format_exports(env: Mapping[str, str] | None) -> str:
    lines = []
    for name, value in (env or {}).items():
        if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", name):
            raise VmError(f"guest environment: {name!r} is no variable name")
        lines.append(f"export {name}={shlex.quote(str(value))}")
    return "\n".join(lines)


def _boot(kernel: VmKernel, command: list[str], workdir: Path, share: Path,
          timeout: float, boot_timeout: float, params: list[str], json_file: str | None = None,
          cancel: threading.Event | None = None) -> VmResult:
    env = _vng_env(Path(command[0]))
    log_path = workdir / "vng.log"
    shown = shlex.join(command)
    started = time.monotonic()
    booted: float | None = None
    with open(log_path, "wb") as log, doing(f"kernel {kernel.release}: booting it in QEMU") as task:
        proc = start_guest(command, workdir, kernel.release, stdin=subprocess.DEVNULL, stdout=log,
                           stderr=subprocess.STDOUT, cwd=workdir, env=env)
        try:
            while True:
                try:
                    proc.wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    pass
                now = time.monotonic()
                if booted is None and (share / "t.booted").exists():
                    booted = now
                    task.what = f"kernel {kernel.release}: the guest runs sipct (booted in {now - started:.0f} s)"
                if proc.returncode is not None:
                    break
                if cancel is not None and cancel.is_set():
                    stop_group(proc)
                    raise VmError("cancelled (QEMU killed)", kernel=kernel.release)
                if booted is None and now - started > boot_timeout:
                    stop_group(proc)
                    raise VmError(f"did not boot within {boot_timeout:.0f} s (QEMU killed); "
                                  f"{_log_tail(log_path)}; to watch the console run: {shown} --verbose",
                                  kernel=kernel.release)
                if now - started > timeout:
                    stop_group(proc)
                    when = "before booting" if booted is None else f"after booting in {booted - started:.0f} s"
                    raise VmError(f"the guest did not finish within {timeout:.0f} s (QEMU killed) {when}; "
                                  f"{_guest_tail(share)}", kernel=kernel.release)
        finally:
            stop_group(proc)  # also when vng is gone: QEMU, in its group, may not be
    total = time.monotonic() - started
    if booted is None and (share / "t.booted").exists():
        booted = started + total  # finished between two polls
    if booted is None:
        raise VmError(f"did not boot (vng exited with {proc.returncode}): {_log_tail(log_path)}; "
                      f"to watch the console run: {shown} --verbose", kernel=kernel.release)

    release = _read(share / "uname").strip()
    if (share / "modprobe.failed").exists():
        err = " ".join(_read(share / "modprobe.err").split()) or "no message"
        if "not found" in err:
            raise VmError(f"the guest has no {MODULE} module ({err}): its modules come from the package "
                          f"linux-image-{release} (`apt-get install --no-install-recommends "
                          f"linux-image-{release}`, or {SETUP_HINT})", kernel=kernel.release)
        raise VmError(f"`{' '.join(['modprobe', MODULE, *params])}` failed in the guest: {err} "
                      "(check the module parameters)", kernel=kernel.release)
    if (share / "sysctl.failed").exists():
        raise VmError(f"the guest could not set {_read(share / 'sysctl.failed').strip()}: "
                      f"{' '.join(_read(share / 'modprobe.err').split()) or 'no message'}", kernel=kernel.release)
    if not (share / "rc").exists():
        raise VmError(f"the guest stopped before sipct finished (vng exited with {proc.returncode}); "
                      f"{_guest_tail(share)}; {_log_tail(log_path)}", kernel=kernel.release)
    exit_code = int(_read(share / "rc").strip() or "-1")
    stdout, stderr = _read(share / "result.json"), _read(share / "stderr")
    try:
        data = json.loads(_read(share / json_file) if json_file else stdout)
    except json.JSONDecodeError:
        what = f"wrote no JSON to {json_file}" if json_file else "printed no JSON"
        raise VmError(f"sipct in the guest {what} (exit status {exit_code}): "
                      f"{stderr.strip()[-2000:] or stdout.strip()[-2000:] or 'no output'}",
                      kernel=kernel.release) from None
    loaded = {}
    for line in _read(share / "params").splitlines():
        name, _, value = line.partition("=")
        loaded[name] = value
    times = {}
    for name in ("booted", "modules", "done"):
        try:
            times[name] = float(_read(share / f"t.{name}").split()[0])
        except (ValueError, IndexError):
            pass
    return VmResult(
        kernel=kernel, module_params={}, exit_code=exit_code, json=data, stdout=stdout, stderr=stderr,
        guest_release=release, guest_version=_read(share / "proc-version").strip(),
        loaded_params=loaded, missing_modules=_read(share / "missing-modules").split(),
        boot_seconds=booted - started, total_seconds=total, guest_times=times,
        vng_log=_read(log_path), command=command)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _log_tail(path: Path, lines: int = 15) -> str:
    text = [line for line in _read(path).splitlines() if line.strip()]
    return "vng said: " + (" | ".join(text[-lines:]) if text else "nothing")


def _guest_tail(share: Path) -> str:
    err = _read(share / "stderr").strip().splitlines()
    return "guest sipct stderr: " + (" | ".join(err[-10:]) if err else "empty")


def timeout_for(dialogs: Iterable[Any], per_dialog: float = 60.0) -> float:
    """A generous limit for one boot running these dialogs: boot and imports,
    plus each dialog's own waits and ``per_dialog`` seconds of slow TCG per
    dialog (a minute for `sipct run`; a generated dialog in a conformance run
    takes ~0.2 s in the guest)."""
    from sipct.spec.dialog import Wait

    total = DEFAULT_BOOT_TIMEOUT + 120.0
    for dialog in dialogs:
        total += per_dialog + sum(s.seconds for s in dialog.steps if isinstance(s, Wait))
    return total


# -- which kernels ------------------------------------------------------------------------------------

# The default kernels of scripts/setup-kernels.sh: the oldest and the newest
# Debian 6.1 and the newest 6.12 (whichever is installed).
PRESET_DEBIAN = ("6.1.0-47-amd64", "6.1.0-56-amd64", "6.12.*+deb12-amd64")
PRESETS = ("debian", "all-installed")


def _version_key(kernel: VmKernel) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", kernel.version))


def installed_kernels(boot: Path = Path("/boot"), *, modules_root: Path = MODULES_ROOT) -> list[VmKernel]:
    """Every /boot/vmlinuz-* this machine can boot: with its modules and
    nf_conntrack_sip; oldest version first."""
    out = []
    for image in sorted(boot.glob("vmlinuz-*")):
        try:
            out.append(VmKernel.from_path(image, modules_root=modules_root))
        except VmError:
            continue
    return sorted(out, key=_version_key)


def kernel_preset(name: str, boot: Path = Path("/boot"), *, modules_root: Path = MODULES_ROOT) -> list[VmKernel]:
    """The kernels of a preset: ``debian`` (scripts/setup-kernels.sh's default
    set: 6.1.170, 6.1.192 and the newest installed 6.12) or ``all-installed``.
    VmError names what to install when a kernel of ``debian`` is missing."""
    if name == "all-installed":
        kernels = installed_kernels(boot, modules_root=modules_root)
        if not kernels:
            raise VmError(f"no bootable kernel in {boot} (vmlinuz-* with modules and {MODULE}): "
                          f"run {SETUP_HINT}")
        return kernels
    if name != "debian":
        raise VmError(f"unknown kernel preset {name!r} (known: {', '.join(PRESETS)})")
    out = []
    for release in PRESET_DEBIAN:
        if "*" in release:
            found = []
            for image in boot.glob(f"vmlinuz-{release}"):
                try:
                    found.append(VmKernel.from_path(image, modules_root=modules_root))
                except VmError:
                    continue
            found.sort(key=_version_key)
            if not found:
                raise VmError(f"preset debian: no linux-image-{release} installed: run {SETUP_HINT} "
                              "(it installs the newest 6.12 that apt offers)")
            out.append(found[-1])
        else:
            out.append(VmKernel.from_path(boot / f"vmlinuz-{release}", modules_root=modules_root))
    return out
