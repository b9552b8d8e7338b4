"""The lean DATA path against stock h2: the same calls and bytes into both, the same bytes,
events, errors, windows and stream states out, after every step of random exchanges."""

from __future__ import annotations

import random
from typing import Any

import h2.config
import h2.connection
import h2.exceptions
import h2.settings
import pytest
from hyperframe.frame import DataFrame

from netlab.runtime.ztunnel import h2lean
from netlab.runtime.ztunnel.h2lean import LeanDataConnection

PLAIN = (bytes, bytearray, int, str, bool, type(None), list, tuple)


def norm(ev: Any) -> tuple:
    return type(ev).__name__, sorted((k, v if isinstance(v, PLAIN) else repr(v)) for k, v in vars(ev).items())


class Twin:
    """One endpoint twice, stock h2 and :class:`LeanDataConnection`, driven by the same calls."""

    def __init__(self, client_side: bool) -> None:
        def config() -> h2.config.H2Configuration:
            return h2.config.H2Configuration(client_side=client_side, header_encoding=None,
                                             validate_outbound_headers=False, normalize_outbound_headers=False,
                                             validate_inbound_headers=False, normalize_inbound_headers=False)
        self.stock = h2.connection.H2Connection(config=config())
        self.lean = LeanDataConnection(config=config())
        self.dead = False

    def call(self, name: str, *args: Any, **kw: Any) -> Any:
        out = []
        for conn in (self.stock, self.lean):
            try:
                r = getattr(conn, name)(*args, **kw)
            except Exception as e:  # noqa: BLE001 - the point is that both fail alike
                out.append(("error", type(e).__name__, str(e)))
            else:
                out.append(("ok", [norm(x) for x in r] if isinstance(r, list) else r))
        assert out[0] == out[1], (name, args, kw, out)
        if out[0][0] == "error" and name == "receive_data":
            self.dead = True  # a connection error: h2 has queued its GOAWAY
        return out[0]

    def receive_from_buffer(self, chunk: bytes) -> Any:
        """``receive_data`` as the ztunnel calls it: the lean side gets a view of a read buffer that
        is overwritten as soon as the call returns (stock h2 gets the bytes). Events compared
        after the overwrite, so an event that kept a view of the buffer would differ."""
        buf = bytearray(len(chunk) + 7)
        buf[3:3 + len(chunk)] = chunk
        out = []
        for conn, arg in ((self.stock, chunk), (self.lean, memoryview(buf)[3:3 + len(chunk)])):
            try:
                r = conn.receive_data(arg)
            except Exception as e:  # noqa: BLE001 - the point is that both fail alike
                out.append(("error", type(e).__name__, str(e)))
            else:
                out.append(r)
        buf[:] = b"\xee" * len(buf)
        out = [x if isinstance(x, tuple) else ("ok", [norm(e) for e in x]) for x in out]
        assert out[0] == out[1], (len(chunk), out)
        if out[0][0] == "error":
            self.dead = True
        return out[0]

    def check(self) -> None:
        s, le = self.stock, self.lean
        assert s.state_machine.state == le.state_machine.state
        assert s.outbound_flow_control_window == le.outbound_flow_control_window
        assert (s._inbound_flow_control_window_manager.current_window_size
                == le._inbound_flow_control_window_manager.current_window_size)
        assert set(s.streams) == set(le.streams)
        for sid, a in s.streams.items():
            b = le.streams[sid]
            assert a.state_machine.state == b.state_machine.state, sid
            assert a.outbound_flow_control_window == b.outbound_flow_control_window, sid
            assert a._inbound_window_manager.current_window_size == b._inbound_window_manager.current_window_size
            assert a._actual_content_length == b._actual_content_length
        assert bytes(s._data_to_send) == le.queued()


def pump(a: Twin, b: Twin, rng: random.Random) -> list:
    """What ``a`` has to send (from the lean side as ``data_to_send`` or as the pieces of
    ``data_to_send_parts``, as the ztunnel takes it), into ``b`` in random pieces; b's events."""
    if rng.random() < 0.5:
        ok, data = a.call("data_to_send")
    else:
        data = bytes(a.stock.data_to_send())
        assert b"".join(a.lean.data_to_send_parts()) == data
    events: list = []
    while data and not b.dead:
        n = rng.choice([len(data)] * 4 + [rng.randint(1, len(data)), 9, 17])
        chunk, data = data[:n], data[n:]
        res = b.receive_from_buffer(bytes(chunk)) if rng.random() < 0.5 else b.call("receive_data", chunk)
        if res[0] == "ok":
            events += res[1]
    return events


