"""Byte relays between two connection ends, with half-close and reset propagation.

An *end* is a plain TCP connection (:class:`TcpEnd`) or one HBONE CONNECT stream
(``h2conn.H2StreamEnd``). Relays are **push-driven**: an end hands what it receives to its peer
end right in the event loop's read callback (``data_received`` of the TCP or TLS protocol), so a
small message crosses the proxy with no task switch and no extra event-loop iteration. EOF on one
side becomes ``shutdown(SHUT_WR)`` (or END_STREAM) on the other while the other direction keeps
flowing; a reset on one side resets the other. Backpressure: when the receiving end is over its
high-water mark (TCP write buffer, HTTP/2 stream buffer or the TLS connection's write buffer) the
sending end stops reading (TCP) or stops crediting the peer's flow-control window (HTTP/2) until
it drains.

Plain TCP to TCP uses ``splice(2)`` through a pipe (:func:`splice_relay`): no copy to user
space and no Python per chunk beyond one syscall pair.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import socket
import ssl
import struct
import threading
from collections.abc import Callable
from typing import Protocol

from netlab.runtime.tasks import create_task

log = logging.getLogger(__name__)

READ_SIZE = 256 * 1024
STREAM_LIMIT = 1024 * 1024
WRITE_HIGH = 1024 * 1024
WRITE_LOW = 256 * 1024
SPLICE_CHUNK = 1024 * 1024
PIPE_SIZE = 1024 * 1024
F_SETPIPE_SZ = 1031


class End(Protocol):
    """What :func:`relay` needs of an end.

    Source side: from :meth:`attach` on, the end pushes every byte it receives into ``peer``
    (``peer.write``), counts it, hands EOF on (``peer.write_eof()`` then ``relay.ended()``) and
    reports a failure with ``relay.failed(text)``; it stops reading while ``peer.saturated()``
    and goes on when the peer calls its :meth:`resume_reading`.
    Sink side: ``write``/``write_eof`` never block; ``saturated()`` says the buffer is over the
    high-water mark, and the end calls ``peer.resume_reading()`` once it is not any more.
    """

    def attach(self, peer: End, count: Counter, relay: Relay) -> None: ...
    def write(self, data: bytes) -> None: ...
    def write_eof(self) -> None: ...
    def saturated(self) -> bool: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def abort(self) -> None: ...
    def close(self) -> None: ...


async def open_tls(protocol: asyncio.BaseProtocol, sock: socket.socket, ssl_ctx: ssl.SSLContext, *,
                   server_side: bool = False, handshake_timeout: float = 10.0) -> asyncio.Transport:
    """TLS handshake on a connected socket, then ``protocol`` on the TLS transport."""
    loop = asyncio.get_running_loop()
    if server_side:
        transport, _ = await loop.connect_accepted_socket(lambda: protocol, sock, ssl=ssl_ctx,
                                                          ssl_handshake_timeout=handshake_timeout)
    else:
        transport, _ = await loop.create_connection(lambda: protocol, sock=sock, server_hostname="", ssl=ssl_ctx,
                                                    ssl_handshake_timeout=handshake_timeout)
    transport.set_write_buffer_limits(high=WRITE_HIGH, low=WRITE_LOW)
    return transport


def set_linger_rst(sock: socket.socket | None) -> None:
    """SO_LINGER {on, 0}: close() sends a RST (how ztunnel surfaces upstream failures)."""
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


_local = threading.local()


def read_buffer() -> memoryview:
    """The thread's receive buffer, shared by every protocol of its event loop.

    Protocols are ``BufferedProtocol``s: the transport receives straight into this buffer and
    the protocol copies the bytes out in ``buffer_updated`` before doing anything else, so one
    buffer serves every connection. (A plain ``Protocol`` costs a fresh 256 KiB allocation per
    read in asyncio — an mmap/munmap pair and page faults for every small message.)
    """
    buf = getattr(_local, "buf", None)
    if buf is None:
        buf = _local.buf = memoryview(bytearray(READ_SIZE))
    return buf


class Counter:
    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0


class Relay:
    """Both directions between two ends; done when both EOFs were handed on, or at the first
    failure (then both ends are reset)."""

    __slots__ = ("a", "b", "error", "_open", "_done")

    def __init__(self, a: End, b: End) -> None:
        self.a, self.b = a, b
        self.error: str | None = None
        self._open = 2
        self._done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def active(self) -> bool:
        return not self._done.done()

    def ended(self) -> None:
        """One direction's EOF was handed on."""
        self._open -= 1
        if self._open <= 0 and not self._done.done():
            self._done.set_result(None)

    def failed(self, reason: str) -> None:
        if self._done.done():
            return
        self.error = reason
        self._done.set_result(None)
        self.a.abort()
        self.b.abort()

    async def run(self, a_to_b: Counter, b_to_a: Counter) -> str | None:
        a, b = self.a, self.b
        a.attach(b, a_to_b, self)
        if self.active:
            b.attach(a, b_to_a, self)
        try:
            await self._done
        except asyncio.CancelledError:
            self.failed("cancelled")
            raise
        if self.error is None:
            a.close()
            b.close()
        return self.error


async def relay(a: End, b: End, a_to_b: Counter, b_to_a: Counter) -> str | None:
    """Relay both ways until both directions ended; returns an error text or None.

    On an error in one direction both ends are aborted (reset), as ztunnel does.
    """
    return await Relay(a, b).run(a_to_b, b_to_a)


