"""Capturing at the lab's router: one AF_PACKET socket per router interface
(the bridges, one per side), opened inside the router namespace, so that
both sides of the router are seen - a forwarded packet once coming in and
once going out, a dropped one only coming in.

A packet socket, like any socket, belongs to the namespace its thread was in
at socket(2); the reader thread then lives outside the lab.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass

from sipct.harness.lab import Lab
from sipct.netlink.netns import in_netns, open_netns

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SO_TIMESTAMPNS = SCM_TIMESTAMPNS = 35  # asm-generic/socket.h
_TIMESPEC = struct.Struct("@qq")
_SNAPLEN = 65536 + 64


@dataclass(frozen=True, slots=True)
class Captured:
    time_ns: int  # CLOCK_REALTIME, the kernel's timestamp of the packet
    interface: int  # index into RouterCapture.interfaces
    outgoing: bool
    frame: bytes


class RouterCapture:
    """Use as a context manager around what should be captured."""

    def __init__(self, lab: Lab) -> None:
        self.interfaces = [segment.bridge for segment in lab.segments]
        self.packets: list[Captured] = []
        self._sockets: list[socket.socket] = []
        self._stop = threading.Event()
        fd = open_netns(lab.router_netns)
        try:
            with in_netns(fd):
                for name in self.interfaces:
                    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
                    self._sockets.append(sock)
                    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
                    sock.bind((name, 0))
        except BaseException:
            self._close()
            raise
        finally:
            os.close(fd)
        self._thread = threading.Thread(target=self._read, name="sipct-router-capture", daemon=True)
        self._thread.start()

    def __enter__(self) -> "RouterCapture":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> list[Captured]:
        """Stops after everything already queued is read."""
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join()
            self._close()
        return self.packets

    def mark(self) -> int:
        """A timestamp on the packets' clock."""
        return time.time_ns()

    def _read(self) -> None:
        poller = select.poll()
        by_fd = {}
        for index, sock in enumerate(self._sockets):
            poller.register(sock, select.POLLIN)
            by_fd[sock.fileno()] = (index, sock)
        while True:
            stopping = self._stop.is_set()
            ready = poller.poll(0 if stopping else 50)
            if not ready and stopping:
                return
            for fd, _ in ready:
                index, sock = by_fd[fd]
                self._receive(index, sock)

    def _receive(self, index: int, sock: socket.socket) -> None:
        frame, ancillary, _, address = sock.recvmsg(_SNAPLEN, socket.CMSG_SPACE(_TIMESPEC.size))
        stamp = time.time_ns()
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
                sec, nsec = _TIMESPEC.unpack(data[:_TIMESPEC.size])
                stamp = sec * 1_000_000_000 + nsec
        self.packets.append(Captured(stamp, index, address[2] == PACKET_OUTGOING, frame))

    def _close(self) -> None:
        for sock in self._sockets:
            sock.close()
