"""Byte relays between two connection ends, with half-close and reset propagation.

An *end* is anything with ``read() -> bytes`` (``b""`` = EOF), ``write()``, ``drain()``,
``write_eof()``, ``abort()`` and ``close()``: a plain TCP stream (:class:`TcpEnd`) or one
HBONE CONNECT stream (``proxy.H2StreamEnd``). EOF on one side becomes ``shutdown(SHUT_WR)``
(or END_STREAM) on the other while the other direction keeps flowing; a reset on one side
resets the other.

Plain TCP to TCP uses ``splice(2)`` through a pipe (:func:`splice_relay`): no copy to user
space and no Python per chunk beyond one syscall pair.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
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
    async def read(self) -> bytes: ...
    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...
    def write_eof(self) -> None: ...
    def abort(self) -> None: ...
    def close(self) -> None: ...


async def open_streams(sock: socket.socket, *, ssl_ctx: object | None = None, server_side: bool = False,
                       handshake_timeout: float = 10.0) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Wrap a connected socket in asyncio streams (optionally doing the TLS handshake)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=STREAM_LIMIT, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    kw: dict[str, object] = {}
    if ssl_ctx is not None:
        kw = {"ssl": ssl_ctx, "ssl_handshake_timeout": handshake_timeout}
        if not server_side:
            kw["server_hostname"] = ""
    if server_side:
        transport, _ = await loop.connect_accepted_socket(lambda: protocol, sock, **kw)  # type: ignore[arg-type]
    else:
        transport, _ = await loop.create_connection(lambda: protocol, sock=sock, **kw)  # type: ignore[arg-type]
    transport.set_write_buffer_limits(high=WRITE_HIGH, low=WRITE_LOW)
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    return reader, writer


def set_linger_rst(sock: socket.socket | None) -> None:
    """SO_LINGER {on, 0}: close() sends a RST (how ztunnel surfaces upstream failures)."""
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class TcpEnd:
    """A plain TCP connection as a relay end."""

    __slots__ = ("reader", "writer", "sock")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.sock: socket.socket | None = writer.get_extra_info("socket")

    @classmethod
    async def wrap(cls, sock: socket.socket, *, server_side: bool) -> TcpEnd:
        reader, writer = await open_streams(sock, server_side=server_side)
        return cls(reader, writer)

    async def read(self) -> bytes:
        return await self.reader.read(READ_SIZE)

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    async def drain(self) -> None:
        await self.writer.drain()

    def write_eof(self) -> None:
        if not self.writer.transport.is_closing() and self.writer.can_write_eof():
            self.writer.write_eof()

    def abort(self) -> None:
        set_linger_rst(self.sock)
        self.writer.transport.abort()

    def close(self) -> None:
        self.writer.close()


class Counter:
    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0


async def _pump(src: End, dst: End, count: Counter) -> None:
    while True:
        data = await src.read()
        if not data:
            break
        dst.write(data)
        count.n += len(data)
        await dst.drain()
    dst.write_eof()
    await dst.drain()


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


async def relay(a: End, b: End, a_to_b: Counter, b_to_a: Counter) -> str | None:
    """Relay both ways until both directions ended; returns an error text or None.

    On an error in one direction both ends are aborted (reset), as ztunnel does.
    """
    t1 = create_task(_pump(a, b, a_to_b), name="relay-a2b")
    t2 = create_task(_pump(b, a, b_to_a), name="relay-b2a")

    def abort() -> None:
        a.abort()
        b.abort()
    try:
        error = await _first_error(t1, t2, abort)
    except asyncio.CancelledError:
        t1.cancel()
        t2.cancel()
        abort()
        raise
    if error is None:
        a.close()
        b.close()
    return error


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
    add(fd, lambda: fut.done() or fut.set_result(None))
    try:
        await fut
    finally:
        remove(fd)


async def _splice_pump(src: socket.socket, dst: socket.socket, count: Counter) -> None:
    loop = asyncio.get_running_loop()
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        with contextlib.suppress(OSError):
            import fcntl

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


