"""The known-divergence registry: differences between spec and kernel that are
understood and recorded rather than fixed.

Each entry names the kernels (profiles) it applies to, the aspect that differs
(verdict, payload, expectations, timeout, events), the spec rules that fire in
the divergent step, the reason (``kernel-bug``, ``version-difference``,
``not-observable``, ``userspace-limit``), a reference and a reproducer dialog,
and the helpers it concerns (``helpers``: ``kernel``, the kernel's
nf_conntrack_sip - the default - and/or ``reference``, the userspace reference
helper of ``--helper reference``). A divergence is registered when an entry
of its helper matches it; the suite fails on unregistered ones, and on an
entry whose reproducer no longer diverges.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

REGISTRY = Path(__file__).resolve().parent / "known-divergences.yaml"
REASONS = ("kernel-bug", "version-difference", "not-observable", "userspace-limit")
HELPERS = ("kernel", "reference")
ASPECTS = ("verdict", "payload", "expectations", "timeout", "events", "timing")


class RegistryError(ValueError):
    pass


@dataclass(frozen=True)
class KnownDivergence:
    id: str
    kernels: tuple[str, ...]
    aspects: tuple[str, ...]
    rules: tuple[str, ...]
    reason: str
    reference: str
    explanation: str
    reproducer: Path | None
    slow: bool = False
    helpers: tuple[str, ...] = ("kernel",)

    def matches(self, profile: str, aspect: str, fired: set[str]) -> bool:
        return profile in self.kernels and aspect in self.aspects and set(self.rules) <= fired


def load_registry(path: Path = REGISTRY) -> list[KnownDivergence]:
    from sipct.spec.profiles import PROFILES
    from sipct.spec.rules import RULES

    try:
        root = yaml.compose(path.read_text(), Loader=yaml.SafeLoader)
    except OSError as exc:
        raise RegistryError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else "?"
        raise RegistryError(f"{path}:{line}: YAML: {exc.problem}") from None
    if root is None:
        return []
    if not isinstance(root, yaml.SequenceNode):
        raise RegistryError(f"{path}:1: the registry is a list of entries")
    entries = []
    seen: set[str] = set()
    for node in root.value:
        line = node.start_mark.line + 1
        data = yaml.safe_load(yaml.serialize(node))

        def fail(message: str) -> RegistryError:
            return RegistryError(f"{path}:{line}: {message}")

        if not isinstance(data, dict):
            raise fail("an entry is a mapping")
        required = {"id", "kernels", "aspect", "rules", "reason", "reference", "explanation"}
        missing = required - data.keys()
        if missing:
            raise fail(f"missing {', '.join(sorted(missing))}")
        unknown = data.keys() - required - {"reproducer", "slow", "helpers"}
        if unknown:
            raise fail(f"unknown key(s) {', '.join(sorted(unknown))}")
        if data["id"] in seen:
            raise fail(f"duplicate id {data['id']!r}")
        seen.add(data["id"])
        if data["reason"] not in REASONS:
            raise fail(f"reason must be one of {', '.join(REASONS)}")
        aspects = data["aspect"] if isinstance(data["aspect"], list) else [data["aspect"]]
        if not aspects or any(a not in ASPECTS for a in aspects):
            raise fail(f"aspect must be one of {', '.join(ASPECTS)} (or a list of them)")
        for kernel in data["kernels"]:
            if kernel not in PROFILES:
                raise fail(f"unknown kernel profile {kernel!r}")
        for rule in data["rules"]:
            if rule not in RULES:
                raise fail(f"unknown rule {rule!r}")
        helpers = data.get("helpers", ["kernel"])
        if not isinstance(helpers, list) or not helpers or any(h not in HELPERS for h in helpers):
            raise fail(f"helpers must be a list of {', '.join(HELPERS)}")
        reproducer = path.parent / data["reproducer"] if data.get("reproducer") else None
        if reproducer is not None and not reproducer.is_file():
            raise fail(f"reproducer {data['reproducer']} does not exist")
        entries.append(KnownDivergence(str(data["id"]), tuple(data["kernels"]), tuple(aspects),
                                       tuple(data["rules"]), data["reason"], str(data["reference"]),
                                       str(data["explanation"]).strip(), reproducer, bool(data.get("slow", False)),
                                       tuple(helpers)))
    return entries


def for_helper(registry: list[KnownDivergence], helper: str) -> list[KnownDivergence]:
    """The entries that concern ``helper`` (kernel or reference)."""
    return [e for e in registry if helper in e.helpers]
