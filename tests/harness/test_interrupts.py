"""Signals as Interrupted: raised once, held back by shields, naming what ran.

Each case runs in a child interpreter: the handlers are process-wide.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

# The child starts from the default dispositions: a pytest run under nohup or as
# a shell's background job hands its children SIGHUP / SIGINT ignored, which
# install() rightly leaves ignored (test_an_ignored_signal_stays_ignored_...).
PROLOGUE = """
import os, signal, sys, time
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(s, signal.SIG_DFL)
from sipct.netlink.interrupts import Interrupted, doing, install, rearm, shielded
install()
def signal_me(signum=signal.SIGTERM):
    os.kill(os.getpid(), signum)
    time.sleep(0.5)  # the handler runs here
"""


def child(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", PROLOGUE + textwrap.dedent(script)], capture_output=True,
                          text=True, timeout=30)


def test_a_signal_raises_interrupted_with_what_ran_and_the_exit_status() -> None:
    out = child("""
        with doing("outer"), doing(lambda: "inner, described late"):
            try:
                signal_me(signal.SIGHUP)
            except Interrupted as exc:
                print(exc.name, exc.exit_status, exc.during, exc)
        """)
    assert out.stdout.strip() == ("SIGHUP 129 ('outer', 'inner, described late') "
                                  "interrupted by SIGHUP during: outer > inner, described late")


def test_a_shield_holds_the_signal_back_until_its_end() -> None:
    out = child("""
        try:
            with shielded():
                signal_me()
                print("teardown finished")
        except Interrupted:
            print("raised after it")
        """)
    assert out.stdout.split() == ["teardown", "finished", "raised", "after", "it"]


def test_later_signals_never_raise_until_rearmed() -> None:
    out = child("""
        try:
            signal_me()
        except Interrupted:
            print("first")
        signal_me(signal.SIGINT)
        print("second ignored")
        rearm()
        try:
            signal_me(signal.SIGINT)
        except Interrupted as exc:
            print("after rearm", exc.name)
        """)
    assert out.stdout.splitlines() == ["first", "second ignored", "after rearm SIGINT"]
    assert "SIGINT while cleaning up after SIGTERM; cleanup goes on" in out.stderr


def test_uncaught_it_ends_the_process_by_its_signal_after_atexit() -> None:
    out = child("""
        import atexit
        atexit.register(lambda: print("atexit ran", flush=True))
        signal_me()
        """)
    assert out.returncode == -signal.SIGTERM
    assert out.stdout == "atexit ran\n"
    assert "interrupted by SIGTERM" in out.stderr and "Traceback" not in out.stderr


def test_an_ignored_signal_stays_ignored_and_an_own_handler_decides() -> None:
    script = """
        import os, signal, sys, time
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, lambda s, f: print("own handler"))
        from sipct.netlink.interrupts import install
        install()
        os.kill(os.getpid(), signal.SIGHUP)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)
        print("still here")
        """
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=30)
    assert out.stdout.splitlines() == ["own handler", "still here"]
