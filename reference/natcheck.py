"""What a NAT deployment needs of the kernel, for ``sipct helper --check``:
whether nf_nat_sip's expectfn can be there, and whether the namespace NATs.

The helper's NAT expectations name the expectfn "sip" (CTA_EXPECT_FN), which
only nf_nat_sip registers (nf_nat_sip_init() ->
nf_ct_helper_expectfn_register()); without it ctnetlink_alloc_expect()
answers EINVAL. Nothing loads nf_nat_sip for a userspace helper: nft's
``ct helper`` objects load the conntrack helper's module only
(nft_ct_helper_obj_init() -> nf_conntrack_helper_try_module_get()), and a
userspace helper has no NAT module name (``nat_mod_name``).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ABSENT", "BUILTIN", "FOLLOW_MASTER", "FOLLOW_MASTER_DIFFERS", "KernelFiles", "LOADABLE", "LOADED",
           "module_state", "nat_chains", "nat_expectfn", "nat_sip_fix", "nat_sip_state"]

LOADED, BUILTIN, LOADABLE, ABSENT = "loaded", "built in", "loadable", "absent"
# nf_nat_core's generic expectfn (nf_nat_init() registers follow_master_nat): always there with NAT.
FOLLOW_MASTER = "nat-follow-master"


@dataclass(frozen=True)
class KernelFiles:
    """Where the running kernel says what code it has."""

    sys_module: Path = Path("/sys/module")
    kallsyms: Path = Path("/proc/kallsyms")
    lib_modules: Path = field(default_factory=lambda: Path("/lib/modules") / os.uname().release)


def module_state(module: str, symbol: str, files: KernelFiles = KernelFiles()) -> str:
    """LOADED, BUILTIN, LOADABLE (in modules.dep, not loaded) or ABSENT.

    A loaded module's /sys/module/NAME has ``initstate`` (module_add_modinfo_attrs());
    a built-in one has a /sys/module/NAME only if it has parameters
    (param_sysfs_builtin()), so it is also looked for in modules.builtin and,
    by one of its functions (``symbol``), in /proc/kallsyms, which lists
    built-in text symbols without a module tag."""
    here = files.sys_module / module
    if (here / "initstate").exists():
        return LOADED
    if here.is_dir():
        return BUILTIN
    ko = f"/{module}.ko"
    if _lists(files.lib_modules / "modules.builtin", lambda line: line.endswith(ko)):
        return BUILTIN
    if _lists(files.kallsyms, lambda line: line.split()[2:3] == [symbol] and "[" not in line):
        return BUILTIN
    if _lists(files.lib_modules / "modules.dep", lambda line: line.split(":", 1)[0].split(".ko")[0].endswith(
            f"/{module}")):
        return LOADABLE
    return ABSENT


def _lists(path: Path, match) -> bool:
    try:
        with open(path, errors="replace") as lines:
            return any(match(line.rstrip("\n")) for line in lines)
    except OSError:
        return False


def nat_chains(netns: str | None = None) -> list[str]:
    """The namespace's nft base chains of type nat, as "family table chain".
    Raises OSError when nft cannot list them (missing, or refused)."""
    command = ["nft", "-j", "list", "chains"]
    if netns is not None:
        command = ["ip", "netns", "exec", netns, *command]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except FileNotFoundError as exc:
        raise OSError(f"{exc.filename} not found (Debian: apt-get install nftables)") from None
    except subprocess.TimeoutExpired:
        raise OSError("nft list chains did not answer within 30 s") from None
    if proc.returncode != 0:
        raise OSError(f"nft list chains: {proc.stderr.strip() or f'exit status {proc.returncode}'}")
    try:
        items = json.loads(proc.stdout or "{}").get("nftables", [])
    except json.JSONDecodeError as exc:
        raise OSError(f"nft list chains: unreadable JSON ({exc})") from None
    return [f"{c['family']} {c['table']} {c['name']}" for c in (i.get("chain") for i in items)
            if c is not None and c.get("type") == "nat"]


def nat_expectfn(files: KernelFiles = KernelFiles()) -> tuple[str, str | None]:
    """The expectfn the helper's NAT expectations name, and why not "sip" (None when it is).

    "sip" (nf_nat_sip_expected()) when nf_nat_sip is loaded or built in;
    otherwise nf_nat_core's "nat-follow-master" (nf_nat_follow_master()),
    which ctnetlink always knows on a NAT router, so that expected
    connections are still translated - approximately: it sends an expected
    connection to the master's peer instead of the address the SDP or
    Contact named (exp->saved_addr), and gives every one the master's
    outside address as source, without nf_nat_sip_expected()'s pairing of
    an RTP source with the port its own SDP advertised (docs/reference-nat.rst)."""
    state = nat_sip_state(files)
    if state in (LOADED, BUILTIN):
        return "sip", None
    restart = " and restart the helper" if state == LOADABLE else ""
    return FOLLOW_MASTER, (f"nf_nat_sip is {state}: NAT expectations use expectfn {FOLLOW_MASTER}, "
                           f"{FOLLOW_MASTER_DIFFERS}; {nat_sip_fix(state)}{restart}")


# What nat-follow-master does otherwise than nf_nat_sip_expected() (docs/reference-nat.rst).
FOLLOW_MASTER_DIFFERS = ("which sends media to the master's peer instead of the SDP's address and does not pair "
                         "RTP sources with their advertised ports")


def nat_sip_state(files: KernelFiles = KernelFiles()) -> str:
    """Whether nf_nat_sip, and with it the expectfn "sip", is there (module_state())."""
    return module_state("nf_nat_sip", "nf_nat_sip_expected", files)


def nat_sip_fix(state: str) -> str:
    """What to do when nf_nat_sip is not loaded or built in."""
    if state == ABSENT:
        return "this kernel has no nf_nat_sip (CONFIG_NF_NAT_SIP): use a kernel that has it"
    return "`modprobe nf_nat_sip` and add it to /etc/modules-load.d/sipct-helper.conf"
