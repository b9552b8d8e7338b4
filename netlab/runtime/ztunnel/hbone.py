"""HBONE, sans-IO: HTTP/2 CONNECT tunnels on top of ``h2`` (no sockets, no asyncio).

A :class:`HboneClient` or :class:`HboneServer` takes the bytes read from the (already
TLS-decrypted) connection with :meth:`receive_data` and returns :mod:`events <.Event>`;
whatever must be written is in :meth:`data_to_send`. Outbound stream data is buffered per
stream and released as HTTP/2 flow control allows, so a driver only has to watch
:meth:`buffered` for backpressure. Received data is *not* acknowledged automatically: the
driver calls :meth:`ack` once it handed the bytes on, which is what gives per-stream
backpressure to the peer.

The HTTP/2 engine is ``h2``'s sans-IO :class:`h2.connection.H2Connection` (framing, HPACK,
flow control, SETTINGS, PING, GOAWAY, RST_STREAM, CONTINUATION, padding), as
:class:`~netlab.runtime.ztunnel.h2lean.LeanDataConnection`: the same class with a lean path for
the DATA frames of open streams, checked against h2's own by differential tests; this module is a thin
adapter that turns h2's events into HBONE's and keeps h2 cheap per message: header validation
and normalisation off (the adapter checks the CONNECT request itself), credit (``ack``) summed
per stream and handed to h2's ``acknowledge_received_data`` once per batch (in
:meth:`data_to_send`), stream windows opened by one batch of frames flushed once after it, and
a DATA frame sent straight through when nothing is buffered and the windows allow it.

Windows and frame size are ztunnel's: 4 MiB per stream, 16 MiB per connection, 1 MiB frames.
Requests are what ztunnel 1.22-1.24 sends: ``CONNECT`` with ``:authority`` = target
``<ip>:<port>``, ``baggage`` (cluster, namespace, workload, canonical name and revision),
``forwarded: for="<src ip:port>"`` (plus ``;host=<service>`` when known) and ``traceparent``.

>>> c, s = HboneClient(), HboneServer()
>>> _ = s.receive_data(c.data_to_send())
>>> sid = c.connect("10.244.1.7:9080", forwarded_for="10.244.0.5:40000")
>>> [type(e).__name__ for e in s.receive_data(c.data_to_send())]
['ConnectRequest']
"""

from __future__ import annotations

import enum
import ipaddress
import logging
import secrets
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from netlab.errors import ProtocolError
from netlab.runtime.ztunnel.h2lean import LeanDataConnection

log = logging.getLogger(__name__)

STREAM_WINDOW = 4 * 1024 * 1024
CONNECTION_WINDOW = 16 * 1024 * 1024
MAX_FRAME_SIZE = 1024 * 1024
MAX_CONCURRENT_STREAMS = 1000
H2_DEFAULT_WINDOW = 65535
# Credit (ack) is handed to h2 once this much is pending on the connection (or more than
# ACK_STREAMS streams have some): h2 only sends a WINDOW_UPDATE per half window (2 MiB stream,
# 8 MiB connection) anyway, so holding back at most 128 KiB delays none by more than that and
# saves an acknowledge_received_data call per small message.
ACK_BATCH = 128 * 1024
ACK_STREAMS = 32

ErrorCode = h2.errors.ErrorCodes

_DataReceived = h2.events.DataReceived
_WindowUpdated = h2.events.WindowUpdated
_StreamEnded = h2.events.StreamEnded
_StreamReset = h2.events.StreamReset
_HEADERS_EVENTS = (h2.events.RequestReceived, h2.events.ResponseReceived)
_WINDOW_ERRORS = (h2.exceptions.FlowControlError, h2.exceptions.FrameTooLargeError)


# --- events ---------------------------------------------------------------------------------
class Event:
    __slots__ = ()