def scenario(seed: int, steps: int = 150) -> tuple[int, int]:
    rng = random.Random(seed)
    c, s = Twin(True), Twin(False)
    for t in (c, s):
        t.call("initiate_connection")
        if seed % 3:  # ztunnel's windows and frame size (hbone.py), else h2's defaults
            t.call("update_settings", {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 4 << 20,
                                       h2.settings.SettingCodes.MAX_FRAME_SIZE: 1 << 20})
            t.call("increment_flow_control_window", (16 << 20) - 65535)
    pump(c, s, rng)
    pump(s, c, rng)
    pump(c, s, rng)
    sids: list[int] = []
    received = {id(c): {}, id(s): {}}  # per side: stream -> bytes received, not yet acknowledged

    def note(side: Twin, events: list) -> None:
        for name, fields in events:
            if name == "DataReceived":
                f = dict(fields)
                received[id(side)][f["stream_id"]] = received[id(side)].get(f["stream_id"], 0) + f["flow_controlled_length"]

    for _ in range(steps):
        if c.dead or s.dead:
            break
        op = rng.choices(["open", "send", "flush", "ack", "reset", "ping", "settings", "window", "raw"],
                         weights=[3, 14, 10, 4, 1, 1, 1, 1, 1])[0]
        side, other = (c, s) if rng.random() < 0.5 else (s, c)
        if op == "open" or not sids:
            ok, sid = c.call("get_next_available_stream_id")
            c.call("send_headers", sid, [(":method", "CONNECT"), (":authority", "10.0.0.1:80")])
            note(s, pump(c, s, rng))
            if sid in s.stock.streams:
                s.call("send_headers", sid, [(":status", "200")])
                note(c, pump(s, c, rng))
            sids.append(sid)
        elif op == "send":
            live = [x for x in sids if x in side.stock.streams and side.stock.streams[x].open]
            sid = rng.choice(live if live and rng.random() < 0.9 else sids)
            size = rng.choice([1, 37, 176, 1000, 16384, 65535, 70000, 300000,
                               max(1, side.stock.local_flow_control_window(sid) if sid in side.stock.streams else 1)])
            data: Any = rng.randbytes(size)
            if rng.random() < 0.3:
                data = memoryview(data)
            side.call("send_data", sid, data, end_stream=rng.random() < 0.08,
                      pad_length=rng.choice([None] * 19 + [5]))
        elif op == "flush":
            note(other, pump(side, other, rng))
        elif op == "ack":
            pending = received[id(side)]
            for sid, n in list(pending.items()):
                if n and sid in side.stock.streams:
                    k = rng.randint(1, n)
                    side.call("acknowledge_received_data", k, sid)
                    pending[sid] = n - k
        elif op == "reset":
            side.call("reset_stream", rng.choice(sids))
        elif op == "ping":
            side.call("ping", rng.randbytes(8))
        elif op == "settings":
            side.call("update_settings", {
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: rng.choice([0, 100] + [65535, 1 << 20, 4 << 20] * 3),
                h2.settings.SettingCodes.MAX_FRAME_SIZE: rng.choice([16384, 1 << 20])})
        elif op == "window":
            side.call("increment_flow_control_window", rng.randint(1, 1 << 20))
        elif op == "raw":  # frames a well-behaved h2 peer would not send, or sends rarely
            sid = rng.choice(sids * 5 + [sids[-1] + 2, 0x7FFFFFFF])
            kind = rng.choice(["padded", "end", "empty"] * 4 + ["huge"])
            f = DataFrame(sid, b"x" * (5 if kind != "huge" else 5 << 20))
            if kind == "padded":
                f.flags.add("PADDED")
                f.pad_length = 3
            elif kind == "end":
                f.flags.add("END_STREAM")
            elif kind == "empty":
                f.data = b""
            raw = f.serialize()
            if rng.random() < 0.5:  # behind an ordinary frame the lean path takes
                ok, queued = side.call("data_to_send")
                raw = queued + raw
            res = other.call("receive_data", raw)
            if res[0] == "ok":
                note(other, res[1])
        c.check()
        s.check()
    return (c.lean.lean_sent + s.lean.lean_sent, c.lean.lean_received + s.lean.lean_received)


