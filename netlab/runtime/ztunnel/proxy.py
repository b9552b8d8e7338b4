"""The asyncio drivers: one task per proxied connection, the HTTP/2 pool, the three proxies.

* outbound (15001): original destination -> service VIP / workload resolution -> HBONE to
  ``<dst pod ip>:15008`` through a pooled mTLS HTTP/2 connection, or plain passthrough to
  non-mesh destinations; in node-routing, same-node mesh destinations take the in-process
  fast path (no HBONE on the wire, outbound + inbound lines logged).
* inbound HBONE (15008): TLS with the destination workload's identity (chosen from the
  accepted socket's local IP), peer SPIFFE check, CONNECT -> policy -> upstream to the app
  with the client's IP as source.
* inbound plaintext (15006): policy (no identity) -> upstream with the client's IP.

A :class:`Scope` says for whom a listener works: a whole node (node-routing; workloads are
looked up by IP) or one pod (in-pod; sockets made in its netns).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from netlab.errors import ProtocolError
from netlab.runtime.tasks import create_task
from netlab.runtime.ztunnel import hbone
from netlab.runtime.ztunnel.accesslog import AccessLog, ConnRecord
from netlab.runtime.ztunnel.registry import Registry, Workload
from netlab.runtime.ztunnel.relay import (
    Counter,
    End,
    Relay,
    TcpEnd,
    open_tls,
    read_buffer,
    relay,
    set_linger_rst,
    splice_available,
    splice_relay,
)
from netlab.runtime.ztunnel.sockets import SocketFactory, original_dst
from netlab.runtime.ztunnel.tls import Contexts, IdentityError, verify_peer

log = logging.getLogger(__name__)

HBONE_PORT = 15008
OUTBOUND_PORT = 15001
INBOUND_PLAIN_PORT = 15006
CONNECT_TIMEOUT = 10.0
H2_STREAM_HIGH = 512 * 1024
POOL_IDLE_SECONDS = 30.0


class Metrics:
    """Prometheus counters, by reporter (source = outbound, destination = inbound)."""

    def __init__(self) -> None:
        self.opened: collections.Counter[str] = collections.Counter()
        self.closed: collections.Counter[str] = collections.Counter()
        self.sent: collections.Counter[str] = collections.Counter()
        self.recv: collections.Counter[str] = collections.Counter()
        self.failed: collections.Counter[str] = collections.Counter()

    def render(self, unlabelled: Iterable[tuple[str, str, int]] = ()) -> str:
        """Prometheus text: the per-reporter counters, then ``(name, help, value)`` counters that
        have no reporter (netlab's own, e.g. certificate rotations)."""
        out = []
        for name, help_, c in (
            ("istio_tcp_connections_opened_total", "TCP connections opened", self.opened),
            ("istio_tcp_connections_closed_total", "TCP connections closed", self.closed),
            ("istio_tcp_sent_bytes_total", "Bytes sent toward the peer", self.sent),
            ("istio_tcp_received_bytes_total", "Bytes received from the peer", self.recv),
            ("istio_tcp_connections_failed_total", "Connections closed with an error", self.failed),
        ):
            out.append(f"# HELP {name} {help_}.")
            out.append(f"# TYPE {name} counter")
            for reporter in ("source", "destination"):
                out.append(f'{name}{{reporter="{reporter}"}} {c[reporter]}')
        for name, help_, value in unlabelled:
            out += [f"# HELP {name} {help_}.", f"# TYPE {name} counter", f"{name} {value}"]
        return "\n".join(out) + "\n"


@dataclass(frozen=True, slots=True)
class Scope:
    """Who a listener set works for. ``workload_uid`` None = every workload of the node."""

    factory: SocketFactory
    workload_uid: str | None = None
    spoof_outbound: bool = True  # node-routing: upstream keeps the source pod's IP
    fallback: Workload | None = None  # in-pod: the pod as ZDS described it, if the registry lacks it


def _addr(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


async def _connect(factory: SocketFactory, ip: str, port: int, *, bind_ip: str | None) -> socket.socket:
    sock = factory.upstream(bind_ip=bind_ip)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (ip, port)), CONNECT_TIMEOUT)
    except BaseException:
        sock.close()
        raise
    return sock


