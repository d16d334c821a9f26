"""SIGTERM, SIGINT and SIGHUP as an exception, so that a run cleans up by unwinding.

A signal handler that tears labs down itself runs at whatever point the main
thread happens to be - in the middle of a namespace's creation, of a
teardown, of atexit - and then has to end the process without the
``finally`` blocks that stop QEMU or the reference daemon.  Here the handler
only raises :class:`Interrupted` in the main thread; the ``with`` blocks and
``finally`` clauses that own the namespaces and processes release them on the
way out, and the namespace registry's atexit hook removes what no block owned
yet.

Three rules keep that unwinding whole:

* the first signal raises; later ones never do (they only say on stderr that
  cleanup is still running): a second Ctrl-C must not cut a teardown short;
* teardown code runs :func:`shielded`: a first signal that arrives during it
  is raised when it is done;
* what the run was doing (:func:`doing`) is noted at the moment of the signal,
  before unwinding forgets it, for the one line that says what was interrupted.

An uncaught Interrupted ends the process by its signal, as it would have ended
without these handlers, once the atexit hooks have run; ``sipct`` itself
catches it and exits with 128 + the signal's number.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType
from typing import Any

from sipct.spec.exitcodes import signal_exit

__all__ = ["Doing", "Interrupted", "doing", "install", "rearm", "shielded"]

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """A run ended by a signal.  A KeyboardInterrupt, so that code which lets
    Ctrl-C through (Hypothesis, pytest) lets SIGTERM and SIGHUP through too."""

    def __init__(self, signum: int, during: tuple[str, ...] = ()) -> None:
        super().__init__(signum)
        self.signum = signum
        self.during = during

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_status(self) -> int:
        """What a shell reports for a command its signal ended: 128 + the number."""
        return signal_exit(self.signum)

    def __str__(self) -> str:
        where = " > ".join(self.during) if self.during else "no dialog, lab or VM at that moment"
        return f"interrupted by {self.name} during: {where}"


class Doing:
    """One entry of the activity stack; its text is made only if a signal comes."""

    __slots__ = ("what",)

    def __init__(self, what: str | Callable[[], str]) -> None:
        self.what = what

    def text(self) -> str:
        return self.what if isinstance(self.what, str) else self.what()

    def __enter__(self) -> Doing:
        _doing.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        # Popped by identity: a block left by an exception may not be the top.
        for i in range(len(_doing) - 1, -1, -1):
            if _doing[i] is self:
                del _doing[i]
                break


_lock = threading.Lock()
_installed_pid: int | None = None
_previous: dict[int, Any] = {}
_doing: list[Doing] = []
_shield_depth = 0
_caught: Interrupted | None = None  # the first signal's exception
_raised = False  # whether it has been raised (not just noted by a shield)
_uncaught: Interrupted | None = None


def doing(what: str | Callable[[], str]) -> Doing:
    """``with doing("building the lab"):`` - what an interruption will name.
    ``what`` may be a function, called only when a signal arrives; the
    entry's ``what`` may be replaced while the block runs."""
    return Doing(what)


def _snapshot() -> tuple[str, ...]:
    texts = []
    for entry in list(_doing):
        try:
            texts.append(entry.text())
        except Exception as exc:  # noqa: BLE001 - a description must never hide the signal
            texts.append(f"<{exc!r}>")
    return tuple(texts)


@contextmanager
def shielded(*, deliver: bool = True) -> Iterator[None]:
    """Run a teardown to its end: a signal during it is raised afterwards
    (or, with ``deliver=False`` - at interpreter exit - only noted)."""
    global _shield_depth, _raised
    if threading.current_thread() is not threading.main_thread():
        yield  # signals are raised in the main thread only: nothing to hold back here
        return
    _shield_depth += 1
    try:
        yield
    finally:
        _shield_depth -= 1
        if _shield_depth == 0 and deliver and _caught is not None and not _raised:
            _raised = True
            raise _caught


def _handler(signum: int, frame: FrameType | None) -> None:
    global _caught, _raised
    if _caught is not None:
        _still_cleaning(signum)
        return
    previous = _previous.get(signum)
    if callable(previous) and previous is not signal.default_int_handler:
        # Someone had a handler of their own before us: theirs decides.
        previous(signum, frame)
        return
    _caught = Interrupted(signum, _snapshot())
    if _shield_depth:
        return
    _raised = True
    raise _caught


def _still_cleaning(signum: int) -> None:
    assert _caught is not None
    message = (f"sipct: {signal.Signals(signum).name} while cleaning up after {_caught.name}; "
               "cleanup goes on (SIGKILL abandons it, `sipct clean` then removes the labs)\n")
    try:
        os.write(2, message.encode())
    except OSError:
        pass


def install() -> None:
    """Raise Interrupted on SIGTERM, SIGINT and SIGHUP from now on.

    Idempotent; only the main thread can install handlers, so a call from
    another thread does nothing (the CLI installs them first thing).  An
    ignored signal stays ignored: nohup and a shell's background jobs ask for
    that.  A handler someone installed before is called instead of raising.
    """
    global _installed_pid
    if threading.current_thread() is not threading.main_thread():
        return
    with _lock:
        if _installed_pid == os.getpid():
            return
        _installed_pid = os.getpid()
        for signum in SIGNALS:
            current = signal.getsignal(signum)
            if current == signal.SIG_IGN or current is None or current is _handler:
                continue
            _previous[signum] = current
            signal.signal(signum, _handler)
        previous_hook = sys.excepthook

        def excepthook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
            global _uncaught
            if isinstance(exc, Interrupted):
                _uncaught = exc
                program = sys.argv[0] if sys.argv and sys.argv[0] and not sys.argv[0].startswith("-") else "python"
                print(f"{os.path.basename(program)}: {exc}", file=sys.stderr)
                return
            previous_hook(kind, exc, tb)

        sys.excepthook = excepthook
        # Registered now, before the namespace registry's hook: atexit runs
        # its hooks last-registered first, so this one runs after it.
        atexit.register(_die_of_uncaught_signal)


def _die_of_uncaught_signal() -> None:
    if _uncaught is None:
        return
    sys.stderr.flush()
    signal.signal(_uncaught.signum, signal.SIG_DFL)
    os.kill(os.getpid(), _uncaught.signum)


def rearm() -> None:
    """Let the next signal interrupt again, after an Interrupted was handled
    by a program that goes on (an interactive session, say)."""
    global _caught, _raised
    _caught, _raised = None, False
