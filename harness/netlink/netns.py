"""Run a block of code with the calling thread inside a named network namespace.

A netlink socket belongs to the namespace its creating thread was in when
socket(2) ran (netlink_create() takes sock_net from current), so entering the
namespace only around socket creation is enough: the socket stays there after
the thread returns to its original namespace.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    # os.setns only exists from Python 3.12 on.
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns(CLONE_NEWNET): {os.strerror(err)}")


def netns_path(name: str) -> str:
    """The bind mount that `ip netns add NAME` creates."""
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"not a network namespace name: {name!r}")
    return os.path.join(NETNS_RUN_DIR, name)


@contextmanager
def entered_netns(name: str | None) -> Iterator[None]:
    """Enter netns `name` for the calling thread, and always leave it again.

    `None` means: stay where we are. Unlike pyroute2.netns.setns this never
    creates a missing namespace, and it saves /proc/thread-self (not
    /proc/self, which names the main thread) so it is right in any thread.
    """
    if name is None:
        yield
        return
    target = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        origin = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target)
            try:
                yield
            finally:
                _setns(origin)
        finally:
            os.close(origin)
    finally:
        os.close(target)
