"""HBONE CONNECT transcripts: bytes in >> events out, no sockets (the sans-IO core alone)."""

from __future__ import annotations

import re

import h2.config
import h2.connection
import h2.events
import hpack
import pytest
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from netlab.errors import ProtocolError
from netlab.runtime.ztunnel import hbone
from netlab.runtime.ztunnel.hbone import (
    ConnectRequest,
    Data,
    HboneClient,
    HboneServer,
    RequestRejected,
    Response,
    S,
    StreamEnded,
    StreamReset,
)


def pair() -> tuple[HboneClient, HboneServer]:
    c, s = HboneClient(), HboneServer()
    assert s.receive_data(c.data_to_send()) == []
    assert c.receive_data(s.data_to_send()) == []
    assert s.receive_data(c.data_to_send()) == []  # settings ACKs
    return c, s


def open_tunnel(c: HboneClient, s: HboneServer) -> int:
    sid = c.connect("10.244.1.7:9080", forwarded_for="10.244.0.5:40000", host="productpage.default.svc.cluster.local")
    [req] = s.receive_data(c.data_to_send())
    assert isinstance(req, ConnectRequest)
    s.respond(sid, 200)
    assert c.receive_data(s.data_to_send()) == [Response(sid, 200)]
    return sid


def raw_client() -> h2.connection.H2Connection:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    return conn


def test_connect_request_headers_1_22() -> None:
    """CONNECT carries :authority ip:port, baggage, forwarded for="ip:port";host=..., traceparent."""
    c, s = pair()
    bag = hbone.baggage(cluster="Kubernetes", namespace="default", workload_type="deployment", workload="sleep",
                        service="sleep", revision="v1")
    sid = c.connect("10.244.1.7:9080", forwarded_for="10.244.0.5:40000", host="productpage.default.svc.cluster.local",
                    baggage=bag)
    [req] = s.receive_data(c.data_to_send())
    assert (req.stream_id, req.host, req.port, req.authority) == (sid, "10.244.1.7", 9080, "10.244.1.7:9080")
    h = req.headers
    assert h[":method"] == "CONNECT" and ":path" not in h and ":scheme" not in h
    assert h["baggage"] == ("k8s.cluster.name=Kubernetes,k8s.namespace.name=default,k8s.deployment.name=sleep,"
                            "service.name=sleep,service.version=v1")
    assert h["forwarded"] == 'for="10.244.0.5:40000";host=productpage.default.svc.cluster.local'
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-00", h["traceparent"])


def test_windows_and_frame_size_are_ztunnels() -> None:
    """SETTINGS: 4 MiB stream window, 1 MiB max frame; connection window raised to 16 MiB."""
    c, s = pair()
    for side in (c, s):
        assert side.local_settings.initial_window_size == 4 * 1024 * 1024
        assert side.local_settings.max_frame_size == 1024 * 1024
        assert side.inbound_flow_control_window == 16 * 1024 * 1024
    assert c.max_outbound_frame_size == 1024 * 1024
    # what the peer learnt from our SETTINGS and WINDOW_UPDATE, seen by h2 as a foreign peer
    raw = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    raw.initiate_connection()
    raw.receive_data(HboneClient().data_to_send())
    assert raw.remote_settings.initial_window_size == 4 * 1024 * 1024
    assert raw.remote_settings.max_frame_size == 1024 * 1024
    assert raw.outbound_flow_control_window == 16 * 1024 * 1024


def test_tunnel_data_both_ways_and_half_close() -> None:
    """200 opens the tunnel; END_STREAM from the client is a half-close; server keeps sending."""
    c, s = pair()
    sid = open_tunnel(c, s)
    c.send_data(sid, b"GET / HTTP/1.1\r\n\r\n")
    c.end_stream(sid)
    evs = s.receive_data(c.data_to_send())
    assert evs == [Data(sid, b"GET / HTTP/1.1\r\n\r\n", 18), StreamEnded(sid)]
    assert s._streams[sid].state is S.REMOTE_CLOSED
    s.send_data(sid, b"HTTP/1.1 200 OK\r\n\r\n")
    assert c.receive_data(s.data_to_send()) == [Data(sid, b"HTTP/1.1 200 OK\r\n\r\n", 19)]
    s.end_stream(sid)
    assert c.receive_data(s.data_to_send()) == [StreamEnded(sid)]
    assert sid not in c._streams and sid not in s._streams