@pytest.mark.parametrize("seed", range(40))
def test_lean_path_matches_h2(seed: int) -> None:
    """Bytes, events, errors, windows and stream states equal stock h2's after every step."""
    scenario(seed)


def test_lean_path_is_exercised() -> None:
    """The random exchanges do take the lean path, both ways (else they would compare h2 with
    itself)."""
    totals = [scenario(seed, steps=120) for seed in range(100, 110)]
    assert sum(a for a, _ in totals) > 100 and sum(b for _, b in totals) > 50


def test_startup_check_and_fallback(monkeypatch) -> None:
    """The once-per-process check passes with the installed h2; if h2's internals ever differ,
    the lean path switches off and every frame takes h2's own."""
    assert h2lean.lean_path_ok() and LeanDataConnection.lean
    monkeypatch.setattr(h2lean, "_checked", None)
    monkeypatch.setattr(LeanDataConnection, "lean", True)

    def broken(cls):
        raise AttributeError("'H2Stream' object has no attribute '_inbound_window_manager'")
    monkeypatch.setattr(h2lean, "_exchange", broken)
    assert h2lean.lean_path_ok() is False and LeanDataConnection.lean is False
    c, s = opened(LeanDataConnection)  # still working HTTP/2 connections, all through h2
    c.send_data(1, b"ping")
    [ev] = s.receive_data(c.data_to_send())
    s.send_data(1, ev.data)
    [back] = c.receive_data(s.data_to_send())
    assert back.data == b"ping"
    assert c.lean_sent == s.lean_sent == c.lean_received == s.lean_received == 0


# --- targeted cases: each guard of the lean path, and unusual inputs -------------------------------
# (from a review of the lean path against h2's source; the random exchanges above rarely hit them)
SC = h2.settings.SettingCodes
CONNECT = [(":method", "CONNECT"), (":authority", "x:1")]
POST_CL = [(":method", "POST"), (":scheme", "http"), (":path", "/"), (":authority", "x"), ("content-length", "3")]
HEAD = [(":method", "HEAD"), (":scheme", "http"), (":path", "/"), (":authority", "x")]


def raw(sid: int, payload: bytes = b"hello", flags: tuple[str, ...] = (), pad: int | None = None) -> bytes:
    f = DataFrame(sid & 0x7FFFFFFF, payload)
    for fl in flags:
        f.flags.add(fl)
    if pad is not None:
        f.flags.add("PADDED")
        f.pad_length = pad
    b = bytearray(f.serialize())
    if sid & 0x80000000:
        b[5] |= 0x80
    return bytes(b)


def settings_frame(**kv: int) -> bytes:
    from hyperframe.frame import SettingsFrame
    f = SettingsFrame(0)
    f.settings = {getattr(SC, k): v for k, v in kv.items()}
    return f.serialize()


def full_state(conn: h2.connection.H2Connection) -> dict:
    fb = conn.incoming_buffer
    return dict(
        state=conn.state_machine.state, out=conn.outbound_flow_control_window,
        inw=vars(conn._inbound_flow_control_window_manager).copy(), queued=conn.queued() if hasattr(conn, "queued") else bytes(conn._data_to_send),
        # bytes received but not yet framed: h2's buffer, plus what the lean path holds back
        fb=((conn.held() if hasattr(conn, "held") else b"") + bytes(fb._data), fb._preamble_len, len(fb._headers_buffer)),
        closed=dict(conn._closed_streams),
        max=(conn.max_inbound_frame_size, conn.max_outbound_frame_size),
        highest=(conn.highest_inbound_stream_id, conn.highest_outbound_stream_id),
        streams={sid: (st.state_machine.state, st.outbound_flow_control_window, vars(st._inbound_window_manager).copy(),
                       st._actual_content_length, st._expected_content_length, st.state_machine.stream_closed_by,
                       st.state_machine.headers_received) for sid, st in conn.streams.items()})


