"""Network namespaces: create, remove, and run a block of code inside one.

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

from pyroute2 import netns as pyroute2_netns

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
def in_netns(netns_fd: int) -> Iterator[None]:
    """Run the block with the calling thread inside the namespace ``netns_fd``.

    The thread's own namespace is taken from /proc/thread-self (not
    /proc/self, which names the main thread's) and restored in any case.
    """
    origin = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        # setns inside the try: an exception raised by a signal handler right
        # after it must not leave the thread in the lab.  Going back to where
        # one already is does no harm.
        try:
            _setns(netns_fd)
            yield
        finally:
            _setns(origin)
    finally:
        os.close(origin)


@contextmanager
def entered_netns(name: str | None) -> Iterator[None]:
    """Enter netns ``name`` for the calling thread, and always leave it again.

    ``None`` means: stay where we are. Unlike pyroute2.netns.setns this never
    creates a missing namespace.
    """
    if name is None:
        yield
        return
    target = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        with in_netns(target):
            yield
    finally:
        os.close(target)


def open_netns(name: str) -> int:
    """An fd on the bind mount that `ip netns add NAME` (or pyroute2) made."""
    return os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)


def create_netns(name: str) -> None:
    """Create the named namespace, like `ip netns add NAME`, without a fork.

    The calling thread unshares into a fresh namespace, pyroute2 bind-mounts
    it at /run/netns/NAME (making /run/netns a shared mount first, as
    iproute2 does), and the thread returns to its own namespace.
    pyroute2.netns.create would fork a child for this; a forked copy of the
    interpreter is what we avoid (it inherits signal handlers and could run
    a caller's SIGTERM handler, or our cleanup, in the copy).
    """
    origin = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:  # entered before unshare, for the reason in_netns gives
            if _libc.unshare(CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)}")
            pyroute2_netns.attach(name, "thread-self")  # mounts /proc/thread-self/ns/net
        finally:
            _setns(origin)
    finally:
        os.close(origin)


def remove_netns(name: str) -> None:
    """Unmount and unlink /run/netns/NAME (`ip netns del`); absent is fine.

    The kernel destroys the namespace, and every device in it, once the
    last reference (mount, open fd, socket) is gone.
    """
    try:
        pyroute2_netns.remove(name)
    except FileNotFoundError:
        pass