def test_non_connect_gets_400() -> None:
    """A GET on :15008 is answered 400 by the core itself."""
    s = HboneServer()
    c = raw_client()
    s.receive_data(c.data_to_send())
    c.send_headers(1, [(":method", "GET"), (":path", "/"), (":scheme", "https"), (":authority", "x")], end_stream=True)
    assert s.receive_data(c.data_to_send()) == [RequestRejected(1, 400, "method GET not allowed (only CONNECT)")]
    evs = c.receive_data(s.data_to_send())
    resp = [e for e in evs if isinstance(e, h2.events.ResponseReceived)]
    assert dict(resp[0].headers)[":status"] == "400"


@pytest.mark.parametrize("authority", ["productpage:9080", "10.0.0.1", "10.0.0.1:99999", "10.0.0.1:x"],
                         ids=["hostname", "no-port", "port-range", "port-nan"])
def test_bad_authority_gets_400(authority: str) -> None:
    """:authority must be ip:port."""
    s = HboneServer()
    c = raw_client()
    s.receive_data(c.data_to_send())
    c.send_headers(1, [(":method", "CONNECT"), (":authority", authority)])
    [ev] = s.receive_data(c.data_to_send())
    assert isinstance(ev, RequestRejected) and ev.status == 400


@pytest.mark.parametrize("status", [401, 503], ids=["policy-deny", "port-closed"])
def test_error_status_closes_stream(status: int) -> None:
    """401 (policy) / 503 (upstream refused) end the stream; the client sees the status."""
    c, s = pair()
    sid = c.connect("10.244.1.7:9080", forwarded_for="10.0.0.1:1")
    s.receive_data(c.data_to_send())
    s.respond(sid, status)
    assert c.receive_data(s.data_to_send()) == [Response(sid, status)]
    assert sid not in c._streams and sid not in s._streams


def test_flow_control_buffers_until_ack() -> None:
    """Beyond the 4 MiB stream window data waits in the core until the peer acks."""
    c, s = pair()
    sid = open_tunnel(c, s)
    c.send_data(sid, b"x" * (6 * 1024 * 1024))
    assert c.buffered(sid) == 2 * 1024 * 1024
    evs = s.receive_data(c.data_to_send())
    data = [e for e in evs if isinstance(e, Data)]
    assert sum(len(e.data) for e in data) == 4 * 1024 * 1024
    assert max(len(e.data) for e in data) == 1024 * 1024  # 1 MiB frames
    assert c.receive_data(s.data_to_send()) == []  # nothing acked yet: no window update
    for e in data:
        s.ack(sid, e.flow_len)
    evs = c.receive_data(s.data_to_send())
    assert evs == [hbone.WindowOpened(sid)] and c.buffered(sid) == 0


def test_reset_by_peer() -> None:
    """RST_STREAM from the peer becomes StreamReset(remote=True)."""
    c, s = pair()
    sid = open_tunnel(c, s)
    s.reset(sid)
    assert c.receive_data(s.data_to_send()) == [StreamReset(sid, 8, True)]


def test_goaway_closes_connection() -> None:
    """GOAWAY NO_ERROR is a graceful close (error_code 0)."""
    c, s = pair()
    c.close()
    [ev] = s.receive_data(c.data_to_send())
    assert isinstance(ev, hbone.ConnectionClosed) and ev.error_code == 0


def test_garbage_is_a_connection_error() -> None:
    """Not HTTP/2 at all: ConnectionClosed with PROTOCOL_ERROR and a GOAWAY out."""
    s = HboneServer()
    s.data_to_send()
    [ev] = s.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert isinstance(ev, hbone.ConnectionClosed) and ev.error_code == 1
    assert s.closed and s.data_to_send()


