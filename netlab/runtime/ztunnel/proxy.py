"""The three proxies and what they share: one task per proxied connection.

* outbound (15001): original destination -> service VIP / workload resolution -> HBONE to
  ``<dst pod ip>:15008`` through a pooled mTLS HTTP/2 connection, or plain passthrough to
  non-mesh destinations; in node-routing, same-node mesh destinations take the in-process
  fast path (no HBONE on the wire, outbound + inbound lines logged).
* inbound HBONE (15008): TLS with the destination workload's identity (chosen from the
  accepted socket's local IP), peer SPIFFE check, CONNECT -> policy -> upstream to the app
  with the client's IP as source.
* inbound plaintext (15006): policy (no identity) -> upstream with the client's IP.

A :class:`Scope` says for whom a listener works: a whole node (node-routing; workloads are
looked up by IP) or one pod (in-pod; sockets made in its netns). The HTTP/2 connections and
their pool are in :mod:`~netlab.runtime.ztunnel.h2conn`, the counters in
:mod:`~netlab.runtime.ztunnel.metrics`, the listening sockets in
:mod:`~netlab.runtime.ztunnel.listeners`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
from dataclasses import dataclass

from netlab.runtime.ztunnel import hbone
from netlab.runtime.ztunnel.accesslog import AccessLog, ConnRecord
from netlab.runtime.ztunnel.h2conn import CONNECT_TIMEOUT, H2ClientConn, H2ServerConn, H2StreamEnd, Pool
from netlab.runtime.ztunnel.metrics import Metrics
from netlab.runtime.ztunnel.registry import Registry, Workload
from netlab.runtime.ztunnel.relay import (
    Counter,
    TcpEnd,
    open_tls,
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
