"""Whether two ``sipct.conformance/1`` reports say the same, apart from the wall clock and the checkout.

What may differ between two runs of one suite with one seed: how long things
took (``elapsed``, per probe step too), the expectations' remaining
timeouts the probes read while dumping (whole seconds; harness.diff
allows for them, TIMEOUT_TOLERANCE), the drop log's reasons (``dropped``,
which a run without the drop log, sipct.harness.droplog, cannot have) and
where the checkout lies (a dialog's source path). Everything else - the
counts, every finding, the failed dialogs, the coverage, the probes'
step-by-step verdicts and tables - must be equal.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

__all__ = ["comparable", "differences"]

# An absolute path up to the folder the dialogs come from (a scenario, an example, a corpus).
_CHECKOUT = re.compile(r"(?:/[^\s/()'\"]+)+?/((?:conformance/scenarios|spec/examples|shared/corpora)/)")


def comparable(data: dict[str, Any]) -> dict[str, Any]:
    """The report without what another run of the same suite may change."""
    out = json.loads(_CHECKOUT.sub(r"\1", json.dumps(data)))
    out.pop("elapsed", None)
    for probe in out.get("probes", []):
        for step in probe.get("steps", []):
            kernel = step.get("kernel", {})
            kernel.pop("elapsed", None)
            kernel.pop("dropped", None)
            for expectation in kernel.get("expectations", []):
                expectation.pop("timeout", None)
    return out


def differences(a: Any, b: Any, where: str = "") -> list[str]:
    """Where two JSON values differ, as paths (``probes[3].steps[1].kernel.delivered: True != False``)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            path = f"{where}.{key}" if where else str(key)
            if key not in a or key not in b:
                out.append(f"{path}: only in {'the second' if key not in a else 'the first'}")
            else:
                out += differences(a[key], b[key], path)
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: {len(a)} items != {len(b)}"] + \
                [d for x, y in zip(a, b) for d in differences(x, y, where + "[]")][:5]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def compare_files(first: Path, second: Path) -> list[str]:
    return differences(comparable(json.loads(first.read_text())), comparable(json.loads(second.read_text())))
