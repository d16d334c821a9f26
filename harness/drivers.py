"""Real UDP and TCP sockets inside the lab's endpoint namespaces.

A socket belongs to the network namespace its creating thread was in when
socket(2) ran (sock_net is taken from current->nsproxy), and stays there for
its whole life.  So the main process can own sockets in every namespace: the
*thread* enters a namespace with setns(2) just around socket creation and
always returns to where it came from.

Delivery is judged at the receiving socket: what the receiver's socket got is
what crossed the router (and its conntrack helper).  A datagram the helper
dropped (NF_DROP) simply never arrives: "not within the timeout" is the
signal of a drop there, and with a drop log (sipct.harness.droplog) the
kernel's own word ends the wait sooner when it logged the drop.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import socket
import struct
import termios
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Any, Literal

from sipct.harness.droplog import DropLog, SentPacket
from sipct.netlink.netns import in_netns
from sipct.spec.expectation import IPPROTO_TCP, IPPROTO_UDP

Family = Literal[4, 6]
Endpoint = tuple[str, int]
AddressOf = Callable[[str, int], IPv4Address | IPv6Address]

# include/net/tcp_states.h: TCP_CLOSE, the state a LAST_ACK socket reaches
# once its FIN has been acknowledged.
_TCP_CLOSE = 7
_RECV_MAX = 65536  # larger than any UDP payload over IPv4 or IPv6 (no jumbograms)

def _af(family: int) -> socket.AddressFamily:
    if family == 4:
        return socket.AF_INET
    if family == 6:
        return socket.AF_INET6
    raise ValueError(f"family must be 4 or 6, not {family!r}")


def _wait(sock: socket.socket, events: int, deadline: float, drops: DropLog | None = None) -> bool | str:
    """Block in poll(2) until `events` (True), the deadline (False) or, with
    ``drops``, the kernel's log that it dropped the watched packet (its reason)."""
    poller = select.poll()
    poller.register(sock, events)
    log = -1
    if drops is not None:
        log = drops.fileno()
        poller.register(log, select.POLLIN)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        ready = poller.poll(max(1, int(remaining * 1000 + 0.999)))
        if not ready:
            continue
        if drops is not None and any(fd == log for fd, _ in ready):
            reason = drops.dropped()
            if reason is not None:
                return reason
            if all(fd == log for fd, _ in ready):
                continue
        return True


@dataclass(frozen=True)
class Delivery:
    """What the receiving socket got for one send.

    `data` is exactly the bytes the receiver read (None if nothing arrived);
    `src`/`dst` are the endpoints as the receiver saw them (peer and local
    address), which is what a NAT helper would have rewritten.
    """

    delivered: bool
    data: bytes | None
    src: Endpoint | None
    dst: Endpoint | None
    elsewhere: str | None = None  # the lab host it reached instead of the receiver
    dropped: str | None = None  # the kernel's reason, when it logged dropping it (sipct.harness.droplog)


