"""One row of the kernel matrix: :class:`KernelReport`, the suite in one
kernel with its boots (:class:`Boot`) merged, and its JSON - what a run
makes, a shard holds and the table, JSON and docs page are made from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sipct.conformance.report import JSON_FORMAT, stats_json
from sipct.conformance.suite import Stats

__all__ = ["Boot", "KernelReport"]


@dataclass
class Boot:
    """One boot of a kernel: a module-parameter group and its dialogs."""

    params: dict[str, int]
    dialogs: list[Any]  # the curated Dialogs of this group (the guest finds the default group's itself)
    seconds: dict[str, float | None] = field(default_factory=dict)
    exit_code: int | None = None
    loaded_params: dict[str, str] = field(default_factory=dict)
    missing_modules: list[str] = field(default_factory=list)
    files: int | None = None  # the count of curated files of a boot read back from a shard (no dialogs)

    def json(self) -> dict[str, Any]:
        files = self.files if self.files is not None else len(self.dialogs)
        return {"module_params": self.params, "curated_files": files if self.params else None,
                "loaded_params": self.loaded_params, "missing_modules": self.missing_modules,
                "exit_code": self.exit_code, "seconds": self.seconds}


@dataclass
class KernelReport:
    """One row of the matrix: the suite in one kernel, its boots merged."""

    kernel: str  # the release, as uname -r says
    version: str  # the Debian package version (6.1.192-2), else the upstream one
    stats: Stats | None
    host: bool = False
    vmlinuz: str | None = None
    expected_profile: str | None = None  # profile_for_kernel() of the image's version, on the host
    boots: list[Boot] = field(default_factory=list)
    seconds: float = 0.0  # host wall time, boots included
    error: str | None = None
    divergent_files: list[str] = field(default_factory=list)
    # --helper reference: the same dialogs through the userspace reference helper
    # (None: not asked for, or not available - the running kernel has no nfnetlink_cthelper)
    reference: Stats | None = None
    three_way: bool = False
    reference_logs: list[str] = field(default_factory=list)  # the kept reference-helper/ folders, a boot each

    @property
    def ok(self) -> bool:
        kernel_ok = self.error is None and self.stats is not None and self.stats.ok
        if self.three_way and not self.host:
            return kernel_ok and self.reference is not None and self.reference.ok
        return kernel_ok

    @property
    def profile(self) -> str:
        return self.stats.profile if self.stats else (self.expected_profile or "-")

    def json(self) -> dict[str, Any]:
        data = stats_json(self.stats) if self.stats else {
            "format": JSON_FORMAT, "kernel": self.kernel, "profile": self.expected_profile, "ok": False}
        data["error"] = self.error
        data["host"] = self.host
        data["version"] = self.version
        data["vm"] = None if self.host else {
            "vmlinuz": self.vmlinuz, "release": self.kernel, "version": self.version,
            "expected_profile": self.expected_profile, "boots": [b.json() for b in self.boots]}
        data["wall_seconds"] = round(self.seconds, 1)
        data["divergent_files"] = self.divergent_files
        if self.three_way:
            data["reference"] = stats_json(self.reference) if self.reference else None
            data["reference_logs"] = self.reference_logs
        return data

    def summary(self) -> dict[str, Any]:
        s = self.stats
        return {
            "kernel": self.kernel, "version": self.version, "host": self.host, "profile": self.profile,
            "ok": self.ok, "error": self.error,
            "dialogs": dict(s.dialogs) if s else {}, "agreeing": sum(s.agreeing.values()) if s else 0,
            "total": sum(s.dialogs.values()) if s else 0,
            "divergences": ({k: dict(v) for k, v in s.divergences_by_rule().items()} if s else {}),
            "boots": len(self.boots) or (1 if self.host else 0), "seconds": round(self.seconds, 1),
            **({"reference": _reference_summary(self.reference)} if self.three_way else {}),
        }


def _reference_summary(s: Stats | None) -> dict[str, Any] | None:
    if s is None:
        return None
    return {"ok": s.ok, "dialogs": dict(s.dialogs), "agreeing": sum(s.agreeing.values()),
            "total": sum(s.dialogs.values()), "elapsed": round(s.elapsed, 1),
            "divergences": {k: dict(v) for k, v in s.divergences_by_rule().items()}}
