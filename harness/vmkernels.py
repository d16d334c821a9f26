"""The kernels a guest can boot: an image on this machine (its release and
version read from the image itself), its modules, and the presets of
scripts/setup-kernels.sh.

:class:`VmError`, which every step of a VM run raises with a message naming
the kernel and the fix, lives here at the bottom of the VM modules
(vmkernels <- vmstage, vmboot <- vm).
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MODULE", "PRESETS", "VmError", "VmKernel", "installed_kernels", "kernel_preset", "read_image_banner"]

SETUP_HINT = "scripts/setup-kernels.sh as root"
MODULE = "nf_conntrack_sip"
MODULES_ROOT = Path("/lib/modules")


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
