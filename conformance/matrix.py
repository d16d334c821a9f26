"""The kernel matrix: ``sipct conformance --kernel VMLINUZ`` / ``--kernels PRESET``.

The conformance suite runs in every kernel asked for, each booted with
virtme-ng (:mod:`sipct.harness.vm`), and on the running kernel unless
``--no-host``.  How the guest's cost is kept down (docs/conformance.rst,
"Kernel matrix", has the measurements):

* the generated dialogs are made once, on the host, by Hypothesis with the
  run's seed (:func:`~sipct.conformance.suite.generate_dialogs`), written as
  dialog files and given to every guest, which runs them with ``sipct
  conformance --dialog-files`` - the guest never imports Hypothesis - and
  the running kernel runs the same files: every row of the matrix ran the
  same dialogs;
* one boot per kernel runs everything with the module's default parameters;
  curated dialogs that need other load-time parameters (``params:``, e.g.
  ``sip_direct_media: 0``) run in one more boot per parameter set;
* the guest picks the spec profile from its own kernel version
  (``RunningKernel.detect()``) and writes a ``sipct.conformance/1`` report
  into the shared folder; the host merges the boots of a kernel into one.

A divergent generated dialog is not shrunk in the guest: its file is copied
to ``--out`` as it is, with a comment saying where it diverged.

This module is the command. What runs where is planned by
:mod:`sipct.conformance.matrixplan`; a kernel's boots are run and merged into
its row (:mod:`sipct.conformance.matrixrow`) by
:mod:`sipct.conformance.matrixrun`; ``--jobs N`` boots N kernels at once
(:mod:`sipct.conformance.fanout`); the outputs - the table, the JSON and the
docs page (:mod:`~sipct.conformance.matrixtable`,
:mod:`~sipct.conformance.matrixjson`, :mod:`~sipct.conformance.matrixdocs`) -
are written by :mod:`sipct.conformance.publish`, and a matrix run in parts is
merged by ``sipct report merge`` (:mod:`sipct.conformance.shards`).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.text import Text

from sipct.conformance.matrixjson import dialogs_digest
from sipct.conformance.matrixplan import GENERATED_FOLDER, boot_groups, curated_dialogs, select_kernels, write_generated
from sipct.conformance.matrixrow import KernelReport
from sipct.spec.exitcodes import EXIT_ERROR
from sipct.spec.printable import printable

__all__ = ["cmd_matrix"]


def cmd_matrix(args: argparse.Namespace) -> int:
    from sipct.conformance.cli import _collect, nat_share, run_here
    from sipct.conformance.fanout import run_kernels
    from sipct.conformance.publish import publish
    from sipct.conformance.shards import write_shards
    from sipct.conformance.registry import REGISTRY, RegistryError, load_registry
    from sipct.conformance.suite import generate_dialogs
    from sipct.harness.vmboot import find_vng
    from sipct.harness.vmkernels import VmError
    from sipct.spec.dialog import DialogError

    out, err = Console(), Console(stderr=True)
    if not out.is_terminal:
        out = Console(width=200)  # a log file: do not cut the table to 80 columns
    try:
        kernels = select_kernels(args.kernels, args.preset)
        find_vng()
        load_registry(args.registry or REGISTRY)
        curated, extras = curated_dialogs(args)
        files = _collect([args.dialog_files]) if args.dialog_files else None
    except (VmError, RegistryError, DialogError) as exc:
        err.print(Text.assemble(("cannot run:", "red"), f" {printable(str(exc))}"))
        return EXIT_ERROR

    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="sipct-matrix-"))
    try:
        generated = work / GENERATED_FOLDER
        if files is None:
            t = time.monotonic()
            made = generate_dialogs(args.examples, args.seed, nat=nat_share(args))
            dialogs = write_generated(made, generated, args.seed)
            skipped = len(made) - len(dialogs)
            err.print(f"generated {len(made)} dialogs (seed {args.seed}) in {time.monotonic() - t:.1f} s"
                      + (f"; {skipped} without steps left out" if skipped else ""), highlight=False)
        else:
            dialogs = files
            shutil.copytree(args.dialog_files, generated)
        args.generated_sha256 = dialogs_digest(generated)
        boots = boot_groups(curated + extras)
        reports: list[KernelReport] = []
        if not args.no_host:
            err.print("the running kernel ...", highlight=False)
            t = time.monotonic()
            # The kernel helper only: the running kernel has no nfnetlink_cthelper (docs/reference.rst).
            stats = run_here(argparse.Namespace(**{**vars(args), "dialog_files": generated, "helper": "kernel"}),
                             quiet=True)
            if isinstance(stats, int):
                reports.append(KernelReport(_running_release(), _running_release(), None, host=True,
                                            error="the suite could not run on the running kernel (see above)"))
            else:
                stats.elapsed = time.monotonic() - t
                reports.append(KernelReport(stats.kernel, _running_version(), stats, host=True,
                                            seconds=stats.elapsed))
        reports += run_kernels(kernels, args, boots, generated, len(dialogs), len(boots[0].dialogs), err,
                               jobs=args.jobs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    elapsed = time.monotonic() - started

    status = publish(reports, args, elapsed, curated + extras, out, err)
    if args.shard_dir:
        for path in write_shards(reports, args, elapsed, args.shard_dir):
            err.print(f"wrote {path}", highlight=False)
    return status


def _running_release() -> str:
    import os

    return os.uname().release


def _running_version() -> str:
    from sipct.netlink.kernel import kernel_version

    return kernel_version(_running_release())
