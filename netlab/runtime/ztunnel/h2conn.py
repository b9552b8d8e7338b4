"""HTTP/2 connections carrying HBONE: a CONNECT stream as a relay end, the asyncio driver of
one connection, its client (pooled, ztunnel -> peer:15008) and server (accepted on :15008)
flavours, and the pool.

The driver is an ``asyncio.BufferedProtocol`` on the TLS transport: bytes are fed to the
sans-IO HBONE core (:mod:`netlab.runtime.ztunnel.hbone`) in the read callback and its events
dispatched to the stream ends there and then, so a DATA frame reaches the other end of its
relay without a task switch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from netlab.errors import ProtocolError
from netlab.runtime.tasks import create_task
from netlab.runtime.ztunnel import hbone
from netlab.runtime.ztunnel.relay import Counter, End, Relay, read_buffer

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0
H2_STREAM_HIGH = 512 * 1024
# A stream's write of this size or more is written to the connection at once (bulk: nothing to
# gain by waiting); smaller ones at the end of the event loop's turn (see H2Driver.flush_soon).
FLUSH_NOW = 16 * 1024
POOL_IDLE_SECONDS = 30.0


class H2StreamEnd:
    """One CONNECT stream as a relay end (see relay.End).

    The driver pushes each DATA frame's bytes into the peer end as soon as the frame is parsed and
    credits the sender's flow-control window right away, unless the peer end is saturated: then
    the credit is held (the sender stops at the end of its window) until the peer drains.
    """

    __slots__ = ("driver", "sid", "peer", "count", "relay", "_chunks", "_eof", "_error", "_held", "_paused")

    def __init__(self, driver: H2Driver, sid: int) -> None:
        self.driver = driver
        self.sid = sid
        self.peer: End | None = None
        self.count: Counter | None = None
        self.relay: Relay | None = None
        self._chunks: list[tuple[bytes, int]] = []  # received before attach()
        self._eof = False
        self._error: str | None = None
        self._held = 0  # flow-control credit not given back yet
        self._paused = False

    # fed by the driver
    def feed(self, data: bytes, flow_len: int) -> None:
        peer = self.peer
        if peer is None:
            self._chunks.append((data, flow_len))
            return
        if data:
            peer.write(data)
            self.count.n += len(data)  # type: ignore[union-attr]
        if self._paused or peer.saturated():
            self._paused = True
            self._held += flow_len
        else:
            self.driver.core.ack(self.sid, flow_len)  # the driver flushes after the batch of events

    def feed_eof(self) -> None:
        relay = self.relay
        if relay is None:
            self._eof = True
        elif relay.active:
            self.peer.write_eof()  # type: ignore[union-attr]
            relay.ended()

    def fail(self, reason: str) -> None:
        if self._error is None:
            self._error = reason
        if self.relay is not None:
            self.relay.failed(reason)

    def window_opened(self) -> None:
        """Our buffered data went out (WINDOW_UPDATE, TLS buffer drained): unblock the peer."""
        if self.peer is not None and not self.saturated():
            self.peer.resume_reading()

    # relay.End
    def attach(self, peer: End, count: Counter, relay: Relay) -> None:
        self.peer, self.count, self.relay = peer, count, relay
        if self._chunks:
            data = b"".join(d for d, _ in self._chunks)
            self._held += sum(f for _, f in self._chunks)
            self._chunks.clear()
            if data:
                peer.write(data)
                count.n += len(data)
        if self._error is not None:
            relay.failed(self._error)
            return
        if self._eof:
            peer.write_eof()
            relay.ended()
        self._paused = True
        if not peer.saturated():
            self.resume_reading()  # credit what was held

    def write(self, data: bytes) -> None:
        if self._error is not None:
            return
        drv = self.driver
        if drv.closed or drv.core.closed:
            self.fail(drv.close_reason or "HTTP/2 connection closed")
            return
        try:
            drv.core.send_data(self.sid, data)
        except ProtocolError as e:  # called from a read callback: fail the relay, never raise
            self.fail(str(e))
            return
        if len(data) >= FLUSH_NOW:
            drv.flush()
        else:
            drv.flush_soon()

    def write_eof(self) -> None:
        if self._error is None and not self.driver.core.closed:
            try:
                self.driver.core.end_stream(self.sid)
            except ProtocolError as e:
                self.fail(str(e))
                return
            self.driver.flush()

    def saturated(self) -> bool:
        drv = self.driver
        return drv.write_paused or drv.core.buffered(self.sid) > H2_STREAM_HIGH

    def pause_reading(self) -> None:
        self._paused = True

    def resume_reading(self) -> None:
        if self._paused:
            self._paused = False
            held, self._held = self._held, 0
            if held:
                self.driver.core.ack(self.sid, held)
                self.driver.flush()

    def abort(self) -> None:
        if self._error is None:
            self._error = "aborted"
            self.driver.core.reset(self.sid)
            self.driver.flush()
        self.close()

    def close(self) -> None:
        # give back the connection-level credit of whatever was not acknowledged
        held = self._held + sum(f for _, f in self._chunks)
        self._held = 0
        self._chunks.clear()
        if held:
            self.driver.core.ack(self.sid, held)
            self.driver.flush()
        self.driver.stream_done(self.sid)


class H2Driver(asyncio.BufferedProtocol):
    """An HTTP/2 connection: an asyncio protocol on the TLS transport. Bytes are fed to the
    sans-IO core in the read callback and its events dispatched to the stream ends there and
    then (no task, no queue); what the core has to send is written at once."""

    core: hbone.HboneClient | hbone.HboneServer

    def __init__(self, name: str) -> None:
        self.name = name
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, H2StreamEnd] = {}
        self.closed = False
        self.close_reason = ""
        self.graceful = False
        self.write_paused = False
        self.idle_since = time.monotonic()
        self._early: list[bytes] | None = []  # received before start()
        self._early_eof: str | None = None
        self._ended = False
        self._loop = asyncio.get_running_loop()
        self._lost: asyncio.Future[None] = self._loop.create_future()
        self._flush_pending = False
        self._buf = read_buffer()

    def start(self) -> None:
        """Begin (after the handshake and the peer identity check): our preface, then whatever
        the peer sent meanwhile."""
        early, self._early = self._early or [], None
        self.flush()
        for data in early:
            self.data_received(data)
        if self._early_eof is not None:
            self._shutdown(self._early_eof)

    def flush_soon(self) -> None:
        """Write what the core has once this turn of the event loop has read every socket that
        was ready: the small messages of several streams then leave in one TLS write (one
        record, one ``send``, and one wake-up of the peer) instead of one each."""
        if not self._flush_pending:
            self._flush_pending = True
            self._loop.call_soon(self._flush_deferred)

    def _flush_deferred(self) -> None:
        self._flush_pending = False
        self.flush()

    def flush(self) -> None:
        parts = self.core.data_to_send_parts()
        if parts and not self.closed:
            if len(parts) == 1:
                self.transport.write(parts[0])  # type: ignore[union-attr]
            else:
                self.transport.writelines(parts)  # type: ignore[union-attr]

    def stream_done(self, sid: int) -> None:
        if self.streams.pop(sid, None) is not None and not self.streams:
            self.idle_since = time.monotonic()

    # asyncio.Protocol ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buf

    def buffer_updated(self, nbytes: int) -> None:
        # The core is handed a view of the shared read buffer, not a copy: it keeps only copies
        # (payloads and any partial frame), so the buffer is free again when this returns.
        self.data_received(self._buf[:nbytes])

    def data_received(self, data: bytes | memoryview) -> None:
        if self._early is not None:
            self._early.append(bytes(data))
            return
        if self._ended:
            return
        core = self.core
        dispatch = self._dispatch
        for ev in core.receive_data(data):
            dispatch(ev)
        self.flush()
        if core.closed:
            self._shutdown(self.close_reason or "HTTP/2 connection closed")

    def eof_received(self) -> bool:
        self._lost_or_eof("connection closed by peer")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost_or_eof(f"connection error: {exc}" if exc is not None else "connection closed by peer")
        if not self._lost.done():
            self._lost.set_result(None)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        for end in list(self.streams.values()):
            end.window_opened()

    def _lost_or_eof(self, reason: str) -> None:
        if self._early is not None:
            self._early_eof = self._early_eof or reason
        else:
            self._shutdown(reason)

    def _shutdown(self, reason: str) -> None:
        if self._ended:
            return
        self._ended = True
        self.closed = True
        self.close_reason = self.close_reason or reason
        for end in list(self.streams.values()):
            if self.graceful:
                end.feed_eof()  # GOAWAY(NO_ERROR): the peer is done with its streams
            else:
                end.fail(self.close_reason)
        self.streams.clear()
        self._on_closed()
        if self.transport is not None:
            self.transport.close()

    async def run(self) -> None:
        """Until the connection is gone; cancelling closes it."""
        try:
            await asyncio.shield(self._lost)
        except asyncio.CancelledError:
            self._shutdown("connection closed")
            raise

    def _dispatch(self, ev: hbone.Event) -> None:
        t = type(ev)
        if t is hbone.Data:
            end = self.streams.get(ev.stream_id)  # type: ignore[attr-defined]
            if end is not None:
                end.feed(ev.data, ev.flow_len)  # type: ignore[attr-defined]
            else:
                self.core.ack(ev.stream_id, ev.flow_len)  # type: ignore[attr-defined]
        elif t is hbone.WindowOpened:
            end = self.streams.get(ev.stream_id)  # type: ignore[attr-defined]
            if end is not None:
                end.window_opened()
        elif t is hbone.StreamEnded:
            end = self.streams.get(ev.stream_id)  # type: ignore[attr-defined]
            if end is not None:
                end.feed_eof()
        elif t is hbone.StreamReset:
            end = self.streams.pop(ev.stream_id, None)  # type: ignore[attr-defined]
            if end is not None:
                end.fail(f"stream reset ({'by peer' if ev.remote else 'locally'}, code {ev.error_code})")  # type: ignore[attr-defined]
        elif t is hbone.ConnectionClosed:
            self.close_reason = ev.reason  # type: ignore[attr-defined]
            self.graceful = ev.error_code == 0  # type: ignore[attr-defined]
        else:
            self._on_event(ev)

    def _on_event(self, ev: hbone.Event) -> None:
        pass

    def _on_closed(self) -> None:
        pass

    def close(self) -> None:
        if not self.closed:
            self.core.close()
            self.flush()
            self.close_reason = self.close_reason or "connection closed"
            self.closed = True
            if self.transport is not None:
                self.transport.close()


class H2ClientConn(H2Driver):
    """A pooled ztunnel -> peer:15008 connection."""

    core: hbone.HboneClient

    def __init__(self, name: str, peer_identity: str = "") -> None:
        super().__init__(name)
        self.core = hbone.HboneClient()
        self.peer_identity = peer_identity
        self._responses: dict[int, asyncio.Future[int]] = {}

    def has_capacity(self) -> bool:
        return not self.closed and len(self.streams) < min(self.core.peer_max_streams, hbone.MAX_CONCURRENT_STREAMS)

    async def open(self, authority: str, **headers: str | None) -> tuple[H2StreamEnd | None, int]:
        """CONNECT and wait for the answer: ``(end, 200)`` or ``(None, status)``. A CONNECT that
        times out, fails or is cancelled is reset (RST_STREAM CANCEL) and forgotten, so the peer
        drops its half and the pool can reap the connection."""
        sid = self.core.connect(authority, **headers)  # type: ignore[arg-type]
        end = H2StreamEnd(self, sid)
        self.streams[sid] = end
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._responses[sid] = fut
        self.flush()
        try:
            status = await asyncio.wait_for(fut, CONNECT_TIMEOUT)
        except BaseException:
            end.abort()  # RST_STREAM CANCEL, held credit given back, stream_done
            raise
        finally:
            self._responses.pop(sid, None)
        if status != 200:
            self.stream_done(sid)
            return None, status
        return end, status

    def _on_event(self, ev: hbone.Event) -> None:
        if type(ev) is hbone.Response:
            fut = self._responses.get(ev.stream_id)
            if fut is not None and not fut.done():
                fut.set_result(ev.status)

    def _on_closed(self) -> None:
        for fut in self._responses.values():
            if not fut.done():
                fut.set_exception(ConnectionResetError(self.close_reason))


class H2ServerConn(H2Driver):
    """An accepted :15008 connection; each CONNECT is handed to ``on_request`` in its own task."""

    core: hbone.HboneServer

    def __init__(self, name: str,
                 on_request: Callable[[H2ServerConn, hbone.ConnectRequest, H2StreamEnd],
                                      Coroutine[Any, Any, None]]) -> None:
        super().__init__(name)
        self.core = hbone.HboneServer()
        self._on_request = on_request

    def _on_event(self, ev: hbone.Event) -> None:
        if type(ev) is hbone.ConnectRequest:
            end = H2StreamEnd(self, ev.stream_id)
            self.streams[ev.stream_id] = end
            create_task(self._on_request(self, ev, end), name=f"hbone-in {self.name} s{ev.stream_id}")
        elif type(ev) is hbone.RequestRejected:
            log.warning("HBONE %s: rejected stream %d with %d: %s", self.name, ev.stream_id, ev.status, ev.reason)


PoolKey = tuple[str, str, str | None, str]  # (scope, source identity, source ip if spoofed, destination ip)


class Pool:
    """HTTP/2 connections per (source identity, source ip, destination ip:15008), reused
    across CONNECT streams; a new connection when all are at the peer's stream limit."""

    def __init__(self) -> None:
        self._conns: dict[PoolKey, list[H2ClientConn]] = {}
        self._locks: dict[PoolKey, asyncio.Lock] = {}

    async def get(self, key: PoolKey,
                  dial: Callable[[], Awaitable[H2ClientConn]]) -> H2ClientConn:
        for c in self._conns.get(key, ()):
            if c.has_capacity():
                return c
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            conns = self._conns.setdefault(key, [])
            conns[:] = [c for c in conns if not c.closed]
            for c in conns:
                if c.has_capacity():
                    return c
            c = await dial()
            conns.append(c)
            return c

    def reap(self, idle: float = POOL_IDLE_SECONDS) -> None:
        now = time.monotonic()
        for key, conns in list(self._conns.items()):
            for c in conns:
                if not c.streams and now - c.idle_since > idle:
                    c.close()
            conns[:] = [c for c in conns if not c.closed]
            if not conns:
                del self._conns[key]
                self._locks.pop(key, None)

    def close_scope(self, scope_key: str) -> None:
        """Close the connections dialed for one pod (in-pod: its sockets live in its netns)."""
        for key in [k for k in self._conns if k[0] == scope_key]:
            for c in self._conns.pop(key):
                c.close()
            self._locks.pop(key, None)

    def close(self) -> None:
        for conns in self._conns.values():
            for c in conns:
                c.close()
        self._conns.clear()