class TcpEnd(asyncio.BufferedProtocol):
    """A plain TCP connection as a relay end: an asyncio protocol on the socket's transport."""

    __slots__ = ("sock", "transport", "peer", "count", "relay", "_buf", "_pending", "_pending_size", "_eof",
                 "_error", "_paused", "_write_paused")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buf = read_buffer()
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set by connection_made
        self.peer: End | None = None
        self.count: Counter | None = None
        self.relay: Relay | None = None
        self._pending: list[bytes] = []  # received before attach()
        self._pending_size = 0
        self._eof = False
        self._error: str | None = None
        self._paused = False
        self._write_paused = False

    @classmethod
    async def wrap(cls, sock: socket.socket, *, server_side: bool) -> TcpEnd:
        loop = asyncio.get_running_loop()
        end = cls(sock)
        if server_side:
            await loop.connect_accepted_socket(lambda: end, sock)
        else:
            await loop.create_connection(lambda: end, sock=sock)
        return end

    # asyncio.Protocol ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.set_write_buffer_limits(high=WRITE_HIGH, low=WRITE_LOW)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buf

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(self._buf[:nbytes]))

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is None:
            self._pending.append(data)
            self._pending_size += len(data)
            if self._pending_size > STREAM_LIMIT:
                self.pause_reading()
            return
        peer.write(data)
        self.count.n += len(data)  # type: ignore[union-attr]
        if peer.saturated():
            self.pause_reading()

    def eof_received(self) -> bool:
        if self.relay is None:
            self._eof = True
        elif self.relay.active:
            self.peer.write_eof()  # type: ignore[union-attr]
            self.relay.ended()
        return True  # keep our sending direction open (half-close)

    def connection_lost(self, exc: Exception | None) -> None:
        reason = _describe(exc) if exc is not None else "connection closed"
        if self.relay is None:
            self._error = reason
        else:
            self.relay.failed(reason)  # no-op once the relay is done (our own close)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self.peer is not None:
            self.peer.resume_reading()

    # relay end ----------------------------------------------------------------------------------
    def attach(self, peer: End, count: Counter, relay: Relay) -> None:
        self.peer, self.count, self.relay = peer, count, relay
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            self._pending_size = 0
            peer.write(data)
            count.n += len(data)
        if self._error is not None:
            relay.failed(self._error)
        elif self._eof:
            peer.write_eof()
            relay.ended()
        elif peer.saturated():
            self.pause_reading()
        else:
            self.resume_reading()

    def write(self, data: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(data)

    def write_eof(self) -> None:
        t = self.transport
        if not t.is_closing() and t.can_write_eof():
            t.write_eof()

    def saturated(self) -> bool:
        return self._write_paused

    def pause_reading(self) -> None:
        if not self._paused:
            self._paused = True
            if not self.transport.is_closing():
                self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._paused:
            self._paused = False
            if not self.transport.is_closing():
                self.transport.resume_reading()

    def abort(self) -> None:
        if not self.transport.is_closing():
            set_linger_rst(self.sock)
        self.transport.abort()

    def close(self) -> None:
        self.transport.close()


async def _first_error(t1: asyncio.Task, t2: asyncio.Task, on_error: Callable[[], object]) -> str | None:
    """Wait for both pumps. On the first failure: cancel the other, ``on_error()`` (reset the
    ends), wait for it to finish, and return the failure's text; None if both ended cleanly."""
    pending = {t1, t2}
    while pending:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        error = next((_describe(e) for e in (t.exception() for t in done) if e is not None), None)
        if error is not None:
            for t in pending:
                t.cancel()
            on_error()
            if pending:
                await asyncio.wait(pending)
            return error
    return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionResetError):
        return str(exc) if exc.args and isinstance(exc.args[0], str) else "connection reset by peer"
    if isinstance(exc, OSError) and exc.errno is not None:
        return os.strerror(exc.errno).lower()
    return str(exc) or type(exc).__name__


# --- splice(2) relay for plain TCP <-> TCP ------------------------------------------------------
async def _wait(loop: asyncio.AbstractEventLoop, fd: int, write: bool) -> None:
    fut = loop.create_future()
    add, remove = (loop.add_writer, loop.remove_writer) if write else (loop.add_reader, loop.remove_reader)
    def ready() -> None:
        if not fut.done():
            fut.set_result(None)
    add(fd, ready)
    try:
        await fut
    finally:
        remove(fd)


async def _splice_pump(src: socket.socket, dst: socket.socket, count: Counter) -> None:
    loop = asyncio.get_running_loop()
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        with contextlib.suppress(OSError):
            fcntl.fcntl(w, F_SETPIPE_SZ, PIPE_SIZE)
        sfd, dfd = src.fileno(), dst.fileno()
        flags = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
        while True:
            try:
                n = os.splice(sfd, w, SPLICE_CHUNK, flags=flags)
            except BlockingIOError:
                await _wait(loop, sfd, False)
                continue
            if n == 0:
                break
            while n:
                try:
                    m = os.splice(r, dfd, n, flags=flags)
                except BlockingIOError:
                    await _wait(loop, dfd, True)
                    continue
                n -= m
                count.n += m
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
    finally:
        os.close(r)
        os.close(w)


async def splice_relay(a: socket.socket, b: socket.socket, a_to_b: Counter, b_to_a: Counter) -> str | None:
    """Zero-copy relay between two connected non-blocking TCP sockets; closes both."""
    t1 = create_task(_splice_pump(a, b, a_to_b), name="splice-a2b")
    t2 = create_task(_splice_pump(b, a, b_to_a), name="splice-b2a")

    def reset() -> None:
        set_linger_rst(a)
        set_linger_rst(b)
    try:
        return await _first_error(t1, t2, reset)
    except asyncio.CancelledError:
        for t in (t1, t2):
            t.cancel()
        await asyncio.wait({t1, t2})
        reset()
        raise
    finally:
        a.close()
        b.close()


def splice_available() -> bool:
    return hasattr(os, "splice") and hasattr(os, "SPLICE_F_MOVE")


