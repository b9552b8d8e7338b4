"""h2's ``H2Connection`` with a lean path for the DATA frames of open streams.

HBONE relays each message as one DATA frame, and h2 spends some seventy Python calls on every
one: frame and flag objects, two state machines, the window managers, and a ``repr()`` of every
received frame for its trace log, which no setting turns off. In a lab that was about 35 µs of
CPU per ztunnel per request with the caches the other processes leave cold — the largest single
cost of a meshed request (A/B in ``docs/benchmarks.md``, "Data path").

:class:`LeanDataConnection` keeps h2 as the HTTP/2 implementation: preface, SETTINGS, HPACK,
stream lifecycle, flow-control accounting, WINDOW_UPDATE, PING, RST_STREAM, GOAWAY and every
error are h2's. It takes over only the common case of a DATA frame itself — sent on, or
received for, a stream open in that direction; unpadded; without END_STREAM; within both
flow-control windows and the frame size limit; handed over as ``bytes`` or ``bytearray`` — and
makes exactly the state changes h2 would make for it (the two windows, the stream's
content-length count, the bytes queued), producing the same bytes and the same
``DataReceived`` events. Every other frame, and any DATA frame outside that case, goes through
h2's own code. The unit tests run this class and the stock ``H2Connection`` side by side through
random exchanges and targeted cases and compare bytes, events, errors, windows and stream states
after every step. (Frames on the lean path do not pass through h2's debug/trace logging, should
a logger be configured.)

It reads h2 internals (``streams``, ``_data_to_send``, the window managers, the frame buffer), so
:func:`lean_path_ok` checks once per process, on a real exchange against stock h2, that they
still behave as expected; if not (a future h2), every frame takes h2's path and a warning says so.
"""

from __future__ import annotations

import logging
import struct
from typing import Any

import h2.config
import h2.connection
import h2.events
from h2.connection import ConnectionState
from h2.stream import StreamState

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">BHBBL")  # length (24 bits, as 8 + 16), type, flags, stream id
# States compared by identity: ``in`` a set would hash the enums, a Python-level call each.
_CLIENT_OPEN, _SERVER_OPEN = ConnectionState.CLIENT_OPEN, ConnectionState.SERVER_OPEN
_OPEN, _HALF_CLOSED_REMOTE, _HALF_CLOSED_LOCAL = (StreamState.OPEN, StreamState.HALF_CLOSED_REMOTE,
                                                  StreamState.HALF_CLOSED_LOCAL)
_DataReceived = h2.events.DataReceived
# DATA payloads from this size on are queued as they are, behind the frame header, instead of
# being copied into the send queue: a bulk transfer then writes each byte from the buffer it was
# read into. Below it, one copy is cheaper than a write of its own.
SEAL_MIN = 16 * 1024


