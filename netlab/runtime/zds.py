"""ZDS, the ztunnel discovery service: how the in-pod CNI agent hands pods to ztunnel.

Wire (ambient-facts.md B5): a Unix ``SOCK_SEQPACKET`` socket, one protobuf message per
datagram, no length prefix. The agent listens; ztunnel connects and says ``ZdsHello{V1}``;
the agent sends its snapshot (``AddWorkload`` with the pod's netns fd as ``SCM_RIGHTS``, or
``KeepWorkload`` when it knows no netns), then ``SnapshotSent``; afterwards ``AddWorkload`` on
enrollment and ``DelWorkload`` on removal. Every request is answered by one
``WorkloadResponse{ack}`` before the next is sent (strict lock-step).

Two layers, as STYLE §11-12 ask:

* the sans-IO cores :class:`AgentConn` (the agent's side) and :class:`ZtunnelConn`
  (ztunnel's side): ``receive_data(bytes, fds) -> [Event]`` and ``data_to_send() ->
  [(bytes, fds)]``, with every transition in a ``(state, input) -> next_state`` table;
  anything not in the table raises :class:`~netlab.errors.ProtocolError` with a ``code``;
* the transport: :func:`recv_msg` / :func:`send_msg` (blocking, deadline 5 s, 1024-byte
  buffer, ``MSG_TRUNC``/``MSG_CTRUNC`` are errors), their asyncio twins for ztunnel, and
  :class:`ZdsServer`, the agent's listener (one thread per connection, like istio-cni's
  goroutine per connection), with liveness checks every 5 s.

>>> c = AgentConn()
>>> c.receive_data(bytes.fromhex("0801"))
[HelloReceived(version=1)]
>>> c.send_snapshot_sent(); [m.hex() for m, _ in c.data_to_send()]
['1a00']
>>> c.receive_data(bytes.fromhex("0a00"))
[AckReceived(request='snapshot_sent', uid='', error='')]
>>> c.state
<State.READY: 'ready'>
"""

from __future__ import annotations

import array
import asyncio
import concurrent.futures
import contextlib
import enum
import logging
import os
import queue
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from netlab.errors import ProtocolError
from netlab.runtime import zds_pb2 as pb

log = logging.getLogger(__name__)

RECV_BUF = 1024  # istio-cni and ztunnel both read into 1024 bytes
DEADLINE_S = 5.0  # read/write deadline of each message and each ack
LIVENESS_EVERY_S = 5.0  # with nothing to send, the agent checks the peer this often...
LIVENESS_READ_S = 0.010  # ...by a 10 ms read: timeout = alive, EOF/error = gone, data = violation
FD_SPACE = socket.CMSG_SPACE(array.array("i", [0]).itemsize)  # room for exactly one fd
V1 = pb.V1
_NULL_LOG = logging.getLogger("netlab.runtime.zds.core")  # cores log nothing unless given a logger
_NULL_LOG.addHandler(logging.NullHandler())
_NULL_LOG.propagate = False


class Code(enum.StrEnum):
    """``ProtocolError.code`` values."""

    DECODE = "decode"  # not a valid message of the expected type
    VERSION = "version"  # hello with a version other than V1
    UNEXPECTED = "unexpected"  # message or action not allowed in this state
    FDS = "fds"  # not exactly one fd with AddWorkload, or an fd with anything else
    TRUNCATED = "truncated"  # MSG_TRUNC / MSG_CTRUNC
    TIMEOUT = "timeout"  # no message within the deadline
    CLOSED = "closed"  # peer closed the connection
    NACK = "nack"  # peer answered with Ack.error set


class State(enum.StrEnum):
    IDLE = "idle"  # ztunnel side, before its hello
    AWAIT_HELLO = "await_hello"  # agent side, before the hello
    SNAPSHOT = "snapshot"  # snapshot being sent
    SNAPSHOT_WAIT = "snapshot_wait"  # a snapshot Add/Keep is waiting for its ack
    SNAPSHOT_SENT_WAIT = "snapshot_sent_wait"  # SnapshotSent is waiting for its ack
    READY = "ready"  # steady state
    READY_WAIT = "ready_wait"  # a steady-state Add/Del is waiting for its ack
    CLOSED = "closed"