# --- HTTP/2 connection drivers -------------------------------------------------------------------
class H2StreamEnd:
    """One CONNECT stream as a relay end (see relay.End).

    The driver pushes each DATA frame's bytes into the peer end as soon as the frame is parsed and
    credits the sender's flow-control window right away, unless the peer end is saturated: then
    the credit is held (the sender stops at the end of its window) until the peer drains.
    """

    __slots__ = ("driver", "sid", "peer", "count", "relay", "_chunks", "_eof", "_error", "_held", "_paused")

    def __init__(self, driver: _H2Driver, sid: int) -> None:
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
        drv.flush()

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


class _H2Driver(asyncio.BufferedProtocol):
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
        self._lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
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

    def flush(self) -> None:
        data = self.core.data_to_send()
        if data and not self.closed:
            self.transport.write(data)  # type: ignore[union-attr]

    def stream_done(self, sid: int) -> None:
        if self.streams.pop(sid, None) is not None and not self.streams:
            self.idle_since = time.monotonic()

    # asyncio.Protocol ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buf

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(self._buf[:nbytes]))

    def data_received(self, data: bytes) -> None:
        if self._early is not None:
            self._early.append(data)
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


class H2ClientConn(_H2Driver):
    """A pooled ztunnel -> peer:15008 connection."""

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


class H2ServerConn(_H2Driver):
    """An accepted :15008 connection; each CONNECT is handed to ``on_request`` in its own task."""

    def __init__(self, name: str,
                 on_request: Callable[[H2ServerConn, hbone.ConnectRequest, H2StreamEnd], Awaitable[None]]) -> None:
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