@dataclass(frozen=True, slots=True)
class ConnectRequest(Event):
    """Server: a valid CONNECT arrived; answer it with :meth:`HboneServer.respond`."""

    stream_id: int
    host: str
    port: int
    headers: dict[str, str]

    @property
    def authority(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class RequestRejected(Event):
    """Server: the core answered a bad request itself (status sent, stream closed)."""

    stream_id: int
    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class Response(Event):
    """Client: the peer answered our CONNECT (200 = tunnel open)."""

    stream_id: int
    status: int


@dataclass(frozen=True, slots=True)
class Data(Event):
    stream_id: int
    data: bytes
    flow_len: int  # what to pass to ack() once the data is handed on


@dataclass(frozen=True, slots=True)
class StreamEnded(Event):
    """The peer half-closed its direction of the tunnel (END_STREAM)."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamReset(Event):
    stream_id: int
    error_code: int
    remote: bool


@dataclass(frozen=True, slots=True)
class WindowOpened(Event):
    """Buffered outbound data of this stream went out; writers waiting on it may go on."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class ConnectionClosed(Event):
    error_code: int
    reason: str


# --- per-stream state machine -----------------------------------------------------------------
class S(enum.Enum):
    IDLE = "idle"
    CONNECTING = "connecting"
    OPEN = "open"
    LOCAL_CLOSED = "half-closed (local)"
    REMOTE_CLOSED = "half-closed (remote)"
    CLOSED = "closed"


# (state, input) -> next state. Anything else is a protocol error on that stream.
TRANSITIONS: dict[tuple[S, str], S] = {
    (S.IDLE, "send_connect"): S.CONNECTING,
    (S.IDLE, "recv_connect"): S.CONNECTING,
    (S.CONNECTING, "send_200"): S.OPEN,
    (S.CONNECTING, "recv_200"): S.OPEN,
    (S.CONNECTING, "send_error"): S.CLOSED,
    (S.CONNECTING, "recv_error"): S.CLOSED,
    (S.CONNECTING, "recv_data"): S.CONNECTING,  # early data before our 200: the driver queues it
    (S.CONNECTING, "send_data"): S.CONNECTING,  # client may send before the 200 (flow-controlled)
    (S.CONNECTING, "recv_end"): S.REMOTE_CLOSED,
    (S.CONNECTING, "send_end"): S.LOCAL_CLOSED,
    (S.OPEN, "send_data"): S.OPEN,
    (S.OPEN, "recv_data"): S.OPEN,
    (S.OPEN, "send_end"): S.LOCAL_CLOSED,
    (S.OPEN, "recv_end"): S.REMOTE_CLOSED,
    (S.LOCAL_CLOSED, "recv_data"): S.LOCAL_CLOSED,
    (S.LOCAL_CLOSED, "recv_200"): S.LOCAL_CLOSED,
    (S.LOCAL_CLOSED, "send_200"): S.LOCAL_CLOSED,
    (S.LOCAL_CLOSED, "recv_end"): S.CLOSED,
    (S.REMOTE_CLOSED, "send_data"): S.REMOTE_CLOSED,
    (S.REMOTE_CLOSED, "send_200"): S.REMOTE_CLOSED,
    (S.REMOTE_CLOSED, "recv_200"): S.REMOTE_CLOSED,
    (S.REMOTE_CLOSED, "send_end"): S.CLOSED,
    (S.REMOTE_CLOSED, "send_error"): S.CLOSED,
    (S.REMOTE_CLOSED, "recv_error"): S.CLOSED,
}


def next_state(state: S, event: str) -> S:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise ProtocolError(f"HBONE stream: {event} not allowed in state {state.value}",
                            code=int(ErrorCode.PROTOCOL_ERROR)) from None


def parse_authority(authority: str) -> tuple[str, int]:
    """``ip:port`` / ``[v6]:port`` -> ``(ip, port)``; ValueError on anything else (no hostnames)."""
    if authority.startswith("["):
        host, sep, port_s = authority[1:].partition("]:")
        if not sep:
            raise ValueError(f"bad authority {authority!r}")
    else:
        host, sep, port_s = authority.rpartition(":")
        if not sep:
            raise ValueError(f"bad authority {authority!r}")
    ip = ipaddress.ip_address(host)
    if not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise ValueError(f"bad port in authority {authority!r}")
    return str(ip), int(port_s)


def baggage(*, cluster: str, namespace: str, workload_type: str, workload: str, service: str,
            revision: str) -> str:
    """The 5-key ``baggage`` header of 1.18-1.24."""
    return (f"k8s.cluster.name={cluster},k8s.namespace.name={namespace},k8s.{workload_type}.name={workload},"
            f"service.name={service},service.version={revision}")


def traceparent() -> str:
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-00"


def forwarded(src: str, host: str | None = None) -> str:
    return f'for="{src}"' + (f";host={host}" if host else "")


class _Stream:
    __slots__ = ("state", "out", "out_len", "end_pending")

    def __init__(self) -> None:
        self.state = S.IDLE
        # Waiting for flow-control window: the senders' own ``bytes`` in order (a bulk sender
        # meets the window often; a queue of pieces costs no copy in or out but where a piece is
        # split at the window's edge), and their total length.
        self.out: deque[bytes] = deque()
        self.out_len = 0
        self.end_pending = False


def _decode(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(k.decode("utf-8", "replace"), v.decode("utf-8", "replace")) for k, v in headers]


class _HboneConnection:
    """Both sides: an ``h2`` connection and the per-stream HBONE state above it."""

    client_side = False

    def __init__(self, *, logger: object | None = None) -> None:
        config = h2.config.H2Configuration(
            client_side=self.client_side, header_encoding=None,
            validate_outbound_headers=False, normalize_outbound_headers=False,
            validate_inbound_headers=False, normalize_inbound_headers=False,
            logger=logger)  # type: ignore[arg-type]
        conn = LeanDataConnection(config=config)
        initial = {
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            h2.settings.SettingCodes.MAX_FRAME_SIZE: MAX_FRAME_SIZE,
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
        }
        if self.client_side:
            initial[h2.settings.SettingCodes.ENABLE_PUSH] = 0
        conn.local_settings = h2.settings.Settings(client=self.client_side, initial_values=initial)
        conn.max_inbound_frame_size = MAX_FRAME_SIZE
        conn.initiate_connection()
        conn.increment_flow_control_window(CONNECTION_WINDOW - H2_DEFAULT_WINDOW)
        self._conn = conn
        self._streams: dict[int, _Stream] = {}
        self._acks: dict[int, int] = {}  # credit not given to h2 yet, per stream
        self._acked = 0  # its sum
        self.closed = False

    # --- outbound ---------------------------------------------------------------------------
    def data_to_send_parts(self) -> list[bytes | bytearray]:
        """Everything to write, as pieces to write in order (``writelines``): big DATA payloads
        stay the senders' own ``bytes`` (see ``LeanDataConnection.data_to_send_parts``). First
        hands h2 the credit collected by :meth:`ack` once it adds up to :data:`ACK_BATCH` (one
        ``acknowledge_received_data`` per stream and batch)."""
        if self._acked >= ACK_BATCH or len(self._acks) > ACK_STREAMS:
            self._give_credit()
        return self._conn.data_to_send_parts()

    def data_to_send(self) -> bytes:
        """Everything to write, in one piece (:meth:`data_to_send_parts` joined)."""
        return b"".join(self.data_to_send_parts())

    def _give_credit(self) -> None:
        acks, self._acks, self._acked = self._acks, {}, 0
        if not self.closed:
            ack = self._conn.acknowledge_received_data
            for sid, n in acks.items():
                ack(n, sid)

    def send_data(self, stream_id: int, data: bytes | bytearray | memoryview, *, end_stream: bool = False) -> None:
        """Queue tunnel bytes; sent as far as flow control allows, the rest on window updates."""
        st = self._streams.get(stream_id)
        if st is None:
            return  # stream already gone (reset): drop, like a closed socket would
        if data:
            if st.state is not S.OPEN:  # (OPEN, send_data) stays OPEN: skip the table per message
                st.state = next_state(st.state, "send_data")
            if type(data) is not bytes:
                data = bytes(data)  # the caller may change its buffer; queued pieces must not
            if not st.out and not end_stream:
                try:  # the common case: one frame now (h2 checks window and frame size first)
                    self._conn.send_data(stream_id, data)
                    return
                except _WINDOW_ERRORS:
                    pass
                except h2.exceptions.StreamClosedError:
                    self._streams.pop(stream_id, None)
                    return
            st.out.append(data)
            st.out_len += len(data)
        if end_stream:
            st.end_pending = True
        self._flush(stream_id, st)

    def end_stream(self, stream_id: int) -> None:
        self.send_data(stream_id, b"", end_stream=True)

    def buffered(self, stream_id: int) -> int:
        st = self._streams.get(stream_id)
        return st.out_len if st is not None else 0

    def _flush(self, stream_id: int, st: _Stream) -> bool:
        """Send what the windows allow; returns True if something went out."""
        conn = self._conn
        out = st.out
        sent = False
        while out:
            n = min(st.out_len, conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size)
            if n <= 0:
                return sent
            chunk = out.popleft()
            if len(chunk) > n:  # split at the window's (or frame size's) edge
                out.appendleft(chunk[n:])
                chunk = chunk[:n]
            elif out and len(chunk) + len(out[0]) <= n:  # small pieces queued behind a window: one frame
                pieces, size = [chunk], len(chunk)
                while out and size + len(out[0]) <= n:
                    size += len(out[0])
                    pieces.append(out.popleft())
                chunk = b"".join(pieces)
            st.out_len -= len(chunk)
            end = not out and st.end_pending  # END_STREAM rides on the last DATA frame
            if end:
                st.end_pending = False
                st.state = next_state(st.state, "send_end")
            conn.send_data(stream_id, chunk, end_stream=end)
            sent = True
            if end:
                self._maybe_forget(stream_id, st)
                return True
        if st.end_pending:
            st.end_pending = False
            st.state = next_state(st.state, "send_end")
            conn.end_stream(stream_id)
            self._maybe_forget(stream_id, st)
        return sent

    def ack(self, stream_id: int, flow_len: int) -> None:
        """The driver handed ``flow_len`` received bytes on: reopen the peer's windows. Summed
        here and given to h2 in batches (see :data:`ACK_BATCH`); h2 then sends a WINDOW_UPDATE
        once half of a window was handed on."""
        if flow_len and not self.closed:
            acks = self._acks
            acks[stream_id] = acks.get(stream_id, 0) + flow_len
            self._acked += flow_len

    def reset(self, stream_id: int, error_code: int = int(ErrorCode.CANCEL)) -> None:
        st = self._streams.pop(stream_id, None)
        if st is None or self.closed:
            return
        try:
            self._conn.reset_stream(stream_id, error_code)
        except h2.exceptions.StreamClosedError:
            pass

    def close(self, error_code: int = 0) -> None:
        if not self.closed:
            self.closed = True
            if self._conn.state_machine.state is not h2.connection.ConnectionState.CLOSED:
                self._conn.close_connection(error_code)

    @property
    def peer_max_streams(self) -> int:
        return self._conn.remote_settings.max_concurrent_streams

    @property
    def local_settings(self) -> h2.settings.Settings:
        return self._conn.local_settings

    @property
    def max_outbound_frame_size(self) -> int:
        return self._conn.max_outbound_frame_size

    @property
    def inbound_flow_control_window(self) -> int:
        return self._conn.inbound_flow_control_window

    def _maybe_forget(self, stream_id: int, st: _Stream) -> None:
        if st.state is S.CLOSED and not st.out:
            self._streams.pop(stream_id, None)

    # --- inbound ----------------------------------------------------------------------------
    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        if self.closed:
            return []
        try:
            h2_events: list[Any] = self._conn.receive_data(data)
        except h2.exceptions.ProtocolError as e:  # h2 queued the GOAWAY (close() adds it if not)
            code = int(getattr(e, "error_code", None) or ErrorCode.PROTOCOL_ERROR)
            self.close(code)
            return [ConnectionClosed(code, f"HTTP/2 protocol error: {e}")]
        out: list[Event] = []
        streams = self._streams
        opened: dict[int, None] = {}  # streams whose window grew: flushed once, after the batch
        flush_all = False
        for ev in h2_events:
            t = type(ev)
            # dispatched on type(ev), one call per event, not an isinstance chain: each branch
            # names ev by its type in a local (no call) for the checker, h2_events being Any
            if t is _DataReceived:
                d: h2.events.DataReceived = ev
                sid = d.stream_id
                st = streams.get(sid)
                if st is None:  # closed or reset: nobody will ack it, credit the connection now
                    self.ack(sid, d.flow_controlled_length)
                    continue
                try:
                    if st.state is not S.OPEN:  # (OPEN, recv_data) stays OPEN
                        st.state = next_state(st.state, "recv_data")
                except ProtocolError as e:
                    self.ack(sid, d.flow_controlled_length)
                    self._stream_error(sid, e, out)
                    continue
                if d.flow_controlled_length:  # not the empty DATA that only carries END_STREAM
                    out.append(Data(sid, d.data, d.flow_controlled_length))
            elif t is _WindowUpdated:
                wu: h2.events.WindowUpdated = ev
                if wu.stream_id:
                    st = streams.get(wu.stream_id)
                    if st is not None and st.out:
                        opened[wu.stream_id] = None
                else:
                    flush_all = True
            elif t is _StreamEnded:
                se: h2.events.StreamEnded = ev
                self._on_end(se.stream_id, out)
            elif t is _StreamReset:
                sr: h2.events.StreamReset = ev
                if streams.pop(sr.stream_id, None) is not None:
                    out.append(StreamReset(sr.stream_id, int(sr.error_code), sr.remote_reset))
            elif t in _HEADERS_EVENTS:
                hr: h2.events.RequestReceived | h2.events.ResponseReceived = ev
                self._on_headers(hr.stream_id, _decode(hr.headers), out)
            elif t is h2.events.RemoteSettingsChanged:
                flush_all = True  # INITIAL_WINDOW_SIZE / MAX_FRAME_SIZE may have changed
            elif t is h2.events.ConnectionTerminated:
                ct: h2.events.ConnectionTerminated = ev
                self.closed = True
                code = int(ct.error_code)  # type: ignore[arg-type]  # None only before h2 reads the GOAWAY
                name = getattr(ct.error_code, "name", str(code))
                out.append(ConnectionClosed(code, f"connection closed by peer (GOAWAY {name})"))
                return out
            # informational responses, trailers, PING (h2 answers it), SETTINGS ACK, PRIORITY,
            # unknown frames: nothing to do
        if flush_all or opened:
            for sid in list(streams) if flush_all else opened:
                st = streams.get(sid)
                if st is not None and st.out and self._flush(sid, st):
                    out.append(WindowOpened(sid))
        return out

    def _on_end(self, stream_id: int, out: list[Event]) -> None:
        st = self._streams.get(stream_id)
        if st is None:
            return
        try:
            st.state = next_state(st.state, "recv_end")
        except ProtocolError as e:
            self._stream_error(stream_id, e, out)
            return
        out.append(StreamEnded(stream_id))
        self._maybe_forget(stream_id, st)

    def _stream_error(self, stream_id: int, e: ProtocolError, out: list[Event]) -> None:
        code = int(e.code) if isinstance(e.code, int) else int(ErrorCode.PROTOCOL_ERROR)
        self.reset(stream_id, code)
        out.append(StreamReset(stream_id, code, False))

    def _on_headers(self, stream_id: int, headers: list[tuple[str, str]], out: list[Event]) -> None:  # pragma: no cover
        raise NotImplementedError


class HboneClient(_HboneConnection):
    """The ztunnel -> peer:15008 side: opens one CONNECT stream per proxied connection."""

    client_side = True

    def connect(self, authority: str, *, forwarded_for: str, host: str | None = None,
                baggage: str | None = None, trace: str | None = None,
                extra: Iterable[tuple[str, str]] = ()) -> int:
        """Send ``CONNECT authority`` and return the stream id."""
        sid = self._conn.get_next_available_stream_id()
        headers = [(":method", "CONNECT"), (":authority", authority)]
        if baggage is not None:
            headers.append(("baggage", baggage))
        headers.append(("forwarded", forwarded(forwarded_for, host)))
        headers.append(("traceparent", trace or traceparent()))
        headers.extend(extra)
        st = _Stream()
        st.state = next_state(st.state, "send_connect")
        self._streams[sid] = st
        self._conn.send_headers(sid, headers)
        return sid

    def _on_headers(self, stream_id: int, headers: list[tuple[str, str]], out: list[Event]) -> None:
        st = self._streams.get(stream_id)
        if st is None:
            return
        status = 0
        for k, v in headers:
            if k == ":status":
                status = int(v) if v.isdigit() else 0
                break
        try:
            st.state = next_state(st.state, "recv_200" if status == 200 else "recv_error")
        except ProtocolError as e:
            self._stream_error(stream_id, e, out)
            return
        out.append(Response(stream_id, status))
        if status != 200:
            self.reset(stream_id)


class HboneServer(_HboneConnection):
    """The :15008 side: validates CONNECT requests; the driver decides policy and upstream."""

    client_side = False

    def _on_headers(self, stream_id: int, headers: list[tuple[str, str]], out: list[Event]) -> None:
        sid = stream_id
        hdrs = dict(headers)
        st = _Stream()
        st.state = next_state(st.state, "recv_connect")
        self._streams[sid] = st
        method = hdrs.get(":method", "")
        if method != "CONNECT":
            self._reject(sid, 400, f"method {method} not allowed (only CONNECT)", out)
            return
        try:
            host, port = parse_authority(hdrs.get(":authority", ""))
        except ValueError as e:
            self._reject(sid, 400, str(e), out)
            return
        out.append(ConnectRequest(sid, host, port, hdrs))

    def _reject(self, stream_id: int, status: int, reason: str, out: list[Event]) -> None:
        self.respond(stream_id, status)
        out.append(RequestRejected(stream_id, status, reason))

    def respond(self, stream_id: int, status: int) -> None:
        """200 opens the tunnel; anything else ends the stream (400/401/503...)."""
        st = self._streams.get(stream_id)
        if st is None:
            return
        ok = status == 200
        st.state = next_state(st.state, "send_200" if ok else "send_error")
        self._conn.send_headers(stream_id, [(":status", str(status))], end_stream=not ok)
        if not ok:
            self._streams.pop(stream_id, None)