class Input(enum.StrEnum):
    HELLO = "hello"
    ADD = "add"
    KEEP = "keep"
    DEL = "del"
    SNAPSHOT_SENT = "snapshot_sent"
    ACK = "ack"


# Both sides walk the same table: for the agent "ADD" is sending one, for ztunnel receiving
# one; "ACK" is the agent receiving an ack, or ztunnel sending it. Keep only before
# SnapshotSent, Del only after, one SnapshotSent, lock-step acks: all follow from the table.
TRANSITIONS: dict[tuple[State, Input], State] = {
    (State.IDLE, Input.HELLO): State.SNAPSHOT,
    (State.AWAIT_HELLO, Input.HELLO): State.SNAPSHOT,
    (State.SNAPSHOT, Input.ADD): State.SNAPSHOT_WAIT,
    (State.SNAPSHOT, Input.KEEP): State.SNAPSHOT_WAIT,
    (State.SNAPSHOT_WAIT, Input.ACK): State.SNAPSHOT,
    (State.SNAPSHOT, Input.SNAPSHOT_SENT): State.SNAPSHOT_SENT_WAIT,
    (State.SNAPSHOT_SENT_WAIT, Input.ACK): State.READY,
    (State.READY, Input.ADD): State.READY_WAIT,
    (State.READY, Input.DEL): State.READY_WAIT,
    (State.READY_WAIT, Input.ACK): State.READY,
}


@dataclass(frozen=True)
class WorkloadInfo:
    """``istio.workload.zds.WorkloadInfo`` (``trust_domain``: Istio 1.22 only)."""

    name: str
    namespace: str
    service_account: str
    trust_domain: str = ""


# -- events ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class HelloReceived:
    version: int


@dataclass(frozen=True)
class AckReceived:
    request: str  # add, keep, del, snapshot_sent
    uid: str
    error: str  # "" = success


@dataclass(frozen=True)
class AddReceived:
    uid: str
    info: WorkloadInfo | None
    fd: int  # owned by the receiver: hand it over, then close it


@dataclass(frozen=True)
class KeepReceived:
    uid: str


@dataclass(frozen=True)
class DelReceived:
    uid: str


@dataclass(frozen=True)
class SnapshotReceived:
    uids: frozenset[str]  # every uid added or kept during the snapshot


Event = HelloReceived | AckReceived | AddReceived | KeepReceived | DelReceived | SnapshotReceived


# -- encoding --------------------------------------------------------------------------------


def _info_pb(info: WorkloadInfo) -> pb.WorkloadInfo:
    return pb.WorkloadInfo(name=info.name, namespace=info.namespace, service_account=info.service_account,
                           trust_domain=info.trust_domain)


def encode_hello(version: int = V1) -> bytes:
    """``encode_hello().hex() -> '0801'``."""
    return pb.ZdsHello(version=version).SerializeToString()


def encode_add(uid: str, info: WorkloadInfo | None = None) -> bytes:
    """``encode_add("abc").hex() -> '0a050a03616263'``."""
    add = pb.AddWorkload(uid=uid)
    if info is not None:
        add.workload_info.CopyFrom(_info_pb(info))
    return pb.WorkloadRequest(add=add).SerializeToString()


def encode_keep(uid: str) -> bytes:
    return pb.WorkloadRequest(keep=pb.KeepWorkload(uid=uid)).SerializeToString()


def encode_del(uid: str) -> bytes:
    return pb.WorkloadRequest(**{"del": pb.DelWorkload(uid=uid)}).SerializeToString()


def encode_snapshot_sent() -> bytes:
    return pb.WorkloadRequest(snapshot_sent=pb.SnapshotSent()).SerializeToString()


def encode_ack(error: str = "") -> bytes:
    """``encode_ack().hex() -> '0a00'``; ``encode_ack("x").hex() -> '0a030a0178'``."""
    return pb.WorkloadResponse(ack=pb.Ack(error=error)).SerializeToString()