class LeanDataConnection(h2.connection.H2Connection):
    """An ``H2Connection`` whose common-case DATA frames skip h2's general machinery."""

    lean = True  # False once lean_path_ok() has found h2's internals changed

    def __init__(self, config: h2.config.H2Configuration | None = None) -> None:
        super().__init__(config=config)
        self.lean_sent = 0  # DATA frames sent / received on the lean path (for tests and debugging)
        self.lean_received = 0
        # The start of a frame received but not yet handed to h2 or taken (see _receive): its
        # header (or the part of it that came), the payload pieces, their length, and the
        # payload length that makes the frame whole.
        self._held_head = b""
        self._held_parts: list[bytes] = []
        self._held_len = 0
        self._held_need = 0
        self._sealed: list[bytes | bytearray] = []  # queued pieces before _data_to_send (see send_data)
        if _checked is None:
            lean_path_ok()

    def send_data(self, stream_id: int, data: bytes | memoryview, end_stream: bool = False,
                  pad_length: Any = None) -> None:
        t = type(data)
        if (t is not bytes and t is not bytearray) or type(stream_id) is not int:
            return super().send_data(stream_id, data, end_stream, pad_length)  # memoryviews etc.: h2's rules
        n = len(data)
        stream = self.streams.get(stream_id)
        conn_state = self.state_machine.state
        if (not self.lean or end_stream or pad_length is not None or not n or stream is None
                or (conn_state is not _CLIENT_OPEN and conn_state is not _SERVER_OPEN)
                or (stream.state_machine.state is not _OPEN and stream.state_machine.state is not _HALF_CLOSED_REMOTE)
                or n > self.outbound_flow_control_window or n > stream.outbound_flow_control_window
                or n > self.max_outbound_frame_size):
            return super().send_data(stream_id, data, end_stream, pad_length)
        self.outbound_flow_control_window -= n
        stream.outbound_flow_control_window -= n
        out = self._data_to_send
        out += _HEADER.pack(n >> 16, n & 0xFFFF, 0, 0, stream_id)
        if n >= SEAL_MIN:  # a big payload is not copied into the queue: it follows it, as it is
            # t is bytes or bytearray (checked above), so never a memoryview here
            self._sealed += (out, data if t is bytes else bytes(data))  # type: ignore[arg-type]
            self._data_to_send = bytearray()
        else:
            out += data
        self.lean_sent += 1
        return None

    def data_to_send(self, amount: int | None = None) -> bytes | bytearray:  # type: ignore[override]
        """All of it: the queue itself, handed over (h2 copies it into a new ``bytes``; for a
        bulk transfer that is one more pass over every byte sent)."""
        if self._sealed:
            self._data_to_send = bytearray(self.queued())
            self._sealed = []
        if amount is not None or not self.lean:
            return super().data_to_send(amount)
        data, self._data_to_send = self._data_to_send, bytearray()
        return data

    def data_to_send_parts(self) -> list[bytes | bytearray]:
        """Everything to send, as pieces to write in order (``writelines``): the big DATA
        payloads are the caller's own ``bytes``, never copied into a queue. Each piece is handed
        over: nothing here changes it later."""
        parts, self._sealed = self._sealed, []
        if self._data_to_send:
            parts.append(self._data_to_send)
            self._data_to_send = bytearray()
        return parts

    def queued(self) -> bytes:
        """What :meth:`data_to_send` would return, without taking it (tests, debugging)."""
        return b"".join(self._sealed) + bytes(self._data_to_send)

    def clear_outbound_data_buffer(self) -> None:
        self._sealed = []
        super().clear_outbound_data_buffer()

    def receive_data(self, data: Any) -> list[h2.events.Event]:
        """Like h2's, and ``data`` may be a byte ``memoryview`` of the caller's read buffer: only
        copies are kept (the payloads handed out and the bytes held back), so the caller may
        reuse the buffer as soon as this returns."""
        if self._held_head:  # the start of a frame from earlier calls
            return self._continue_held(data)
        return self._receive(data)

    def held(self) -> bytes:
        """The bytes received but held back (the start of a frame): for tests and debugging."""
        return self._held_head + b"".join(self._held_parts)

    def _receive(self, data: Any) -> list[h2.events.Event]:
        fb = self.incoming_buffer
        conn_state = self.state_machine.state
        t = type(data)
        if t is memoryview:  # a byte view of the caller's buffer: taken as it is; any other view: h2's rules
            if data.format != "B" or not data.c_contiguous:
                return super().receive_data(data)
        elif t is not bytes and t is not bytearray:
            return super().receive_data(data)
        if (not self.lean or (conn_state is not _CLIENT_OPEN and conn_state is not _SERVER_OPEN)
                or fb._data or fb._preamble_len or fb._headers_buffer):
            return super().receive_data(bytes(data) if t is memoryview else data)
        end = len(data)
        pos = 0
        need = 0
        events: list[h2.events.Event] = []
        with memoryview(data) as view:  # released before h2 sees the rest: the caller may resize it
            while end - pos >= 9:
                if view[pos + 3] or view[pos + 4]:  # not DATA, or flags (END_STREAM, PADDED)
                    break
                length = view[pos] << 16 | view[pos + 1] << 8 | view[pos + 2]
                sid = int.from_bytes(view[pos + 5:pos + 9], "big") & 0x7FFFFFFF
                stream = self._lean_stream(sid, length)
                if stream is None:
                    break
                if end - pos - 9 < length:  # a frame for the lean path, not all here yet
                    need = length
                    break
                events.append(self._take(stream, sid, length, bytes(view[pos + 9:pos + 9 + length])))
                pos += 9 + length
            if pos < end and (end - pos < 9 or need):
                # Hold the rest until the frame is whole, as h2's own buffer would (no event, no
                # error before then), and take it on the lean path once it is: left to h2, a
                # frame larger than one read would put every later frame of a bulk transfer
                # through h2's buffer, and h2 hex-encodes each received DATA frame's whole
                # payload for its trace log (most of a receiving ztunnel's CPU in a bulk run).
                # Held as the header and a list of payload pieces, each copied once, joined once.
                if need:
                    self._held_head = bytes(view[pos:pos + 9])
                    self._held_parts = [bytes(view[pos + 9:end])]
                    self._held_len = end - pos - 9
                    self._held_need = need
                else:
                    self._held_head = bytes(view[pos:end])
                return events
        if pos < end:
            rest = data[pos:] if pos else data
            events += super().receive_data(bytes(rest) if t is memoryview else rest)
        return events

    def _lean_stream(self, sid: int, length: int) -> Any:
        """The stream a DATA frame (no flags) of ``length`` goes to if the lean path may take it:
        open for receiving, not counting content-length, within both windows and the size."""
        if not length or length > self.max_inbound_frame_size:
            return None
        stream = self.streams.get(sid)
        if (stream is None
                or (stream.state_machine.state is not _OPEN and stream.state_machine.state is not _HALF_CLOSED_LOCAL)
                or not stream.state_machine.headers_received
                or stream._expected_content_length is not None
                or length > self._inbound_flow_control_window_manager.current_window_size
                or length > stream._inbound_window_manager.current_window_size):
            return None
        return stream

    def _take(self, stream: Any, sid: int, length: int, payload: bytes) -> h2.events.Event:
        """The state changes h2 makes for a DATA frame it accepts, and its event."""
        self._inbound_flow_control_window_manager.current_window_size -= length
        stream._inbound_window_manager.current_window_size -= length
        stream._actual_content_length += length
        self.lean_received += 1
        ev = _DataReceived(stream_id=sid)
        ev.data = payload
        ev.flow_controlled_length = length
        return ev

    def _continue_held(self, data: Any) -> list[h2.events.Event]:
        head = self._held_head
        n = len(data)
        if len(head) < 9:  # a frame header split across reads (rare): start over with it whole
            if len(head) + n < 9:
                self._held_head = head + bytes(data)
                return []
            self._held_head = b""
            return self._receive(head + bytes(data))
        need = self._held_need - self._held_len
        if n < need:
            self._held_parts.append(bytes(data))
            self._held_len += n
            return []
        parts = self._held_parts
        parts.append(bytes(data[:need]))
        payload = b"".join(parts)
        self._held_head, self._held_parts, self._held_len, self._held_need = b"", [], 0, 0
        length = len(payload)
        sid = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
        conn_state = self.state_machine.state
        stream = (self._lean_stream(sid, length)
                  if conn_state is _CLIENT_OPEN or conn_state is _SERVER_OPEN else None)
        if stream is None:  # things changed while the frame was arriving: h2 decides, as before
            return super().receive_data(head + payload + bytes(data[need:]))
        events = [self._take(stream, sid, length, payload)]
        if n > need:
            events += self._receive(memoryview(data)[need:])
        return events