def opened(cls: type, client_hdrs: list | None = None, server_hdrs: list | None = None) -> tuple:
    """A client/server pair of ``cls`` with stream 1 open (server's response sent unless None)."""
    c = cls(config=h2.config.H2Configuration(client_side=True, header_encoding=None))
    s = cls(config=h2.config.H2Configuration(client_side=False, header_encoding=None))
    c.initiate_connection()
    s.initiate_connection()
    s.receive_data(c.data_to_send())
    c.receive_data(s.data_to_send())
    s.receive_data(c.data_to_send())
    c.send_headers(1, client_hdrs or CONNECT)
    s.receive_data(c.data_to_send())
    if server_hdrs is not False:
        s.send_headers(1, server_hdrs or [(":status", "200")])
        c.receive_data(s.data_to_send())
    return c, s


def to_s(data: Any):
    return lambda c, s: s.receive_data(data)


def to_c(data: Any):
    return lambda c, s: c.receive_data(data)


def ack_settings(**kv: int) -> list:
    """The server changes its settings and the client acknowledges them."""
    return [lambda c, s: s.update_settings({getattr(SC, k): v for k, v in kv.items()}),
            lambda c, s: c.receive_data(s.data_to_send()), lambda c, s: s.receive_data(c.data_to_send())]


def _wide_view() -> memoryview:
    import array
    return memoryview(array.array("I", [0x41414141, 0x42424242]))


