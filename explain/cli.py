"""``sipct explain CAPTURE|DIALOG ...``: per packet, in plain words, what the
helper does and why; ``--html FILE`` adds the ladder diagrams."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.text import Text

from sipct.cli.batch import say
from sipct.spec.exitcodes import EXIT_DIVERGED, EXIT_ERROR, EXIT_OK, worst
from sipct.spec.printable import printable
from sipct.harness.wire import LAB_WIRE


def add_explain_parser(sub: argparse._SubParsersAction, profile_arg, default_profile) -> None:
    from sipct.capture.cli import add_capture_options

    p = sub.add_parser("explain", help="say per packet what the helper does with a capture or dialog, and why")
    p.add_argument("inputs", nargs="+", type=Path, metavar="CAPTURE|DIALOG",
                   help="pcap/pcapng captures (imported as sipct import does) or dialog files")
    p.add_argument("--profile", type=profile_arg, default=default_profile,
                   help=f"kernel version profile (default {default_profile.name})")
    p.add_argument("--html", type=Path, metavar="FILE", help="also write a page with a ladder diagram per input")
    add_capture_options(p)
    p.set_defaults(func=cmd_explain)


def where_labels(dialog, frames: tuple[tuple[int, ...], ...] | None) -> list[str]:
    """How the words point at a step: its frames in a capture, its line in a file."""
    if frames is None:
        return [f"line {s.line}" for s in dialog.steps]
    return [("frame " if len(f) == 1 else "frames ") + ", ".join(map(str, f)) if f else "pause" for f in frames]


def cmd_explain(args: argparse.Namespace) -> int:
    from sipct.capture.cli import capture_options
    from sipct.capture.files import capture_format
    from sipct.capture.importer import import_capture
    from sipct.spec.dialog import DialogError, load_dialog
    from sipct.spec.predict import predict
    from sipct.spec.report import print_warnings

    from .page import explain_page
    from .words import explain

    out, err = Console(), Console(stderr=True)
    status = EXIT_OK
    pages = []
    for path in args.inputs:
        try:
            if capture_format(path) is not None:
                imported = import_capture(path, **capture_options(args))
                dialog, frames = imported.dialog, imported.frames
                say(err, f"{path}:", "bold", imported.summary())
            else:
                dialog, frames = load_dialog(path), None
        except DialogError as exc:
            say(err, "error:", "red", exc)
            status = worst(status, EXIT_ERROR)
            continue
        print_warnings(dialog, err)
        prediction = predict(dialog, args.profile, wire=LAB_WIRE)
        steps = explain(prediction, where_labels(dialog, frames))
        hosts = ", ".join(f"{name} {addr}" for name, addr in dialog.hosts.items())
        out.print(Text.assemble((printable(dialog.name), "bold"), f" ({printable(str(path))}), kernel profile "
                                f"{prediction.profile.name}; hosts: {hosts}"))
        for s in steps:
            for n, line in enumerate(s.lines()):
                style = "red" if s.verdict == "drop" and n < 3 else ("bold" if n == 0 else "")
                out.print(Text(printable(line), style=style), soft_wrap=True)
        if prediction.failures:
            status = worst(status, EXIT_DIVERGED)
        pages.append((prediction, steps))
    if args.html is not None and pages:
        try:
            args.html.write_text(explain_page(pages, "sipct explain: " + ", ".join(p.name for p in args.inputs)),
                                 encoding="utf-8")
        except OSError as exc:
            say(err, "error:", "red", f"{args.html}: cannot write: {exc.strerror}")
            return EXIT_ERROR
    return status