_checked: bool | None = None


def _exchange(cls: type[h2.connection.H2Connection]) -> tuple[list[Any], int]:
    """A CONNECT stream both ways through a pair of ``cls``: what an observer can see, and how
    many frames took the lean path."""
    client = cls(config=h2.config.H2Configuration(client_side=True, header_encoding=None))
    server = cls(config=h2.config.H2Configuration(client_side=False, header_encoding=None))
    seen: list[Any] = []
    for c in (client, server):
        c.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    client.send_headers(1, [(":method", "CONNECT"), (":authority", "10.0.0.1:80")])
    seen += server.receive_data(client.data_to_send())
    server.send_headers(1, [(":status", "200")])
    seen += client.receive_data(server.data_to_send())
    for i in range(3):
        client.send_data(1, b"q" * (100 + i))
        server.send_data(1, memoryview(b"r" * (200 + i)))
        out_c, out_s = client.data_to_send(), server.data_to_send()
        seen += [out_c, out_s]
        seen += server.receive_data(out_c[:50]) + server.receive_data(out_c[50:]) + client.receive_data(out_s)
        client.acknowledge_received_data(200 + i, 1)
        seen += server.receive_data(client.data_to_send())
    for c in (client, server):
        st = c.streams[1]
        seen += [c.local_flow_control_window(1), c.remote_flow_control_window(1),
                 c._inbound_flow_control_window_manager.current_window_size,
                 st._inbound_window_manager.current_window_size, st._actual_content_length, st.state_machine.state]
    return seen, sum(getattr(c, "lean_sent", 0) + getattr(c, "lean_received", 0) for c in (client, server))


def lean_path_ok() -> bool:
    """Whether the lean path matches stock h2 on a real exchange (checked once per process)."""
    global _checked
    if _checked is None:
        _checked = True  # the check itself builds LeanDataConnections
        try:
            lean, used = _exchange(LeanDataConnection)
            same = lean == _exchange(h2.connection.H2Connection)[0]
        except Exception as e:  # noqa: BLE001 - any failure means: do not trust the lean path
            log.warning("h2 %s: lean DATA path disabled (%s: %s)", h2.__version__, type(e).__name__, e)
            same, used = False, 0
        else:
            if not same or not used:
                log.warning("h2 %s: lean DATA path disabled (it %s)", h2.__version__,
                            "differs from h2's own" if not same else "was never taken")
        _checked = same and used > 0
        LeanDataConnection.lean = _checked
    return _checked
