"""The agent's side of ZDS: :class:`ZdsServer`, a listener with one thread per ztunnel connection.

Like istio-cni's goroutine per connection, each accepted connection is served in strict
lock-step by its own thread: a request is sent only after the previous one was acknowledged.
With nothing to send, the thread checks every 5 s that ztunnel is still there by a 10 ms read
(timeout = alive, EOF or error = gone, data = a protocol violation).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import queue
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

from netlab.errors import ProtocolError
from netlab.linux.seqpacket import recv_msg, send_msg
from netlab.protocols.zds import (
    DEADLINE_S,
    LIVENESS_EVERY_S,
    LIVENESS_READ_S,
    AckReceived,
    AgentConn,
    Code,
    WorkloadInfo,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SnapshotItem:
    """One pod of the agent's snapshot: an open netns fd (``AddWorkload``) or None (``Keep``)."""

    uid: str
    fd: int | None
    info: WorkloadInfo | None


class _Conn:
    """One accepted ztunnel connection, served by its own thread in strict lock-step."""

    def __init__(self, server: ZdsServer, sock: socket.socket, n: int) -> None:
        self.server, self.sock, self.n = server, sock, n
        self.core = AgentConn(log)
        self.requests: queue.Queue[tuple[str, str, int | None, WorkloadInfo | None, concurrent.futures.Future]] = \
            queue.Queue()
        self.closed = threading.Event()
        # uids this ztunnel acknowledged without error (snapshot or AddWorkload), minus those
        # deleted since: the pods it serves, which `up` waits for and `status` shows
        self.acked: set[str] = set()
        self.thread = threading.Thread(target=self.run, name=f"zds-conn-{n}", daemon=True)

    def _exchange(self) -> AckReceived:
        fds: tuple[int, ...] | list[int]
        for data, fds in self.core.data_to_send():
            send_msg(self.sock, data, fds)
        data, fds = recv_msg(self.sock, DEADLINE_S)
        events = self.core.receive_data(data, fds)
        ack = events[0]
        assert isinstance(ack, AckReceived)
        return ack

    def run(self) -> None:
        try:
            data, fds = recv_msg(self.sock, DEADLINE_S)
            self.core.receive_data(data, fds)
            items = self.server.snapshot()
            for it in items:
                if it.fd is not None:
                    self.core.send_add(it.uid, it.fd, it.info)
                else:
                    self.core.send_keep(it.uid)
                ack = self._exchange()
                if ack.error:
                    log.warning("ztunnel conn %d: snapshot %s %s: nack: %s", self.n, ack.request, ack.uid, ack.error)
                else:
                    self.acked.add(it.uid)
            self.core.send_snapshot_sent()
            self._exchange()
            log.info("ztunnel conn %d: snapshot of %d pods sent and acked", self.n, len(items))
            self.server._snapshot_done(self)
            while not self.server.stopping.is_set():
                try:
                    req = self.requests.get(timeout=LIVENESS_EVERY_S)
                except queue.Empty:
                    self._check_alive()
                    continue
                kind, uid, fd, info, fut = req
                if kind == "stop":
                    break
                try:
                    if kind == "add":
                        assert fd is not None
                        self.core.send_add(uid, fd, info)
                    else:
                        self.core.send_del(uid)
                    error = self._exchange().error
                    if kind == "del":
                        self.acked.discard(uid)
                    elif not error:
                        self.acked.add(uid)
                    fut.set_result(error)
                except BaseException as e:
                    fut.set_exception(e)
                    raise
        except (ProtocolError, OSError) as e:
            log.info("ztunnel conn %d closed: %s", self.n, e)
        finally:
            self.closed.set()
            self.server._drop(self)
            with contextlib.suppress(OSError):
                self.sock.close()
            while True:  # fail whatever is still queued
                try:
                    *_, fut = self.requests.get_nowait()
                except queue.Empty:
                    break
                if not fut.done():
                    fut.set_exception(ProtocolError("ZDS: ztunnel connection closed", code=Code.CLOSED))

    def _check_alive(self) -> None:
        try:
            data, fds = recv_msg(self.sock, LIVENESS_READ_S)
        except ProtocolError as e:
            if e.code == Code.TIMEOUT:
                return
            raise
        for fd in fds:
            os.close(fd)
        raise ProtocolError("ZDS: unsolicited message from ztunnel", code=Code.UNEXPECTED)

    def submit(self, kind: str, uid: str, fd: int | None = None,
               info: WorkloadInfo | None = None) -> concurrent.futures.Future:
        fut: concurrent.futures.Future = concurrent.futures.Future()
        if self.closed.is_set():
            fut.set_exception(ProtocolError("ZDS: ztunnel connection closed", code=Code.CLOSED))
        else:
            self.requests.put((kind, uid, fd, info, fut))
        return fut