def _parse(cls: type, data: bytes):  # noqa: ANN202
    msg = cls()
    try:
        msg.ParseFromString(data)
    except DecodeError as e:
        raise ProtocolError(f"ZDS: cannot decode {cls.__name__}: {e}", code=Code.DECODE) from None
    return msg


# -- sans-IO cores ---------------------------------------------------------------------------


class _Core:
    def __init__(self, state: State, logger: logging.Logger | None = None) -> None:
        self.state = state
        self._out: list[tuple[bytes, tuple[int, ...]]] = []
        self.log = logger or _NULL_LOG

    def _step(self, inp: Input) -> None:
        nxt = TRANSITIONS.get((self.state, inp))
        if nxt is None:
            raise ProtocolError(f"ZDS: {inp.value} is not allowed in state {self.state.value}", code=Code.UNEXPECTED)
        self.log.debug("zds %s --%s--> %s", self.state.value, inp.value, nxt.value)
        self.state = nxt

    def data_to_send(self) -> list[tuple[bytes, tuple[int, ...]]]:
        """Datagrams to send, each with the fds to attach (``SCM_RIGHTS``), then forgotten."""
        out, self._out = self._out, []
        return out

    def close(self) -> None:
        self.state = State.CLOSED


class AgentConn(_Core):
    """The CNI agent's side of one ZDS connection."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        super().__init__(State.AWAIT_HELLO, logger)
        self._pending: tuple[str, str] | None = None  # (request, uid) awaiting its ack

    def _request(self, inp: Input, data: bytes, uid: str = "", fds: tuple[int, ...] = ()) -> None:
        self._step(inp)
        self._pending = (inp.value, uid)
        self._out.append((data, fds))

    def send_add(self, uid: str, fd: int, info: WorkloadInfo | None = None) -> None:
        """Queue ``AddWorkload`` with the netns ``fd`` (not closed here: the caller keeps it)."""
        self._request(Input.ADD, encode_add(uid, info), uid, (fd,))

    def send_keep(self, uid: str) -> None:
        self._request(Input.KEEP, encode_keep(uid), uid)

    def send_del(self, uid: str) -> None:
        self._request(Input.DEL, encode_del(uid), uid)

    def send_snapshot_sent(self) -> None:
        self._request(Input.SNAPSHOT_SENT, encode_snapshot_sent())

    @property
    def waiting(self) -> bool:
        return self._pending is not None

    def receive_data(self, data: bytes, fds: tuple[int, ...] | list[int] = ()) -> list[Event]:
        """One datagram from ztunnel. ``fds`` must be empty (ztunnel never sends any)."""
        if fds:
            raise ProtocolError("ZDS: ztunnel sent file descriptors", code=Code.FDS)
        if self.state == State.AWAIT_HELLO:
            hello = _parse(pb.ZdsHello, data)
            if hello.version != V1:
                raise ProtocolError(f"ZDS: unsupported version {hello.version}", code=Code.VERSION)
            self._step(Input.HELLO)
            return [HelloReceived(hello.version)]
        resp = _parse(pb.WorkloadResponse, data)
        if resp.WhichOneof("payload") != "ack":
            raise ProtocolError("ZDS: response without ack", code=Code.DECODE)
        if self._pending is None:
            raise ProtocolError("ZDS: unsolicited message from ztunnel", code=Code.UNEXPECTED)
        self._step(Input.ACK)
        (req, uid), self._pending = self._pending, None
        return [AckReceived(req, uid, resp.ack.error)]


class ZtunnelConn(_Core):
    """ztunnel's side of one ZDS connection: call :meth:`hello` first, :meth:`ack` after each event."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        super().__init__(State.IDLE, logger)
        self._snapshot: set[str] = set()

    def hello(self) -> None:
        self._step(Input.HELLO)
        self._out.append((encode_hello(V1), ()))

    def ack(self, error: str = "") -> None:
        self._step(Input.ACK)
        self._out.append((encode_ack(error), ()))

    def receive_data(self, data: bytes, fds: tuple[int, ...] | list[int] = ()) -> list[Event]:
        """One datagram from the agent. The caller closes ``fds`` if this raises."""
        req = _parse(pb.WorkloadRequest, data)
        kind = req.WhichOneof("payload")
        if kind is None:
            raise ProtocolError("ZDS: request without payload", code=Code.DECODE)
        if (kind == "add") != (len(fds) == 1) or len(fds) > 1:
            raise ProtocolError(f"ZDS: {kind} came with {len(fds)} fds (AddWorkload carries exactly one)",
                                code=Code.FDS)
        if kind == "add":
            self._step(Input.ADD)
            add = req.add
            info = None
            if add.HasField("workload_info"):
                w = add.workload_info
                info = WorkloadInfo(w.name, w.namespace, w.service_account, w.trust_domain)
            if self.state == State.SNAPSHOT_WAIT:
                self._snapshot.add(add.uid)
            return [AddReceived(add.uid, info, fds[0])]
        if kind == "keep":
            self._step(Input.KEEP)
            self._snapshot.add(req.keep.uid)
            return [KeepReceived(req.keep.uid)]
        if kind == "del":
            self._step(Input.DEL)
            return [DelReceived(getattr(req, "del").uid)]
        self._step(Input.SNAPSHOT_SENT)
        return [SnapshotReceived(frozenset(self._snapshot))]