class TcpConnection:
    """An established TCP connection between two lab hosts.

    Both ends have TCP_NODELAY, so every write leaves as its own segment at
    once (Nagle would otherwise hold back a small write while data is
    unacknowledged) -- as long as a write fits into one MSS (segment_size());
    a larger one is cut by TCP, which is why DialogRunner writes what
    sipct.harness.wire.LAB_WIRE cut.
    """

    def __init__(
        self,
        client: socket.socket,
        server: socket.socket,
        *,
        default_timeout: float,
        on_close: Callable[[TcpConnection], None] | None = None,
        drops: DropLog | None = None,
    ) -> None:
        self._client = client
        self._server = server
        self._timeout = default_timeout
        self._drops = drops
        self._on_close = on_close
        # Set once a send went undelivered: the dropped segment is still in
        # the sender's retransmit queue and a FIN would queue behind it.
        self._broken = False
        self.close_timed_out = False
        self.aborted_after_drop = False
        self.client_endpoint: Endpoint = client.getsockname()[:2]
        self.server_endpoint: Endpoint = server.getsockname()[:2]

    @property
    def closed(self) -> bool:
        return self._client.fileno() == -1

    def segment_size(self) -> int:
        """The connection's MSS: the smaller of the two ends'."""
        # TCP_MAXSEG reads tp->mss_cache, which tcp_sync_mss() set from the path
        # MTU, the peer's MSS option and the negotiated TCP options.
        return min(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG) for s in (self._client, self._server))

    def send(
        self,
        from_client: bool,
        segments: Sequence[bytes],
        timeout: float | None = None,
        receive_lengths: Sequence[int] | None = None,
    ) -> Delivery:
        """Write each segment on its own and wait until the peer has read it.

        Waiting for the peer to have received a segment before writing the
        next keeps TCP from coalescing them, so the router's helper sees the
        segments as written.  `timeout` applies to each segment.  If a
        segment does not fully arrive in time (the helper dropped it; TCP is
        still retransmitting it), the result is not delivered and carries
        the bytes that did arrive, and the kernel's reason when the drop log
        saw it drop the segment.  Bytes left over from an earlier, failed
        send are discarded first.
        """
        if self.closed:
            if self.aborted_after_drop:
                return Delivery(False, None, None, None)
            raise RuntimeError("TCP connection is closed")
        if any(len(s) == 0 for s in segments):
            raise ValueError("an empty write sends no segment")
        timeout = self._timeout if timeout is None else timeout
        tx, rx = (self._client, self._server) if from_client else (self._server, self._client)
        _drain_stream(rx)
        received = bytearray()
        expected = 0
        for i, segment in enumerate(segments):
            # NAT rewrites change what arrives: the caller says how much.
            expected += len(segment) if receive_lengths is None else receive_lengths[i]
            if self._drops is not None:
                self._drops.expect(SentPacket(IPPROTO_TCP, tx.getsockname()[:2], tx.getpeername()[:2], segment))
            deadline = time.monotonic() + timeout
            arrived = _send_all(tx, segment, deadline) and _recv_until(rx, received, expected, deadline,
                                                                       self._drops)
            if arrived is not True:
                self._broken = True
                ends = _ends(rx)
                # The helper dropped the segment. Left alone, TCP would go on
                # retransmitting it, merged with later data as the stack sees
                # fit, and the helper would process each retransmission: reset
                # the connection instead (the spec predicts the same: nothing
                # more is sent on it, and the conntrack closes).
                self.aborted_after_drop = True
                self.abort()
                return Delivery(False, bytes(received) or None, *ends, dropped=arrived or None)
        _drain_stream(rx, into=received)  # bytes beyond what was written, if any
        return Delivery(True, bytes(received), *_ends(rx))

    def close(self, timeout: float = 0.5) -> None:
        """Close both ends, in an order that leaves no TIME_WAIT on the client.

        The server closes first (it is the active closer and keeps the
        TIME_WAIT), the client answers with its FIN and we wait until the
        client socket is TCP_CLOSE, i.e. its FIN was acknowledged.  A new SYN
        on the same 4-tuple is then accepted by the server's TIME_WAIT
        (tcp_timewait_state_process, newer timestamp), so a reset lab can
        reuse the same ports at once.  If the path is broken (a dropped
        segment is still being retransmitted), both ends are aborted with an
        RST instead (SO_LINGER 0).
        """
        if self.closed:
            return
        try:
            if self._path_broken():
                _abort(self._server)
                _abort(self._client)
            elif not self._close_gracefully(time.monotonic() + timeout):
                self.close_timed_out = True  # the path looked whole, yet the FINs did not get through
                _abort(self._server)
                _abort(self._client)
        finally:
            self._release()

    def abort(self) -> None:
        """Reset both ends at once (RST), without waiting for anything."""
        if self.closed:
            return
        try:
            _abort(self._server)
            _abort(self._client)
        finally:
            self._release()

    def _release(self) -> None:
        self._client.close()
        self._server.close()
        if self._on_close is not None:
            self._on_close(self)

    def _path_broken(self) -> bool:
        try:
            return self._broken or bool(_unacked(self._client) or _unacked(self._server))
        except OSError:
            return True

    def _close_gracefully(self, deadline: float) -> bool:
        try:
            self._server.shutdown(socket.SHUT_WR)
            if not _recv_eof(self._client, deadline):
                return False
            self._client.shutdown(socket.SHUT_WR)
            if not _recv_eof(self._server, deadline):
                return False
            while _tcp_state(self._client) != _TCP_CLOSE:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.0002)
            return True
        except OSError:
            return False


def _ends(rx: socket.socket) -> tuple[Endpoint | None, Endpoint | None]:
    try:
        return rx.getpeername()[:2], rx.getsockname()[:2]
    except OSError:
        return None, None


def _send_all(sock: socket.socket, data: bytes, deadline: float) -> bool:
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view) :]
        except BlockingIOError:
            if not _wait(sock, select.POLLOUT, deadline):
                return False
    return True


def _recv_until(sock: socket.socket, buf: bytearray, size: int, deadline: float,
                drops: DropLog | None = None) -> bool | str:
    """True once ``size`` bytes are in ``buf``; False at the deadline (or
    EOF); the kernel's reason when ``drops`` saw the segment dropped."""
    while len(buf) < size:
        try:
            chunk = sock.recv(_RECV_MAX)
        except BlockingIOError:
            ready = _wait(sock, select.POLLIN, deadline, drops)
            if ready is not True:
                return ready
            continue
        if not chunk:
            return False  # the peer closed: the rest will never come
        buf += chunk
    return True