# --- the proxy ------------------------------------------------------------------------------------
class Proxy:
    """Everything the three listeners share: registry, identities, pool, log, metrics."""

    def __init__(self, *, node: str, mode: str, registry: Registry, contexts: Contexts, access_log: AccessLog,
                 metrics: Metrics | None = None, cluster: str = "Kubernetes") -> None:
        self.node = node
        self.mode = mode
        self.registry = registry
        self.contexts = contexts
        self.access_log = access_log
        self.metrics = metrics or Metrics()
        self.pool = Pool()
        self.cluster = cluster
        self.use_splice = splice_available()

    # helpers ------------------------------------------------------------------------------------
    def _scope_workload(self, scope: Scope) -> Workload | None:
        if scope.workload_uid is None:
            return None
        return self.registry.workload_by_uid(scope.workload_uid) or scope.fallback

    def _finish(self, rec: ConnRecord, reporter: str) -> None:
        m = self.metrics
        m.closed[reporter] += 1
        m.sent[reporter] += rec.bytes_sent
        m.recv[reporter] += rec.bytes_recv
        if rec.error is not None:
            m.failed[reporter] += 1
        self.access_log.complete(rec)

    def _fill_src(self, rec: ConnRecord, w: Workload | None, identity: str | None) -> None:
        if w is not None:
            rec.src_workload, rec.src_namespace = w.name, w.namespace
        rec.src_identity = identity

    def _fill_dst(self, rec: ConnRecord, w: Workload, identity: bool) -> None:
        rec.dst_workload, rec.dst_namespace = w.name, w.namespace
        if identity:
            rec.dst_identity = self.registry.identity(w)

    async def _relay_tcp(self, a: socket.socket, b: socket.socket, a_to_b: Counter, b_to_a: Counter) -> str | None:
        if self.use_splice:
            return await splice_relay(a, b, a_to_b, b_to_a)
        try:
            ea = await TcpEnd.wrap(a, server_side=True)
        except BaseException:
            b.close()  # ``a`` is the caller's, closed by its error path
            raise
        try:
            eb = await TcpEnd.wrap(b, server_side=False)
        except BaseException:
            b.close()
            ea.abort()
            raise
        return await relay(ea, eb, a_to_b, b_to_a)

    # outbound -----------------------------------------------------------------------------------
    def _redirected(self, sock: socket.socket, direction: str, side: str
                    ) -> tuple[ConnRecord, str, int, str, int] | None:
        """Record and endpoints of a redirected connection just accepted; None (closed) if it is gone."""
        try:
            peer_ip, peer_port = sock.getpeername()[:2]
            dst_ip, dst_port = original_dst(sock)
        except OSError:
            sock.close()
            return None
        self.metrics.opened[side] += 1
        rec = ConnRecord(direction=direction, src_addr=_addr(peer_ip, peer_port), dst_addr=_addr(dst_ip, dst_port))
        return rec, peer_ip, peer_port, dst_ip, dst_port

    async def outbound(self, sock: socket.socket, scope: Scope) -> None:
        accepted = self._redirected(sock, "outbound", "source")
        if accepted is None:
            return
        rec, peer_ip, peer_port, dst_ip, dst_port = accepted
        try:
            await self._outbound(sock, scope, rec, peer_ip, peer_port, dst_ip, dst_port)
        except asyncio.CancelledError:
            set_linger_rst(sock)
            sock.close()
            raise
        except Exception as e:  # every failure ends in the access log
            log.debug("outbound %s -> %s failed", rec.src_addr, rec.dst_addr, exc_info=True)
            rec.error = rec.error or _error_text(e)
            self.access_log.failed(rec)  # relay errors are returned, not raised: this one is early
            set_linger_rst(sock)
            sock.close()
        self._finish(rec, "source")

    async def _outbound(self, sock: socket.socket, scope: Scope, rec: ConnRecord, peer_ip: str, peer_port: int,
                        dst_ip: str, dst_port: int) -> None:
        reg = self.registry
        src = self._scope_workload(scope) or reg.workload_by_ip(peer_ip)
        if scope.workload_uid is None and src is not None and src.ip != peer_ip:
            src = None
        self._fill_src(rec, src, None)
        svc = None
        target_port = dst_port
        hit = reg.service_by_vip(dst_ip, dst_port)
        if hit is not None:
            svc, sport = hit
            dst = reg.pick_endpoint(svc)
            if dst is None:
                raise ConnectionRefusedError(f"no healthy upstream for {svc.hostname}")
            target_port = sport.target_port
        else:
            dst = reg.workload_by_ip(dst_ip)
            if dst is not None:
                svc = reg.service_for(dst, dst_port)
        if svc is not None:
            rec.dst_service = svc.hostname
        bind_ip = peer_ip if scope.spoof_outbound else None
        if dst is None or not dst.hbone or src is None:
            # passthrough: plain TCP to the original destination (or the picked endpoint)
            target_ip = dst.ip if dst is not None else dst_ip
            if dst is not None:
                self._fill_dst(rec, dst, identity=False)
            rec.dst_addr = _addr(target_ip, target_port)
            self.access_log.opened(rec)
            up = await _connect(scope.factory, target_ip, target_port, bind_ip=bind_ip)
            a2b, b2a = Counter(), Counter()
            try:
                rec.error = await self._relay_tcp(sock, up, a2b, b2a)
            finally:
                rec.bytes_sent, rec.bytes_recv = a2b.n, b2a.n
            return
        src_id = reg.identity(src)
        rec.src_identity = src_id
        self._fill_dst(rec, dst, identity=True)
        rec.dst_addr = _addr(dst.ip, HBONE_PORT)
        rec.dst_hbone_addr = _addr(dst_ip, dst_port)
        self.access_log.opened(rec)
        if self.mode == "node-routing" and scope.workload_uid is None and dst.node == self.node:
            await self._local_fast_path(sock, scope, rec, src, dst, peer_ip, target_port, svc.hostname if svc else None)
            return
        conn = await self.pool.get((scope.workload_uid or "", src_id, bind_ip, dst.ip), lambda: self._dial(scope, src_id, dst, bind_ip))
        end, status = await conn.open(
            _addr(dst.ip, target_port), forwarded_for=_addr(peer_ip, peer_port),
            host=svc.hostname if svc is not None else None,
            baggage=hbone.baggage(cluster=self.cluster, namespace=src.namespace, workload_type=src.workload_type,
                                  workload=src.name, service=src.canonical_name or src.name,
                                  revision=src.canonical_revision or "latest"))
        if end is None:
            raise ConnectionRefusedError(f"http status: {status} {_REASONS.get(status, '')}".rstrip())
        try:
            client = await TcpEnd.wrap(sock, server_side=True)
        except BaseException:
            end.abort()
            raise
        a2b, b2a = Counter(), Counter()
        try:
            rec.error = await relay(client, end, a2b, b2a)
        finally:
            rec.bytes_sent, rec.bytes_recv = a2b.n, b2a.n

    async def _dial(self, scope: Scope, src_id: str, dst: Workload, bind_ip: str | None) -> H2ClientConn:
        ctx = self.contexts.get(src_id, server=False)
        sock = await _connect(scope.factory, dst.ip, HBONE_PORT, bind_ip=bind_ip)
        conn = H2ClientConn(f"{src_id}->{dst.ip}:{HBONE_PORT}")
        try:
            transport = await open_tls(conn, sock, ctx)
        except ssl.SSLError as e:
            sock.close()
            raise ConnectionRefusedError(f"tls handshake failed: {_error_text(e)}") from None
        except BaseException:
            sock.close()
            raise
        try:
            conn.peer_identity = verify_peer(transport.get_extra_info("ssl_object"), expected=self.registry.identity(dst))
        except IdentityError as e:
            transport.abort()
            raise ConnectionRefusedError(str(e)) from None
        conn.start()
        return conn

    async def _local_fast_path(self, sock: socket.socket, scope: Scope, rec: ConnRecord, src: Workload,
                               dst: Workload, peer_ip: str, target_port: int, hostname: str | None) -> None:
        """node-routing, destination on this node: run the inbound side in-process."""
        inrec = ConnRecord(direction="inbound", src_addr=rec.src_addr, dst_addr=rec.dst_addr,
                           dst_hbone_addr=_addr(dst.ip, target_port), dst_service=rec.dst_service)
        self.metrics.opened["destination"] += 1
        self._fill_src(inrec, src, rec.src_identity)
        self._fill_dst(inrec, dst, identity=True)
        self.access_log.opened(inrec)
        try:
            allowed, why = self.registry.check_policy(dst, target_port, rec.src_identity)
            if not allowed:
                inrec.error = f"connection closed due to policy rejection: {why}"
                raise ConnectionRefusedError("http status: 401 Unauthorized")
            up = await _connect(scope.factory, dst.ip, target_port, bind_ip=peer_ip)
            a2b, b2a = Counter(), Counter()
            try:
                err = await self._relay_tcp(sock, up, a2b, b2a)
            finally:
                rec.bytes_sent, rec.bytes_recv = a2b.n, b2a.n
                inrec.bytes_recv, inrec.bytes_sent = a2b.n, b2a.n
            rec.error = inrec.error = err
        except Exception as e:
            inrec.error = inrec.error or _error_text(e)
            self.access_log.failed(inrec)
            raise
        finally:
            self._finish(inrec, "destination")

    # inbound HBONE ------------------------------------------------------------------------------
    async def inbound_hbone(self, sock: socket.socket, scope: Scope) -> None:
        try:
            peer_ip, peer_port = sock.getpeername()[:2]
            local_ip, local_port = sock.getsockname()[:2]
        except OSError:
            sock.close()
            return
        dst = self._scope_workload(scope) or self.registry.workload_by_ip(local_ip)
        if dst is None:
            rec = ConnRecord(direction="inbound", src_addr=_addr(peer_ip, peer_port),
                             dst_addr=_addr(local_ip, local_port), error=f"unknown destination workload {local_ip}")
            set_linger_rst(sock)
            sock.close()
            self.metrics.opened["destination"] += 1
            self.access_log.failed(rec)
            self._finish(rec, "destination")
            return
        name = f"{_addr(peer_ip, peer_port)}->{_addr(local_ip, local_port)}"
        peer_id = ""

        async def on_request(conn: H2ServerConn, req: hbone.ConnectRequest, end: H2StreamEnd) -> None:
            await self._inbound_stream(conn, req, end, scope, dst, peer_ip, peer_port, local_ip, local_port, peer_id)

        conn = H2ServerConn(name, on_request)
        transport = None
        try:
            transport = await open_tls(conn, sock, self.contexts.get(self.registry.identity(dst), server=True),
                                       server_side=True)
            peer_id = verify_peer(transport.get_extra_info("ssl_object"), trust_domain=self.registry.trust_domain)
        except (TimeoutError, OSError, ssl.SSLError, IdentityError) as e:
            if transport is not None:
                transport.abort()
            else:
                sock.close()
            rec = ConnRecord(direction="inbound", src_addr=_addr(peer_ip, peer_port), dst_addr=_addr(local_ip, local_port))
            self._fill_src(rec, self.registry.workload_by_ip(peer_ip), None)
            self._fill_dst(rec, dst, identity=True)
            rec.error = str(e) if isinstance(e, IdentityError) else f"tls handshake failed: {_error_text(e)}"
            self.metrics.opened["destination"] += 1
            self.access_log.failed(rec)
            self._finish(rec, "destination")
            return
        conn.start()
        await conn.run()

    async def _inbound_stream(self, conn: H2ServerConn, req: hbone.ConnectRequest, end: H2StreamEnd, scope: Scope,
                              listener_wl: Workload, peer_ip: str, peer_port: int, local_ip: str, local_port: int,
                              peer_id: str) -> None:
        self.metrics.opened["destination"] += 1
        rec = ConnRecord(direction="inbound", src_addr=_addr(peer_ip, peer_port), dst_addr=_addr(local_ip, local_port),
                         dst_hbone_addr=req.authority)
        reg = self.registry
        self._fill_src(rec, reg.workload_by_ip(peer_ip), peer_id)
        status = 200
        try:
            target = reg.workload_by_ip(req.host)
            if target is None or (scope.workload_uid is not None and target.uid != listener_wl.uid) or (
                    scope.workload_uid is None and target.node != self.node):
                status, rec.error = 400, f"unknown target {req.authority}"
                self._fill_dst(rec, listener_wl, identity=True)
                return
            self._fill_dst(rec, target, identity=True)
            host = _forwarded_host(req.headers.get("forwarded", ""))
            svc = reg.service_for(target, req.port, host)
            if svc is not None:
                rec.dst_service = svc.hostname
            self.access_log.opened(rec)
            allowed, why = reg.check_policy(target, req.port, peer_id)
            if not allowed:
                status, rec.error = 401, f"connection closed due to policy rejection: {why}"
                return
            try:
                up = await _connect(scope.factory, req.host, req.port, bind_ip=peer_ip)
            except (TimeoutError, OSError) as e:
                status, rec.error = 503, f"upstream connect to {req.authority} failed: {_error_text(e)}"
                return
            conn.core.respond(req.stream_id, 200)
            conn.flush()
            try:
                upstream = await TcpEnd.wrap(up, server_side=False)
            except BaseException:
                up.close()
                raise
            a2b, b2a = Counter(), Counter()
            try:
                rec.error = await relay(end, upstream, a2b, b2a)
            finally:
                rec.bytes_recv, rec.bytes_sent = a2b.n, b2a.n
        except Exception as e:
            log.debug("inbound stream failed", exc_info=True)
            rec.error = rec.error or _error_text(e)
            end.abort()
        except BaseException:  # cancelled (connection or ztunnel going away): reset the stream
            rec.error = rec.error or "cancelled"
            end.abort()
            raise
        finally:
            if status != 200:
                conn.core.respond(req.stream_id, status)
                conn.flush()
                end.close()
                self.access_log.failed(rec)
            self._finish(rec, "destination")

    # inbound plaintext ---------------------------------------------------------------------------
    async def inbound_plain(self, sock: socket.socket, scope: Scope) -> None:
        accepted = self._redirected(sock, "inbound", "destination")
        if accepted is None:
            return
        rec, peer_ip, _, dst_ip, dst_port = accepted
        reg = self.registry
        self._fill_src(rec, reg.workload_by_ip(peer_ip), None)
        try:
            dst = self._scope_workload(scope) or reg.workload_by_ip(dst_ip)
            if dst is not None:
                self._fill_dst(rec, dst, identity=False)
                svc = reg.service_for(dst, dst_port)
                if svc is not None:
                    rec.dst_service = svc.hostname
            self.access_log.opened(rec)
            if dst is not None:
                allowed, why = reg.check_policy(dst, dst_port, None)
                if not allowed:
                    raise ConnectionRefusedError(f"connection closed due to policy rejection: {why}")
            up = await _connect(scope.factory, dst_ip, dst_port, bind_ip=peer_ip)
            a2b, b2a = Counter(), Counter()
            try:
                rec.error = await self._relay_tcp(sock, up, a2b, b2a)
            finally:
                rec.bytes_recv, rec.bytes_sent = a2b.n, b2a.n
        except Exception as e:
            rec.error = rec.error or _error_text(e)
            self.access_log.failed(rec)
            set_linger_rst(sock)
            sock.close()
        self._finish(rec, "destination")


_REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 503: "Service Unavailable"}


def _forwarded_host(value: str) -> str | None:
    for part in value.split(";"):
        k, _, v = part.strip().partition("=")
        if k.lower() == "host" and v:
            return v.strip('"')
    return None


def _error_text(e: BaseException) -> str:
    if isinstance(e, asyncio.TimeoutError):
        return "connection timed out"
    if isinstance(e, ConnectionRefusedError) and e.args and isinstance(e.args[0], str):
        return e.args[0]
    if isinstance(e, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {e.verify_message}"
    if isinstance(e, ssl.SSLError):
        return (e.reason or str(e)).lower().replace("_", " ")
    if isinstance(e, OSError) and e.errno:
        return os.strerror(e.errno).lower()
    if isinstance(e, ConnectionResetError):
        return "connection reset by peer"
    if isinstance(e, ConnectionAbortedError):
        return "connection aborted"
    return str(e) or type(e).__name__
