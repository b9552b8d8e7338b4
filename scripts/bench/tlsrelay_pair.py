#!/usr/bin/env python3
"""One relay of ``tlsrelay.py``'s pair, in one I/O design (see that bench for what each is).

    tlsrelay_pair.py DESIGN ROLE LISTEN_PORT TARGET_PORT CERT_PEM

ROLE ``enc`` accepts plain TCP and connects out with TLS; ``dec`` accepts TLS and connects out
plain. Both on 127.0.0.1, TCP_NODELAY on every socket, 256 KiB reads, EOF handed on as a
half-close. Stopped by SIGTERM from the bench.
"""

from __future__ import annotations

import asyncio
import select
import socket
import ssl
import sys
import threading

READ = 256 * 1024


def context(cert: str, server: bool) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_cert_chain(cert)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the bench measures the record layer, not the handshake
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if server:
        ctx.num_tickets = 0
    return ctx


def nodelay(s: socket.socket) -> socket.socket:
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


# --- thread designs: an end has recv_into / sendall / shutdown_write ---------------------------
class Plain:
    def __init__(self, s: socket.socket) -> None:
        self.s = s

    def recv_into(self, buf: memoryview) -> int:
        return self.s.recv_into(buf)

    def sendall(self, data: memoryview) -> None:
        self.s.sendall(data)

    def shutdown_write(self) -> None:
        self.s.shutdown(socket.SHUT_WR)


class BlockingTls(Plain):
    """``ssl.SSLSocket`` read by one thread and written by another at the same time."""

    def recv_into(self, buf: memoryview) -> int:
        try:
            return self.s.recv_into(buf)
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            return 0

    def shutdown_write(self) -> None:
        # The TCP half-close under TLS (no close_notify: that needs the SSL object, which the
        # other direction's thread is using); the peer relay reads it as EOF.
        socket.socket.shutdown(self.s, socket.SHUT_WR)


class LockedTls(BlockingTls):
    """``ssl.SSLSocket``, non-blocking, used under a lock; waiting (poll) outside it."""

    def __init__(self, s: ssl.SSLSocket) -> None:
        super().__init__(s)
        self.lock = threading.Lock()
        s.setblocking(False)

    def _wait(self, event: int) -> None:
        p = select.poll()
        p.register(self.s.fileno(), event)
        p.poll()

    def recv_into(self, buf: memoryview) -> int:
        n = 0
        while True:
            with self.lock:
                try:
                    while n < len(buf):  # one record per call: take what is there
                        k = self.s.recv_into(buf[n:])
                        if k == 0:
                            return n
                        n += k
                    return n
                except ssl.SSLWantReadError:
                    if n:
                        return n
                    event = select.POLLIN
                except ssl.SSLWantWriteError:
                    event = select.POLLOUT
                except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                    return n
            self._wait(event)

    def sendall(self, data: memoryview) -> None:
        while data:
            with self.lock:
                try:
                    data = data[self.s.send(data):]
                    continue
                except ssl.SSLWantWriteError:
                    event = select.POLLOUT
                except ssl.SSLWantReadError:
                    event = select.POLLIN
            self._wait(event)


class MemBioTls(BlockingTls):
    """``ssl.SSLObject`` over memory BIOs on a blocking socket; the crypto under a lock."""

    def __init__(self, raw: socket.socket, obj: ssl.SSLObject, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO) -> None:
        super().__init__(raw)
        self.obj, self.incoming, self.outgoing = obj, incoming, outgoing
        self.lock = threading.Lock()
        self.raw_buf = bytearray(READ)

    def recv_into(self, buf: memoryview) -> int:
        n = 0
        while True:
            with self.lock:
                try:
                    while n < len(buf):
                        n += self.obj.read(len(buf) - n, buf[n:])
                except ssl.SSLWantReadError:
                    pass
                except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                    return n
            if n:
                return n
            k = self.s.recv_into(self.raw_buf)
            if k == 0:
                return 0
            with self.lock:
                self.incoming.write(memoryview(self.raw_buf)[:k])

    def sendall(self, data: memoryview) -> None:
        with self.lock:
            self.obj.write(data)
            out = self.outgoing.read()
        self.s.sendall(out)