D = raw
CASES: dict[str, tuple[list, dict]] = {
    "header split, payload looks like a frame": ([to_s(D(1, D(1, b"abcde")[:9] + b"12345")[:9]),
                                                  to_s(D(1, D(1, b"abcde")[:9] + b"12345")[9:])], {}),
    "header split mid-header": ([to_s(D(1)[:4]), to_s(D(1)[4:])], {}),
    "complete + partial, then the rest": ([to_s(D(1) + D(1, b"abcdef")[:12]), to_s(D(1, b"abcdef")[12:] + D(1))], {}),
    "DATA while CONTINUATION pending": ([to_s(bytes.fromhex("000001010000000003") + b"\x82"), to_s(D(1))], {}),
    "DATA after CONTINUATION start, same chunk": ([to_s(bytes.fromhex("000001010000000003") + b"\x82" + D(1))], {}),
    "receive after GOAWAY sent": ([lambda c, s: s.close_connection(), to_s(D(1))], {}),
    "receive after GOAWAY received": ([lambda c, s: c.close_connection(), lambda c, s: s.receive_data(c.data_to_send()),
                                       to_s(D(1))], {}),
    "send after GOAWAY sent": ([lambda c, s: c.close_connection(), lambda c, s: c.send_data(1, b"abc")], {}),
    "send after GOAWAY received": ([lambda c, s: s.close_connection(), lambda c, s: c.receive_data(s.data_to_send()),
                                    lambda c, s: c.send_data(1, b"abc")], {}),
    "DATA before response headers": ([to_c(D(1))], {"server_hdrs": False}),
    "content-length exceeded": ([to_s(D(1, b"hello"))], {"client_hdrs": POST_CL}),
    "content-length within": ([to_s(D(1, b"he")), to_s(D(1, b"l"))], {"client_hdrs": POST_CL}),
    "HEAD response with a body": ([to_c(D(1, b"x"))], {"client_hdrs": HEAD}),
    "stream window violated": (ack_settings(INITIAL_WINDOW_SIZE=3) + [to_s(D(1, b"hello"))], {}),
    "connection window violated": ([to_s(D(1, b"x" * 16000) * 4 + D(1, b"y" * 2000))], {}),
    "frame over the local max size": ([to_s(D(1, b"x" * 16385))], {}),
    "frame at the local max size": ([to_s(D(1, b"x" * 16384))], {}),
    "max_inbound_frame_size set directly (as hbone does)": ([lambda c, s: setattr(s, "max_inbound_frame_size", 100),
                                                             to_s(D(1, b"x" * 101))], {}),
    "big frames after MAX_FRAME_SIZE acknowledged": (ack_settings(MAX_FRAME_SIZE=1 << 20) + [
        to_s(D(1, b"x" * 20000)), to_s(D(1, b"x" * 40000))], {}),
    "send over the peer's max frame size": ([lambda c, s: c.send_data(1, b"x" * 16385)], {}),
    "zero-length DATA": ([to_s(D(1, b""))], {}),
    "DATA on stream 0": ([to_s(bytes.fromhex("000005000000000000") + b"hello")], {}),
    "DATA with an unknown flag": ([to_s(bytes.fromhex("000005000200000001") + b"hello")], {}),
    "padded DATA": ([to_s(D(1, pad=2))], {}),
    "END_STREAM between lean frames": ([to_s(D(1) + D(1, b"bye", flags=("END_STREAM",)) + D(1))], {}),
    "reserved bit set": ([to_s(D(0x80000001) + D(1) + D(0x80000001))], {}),
    "idle odd stream": ([to_s(D(3))], {}),
    "idle even stream": ([to_s(D(2))], {}),
    "after a local reset": ([lambda c, s: s.reset_stream(1), to_s(D(1) + D(1))], {}),
    "after a remote reset": ([lambda c, s: c.reset_stream(1), lambda c, s: s.receive_data(c.data_to_send()),
                              to_s(D(1))], {}),
    "half-closed (remote) receiving": ([to_s(D(1, b"", flags=("END_STREAM",))), to_s(D(1))], {}),
    "half-closed (local) receiving": ([lambda c, s: c.end_stream(1), lambda c, s: s.receive_data(c.data_to_send()),
                                       lambda c, s: s.send_data(1, b"abc"), lambda c, s: c.receive_data(s.data_to_send())], {}),
    "send on half-closed (local)": ([lambda c, s: c.end_stream(1), lambda c, s: c.send_data(1, b"abc")], {}),
    "send on an unknown stream": ([lambda c, s: c.send_data(5, b"abc")], {}),
    "send with the high bit in the stream id": ([lambda c, s: c.send_data(0x80000001, b"abc")], {}),
    "SETTINGS between lean frames": ([to_s(D(1) + settings_frame(INITIAL_WINDOW_SIZE=10) + D(1))], {}),
    "window shrunk by acknowledged SETTINGS": (ack_settings(INITIAL_WINDOW_SIZE=7)[:2] + [
        lambda c, s: s.receive_data(c.data_to_send() + D(1) + D(1))], {}),
    "send after the window went negative": ([lambda c, s: c.send_data(1, b"x" * 100),
                                             to_c(settings_frame(INITIAL_WINDOW_SIZE=10)),
                                             lambda c, s: c.send_data(1, b"x")], {}),
    "PING between lean frames": ([to_s(D(1, b"a") + bytes.fromhex("000008060000000000") + b"12345678" + D(1, b"b"))], {}),
    # unusual inputs: h2's own rules apply
    "receive a memoryview": ([to_s(memoryview(D(1) + D(1)))], {}),
    "receive a bytearray": ([to_s(bytearray(D(1) + D(1)))], {}),
    "receive a strided memoryview": ([to_s(memoryview(D(1) + D(1))[::2])], {}),
    "receive a signed memoryview": ([to_s(memoryview(bytes.fromhex("fffff7000000000001") + b"x" * 9).cast("b"))], {}),
    "receive empty": ([to_s(b"")], {}),
    "send a memoryview": ([lambda c, s: c.send_data(1, memoryview(b"zzabc")[2:])], {}),
    "send a wide memoryview": ([lambda c, s: c.send_data(1, _wide_view())], {}),
    "send a strided memoryview": ([lambda c, s: c.send_data(1, memoryview(b"abcdef")[::2])], {}),
    "send a bytearray": ([lambda c, s: c.send_data(1, bytearray(b"abc"))], {}),
    "send with a float stream id": ([lambda c, s: c.send_data(1.0, b"hello")], {}),
    "send a str": ([lambda c, s: c.send_data(1, "hello")], {}),
    "frame split, stream reset before the rest": ([to_s(D(1, b"abcdef")[:11]), lambda c, s: s.reset_stream(1),
                                                   to_s(D(1, b"abcdef")[11:])], {}),
    "frame split, GOAWAY sent before the rest": ([to_s(D(1, b"abcdef")[:11]), lambda c, s: s.close_connection(),
                                                  to_s(D(1, b"abcdef")[11:])], {}),
    "frame split, window shrunk before the rest": ([to_s(D(1, b"abcdef")[:11])] + ack_settings(INITIAL_WINDOW_SIZE=3)
                                                   + [to_s(D(1, b"abcdef")[11:])], {}),
    "partial header then a non-DATA frame": ([to_s(D(1)[:3]), to_s(D(1)[3:] + settings_frame(MAX_FRAME_SIZE=20000))],
                                             {}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_targeted_case_matches_h2(name: str) -> None:
    """Results, errors and the whole connection state (both sides) equal stock h2's."""
    steps, kw = CASES[name]
    outs = []
    for cls in (h2.connection.H2Connection, LeanDataConnection):
        c, s = opened(cls, **kw)
        res = []
        for step in steps:
            try:
                r = step(c, s)
            except Exception as e:  # noqa: BLE001
                res.append(("error", type(e).__name__, str(e)))
            else:
                res.append(("ok", [norm(x) for x in r] if isinstance(r, list) else r))
        outs.append((res, full_state(c), full_state(s)))
    assert outs[0] == outs[1]


def test_caller_buffer_is_released_after_an_error() -> None:
    """The caller may resize its bytearray after receive_data raised (no export left behind)."""
    c, s = opened(LeanDataConnection)
    buf = bytearray(D(1) + D(7))  # lean frame, then DATA on an idle stream: a connection error
    with pytest.raises(h2.exceptions.ProtocolError):
        s.receive_data(buf)
    buf.clear()


def test_frames_larger_than_a_read_stay_on_the_lean_path() -> None:
    """Bulk HBONE: the sender's DATA frames (up to a 256 KiB read) arrive in TLS-record-sized
    pieces. Each frame is taken on the lean path once whole, with the same events as h2; before,
    the first split frame went to h2's buffer and so did every later one (and h2 hex-encodes
    each received frame's whole payload for its trace log)."""
    outs = []
    for cls in (h2.connection.H2Connection, LeanDataConnection):
        c, s = opened(cls)
        s.update_settings({SC.MAX_FRAME_SIZE: 1 << 20, SC.INITIAL_WINDOW_SIZE: 4 << 20})
        c.receive_data(s.data_to_send())
        s.receive_data(c.data_to_send())
        s.increment_flow_control_window(16 << 20)
        c.receive_data(s.data_to_send())
        wire = b"".join(D(1, bytes([i]) * 200_000) for i in range(8))
        events = []
        for i in range(0, len(wire), 16_413):  # one TLS record's plaintext and some
            events += [norm(e) for e in s.receive_data(wire[i:i + 16_413])]
        outs.append((events, full_state(s)))
        if cls is LeanDataConnection:
            assert s.lean_received == 8
    assert outs[0] == outs[1]


def test_big_payloads_are_queued_as_they_are() -> None:
    """A DATA payload of SEAL_MIN or more is written from the caller's own ``bytes`` (no copy into
    the queue), behind its header; smaller ones are copied in. The bytes on the wire are h2's."""
    outs = []
    big, small = b"b" * h2lean.SEAL_MIN, b"s" * (h2lean.SEAL_MIN - 1)
    for cls in (h2.connection.H2Connection, LeanDataConnection):
        c, s = opened(cls)
        c.send_data(1, small)
        c.send_data(1, big)
        c.send_data(1, small)
        if cls is LeanDataConnection:
            parts = c.data_to_send_parts()
            assert any(p is big for p in parts) and not any(p is small for p in parts)
            assert c.data_to_send_parts() == []
            wire = b"".join(parts)
        else:
            wire = c.data_to_send()
        outs.append(wire)
        assert [e.data for e in s.receive_data(wire)] == [small, big, small]
    assert outs[0] == outs[1]


def test_data_to_send_hands_over_the_queue() -> None:
    """The lean connection returns its queue instead of a copy: what was returned must not
    change when more is queued, and the bytes equal stock h2's."""
    outs = []
    for cls in (h2.connection.H2Connection, LeanDataConnection):
        c, s = opened(cls)
        c.send_data(1, b"a" * 100)
        first = c.data_to_send()
        snapshot = bytes(first)
        c.send_data(1, b"b" * 100)
        assert bytes(first) == snapshot
        outs.append((snapshot, bytes(c.data_to_send()), bytes(c.data_to_send(5))))
    assert outs[0] == outs[1]
