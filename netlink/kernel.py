"""What the running kernel's SIP helper is configured with, and how its
expectations look in the spec's terms."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sipct.netlink.ctexp import KernelExpectation
from sipct.spec.expectation import ConnTuple, ExpectClass, Expectation, ExpectFlag, ExpectNat, ExpectTuple
from sipct.spec.params import DEFAULT_PARAMS, ModuleParams
from sipct.spec.profiles import KernelProfile, profile_for_kernel

PARAMS_DIR = Path("/sys/module/nf_conntrack_sip/parameters")
EXPECT_MAX = Path("/proc/sys/net/netfilter/nf_conntrack_expect_max")
PROC_VERSION = Path("/proc/version")
# Parameters that only the module load sets; `ports` is not among them: the
# lab attaches the helper to the dialog's ports itself (see docs/decisions).
LOAD_TIME_PARAMS = ("sip_timeout", "sip_direct_signalling", "sip_direct_media", "sip_external_media")


class KernelUnavailable(RuntimeError):
    """The running kernel cannot run a dialog (the message says why and what to do)."""


@dataclass(frozen=True)
class RunningKernel:
    release: str
    params: ModuleParams
    profile: KernelProfile

    @classmethod
    def detect(cls, params_dir: Path = PARAMS_DIR) -> "RunningKernel":
        import os

        release = os.uname().release
        if not params_dir.is_dir():
            raise KernelUnavailable(
                f"{params_dir} does not exist: the SIP conntrack helper is not loaded. "
                "Load it with `modprobe nf_conntrack_sip` (kernel option CONFIG_NF_CONNTRACK_SIP).")
        values: dict[str, object] = {}
        for name in ("ports", *LOAD_TIME_PARAMS):
            path = params_dir / name
            if path.exists():
                values[name] = path.read_text().strip()
        if "ports" in values and not str(values["ports"]).strip(","):
            del values["ports"]  # an empty array means the default port
        try:
            values["expect_max"] = int(EXPECT_MAX.read_text())
        except (OSError, ValueError):
            pass
        return cls(release, ModuleParams.from_mapping(values), profile_for_kernel(kernel_version(release)))

    def conflicts(self, wanted: ModuleParams) -> list[str]:
        """The load-time parameters (and the expectation table size) a dialog
        wants that this kernel does not have."""
        out = []
        for name in LOAD_TIME_PARAMS:
            have, want = getattr(self.params, name), getattr(wanted, name)
            if have != want:
                out.append(f"{name}={int(want) if isinstance(want, bool) else want} "
                           f"(this kernel has {int(have) if isinstance(have, bool) else have})")
        if wanted_expect_max(wanted) not in (None, self.params.expect_max):
            out.append(f"expect_max={wanted.expect_max} (this kernel has {self.params.expect_max}; "
                       f"{EXPECT_MAX} is written only in the initial namespace, which the lab never changes)")
        return out

    def params_for(self, wanted: ModuleParams | None) -> ModuleParams:
        """The parameters a dialog runs under: the kernel's, with the dialog's ports."""
        if wanted is None:
            return self.params
        values = self.params.as_mapping()
        values["ports"] = list(wanted.ports)
        return ModuleParams.from_mapping(values)


def wanted_expect_max(wanted: ModuleParams | None) -> int | None:
    """The expectation table size a dialog asks for, None if it leaves it to
    the kernel. nf_ct_expect_max depends on the machine's memory
    (nf_conntrack_expect_init(): nf_ct_expect_hsize * 4), so only a value
    other than the spec's default is a requirement."""
    if wanted is None or wanted.expect_max == DEFAULT_PARAMS.expect_max:
        return None
    return wanted.expect_max


def kernel_version(release: str, proc_version: Path = PROC_VERSION) -> str:
    """The upstream version of the running kernel, for choosing its profile.

    Usually the release itself (6.18.44-fc-v669, 6.12.117+deb12-amd64), but
    Debian's 6.1 kernels carry an ABI name (6.1.0-56-amd64) whose patch level
    is not the version: /proc/version has it ("... Debian 6.1.192-2 ...").
    """
    try:
        # after the build number: the compiler's "(Debian 12.2.0-14)" comes before it
        match = re.search(r"#\d+\b.*\bDebian (\d+\.\d+\.\d+)", proc_version.read_text())
    except OSError:
        match = None
    return match.group(1) if match else release


def to_spec(exp: KernelExpectation, now: float) -> Expectation:
    """A ctnetlink expectation as a spec value; ``now`` is the dialog time of the dump."""
    t, m = exp.tuple, exp.master
    src = None if exp.mask.src_is_wildcard else t.src
    sport = None if exp.mask.sport_is_wildcard else t.sport
    return Expectation(
        tuple=ExpectTuple(t.dst.version, exp.proto, src, t.dst, t.dport or 0, sport),
        klass=ExpectClass(exp.klass),
        flags=ExpectFlag(exp.flag_bits),
        master=ConnTuple(m.src, m.dst, m.proto, m.sport or 0, m.dport or 0),
        expires=now + exp.timeout,
        helper=exp.helper or "",
        nat=None if exp.nat is None else ExpectNat(exp.nat.dir, exp.nat.src, exp.nat.sport or 0),
    )
