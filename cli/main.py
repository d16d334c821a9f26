"""``sipct``: the command line.

Exit status: 0 success/agreement, 1 a divergence or a failed assertion,
2 the run could not be made (bad input, missing prerequisite), 128 + N
ended by signal N once its labs and VMs were gone (SIGHUP 129, SIGINT 130,
SIGTERM 143).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console

from sipct.spec.exitcodes import EXIT_DIVERGED, EXIT_ERROR, EXIT_OK, worst
from sipct.harness.wire import LAB_WIRE


def _profile_arg(value: str):
    from sipct.spec.profiles import UnknownProfile, profile_named
    try:
        return profile_named(value)
    except UnknownProfile as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def examples_dir() -> Path:
    import sipct.spec
    return Path(sipct.spec.__file__).parent / "examples"


def cmd_spec(args: argparse.Namespace) -> int:
    from sipct.capture.cli import capture_options
    from sipct.cli.batch import BadFile, load_batch
    from sipct.spec.predict import predict
    from sipct.spec.report import prediction_json, print_prediction, print_warnings

    console = Console(stderr=False)
    err = Console(stderr=True)
    outputs = []
    status = EXIT_OK
    paths = list(args.dialogs) or sorted(examples_dir().glob("*.yaml"))
    for _, dialog in load_batch(paths, capture_options(args)):
        if isinstance(dialog, BadFile):
            dialog.print(err)
            outputs.append(dialog.json())
            status = worst(status, EXIT_ERROR)
            continue
        if not args.json:  # JSON output has them in each prediction
            print_warnings(dialog, err)
        prediction = predict(dialog, args.profile, wire=LAB_WIRE)
        if prediction.failures:
            status = worst(status, EXIT_DIVERGED)
        if args.json:
            outputs.append(prediction_json(prediction))
        else:
            print_prediction(prediction, console, verbose=args.verbose)
    if args.json:
        json.dump(outputs if len(outputs) != 1 else outputs[0], sys.stdout, indent=2)
        sys.stdout.write("\n")
    return status


def cmd_rules(args: argparse.Namespace) -> int:
    from sipct.spec.rules import RULES
    for rule in RULES.values():
        marker = "DROP " if rule.drop else "     "
        print(f"{marker}{rule.id:36} {rule.function}\n      {rule.summary}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    from sipct.spec.profiles import DEFAULT_PROFILE

    parser = argparse.ArgumentParser(
        prog="sipct", description="The executable specification of the Linux SIP conntrack helper, and its harness.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("spec", help="predict what the kernel helper does with a dialog")
    p.add_argument("dialogs", nargs="*", type=Path,
                   help="dialog files (default: the bundled examples)")
    p.add_argument("--profile", type=_profile_arg, default=DEFAULT_PROFILE,
                   help=f"kernel version profile (default {DEFAULT_PROFILE.name})")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("-v", "--verbose", action="store_true", help="show the rules that fired")
    p.set_defaults(func=cmd_spec)

    p = sub.add_parser("rules", help="list the rule catalogue")
    p.set_defaults(func=cmd_rules)

    from sipct.capture.cli import add_capture_options, add_import_parser
    add_capture_options(sub.choices["spec"])
    add_import_parser(sub)
    from sipct.explain.cli import add_explain_parser
    add_explain_parser(sub, _profile_arg, DEFAULT_PROFILE)
    # `sipct machines --mutations`: spec and curated dialogs only, no harness.
    from sipct.conformance.mutations import add_machines_parser
    add_machines_parser(sub)

    try:
        from sipct.conformance.cli import add_conformance_parser
        from sipct.conformance.fuzz_cli import add_fuzz_parser
        from sipct.harness.clean_cli import add_clean_parser
        from sipct.harness.cli import add_run_parser
        from sipct.reference.cli import add_helper_parser
    except ImportError:  # the harness part is optional for spec-only installs
        pass
    else:
        add_run_parser(sub)
        add_conformance_parser(sub)
        from sipct.conformance.shards import add_report_parser
        add_report_parser(sub)
        add_helper_parser(sub)
        add_fuzz_parser(sub)
        add_clean_parser(sub)
        from sipct.capture.observe_cli import add_observe_parser
        add_observe_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # First of all: a signal from here on unwinds the run, removing its labs
    # and stopping its VMs (docs/harness.rst, "Signals").
    from sipct.netlink.interrupts import Interrupted, install

    install()
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        return args.func(args)
    except Interrupted as exc:
        print(f"sipct: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:  # SIGINT before install(), or with a handler of the caller's
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
