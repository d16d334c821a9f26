"""A batch of dialog files for one command: each file loads on its own, so one
bad file is reported and the others still run (the exit status says that
something was bad)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from sipct.spec.dialog import Dialog, DialogError, load_dialog
from sipct.spec.printable import printable
from sipct.harness.wire import LAB_WIRE


@dataclass(frozen=True, slots=True)
class BadFile:
    """A dialog that could not be loaded or run, as the user should see it."""

    source: str
    message: str

    def json(self) -> dict[str, Any]:
        """The entry a ``--json`` document holds in the dialog's place."""
        return {"dialog": Path(self.source).stem, "source": self.source, "error": self.message}

    def print(self, console: Console) -> None:
        say(console, "error:", "red", self.message)


def say(console: Console, label: str, style: str, message: object) -> None:
    """``label message``, the message shown as it is: no rich markup read from
    it, its control characters escaped (it may quote a file or a payload)."""
    console.print(Text.assemble((label, style), " ", printable(str(message))))


def load_batch(paths: list[Path], capture_options: dict | None = None) -> list[tuple[Path, Dialog | BadFile]]:
    """Each file in order, as its dialog or as why it could not be loaded; a
    pcap or pcapng capture is imported (sipct.capture) with ``capture_options``."""
    from sipct.capture.files import capture_format

    batch: list[tuple[Path, Dialog | BadFile]] = []
    for path in paths:
        try:
            if capture_format(path) is not None:
                from sipct.capture.importer import import_capture
                batch.append((path, import_capture(path, **(capture_options or {})).dialog))
            else:
                dialog = load_dialog(path)
                if dialog.nat:
                    refuse_unpredictable(dialog)
                batch.append((path, dialog))
        except DialogError as exc:
            batch.append((path, BadFile(str(path), str(exc))))
    return batch


def refuse_unpredictable(dialog: Dialog) -> None:
    """A NAT dialog in which some kernel would pick a port at random is
    refused at load, as a bad file (sipct.spec.predict.Unpredictable names
    the step), not half-way through a run."""
    from sipct.spec.predict import predict
    from sipct.spec.profiles import PROFILES

    for profile in PROFILES.values():
        if not dialog.kernels or profile.name in dialog.kernels:
            predict(dialog, profile, wire=LAB_WIRE)
