"""The conformance suite through the reference helper (``--helper reference``).

The same dialogs as the kernel helper's suite - curated, the registry's
reproducers, the generated files - each compared with the spec, but sent
through ``sipct helper`` (sipct.harness.threeway) instead of nf_conntrack_sip.
One lab and one daemon serve them all: the daemon starts once (half a minute
and more under TCG), so the lab holds every address of every dialog from the
start. Registry entries apply when they name the reference among their
``helpers``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sipct.conformance.registry import KnownDivergence, for_helper
from sipct.conformance.suite import Suite
from sipct.netlink.kernel import RunningKernel
from sipct.spec.dialog import Dialog, load_dialog
from sipct.spec.profiles import KernelProfile

REFERENCE_LABEL = "reference helper"
REFERENCE_FOLDER = "reference-helper"  # in --out: the daemon's helper.toml and helper.log, kept


class ReferenceSuite(Suite):
    """Suite with a ReferenceRunner for every dialog; ``dialogs`` are all the
    dialogs it will run (the lab is built for their addresses)."""

    def __init__(self, kernel: RunningKernel, profile: KernelProfile, registry: list[KnownDivergence],
                 dialogs: list[Dialog], *, on_dialog: Callable[[str], None] | None = None,
                 workdir: Path | None = None, log_level: str = "info") -> None:
        from sipct.harness.threeway import ReferenceRunner

        registry = for_helper(registry, "reference")
        super().__init__(kernel, profile, registry, on_dialog=on_dialog)
        self._runner.close()
        reproducers = [load_dialog(e.reproducer) for e in registry
                       if e.reproducer is not None and profile.name in e.kernels]
        self._runner = ReferenceRunner([*dialogs, *reproducers], self.params, profile,  # type: ignore[assignment]
                                       workdir=workdir, log_level=log_level)
        self.stats.kernel = f"{kernel.release} {REFERENCE_LABEL}"

    @property
    def ready_seconds(self) -> float | None:
        return self._runner.ready_seconds  # type: ignore[attr-defined]

    def run_files(self, dialogs: list[Dialog], seed: int | None = None) -> None:
        """As Suite.run_files, in the one lab of the reference helper."""
        self.stats.seed, self.stats.examples = seed, len(dialogs)
        for dialog in dialogs:
            self.check(dialog, "generated")
