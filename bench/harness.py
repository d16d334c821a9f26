"""The harness: lab setup cost and four-message UDP dialogs per second through one reused lab.

Prints, measured in one run:
  * lab setup and teardown time (2 hosts + router);
  * packets: the call's four datagrams sent through a lab with the SIP helper and
    through one without (the same ruleset minus the helper), reset between calls,
    and the ratio;
  * dialogs: `sipct run`'s whole loop per call (predict, send, dump the expectation
    table and read events after every step, compare), with and without the
    helper, and the ratio.
Goal: at least 100 dialogs per second through one reused lab with the helper.
Needs root. Usage: .venv/bin/python bench/harness.py [--calls N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import call_dialog  # noqa: E402

from sipct.harness.diff import compare  # noqa: E402
from sipct.harness.lab import Lab  # noqa: E402
from sipct.harness.run import DialogRunner, lab_hosts  # noqa: E402
from sipct.spec.predict import predict  # noqa: E402
from sipct.harness.wire import LAB_WIRE

GOAL = 100


def lab_setup(rounds: int) -> tuple[float, float]:
    hosts = lab_hosts(call_dialog())
    setups, teardowns = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        lab = Lab(hosts)
        t1 = time.perf_counter()
        lab.close()
        setups.append(t1 - t0)
        teardowns.append(time.perf_counter() - t1)
    return statistics.median(setups), statistics.median(teardowns)


def packets_per_call(helper: bool, calls: int) -> float:
    dialog = call_dialog()
    names = {"ua": "h0", "server": "h1"}
    with Lab(lab_hosts(dialog), helper=helper) as lab:
        started = time.perf_counter()
        for _ in range(calls):
            for step in dialog.steps:
                d = lab.udp_send(names[step.src.host], step.src.port, names[step.dst.host], step.dst.port,
                                 step.payload)
                assert d.delivered
            lab.reset()
        return calls / (time.perf_counter() - started)


def dialogs_per_second(helper: bool, calls: int) -> float:
    dialog = call_dialog()
    prediction = predict(dialog, wire=LAB_WIRE)
    with Lab(lab_hosts(dialog), helper=helper) as lab, DialogRunner(lab) as runner:
        started = time.perf_counter()
        for _ in range(calls):
            comparison = compare(predict(dialog, wire=LAB_WIRE), runner.run(dialog, (5060,)), "")
            assert comparison.agree == helper  # without the helper the kernel creates nothing
        del prediction
        return calls / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    setup, teardown = lab_setup(5)
    print(f"lab setup {setup * 1000:.0f} ms, teardown {teardown * 1000:.1f} ms (median of 5, 2 hosts + router)")
    with_helper = packets_per_call(True, args.calls)
    without = packets_per_call(False, args.calls)
    print(f"packets only: {with_helper:,.0f} calls/s with the helper, {without:,.0f} without "
          f"(ratio {with_helper / without:.2f})")
    with_helper = dialogs_per_second(True, args.calls)
    without = dialogs_per_second(False, args.calls)
    print(f"sipct run loop: {with_helper:,.0f} dialogs/s with the helper, {without:,.0f} without "
          f"(ratio {with_helper / without:.2f}); goal {GOAL} dialogs/s: {with_helper / GOAL:.1f}x")


if __name__ == "__main__":
    main()