# -- transport -------------------------------------------------------------------------------


def _fds_of(anc: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            a = array.array("i")
            a.frombytes(data[: len(data) - len(data) % a.itemsize])
            fds += list(a)
    return fds


def _check(data: bytes, anc: list, flags: int) -> tuple[bytes, list[int]]:
    fds = _fds_of(anc)
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        for fd in fds:
            os.close(fd)
        raise ProtocolError("ZDS: truncated message (data over 1024 bytes or more than one fd)",
                            code=Code.TRUNCATED)
    if not data and not fds:
        raise ProtocolError("ZDS: connection closed by peer", code=Code.CLOSED)
    return data, fds


def recv_msg(sock: socket.socket, timeout: float | None = DEADLINE_S) -> tuple[bytes, list[int]]:
    """One datagram and its fds (blocking, with deadline); EOF, truncation or timeout raise."""
    sock.settimeout(timeout)
    try:
        data, anc, flags, _ = sock.recvmsg(RECV_BUF, FD_SPACE, socket.MSG_CMSG_CLOEXEC)
    except TimeoutError:
        raise ProtocolError("ZDS: no message within the deadline", code=Code.TIMEOUT) from None
    return _check(data, anc, flags)


def send_msg(sock: socket.socket, data: bytes, fds: tuple[int, ...] = (), timeout: float = DEADLINE_S) -> None:
    sock.settimeout(timeout)
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    try:
        sock.sendmsg([data], anc)
    except TimeoutError:
        raise ProtocolError("ZDS: send deadline exceeded", code=Code.TIMEOUT) from None


async def _wait_fd(sock: socket.socket, write: bool, timeout: float | None) -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    fd = sock.fileno()
    (loop.add_writer if write else loop.add_reader)(fd, ready)
    try:
        await asyncio.wait_for(fut, timeout)
    except TimeoutError:
        raise ProtocolError("ZDS: deadline exceeded", code=Code.TIMEOUT) from None
    finally:
        (loop.remove_writer if write else loop.remove_reader)(fd)


async def arecv_msg(sock: socket.socket, timeout: float | None = None) -> tuple[bytes, list[int]]:
    """:func:`recv_msg` for a non-blocking socket in asyncio (ztunnel's side)."""
    while True:
        try:
            data, anc, flags, _ = sock.recvmsg(RECV_BUF, FD_SPACE, socket.MSG_CMSG_CLOEXEC)
        except (BlockingIOError, InterruptedError):
            await _wait_fd(sock, False, timeout)
            continue
        return _check(data, anc, flags)


async def asend_msg(sock: socket.socket, data: bytes, fds: tuple[int, ...] = (),
                    timeout: float = DEADLINE_S) -> None:
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    while True:
        try:
            sock.sendmsg([data], anc)
            return
        except (BlockingIOError, InterruptedError):
            await _wait_fd(sock, True, timeout)


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
        self.thread = threading.Thread(target=self.run, name=f"zds-conn-{n}", daemon=True)

    def _exchange(self) -> AckReceived:
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
                    fut.set_result(self._exchange().error)
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
