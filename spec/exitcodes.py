"""The exit statuses of every ``sipct`` command, defined once.

0 success or agreement, 1 a divergence (or a failed assertion, a surviving
mutant), 2 the run could not be made (bad input, a missing prerequisite), and
128 + N for a run that signal N ended once its labs and VMs were gone, as a
shell reports a command its signal killed.

The module sits in the spec because the spec is the one layer every part of
the project imports (spec <- netlink <- harness / reference <- conformance <-
cli); it holds numbers only and imports nothing.
"""

from __future__ import annotations

__all__ = ["EXIT_DIVERGED", "EXIT_ERROR", "EXIT_OK", "EXIT_SIGNAL_BASE", "signal_exit", "worst"]

EXIT_OK = 0
EXIT_DIVERGED = 1
EXIT_ERROR = 2
EXIT_SIGNAL_BASE = 128


def signal_exit(signum: int) -> int:
    """The status of a run ended by signal ``signum`` (SIGHUP 129, SIGINT 130, SIGTERM 143)."""
    return EXIT_SIGNAL_BASE + signum


def worst(status: int, other: int) -> int:
    """The exit status of a batch: an error (2) outranks a divergence (1)."""
    return max(status, other)
