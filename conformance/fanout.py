"""``sipct conformance --kernel ... --jobs N``: N kernels booted at once.

Each kernel's boots stay one after another (the boots of a kernel are merged
into one row and a failed boot ends that kernel's row), while up to N kernels
run side by side in threads: a boot is a QEMU process to wait for, so the
threads only wait. Every boot has its own shared folder (``run_in_vm``'s
temporary work folder) and each kernel its own output names (its release),
so the guests share nothing but the read-only inputs.

The rows come back in the order of the kernels asked for, never in the order
they finished: a report of ``--jobs 4`` is the one of ``--jobs 1``.
"""

from __future__ import annotations

import argparse
import threading
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from rich.console import Console

from sipct.conformance.matrixrow import Boot, KernelReport
from sipct.conformance.matrixrun import run_kernel


def run_kernels(kernels: list[Any], args: argparse.Namespace, boots: list[Boot], generated: Path,
                n_generated: int, n_curated: int, log: Console, jobs: int = 1) -> list[KernelReport]:
    """The rows of ``kernels``, in their order, ``jobs`` kernels at a time."""
    if jobs <= 1 or len(kernels) <= 1:
        return [run_kernel(k, args, boots, generated, n_generated, n_curated, log) for k in kernels]
    cancel = threading.Event()
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="sipct-kernel") as pool:
        futures: list[Future] = [
            pool.submit(run_kernel, k, args, boots, generated, n_generated, n_curated, log, cancel=cancel)
            for k in kernels]
        try:
            wait(futures, return_when=FIRST_EXCEPTION)
        except BaseException:
            # Ctrl-C reaches this thread only: the others end their QEMU when told, and the pool's exit
            # waits for them, so that no guest outlives the command.
            cancel.set()
            for f in futures:
                f.cancel()
            raise
        if any(f.exception() for f in futures if f.done()):
            cancel.set()
        return [f.result() for f in futures]
