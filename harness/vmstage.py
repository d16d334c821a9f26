"""What a guest is given and what it gives back: the host's files among a
command's arguments and the named inputs, copied into the shared folder (the
guest's paths mapped back to the host's); the module parameters, sysctls and
environment the guest script sets; the sipct command it runs (the host's own,
which the guest sees over 9p); and the files it wrote, copied out.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sipct.harness.vmkernels import MODULE, VmError

__all__ = [
    "GUEST_MODULES",
    "GUEST_SYSCTLS",
    "copy_outputs",
    "format_exports",
    "format_params",
    "format_sysctls",
    "group_by_module_params",
    "guest_sipct",
    "hidden_in_guest",
    "module_params_for",
    "stage_input",
    "stage_inputs",
]

# Loaded after nf_conntrack_sip when the kernel has them; only the helper itself is required.
GUEST_MODULES = ("nf_nat_sip", "nfnetlink_cthelper", "nfnetlink_queue", "nf_conntrack_netlink", "nft_ct")
MODULE_PARAMS = ("ports", "sip_timeout", "sip_direct_signalling", "sip_direct_media", "sip_external_media")
# Dialog parameters that are sysctls of the guest's initial namespace, written
# after the module is loaded: nf_conntrack_expect_max is global (the per-netns
# table is checked against it in __nf_ct_expect_check()) and read-only in
# every other namespace (nf_conntrack_standalone.c), so only a guest may set it.
GUEST_SYSCTLS = {"expect_max": "/proc/sys/net/netfilter/nf_conntrack_expect_max"}

# Folders that the guest does not see as the host has them (tmpfs in the guest).
_GUEST_HIDDEN = ("/run", "/var/tmp", "/var/cache", "/var/log", "/var/lib/apt", "/dev", "/proc", "/sys")


def guest_sipct() -> Path:
    """The sipct command the guest runs: this venv's (the guest sees the host's root)."""
    own = Path(sys.prefix) / "bin" / "sipct"
    found = own if own.exists() else (Path(p) if (p := shutil.which("sipct")) else None)
    if found is None:
        raise VmError("no sipct command in this venv or on PATH: run scripts/setup.sh")
    found = found.absolute()
    if hidden_in_guest(found):
        raise VmError(f"{found} is not visible in the guest ({', '.join(_GUEST_HIDDEN)} are the "
                      "guest's own): install sipct elsewhere")
    return found


def hidden_in_guest(path: Path) -> bool:
    text = os.path.realpath(path)
    return any(text == h or text.startswith(h + "/") for h in _GUEST_HIDDEN)


# -- module parameters ------------------------------------------------------------------------------


def format_params(params: Mapping[str, object] | None) -> list[str]:
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
    (see sipct.harness.vm's docstring)."""
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


def format_sysctls(params: Mapping[str, object] | None) -> str:
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


def format_exports(env: Mapping[str, str] | None) -> str:
    lines = []
    for name, value in (env or {}).items():
        if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", name):
            raise VmError(f"guest environment: {name!r} is no variable name")
        lines.append(f"export {name}={shlex.quote(str(value))}")
    return "\n".join(lines)


# -- files in and out -------------------------------------------------------------------------------


def stage_input(source: Path, folder: Path, name: str) -> dict[str, str]:
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


def stage_inputs(argv: Sequence[str], folder: Path) -> tuple[list[str], dict[str, str]]:
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


def copy_outputs(share: Path, outputs: Mapping[str, str | os.PathLike[str]]) -> None:
    """Copy what the guest wrote at ``outputs``' relative paths to their host paths."""
    for name, target in outputs.items():
        source, target = share / name, Path(target)
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        elif source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
