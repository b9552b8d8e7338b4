"""The lean DATA path against stock h2: the same calls and bytes into both, the same bytes,
events, errors, windows and stream states out, after every step of random exchanges."""

from __future__ import annotations

import random
from typing import Any

import h2.config
import h2.connection
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
        assert bytes(s._data_to_send) == bytes(le._data_to_send)


def pump(a: Twin, b: Twin, rng: random.Random) -> list:
    """What ``a`` has to send, into ``b`` in random pieces; b's events."""
    ok, data = a.call("data_to_send")
    events: list = []
    while data and not b.dead:
        n = rng.choice([len(data)] * 4 + [rng.randint(1, len(data)), 9, 17])
        chunk, data = data[:n], data[n:]
        res = b.call("receive_data", chunk)
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
    c = Twin(True)  # still a working HTTP/2 connection, all through h2
    c.call("initiate_connection")
    assert c.lean.lean_sent == 0
