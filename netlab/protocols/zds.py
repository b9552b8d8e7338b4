"""ZDS, the ztunnel discovery service: how the in-pod CNI agent hands pods to ztunnel.

Wire (as istio-cni and ztunnel speak it, Istio 1.22): a Unix ``SOCK_SEQPACKET`` socket, one protobuf message per
datagram, no length prefix. The agent listens; ztunnel connects and says ``ZdsHello{V1}``;
the agent sends its snapshot (``AddWorkload`` with the pod's netns fd as ``SCM_RIGHTS``, or
``KeepWorkload`` when it knows no netns), then ``SnapshotSent``; afterwards ``AddWorkload`` on
enrollment and ``DelWorkload`` on removal. Every request is answered by one
``WorkloadResponse{ack}`` before the next is sent (strict lock-step).

Two layers, kept apart as in the h2 library (a sans-IO core driven by thin I/O):

* the sans-IO cores :class:`AgentConn` (the agent's side) and :class:`ZtunnelConn`
  (ztunnel's side): ``receive_data(bytes, fds) -> [Event]`` and ``data_to_send() ->
  [(bytes, fds)]``, with every transition in a ``(state, input) -> next_state`` table;
  anything not in the table raises :class:`~netlab.errors.ProtocolError` with a ``code``;
* the transport lives elsewhere: :mod:`netlab.linux.seqpacket` moves one datagram and its
  fds with a deadline, :mod:`netlab.runtime.cniagent.zds_server` is the agent's listener and
  :mod:`netlab.runtime.ztunnel.zds_client` ztunnel's side. This module opens no socket.

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

import enum
import logging
from dataclasses import dataclass
from typing import cast

from google.protobuf.message import DecodeError

from netlab.errors import ProtocolError
from netlab.protocols import zds_pb2 as pb

log = logging.getLogger(__name__)

RECV_BUF = 1024  # istio-cni and ztunnel both read into 1024 bytes
DEADLINE_S = 5.0  # read/write deadline of each message and each ack
LIVENESS_EVERY_S = 5.0  # with nothing to send, the agent checks the peer this often...
LIVENESS_READ_S = 0.010  # ...by a 10 ms read: timeout = alive, EOF/error = gone, data = violation
V1 = pb.V1
_NULL_LOG = logging.getLogger(f"{__name__}.core")  # cores log nothing unless given a logger
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


@dataclass(frozen=True, slots=True)
class WorkloadInfo:
    """``istio.workload.zds.WorkloadInfo``: what the CNI agent tells ztunnel about a pod.

    The one definition, used by both ends (the agent's :mod:`~netlab.runtime.cniagent.zds_server`
    and ztunnel's pod manager). ``trust_domain`` (field 4) exists in Istio 1.22 only: 1.21 has no
    field 4 and 1.23+ reserves it. Its default is therefore ``""``, the proto3 value of an unset
    string, which is what ztunnel decodes when the agent does not send it; ztunnel then falls
    back to its own configured trust domain. Defaulting to ``"cluster.local"`` here would
    invent a value that never crossed the wire and would be wrong for a mesh whose trust domain
    is not ``cluster.local``.
    """

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
    return pb.ZdsHello(version=cast("pb.Version", version)).SerializeToString()  # any int: tests send bad ones


def encode_add(uid: str, info: WorkloadInfo | None = None) -> bytes:
    """``encode_add("abc").hex() -> '0a050a03616263'``."""
    add = pb.AddWorkload(uid=uid)
    if info is not None:
        add.workload_info.CopyFrom(_info_pb(info))
    return pb.WorkloadRequest(add=add).SerializeToString()


def encode_keep(uid: str) -> bytes:
    return pb.WorkloadRequest(keep=pb.KeepWorkload(uid=uid)).SerializeToString()


def encode_del(uid: str) -> bytes:
    req = pb.WorkloadRequest()
    d = getattr(req, "del")  # the field is named "del", a Python keyword: no attribute syntax
    d.SetInParent()  # present even for an empty uid
    d.uid = uid
    return req.SerializeToString()


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