class ZdsServer:
    """The agent's ZDS listener: snapshot to each new connection, adds to the newest, dels to all.

    ``snapshot()`` is called from the connection's thread after the hello; the fds it returns
    stay owned by the caller (they are sent, not closed).
    """

    def __init__(self, path: str, snapshot: Callable[[], list[SnapshotItem]]) -> None:
        self.path = path
        self.snapshot = snapshot
        self.stopping = threading.Event()
        self._conns: list[_Conn] = []  # accept order; the last one is the newest
        self._lock = threading.Lock()
        self._n = 0
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.snapshots_sent = 0

    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # a stale socket of a previous agent
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.bind(self.path)
        s.listen(16)
        self._listener = s
        self._thread = threading.Thread(target=self._accept, name="zds-accept", daemon=True)
        self._thread.start()
        log.info("ZDS listening on %s", self.path)

    def _accept(self) -> None:
        assert self._listener is not None
        while not self.stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._n += 1
                c = _Conn(self, sock, self._n)
                self._conns.append(c)
            log.info("ztunnel connected (conn %d)", c.n)
            c.thread.start()

    def _snapshot_done(self, c: _Conn) -> None:
        with self._lock:
            self.snapshots_sent += 1

    def _drop(self, c: _Conn) -> None:
        with self._lock:
            if c in self._conns:
                self._conns.remove(c)

    def connections(self) -> int:
        with self._lock:
            return len(self._conns)

    def acked(self) -> set[str]:
        """Uids some connected ztunnel has acknowledged and not had deleted since."""
        with self._lock:
            conns = list(self._conns)
        return set().union(*(c.acked for c in conns)) if conns else set()

    def add_workload(self, uid: str, fd: int, info: WorkloadInfo | None, timeout: float = 2 * DEADLINE_S) -> str:
        """Send ``AddWorkload`` to the newest connection and wait for its ack; returns Ack.error.

        Raises ``ProtocolError`` (code ``closed``) when no ztunnel is connected: istio-cni's
        "partial add" (the rules stay).
        """
        with self._lock:
            conn = self._conns[-1] if self._conns else None
        if conn is None:
            raise ProtocolError("no ztunnel connected", code=Code.CLOSED)
        return conn.submit("add", uid, fd, info).result(timeout)

    def del_workload(self, uid: str, timeout: float = 2 * DEADLINE_S) -> list[str]:
        """``DelWorkload`` to every connection; the errors (nacks or failures), if any."""
        with self._lock:
            conns = list(self._conns)
        futs = [c.submit("del", uid) for c in conns]
        errors = []
        for f in futs:
            try:
                err = f.result(timeout)
            except (ProtocolError, concurrent.futures.TimeoutError, OSError) as e:
                err = str(e) or type(e).__name__
            if err:
                errors.append(err)
        return errors

    def close(self) -> None:
        self.stopping.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            c.requests.put(("stop", "", None, None, concurrent.futures.Future()))
            with contextlib.suppress(OSError):
                c.sock.shutdown(socket.SHUT_RDWR)
        for c in conns:
            c.thread.join(2)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
