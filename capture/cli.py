"""``sipct import CAPTURE -o DIALOG``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from sipct.cli.batch import say
from sipct.spec.exitcodes import EXIT_ERROR, EXIT_OK


def port_arg(value: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number (1-65535)")
    return int(value)


def seconds_arg(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if seconds < 0:
        raise argparse.ArgumentTypeError("--max-wait cannot be negative")
    return seconds


def add_capture_options(p: argparse.ArgumentParser) -> None:
    """How a capture becomes a dialog: shared by every command that reads captures."""
    p.add_argument("--port", dest="ports", type=port_arg, action="append", default=[], metavar="PORT",
                   help="a SIP port besides 5060 (repeatable); the dialog's helper is attached on it too")
    p.add_argument("--keep-addresses", action="store_true",
                   help="keep the capture's addresses (they must already be lab addresses: documentation "
                        "networks, the hosts of a packet in different /24 or /64 networks)")
    p.add_argument("--max-wait", type=seconds_arg, metavar="SECONDS",
                   help="shorten every pause between packets to at most SECONDS")
    p.add_argument("--family", type=int, choices=(4, 6), help="with SIP over both IPv4 and IPv6: the one to import")


def capture_options(args: argparse.Namespace) -> dict:
    return {"ports": tuple(args.ports), "keep_addresses": args.keep_addresses, "max_wait": args.max_wait,
            "family": args.family}


def add_import_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="turn a pcap or pcapng capture into a dialog file")
    p.add_argument("capture", type=Path, help="a pcap or pcapng file")
    p.add_argument("-o", "--output", type=Path, help="the dialog file to write (default: standard output)")
    add_capture_options(p)
    p.set_defaults(func=cmd_import)


def cmd_import(args: argparse.Namespace) -> int:
    from sipct.capture.importer import import_capture
    from sipct.spec.dialog import DialogError

    err = Console(stderr=True)
    try:
        imported = import_capture(args.capture, **capture_options(args))
    except DialogError as exc:
        say(err, "error:", "red", exc)
        return EXIT_ERROR
    if args.output is None:
        sys.stdout.write(imported.text)
    else:
        try:
            args.output.write_text(imported.text, encoding="utf-8")
        except OSError as exc:
            say(err, "error:", "red", f"{args.output}: cannot write: {exc.strerror}")
            return EXIT_ERROR
    say(err, f"{args.capture}:", "bold", imported.summary())
    return EXIT_OK