def _recv_eof(sock: socket.socket, deadline: float) -> bool:
    while True:
        try:
            if not sock.recv(_RECV_MAX):
                return True
        except BlockingIOError:
            if not _wait(sock, select.POLLIN, deadline):
                return False


def _drain_stream(sock: socket.socket, into: bytearray | None = None) -> None:
    while True:
        try:
            chunk = sock.recv(_RECV_MAX)
        except BlockingIOError:
            return
        if not chunk:
            return
        if into is not None:
            into += chunk


def _drain_datagrams(sock: socket.socket) -> int:
    """Read and discard what is queued; return how many datagrams that was."""
    count = 0
    while True:
        try:
            sock.recv(_RECV_MAX)
        except BlockingIOError:
            return count
        count += 1


def _tcp_state(sock: socket.socket) -> int:
    # struct tcp_info starts with __u8 tcpi_state.
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]


def _unacked(sock: socket.socket) -> int:
    # SIOCOUTQ (== TIOCOUTQ) on a TCP socket: bytes sent but not yet acked.
    return struct.unpack("i", fcntl.ioctl(sock, termios.TIOCOUTQ, b"\0" * 4))[0]


def _abort(sock: socket.socket) -> None:
    # SO_LINGER with a zero timeout makes close() send an RST and skip
    # FIN_WAIT/TIME_WAIT entirely (tcp_close -> tcp_disconnect path).
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass


class SocketDriver:
    """Creates and caches the endpoint sockets of one lab.

    Not thread-safe: one lab is driven from one thread at a time.
    """

    def __init__(
        self,
        netns_fds: Mapping[str, int],
        address_of: AddressOf,
        *,
        default_timeout: float,
    ) -> None:
        """`netns_fds` maps each host to an open fd on its namespace (owned
        by the caller, who must keep it open while the driver lives)."""
        self._netns_fds = netns_fds
        self._address_of = address_of
        self.default_timeout = default_timeout
        self._udp: dict[tuple[str, int, int], socket.socket] = {}
        # Every UDP socket, for sweep_stragglers: one poll(2) finds those with
        # something queued, instead of a failing recv(2) on each per step.
        self._readable = select.poll()
        self._udp_by_fd: dict[int, socket.socket] = {}
        # Datagrams that arrived after udp_send() had given up on them: a
        # "dropped" verdict that was only a slow delivery.
        self.stragglers = 0
        self.close_timeouts = 0  # TCP connections reset because their graceful close timed out
        self._listeners: dict[tuple[str, int, int], socket.socket] = {}
        self._connections: list[TcpConnection] = []
        # The router's drop log, when the lab has one: a send stops waiting once it logs the packet's drop.
        self.drops: DropLog | None = None

    # -- sockets --------------------------------------------------------

    def _socket_in(self, host: str, family: int, kind: socket.SocketKind) -> socket.socket:
        try:
            fd = self._netns_fds[host]
        except KeyError:
            raise KeyError(f"no host {host!r} in this lab") from None
        with in_netns(fd):
            sock = socket.socket(_af(family), kind | socket.SOCK_NONBLOCK)
        try:
            if family == 6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        except BaseException:
            sock.close()
            raise
        return sock

    def _endpoint(self, host: str, family: int, port: int) -> Endpoint:
        return str(self._address_of(host, family)), port

    def udp_socket(self, host: str, family: int, port: int) -> socket.socket:
        """The UDP socket bound to (host's address, port), created on first use."""
        key = (host, family, port)
        sock = self._udp.get(key)
        if sock is None:
            endpoint = self._endpoint(host, family, port)
            sock = self._socket_in(host, family, socket.SOCK_DGRAM)
            try:
                sock.bind(endpoint)
            except BaseException:
                sock.close()
                raise
            self._udp[key] = sock
            self._udp_by_fd[sock.fileno()] = sock
            self._readable.register(sock, select.POLLIN)
        return sock

    # -- UDP ------------------------------------------------------------

    def udp_send(
        self,
        src: str,
        sport: int,
        dst: str,
        dport: int,
        payload: bytes,
        *,
        family: Family = 4,
        timeout: float | None = None,
        to: tuple[Any, int] | None = None,
        receive_port: int | None = None,
    ) -> Delivery:
        """Send one datagram from (src, sport) to (dst, dport); report what arrived.

        ``to`` is where the sender addresses it when NAT puts dst elsewhere;
        ``receive_port`` where dst waits for it when NAT moves the port.

        The receiver is drained first so a straggler from an earlier call is
        not mistaken for this datagram.  Veth transmit hands the packet to
        the peer's backlog and the softirq usually runs it through the router
        before sendto() returns, so a delivered datagram is typically already
        queued: the first, non-blocking read then costs no wait at all.
        """
        timeout = self.default_timeout if timeout is None else timeout
        tx = self.udp_socket(src, family, sport)
        rx = self.udp_socket(dst, family, receive_port or dport)
        self.stragglers += _drain_datagrams(rx)
        deadline = time.monotonic() + timeout
        target = self._endpoint(dst, family, dport) if to is None else (str(to[0]), to[1])
        drops = self.drops
        if drops is not None:
            drops.expect(SentPacket(IPPROTO_UDP, self._endpoint(src, family, sport), target, payload))
        while True:
            try:
                tx.sendto(payload, target)
                break
            except BlockingIOError:
                if not _wait(tx, select.POLLOUT, deadline):
                    return Delivery(False, None, None, None)
        while True:
            try:
                data, peer = rx.recvfrom(_RECV_MAX)
            except BlockingIOError:
                ready = _wait(rx, select.POLLIN, deadline, drops)
                if ready is not True:
                    return Delivery(False, None, None, None, dropped=ready or None)
                continue
            return Delivery(True, data, peer[:2], rx.getsockname()[:2])

    # -- TCP ------------------------------------------------------------

    def _listener(self, host: str, family: int, port: int) -> socket.socket:
        key = (host, family, port)
        sock = self._listeners.get(key)
        if sock is None:
            sock = self._socket_in(host, family, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.bind(self._endpoint(host, family, port))
                sock.listen(16)
            except BaseException:
                sock.close()
                raise
            self._listeners[key] = sock
        return sock

    def tcp_connect(
        self,
        client: str,
        cport: int,
        server: str,
        sport: int,
        family: Family = 4,
        *,
        timeout: float | None = None,
        to: tuple[Any, int] | None = None,
    ) -> TcpConnection:
        """Establish a real TCP connection from (client, cport) to (server, sport),
        dialling ``to`` when NAT puts the server there.

        Raises TimeoutError if the handshake does not complete (e.g. the
        router drops the SYN).
        """
        timeout = self.default_timeout if timeout is None else timeout
        listener = self._listener(server, family, sport)
        # A handshake that completed after an earlier connect timed out would
        # sit in the accept queue and be taken for this one.
        while True:
            try:
                stale, _ = listener.accept()
            except BlockingIOError:
                break
            _abort(stale)
            stale.close()
        deadline = time.monotonic() + timeout
        csock = self._socket_in(client, family, socket.SOCK_STREAM)
        ssock: socket.socket | None = None
        try:
            csock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            csock.bind(self._endpoint(client, family, cport))
            err = csock.connect_ex(self._endpoint(server, family, sport) if to is None else (str(to[0]), to[1]))
            if err not in (0, errno.EINPROGRESS):
                raise OSError(err, f"connect: {os.strerror(err)}")
            if not _wait(csock, select.POLLOUT, deadline):
                raise TimeoutError(f"TCP handshake {client}:{cport} -> {server}:{sport} timed out")
            err = csock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise OSError(err, f"connect: {os.strerror(err)}")
            while ssock is None:
                try:
                    ssock, _ = listener.accept()
                except BlockingIOError:
                    if not _wait(listener, select.POLLIN, deadline):
                        raise TimeoutError("accepted connection did not show up") from None
            ssock.setblocking(False)
            ssock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except BaseException:
            _abort(csock)
            csock.close()
            if ssock is not None:
                ssock.close()
            raise
        conn = TcpConnection(
            csock, ssock, default_timeout=self.default_timeout, on_close=self._closed, drops=self.drops
        )
        self._connections.append(conn)
        return conn

    # -- lifecycle -------------------------------------------------------

    def _closed(self, conn: TcpConnection) -> None:
        self._connections.remove(conn)
        self.close_timeouts += conn.close_timed_out

    def reset(self) -> None:
        """Close every TCP connection and drop datagrams nobody read."""
        for conn in list(self._connections):
            conn.close()
        self.sweep_stragglers()

    def sweep_stragglers(self) -> int:
        """Drain every UDP socket now; count what was there in ``stragglers``."""
        for fd, _ in self._readable.poll(0):
            self.stragglers += _drain_datagrams(self._udp_by_fd[fd])
        return self.stragglers

    def close(self) -> None:
        """Close every socket (each pins its namespace alive)."""
        for conn in list(self._connections):
            conn.abort()
        self._connections.clear()
        for fd in self._udp_by_fd:
            self._readable.unregister(fd)
        self._udp_by_fd.clear()
        for sock in [*self._udp.values(), *self._listeners.values()]:
            sock.close()
        self._udp.clear()
        self._listeners.clear()