def handshake_membio(raw: socket.socket, ctx: ssl.SSLContext, server: bool) -> MemBioTls:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_side=server)
    buf = bytearray(65536)
    while True:
        try:
            obj.do_handshake()
            break
        except ssl.SSLWantReadError:
            pending = outgoing.read()
            if pending:
                raw.sendall(pending)
            k = raw.recv_into(buf)
            if not k:
                raise ConnectionError("closed during the handshake") from None
            incoming.write(buf[:k])
    pending = outgoing.read()
    if pending:
        raw.sendall(pending)
    return MemBioTls(raw, obj, incoming, outgoing)


def pump(src: Plain, dst: Plain) -> None:
    buf = memoryview(bytearray(READ))
    try:
        while True:
            n = src.recv_into(buf)
            if n == 0:
                dst.shutdown_write()
                return
            dst.sendall(buf[:n])
    except (OSError, ValueError):
        return


def serve_threads(design: str, role: str, listen: int, target: int, cert: str) -> None:
    ctx = context(cert, server=role == "dec")

    def tls(raw: socket.socket) -> Plain:
        if design == "threads-membio":
            return handshake_membio(raw, ctx, role == "dec")
        s = ctx.wrap_socket(raw, server_side=role == "dec")
        return LockedTls(s) if design == "threads-locked" else BlockingTls(s)

    def handle(conn: socket.socket) -> None:
        try:
            up = nodelay(socket.create_connection(("127.0.0.1", target)))
            a, b = (Plain(nodelay(conn)), tls(up)) if role == "enc" else (tls(nodelay(conn)), Plain(up))
        except (OSError, ssl.SSLError):
            conn.close()
            return
        threading.Thread(target=pump, args=(a, b), daemon=True).start()
        threading.Thread(target=pump, args=(b, a), daemon=True).start()

    ls = socket.create_server(("127.0.0.1", listen))
    while True:
        conn, _ = ls.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


# --- uvloop: push-driven BufferedProtocol ends, as the ztunnel's relays -------------------------
class End(asyncio.BufferedProtocol):
    def __init__(self) -> None:
        self.buf = memoryview(bytearray(READ))
        self.peer: End | None = None
        self.transport: asyncio.Transport | None = None
        self.early: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.set_write_buffer_limits(high=1 << 20, low=256 << 10)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buf

    def buffer_updated(self, nbytes: int) -> None:
        data = bytes(self.buf[:nbytes])
        if self.peer is None:
            self.early.append(data)
        else:
            self.peer.transport.write(data)  # type: ignore[union-attr]

    def eof_received(self) -> bool:
        t = self.peer.transport if self.peer else None
        if t is not None and not t.is_closing():
            if t.can_write_eof():
                t.write_eof()
            else:
                t.close()
        return False

    def pause_writing(self) -> None:
        self.peer.transport.pause_reading()  # type: ignore[union-attr]

    def resume_writing(self) -> None:
        self.peer.transport.resume_reading()  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


async def serve_uvloop(role: str, listen: int, target: int, cert: str) -> None:
    loop = asyncio.get_running_loop()
    ctx = context(cert, server=role == "dec")

    async def handle(conn: socket.socket) -> None:
        a, b = End(), End()
        try:
            nodelay(conn)
            up = nodelay(socket.create_connection(("127.0.0.1", target)))
            if role == "enc":
                await loop.connect_accepted_socket(lambda: a, conn)
                await loop.create_connection(lambda: b, sock=up, ssl=ctx, server_hostname="")
            else:
                await loop.connect_accepted_socket(lambda: a, conn, ssl=ctx)
                await loop.create_connection(lambda: b, sock=up)
        except (OSError, ssl.SSLError):
            conn.close()
            return
        a.peer, b.peer = b, a
        for data in a.early:
            b.transport.write(data)  # type: ignore[union-attr]
        for data in b.early:
            a.transport.write(data)  # type: ignore[union-attr]

    ls = socket.create_server(("127.0.0.1", listen))
    ls.setblocking(False)
    while True:
        conn, _ = await loop.sock_accept(ls)
        loop.create_task(handle(conn))


def main() -> None:
    design, role, listen, target, cert = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    if design == "uvloop":
        import uvloop
        uvloop.run(serve_uvloop(role, listen, target, cert))
    else:
        serve_threads(design, role, listen, target, cert)


if __name__ == "__main__":
    main()
