"""The harness: lab setup cost and four-message UDP dialogs per second through one reused lab.

Prints, measured in one run:
  * lab setup and teardown time (2 hosts + router);
  * packets: the call's four datagrams sent through a lab with the SIP helper and
    through one without (the same ruleset minus the helper), reset between calls,
    and the ratio;
  * dialogs: `sipct run`'s whole loop per call (predict, send, dump the expectation
    table and read events after every step, compare), with and without the
    helper, and the ratio.
  * the conformance suite (curated dialogs, the registry's reproducers and
    --examples generated ones, Hypothesis's generation included) in one lab and
    in --labs parallel labs (sipct conformance --labs), dialogs per second and
    the ratio, and whether the two reports are the same.
Goal: at least 100 dialogs per second through one reused lab with the helper,
and for the suite end to end.
Needs root. Usage: .venv/bin/python bench/harness.py [--calls N] [--examples N] [--labs N] [--suite-only]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
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


def lab_and_loop(calls: int) -> None:
    setup, teardown = lab_setup(5)
    print(f"lab setup {setup * 1000:.0f} ms, teardown {teardown * 1000:.1f} ms (median of 5, 2 hosts + router)")
    with_helper = packets_per_call(True, calls)
    without = packets_per_call(False, calls)
    print(f"packets only: {with_helper:,.0f} calls/s with the helper, {without:,.0f} without "
          f"(ratio {with_helper / without:.2f})")
    with_helper = dialogs_per_second(True, calls)
    without = dialogs_per_second(False, calls)
    print(f"sipct run loop: {with_helper:,.0f} dialogs/s with the helper, {without:,.0f} without "
          f"(ratio {with_helper / without:.2f}); goal {GOAL} dialogs/s: {with_helper / GOAL:.1f}x")


def suite_run(labs: int, examples: int, seed: int) -> tuple[float, float, dict]:
    """The suite as `sipct conformance` runs it: dialogs per second, CPU seconds
    of this process (its labs' workers not included), and its JSON report."""
    from sipct.conformance.corpus import example_dialogs, rfc4475_dialogs, scenario_dialogs
    from sipct.conformance.registry import REGISTRY, for_helper, load_registry
    from sipct.conformance.report import stats_json
    from sipct.conformance.suite import Suite, select_curated
    from sipct.netlink.kernel import RunningKernel

    kernel = RunningKernel.detect()
    curated = select_curated([*example_dialogs(), *scenario_dialogs(), *rfc4475_dialogs()], slow=False)
    suite = Suite(kernel, kernel.profile, for_helper(load_registry(REGISTRY), "kernel"), labs=labs)
    started, cpu = time.perf_counter(), time.process_time()
    try:
        suite.run_curated(curated)
        suite.run_reproducers()
        with tempfile.TemporaryDirectory() as out:
            suite.run_generated(examples, seed, Path(out))
    finally:
        suite.close()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    report = stats_json(suite.stats)
    report.pop("elapsed")
    for probe in report["probes"]:  # what the wall clock decides (tests/conformance/test_parallel_labs.py)
        for step in probe["steps"]:
            step["kernel"].pop("elapsed")
            for expectation in step["kernel"]["expectations"]:
                expectation.pop("timeout")
    return sum(suite.stats.dialogs.values()) / elapsed, cpu, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--examples", type=int, default=1000, help="generated dialogs of the suite (default 1000)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--labs", type=int, default=2,
                        help="parallel labs of the suite's second run (default 2)")
    parser.add_argument("--suite-only", action="store_true", help="only the suite, serial and parallel")
    args = parser.parse_args()
    if not args.suite_only:
        lab_and_loop(args.calls)
    serial, serial_cpu, serial_report = suite_run(1, args.examples, args.seed)
    parallel, parallel_cpu, parallel_report = suite_run(args.labs, args.examples, args.seed)
    print(f"conformance suite ({args.examples} generated, seed {args.seed}, curated, reproducers): "
          f"{serial:,.1f} dialogs/s in 1 lab (CPU here {serial_cpu:.1f} s), {parallel:,.1f} in {args.labs} labs "
          f"(CPU here {parallel_cpu:.1f} s; ratio {parallel / serial:.2f}); same report: "
          f"{'yes' if serial_report == parallel_report else 'NO'}; goal {GOAL} dialogs/s: {parallel / GOAL:.2f}x")


if __name__ == "__main__":
    main()