def test_state_table_rejects_illegal_transition() -> None:
    """(state, input) pairs outside the table raise ProtocolError with the HTTP/2 code."""
    assert hbone.next_state(S.IDLE, "send_connect") is S.CONNECTING
    with pytest.raises(ProtocolError) as e:
        hbone.next_state(S.CLOSED, "send_data")
    assert e.value.code == 1


@pytest.mark.parametrize("text,expected", [("10.0.0.1:80", ("10.0.0.1", 80)), ("[fd00::1]:443", ("fd00::1", 443))],
                         ids=["v4", "v6"])
def test_parse_authority(text: str, expected: tuple[str, int]) -> None:
    """ip:port and [v6]:port."""
    assert hbone.parse_authority(text) == expected


# --- the h2 adapter against foreign peers (h2 itself, raw frames) --------------------------------
def raw_server() -> h2.connection.H2Connection:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
    conn.initiate_connection()
    return conn


def frames(wire: bytes) -> list[Frame]:
    """Parse a byte string of whole HTTP/2 frames (hyperframe, h2's framing library)."""
    out, pos = [], 0
    while pos < len(wire):
        f, length = Frame.parse_frame_header(memoryview(wire[pos:pos + 9]))
        f.parse_body(memoryview(wire[pos + 9:pos + 9 + length]))
        out.append(f)
        pos += 9 + length
    return out


def test_h2_engine_is_configured_cheap_and_ztunnel_sized() -> None:
    """The engine is h2's H2Connection, header validation/normalisation off, ztunnel's sizes."""
    for side in (HboneClient(), HboneServer()):
        conn = side._conn
        assert isinstance(conn, h2.connection.H2Connection)
        cfg = conn.config
        assert not (cfg.validate_outbound_headers or cfg.normalize_outbound_headers
                    or cfg.validate_inbound_headers or cfg.normalize_inbound_headers)
        assert conn.max_inbound_frame_size == 1024 * 1024


def test_h2_client_padded_data_ping_and_continuation() -> None:
    """A foreign client: CONNECT split over HEADERS + CONTINUATION, padded DATA, PING answered."""
    s = HboneServer()
    c = raw_client()
    s.receive_data(c.data_to_send())
    c.receive_data(s.data_to_send())
    block = hpack.Encoder().encode([(":method", "CONNECT"), (":authority", "10.244.1.7:9080"), ("x-pad", "p" * 300)])
    hf = HeadersFrame(1, data=block[:100])
    cf = ContinuationFrame(1, data=block[100:], flags=["END_HEADERS"])
    [req] = s.receive_data(hf.serialize() + cf.serialize())
    assert isinstance(req, ConnectRequest) and req.headers["x-pad"] == "p" * 300
    s.respond(1, 200)
    df = DataFrame(1, data=b"hello", flags=["PADDED"], pad_length=3)
    evs = s.receive_data(df.serialize() + PingFrame(0, opaque_data=b"12345678").serialize())
    assert evs == [Data(1, b"hello", 9)]
    pongs = [f for f in frames(s.data_to_send()) if isinstance(f, PingFrame)]
    assert [(f.opaque_data, "ACK" in f.flags) for f in pongs] == [(b"12345678", True)]


