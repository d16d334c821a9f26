"""The dialog loader: single-message dialog files per second, PyYAML's
pure-Python composer against libyaml's, measured in one run.

Writes N one-step dialog files into a temporary folder, in two forms: as
``sipct conformance --kernel`` writes its generated dialogs for the guest
(dump_dialog: the payload as ``raw`` bytes, templates off) and as people write
them (a ``message:`` block with ``{host}`` templates and ``{body_length}``).
Every file is loaded with load_dialog(), once per YAML loader. Rates are CPU
time of this process (best of --repeat passes over the files), reading the
files included; the wall-clock rate of the best pass is printed too.
Usage: .venv/bin/python bench/loader.py [--files N] [--repeat R]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import CALL, call_dialog  # noqa: E402

from sipct.spec.dialog import LOADER, PURE_LOADER, dump_dialog, load_dialog  # noqa: E402

LOADERS = {"pure": PURE_LOADER, "libyaml": LOADER}


def message_form(i: int) -> str:
    """The call's INVITE as a dialog file of its own, written by hand."""
    head, invite = CALL.split("  - send: ", 2)[:2]
    return head.replace("name: bench-call", f"name: bench-invite-{i}") + "  - send: " + invite


def write_files(folder: Path, count: int) -> dict[str, list[Path]]:
    invite = call_dialog()
    one = replace(invite, steps=invite.steps[:1])
    forms: dict[str, list[Path]] = {"raw (generated)": [], "message (by hand)": []}
    for i in range(count):
        raw, message = folder / f"raw-{i:05d}.yaml", folder / f"message-{i:05d}.yaml"
        raw.write_text(dump_dialog(replace(one, name=f"bench-raw-{i}")))
        message.write_text(message_form(i))
        forms["raw (generated)"].append(raw)
        forms["message (by hand)"].append(message)
    return forms


def best(paths: list[Path], loader: type, repeat: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of the fastest of ``repeat`` passes."""
    times = []
    for _ in range(repeat):
        cpu, wall = time.process_time(), time.perf_counter()
        for path in paths:
            load_dialog(path, loader=loader)
        times.append((time.process_time() - cpu, time.perf_counter() - wall))
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000, help="files of each form (default 1000)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if LOADER is PURE_LOADER:
        sys.exit("this PyYAML has no libyaml (yaml.__with_libyaml__ is False): nothing to compare")
    with tempfile.TemporaryDirectory(prefix="sipct-bench-loader-") as tmp:
        forms = write_files(Path(tmp), args.files)
        for form, paths in forms.items():
            rates = {}
            for name, loader in LOADERS.items():
                cpu, wall = best(paths, loader, args.repeat)
                rates[name] = len(paths) / cpu
                print(f"{form}, {name}: {len(paths)} files in {cpu:.3f} s CPU = {rates[name]:,.0f} dialogs/s "
                      f"(wall {len(paths) / wall:,.0f} dialogs/s)")
            print(f"{form}: libyaml/pure ratio {rates['libyaml'] / rates['pure']:.1f}")


if __name__ == "__main__":
    main()
