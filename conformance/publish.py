"""A kernel matrix's outputs - table, ``--json``, ``--junit``, ``--docs`` - and
its exit status, from its rows.

One function for both ways of making a matrix: a run (``sipct conformance
--kernel ...``) and a merge of shards (``sipct report merge``), so that the
two cannot drift apart.
"""

from __future__ import annotations

import argparse
import json
from typing import Any
from xml.etree import ElementTree as ET

from rich.console import Console

from sipct.conformance.matrixdocs import matrix_docs
from sipct.conformance.matrixjson import matrix_json
from sipct.conformance.matrixrow import KernelReport
from sipct.conformance.matrixtable import print_matrix
from sipct.conformance.report import junit_suite
from sipct.spec.exitcodes import EXIT_DIVERGED, EXIT_ERROR, EXIT_OK


def publish(reports: list[KernelReport], args: argparse.Namespace, elapsed: float, curated: list[Any],
            out: Console, err: Console) -> int:
    """Print and write the matrix of ``reports``; the exit status."""
    print_matrix(reports, out, three_way=getattr(args, "helper", "kernel") == "reference")
    if args.json:
        args.json.write_text(json.dumps(matrix_json(reports, args, elapsed), indent=2, default=str) + "\n")
    if args.junit:
        matrix_junit(reports).write(args.junit, encoding="unicode", xml_declaration=True)
    if args.docs:
        args.docs.write_text(matrix_docs(reports, args, curated))
        err.print(f"wrote {args.docs}", highlight=False)
    if any(r.error for r in reports):
        return EXIT_ERROR
    return EXIT_OK if all(r.ok for r in reports) else EXIT_DIVERGED


def matrix_junit(reports: list[KernelReport]) -> ET.ElementTree:
    """A <testsuite> per kernel (and per reference helper); a kernel that did
    not run is one failed case."""
    root = ET.Element("testsuites", name="sipct-conformance-matrix")
    for r in reports:
        if r.stats is not None:
            root.append(junit_suite(r.stats, f"sipct-conformance {r.kernel}"))
        if r.reference is not None:
            root.append(junit_suite(r.reference, f"sipct-conformance {r.kernel} reference"))
        if r.error:
            suite = ET.SubElement(root, "testsuite", name=f"sipct-conformance {r.kernel}", tests="1", failures="1")
            case = ET.SubElement(suite, "testcase", classname="conformance.kernel", name=r.kernel)
            ET.SubElement(case, "failure", message=r.error)
    return ET.ElementTree(root)
