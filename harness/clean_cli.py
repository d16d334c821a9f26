"""``sipct clean``: remove the labs and VM guests that SIGKILLed runs left behind.

The lab-making commands (run, conformance, fuzz; with --kernel too) call
:func:`sweep_stale_labs` before they build their first lab or boot their
first guest, so a leftover never outlives the next run; ``sipct clean`` does
the same on demand and says what it found.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from sipct.spec.exitcodes import EXIT_ERROR, EXIT_OK

if TYPE_CHECKING:
    from sipct.harness.sweep import StaleGuest, StaleLab


def add_clean_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("clean", help="remove the labs (network namespaces) and VM guests of sipct runs that "
                                        "no longer run")
    p.add_argument("--dry-run", action="store_true", help="only list them")
    p.set_defaults(func=cmd_clean)


def _describe(lab: StaleLab) -> str:
    roles = ", ".join(ns[len(lab.lab) + 1:] for ns in lab.namespaces)
    text = f"{lab.lab} ({lab.why}): {roles}"
    if lab.processes and not lab.live:
        text += f"; processes inside: {' '.join(map(str, lab.processes))}"
    return text


def _describe_guest(guest: StaleGuest) -> str:
    text = f"guest {guest.name} ({guest.why}): kernel {guest.kernel or '?'}"
    if guest.processes:
        group = " ".join(map(str, guest.groups))
        text += f", process group {group} ({', '.join(guest.programs)})"
    elif not guest.live:
        text += ", no processes left"
    text += f", {guest.workdir}"
    if guest.error:
        text += f"; {guest.error}"
    return text


def cmd_clean(args: argparse.Namespace) -> int:
    from sipct.netlink.interrupts import doing, shielded
    from sipct.harness.sweep import remove_stale_guests, remove_stale_labs

    with doing("removing the VM guests of runs that are gone"), shielded():
        guests = remove_stale_guests(dry_run=args.dry_run)
    try:
        with doing("removing the labs of runs that are gone"), shielded():
            labs = remove_stale_labs(dry_run=args.dry_run)
    except OSError as exc:
        _print_guests(guests, args.dry_run)
        print(f"sipct clean: {exc} (removing namespaces needs root)", file=sys.stderr)
        return EXIT_ERROR
    stale = [lab for lab in labs if not lab.live]
    live = [lab for lab in labs if lab.live]
    verb = "stale  " if args.dry_run else "removed"
    for lab in stale:
        print(f"{verb} {_describe(lab)}")
    for lab in live:
        print(f"kept    {_describe(lab)}")
    summary = _print_guests(guests, args.dry_run)
    namespaces = sum(len(lab.namespaces) for lab in stale)
    done = "to remove" if args.dry_run else "removed"
    print((f"{len(stale)} stale lab(s) {done} ({namespaces} namespaces), {len(live)} lab(s) of running "
           "processes kept" if labs else "no labs") + f"; {summary}")
    return EXIT_ERROR if any(g.error for g in guests) else EXIT_OK


def _print_guests(guests: list[StaleGuest], dry_run: bool) -> str:
    """Print a line per guest; the summary of them."""
    stale = [g for g in guests if not g.live]
    live = [g for g in guests if g.live]
    verb = "stale  " if dry_run else "removed"
    for guest in stale:
        print(f"{'failed ' if guest.error else verb} {_describe_guest(guest)}")
    for guest in live:
        print(f"kept    {_describe_guest(guest)}")
    if not guests:
        return "no VM guests"
    done = "to end and remove" if dry_run else "ended and removed"
    return f"{len(stale)} stale VM guest(s) {done}, {len(live)} guest(s) of running processes kept"


def sweep_stale_labs() -> None:
    """Remove the labs and end the VM guests of runs that are gone, each named
    on stderr; quiet when there are none or when this process may not (the
    prerequisite check then says that root is needed)."""
    from sipct.netlink.interrupts import doing, shielded
    from sipct.harness.sweep import remove_stale_guests, remove_stale_labs

    try:
        with doing("removing the VM guests of runs that are gone"), shielded():
            guests = remove_stale_guests()
    except OSError as exc:
        print(f"sipct: could not end the VM guests of earlier runs: {exc} (see `sipct clean`)", file=sys.stderr)
        guests = []
    for guest in guests:
        if not guest.live:
            what = "could not end a VM guest left behind" if guest.error else "ended a VM guest left behind"
            print(f"sipct: {what}: {_describe_guest(guest)}", file=sys.stderr)
    try:
        with doing("removing the labs of runs that are gone"), shielded():
            labs = remove_stale_labs()
    except PermissionError:
        return
    except OSError as exc:
        print(f"sipct: could not remove the labs of earlier runs: {exc} (see `sipct clean`)", file=sys.stderr)
        return
    for lab in labs:
        if not lab.live:
            print(f"sipct: removed a lab left behind: {_describe(lab)}", file=sys.stderr)