def test_h2_server_sees_our_connect_and_tunnels_both_ways() -> None:
    """HboneClient against h2's server: request headers, 200, data both ways, END_STREAM."""
    c, srv = HboneClient(), raw_server()
    evs = srv.receive_data(c.data_to_send())
    c.receive_data(srv.data_to_send())
    sid = c.connect("10.244.1.7:9080", forwarded_for="10.244.0.5:40000")
    c.send_data(sid, b"early")  # before the 200, as ztunnel's peers allow
    evs = srv.receive_data(c.data_to_send())
    req = next(e for e in evs if isinstance(e, h2.events.RequestReceived))
    assert dict(req.headers)[":method"] == "CONNECT" and dict(req.headers)[":authority"] == "10.244.1.7:9080"
    assert [e.data for e in evs if isinstance(e, h2.events.DataReceived)] == [b"early"]
    srv.send_headers(sid, [(":status", "200")])
    srv.send_data(sid, b"x" * 100000)  # more than h2's 16 KiB frames: several DATA frames
    srv.end_stream(sid)
    evs = c.receive_data(srv.data_to_send())
    assert evs[0] == Response(sid, 200)
    assert b"".join(e.data for e in evs if isinstance(e, Data)) == b"x" * 100000 and evs[-1] == StreamEnded(sid)
    for e in evs:
        if isinstance(e, Data):
            c.ack(sid, e.flow_len)
    c.end_stream(sid)
    evs = srv.receive_data(c.data_to_send())
    assert any(isinstance(e, h2.events.StreamEnded) for e in evs)
    assert sid not in c._streams


def test_acks_are_batched() -> None:
    """ack() only sums credit; h2 gets it (one acknowledge_received_data per stream) once 128 KiB
    are pending, and sends a WINDOW_UPDATE per half window (stream and connection), not per ack."""
    c, s = pair()
    sid = open_tunnel(c, s)
    for _ in range(100):  # small messages: credit held back, nothing on the wire
        c.send_data(sid, b"m" * 100)
        [ev] = s.receive_data(c.data_to_send())
        s.ack(sid, ev.flow_len)
        assert s.data_to_send() == b""
    assert s._acks == {sid: 10000} and s.inbound_flow_control_window == 16 * 1024 * 1024 - 10000
    c.send_data(sid, b"a" * (3 * 1024 * 1024))
    evs = [e for e in s.receive_data(c.data_to_send()) if isinstance(e, Data)]
    for e in evs:
        s.ack(sid, e.flow_len)
    updates = [f for f in frames(s.data_to_send()) if isinstance(f, WindowUpdateFrame)]
    assert [(f.stream_id, f.window_increment) for f in updates] == [(sid, 3 * 1024 * 1024 + 10000)]  # < 8 MiB conn
    assert s._acks == {} and s.inbound_flow_control_window == 16 * 1024 * 1024 - 3 * 1024 * 1024 - 10000


def test_stream_window_overrun_is_a_connection_error() -> None:
    """DATA beyond the 4 MiB stream window: h2 treats it as a connection error (RFC 9113 §6.9.1
    allows either): ConnectionClosed FLOW_CONTROL_ERROR and a GOAWAY with that code out."""
    c, s = pair()
    sid = open_tunnel(c, s)
    wire = b"".join(DataFrame(sid, data=b"y" * (1024 * 1024)).serialize() for _ in range(5))
    [ev] = s.receive_data(wire)
    assert isinstance(ev, hbone.ConnectionClosed) and ev.error_code == hbone.ErrorCode.FLOW_CONTROL_ERROR
    [goaway] = [f for f in frames(s.data_to_send()) if isinstance(f, GoAwayFrame)]
    assert s.closed and goaway.error_code == hbone.ErrorCode.FLOW_CONTROL_ERROR


def test_settings_change_window_and_frame_size() -> None:
    """The peer's INITIAL_WINDOW_SIZE applies to open streams, its MAX_FRAME_SIZE to our frames."""
    c, s = pair()
    sid = open_tunnel(c, s)
    sf = SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 10, SettingsFrame.MAX_FRAME_SIZE: 16384})
    assert c.receive_data(sf.serialize()) == []
    assert [(type(f), f.flags) for f in frames(c.data_to_send())] == [(SettingsFrame, {"ACK"})]
    c.send_data(sid, b"z" * 100000)
    assert c.buffered(sid) == 100000 - 10
    c.data_to_send()
    wu = WindowUpdateFrame(sid, window_increment=100000)
    assert c.receive_data(wu.serialize()) == [hbone.WindowOpened(sid)]
    evs = s.receive_data(c.data_to_send())
    sizes = [len(e.data) for e in evs if isinstance(e, Data)]
    assert sum(sizes) == 100000 - 10 and max(sizes) == 16384 and c.buffered(sid) == 0
