"""H2ClientConn: a CONNECT that never gets its answer (cancelled, timed out) is reset and
forgotten, so nothing is left behind on the pooled connection. Driven over an in-memory
transport against the sans-IO HBONE server (no sockets)."""

from __future__ import annotations

import asyncio

import pytest

from netlab.runtime.tasks import create_task
from netlab.runtime.ztunnel import hbone, proxy
from netlab.runtime.ztunnel.h2conn import H2ClientConn, Pool
from netlab.runtime.ztunnel.hbone import ConnectRequest, HboneServer, StreamReset


class _Transport:
    """What H2ClientConn writes, kept for the test to hand to the server."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.out += data

    def take(self) -> bytes:
        data = bytes(self.out)
        self.out.clear()
        return data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def _connected() -> tuple[H2ClientConn, _Transport, HboneServer]:
    conn, t, server = H2ClientConn("test"), _Transport(), HboneServer()
    conn.connection_made(t)  # type: ignore[arg-type]
    conn.start()
    assert server.receive_data(t.take()) == []
    conn.data_received(server.data_to_send())
    assert server.receive_data(t.take()) == []  # SETTINGS ACK
    return conn, t, server


async def _connect_then(stop: str, monkeypatch: pytest.MonkeyPatch) -> None:
    conn, t, server = _connected()
    if stop == "timeout":
        monkeypatch.setattr(proxy, "CONNECT_TIMEOUT", 0.01)
    task = create_task(conn.open("10.244.1.7:9080", forwarded_for="10.244.0.5:40000"), name="connect")
    await asyncio.sleep(0)
    [req] = server.receive_data(t.take())
    assert isinstance(req, ConnectRequest) and conn.streams
    sid = req.stream_id
    # the peer answers and sends data, but too late: it crosses our reset on the wire
    server.respond(sid, 200)
    server.send_data(sid, b"late bytes")
    late = server.data_to_send()
    if stop == "cancel":
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    else:
        with pytest.raises(TimeoutError):
            await task
    assert conn.streams == {} and conn._responses == {}
    assert server.receive_data(t.take()) == [StreamReset(sid, int(hbone.ErrorCode.CANCEL), True)]
    conn.data_received(late)  # the late 200 and DATA are dropped (DATA credited back)
    assert conn.streams == {} and not conn.closed
    # the connection still works for the next CONNECT
    task = create_task(conn.open("10.244.1.7:9080", forwarded_for="10.244.0.5:40001"), name="connect 2")
    await asyncio.sleep(0)
    [req2] = server.receive_data(t.take())
    server.respond(req2.stream_id, 200)
    conn.data_received(server.data_to_send())
    end, status = await task
    assert status == 200 and end is not None and set(conn.streams) == {req2.stream_id}
    end.close()
    # idle again: the pool reaps it
    pool = Pool()
    pool._conns[("", "id", None, "10.244.1.7")] = [conn]
    pool.reap(idle=-1)
    assert conn.closed and pool._conns == {}


@pytest.mark.parametrize("stop", ["cancel", "timeout"])
def test_unanswered_connect_is_reset_and_forgotten(stop: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cancelled or timed out before the 200: RST_STREAM CANCEL to the peer, no stream left
    (so the pooled connection can be reaped), late frames dropped, the connection reusable."""
    asyncio.run(_connect_then(stop, monkeypatch))


def test_capacity_is_capped_at_our_stream_limit() -> None:
    """has_capacity: at most hbone.MAX_CONCURRENT_STREAMS streams even if the peer allows more."""
    async def run() -> None:
        conn, _, _ = _connected()
        conn.core._conn.remote_settings.max_concurrent_streams = hbone.MAX_CONCURRENT_STREAMS * 2  # type: ignore[misc]
        conn.streams = dict.fromkeys(range(hbone.MAX_CONCURRENT_STREAMS - 1))  # type: ignore[arg-type]
        assert conn.has_capacity()
        conn.streams[-1] = None  # type: ignore[assignment]
        assert not conn.has_capacity()
    asyncio.run(run())


# --- inbound: a CONNECT stream whose handling is cancelled or fails after the 200 -------------------
def _inbound_setup(tmp_path):  # type: ignore[no-untyped-def]
    import io

    from netlab.runtime.ztunnel.accesslog import AccessLog
    from netlab.runtime.ztunnel.h2conn import H2ServerConn
    from netlab.runtime.ztunnel.proxy import Proxy, Scope
    from netlab.runtime.ztunnel.registry import Registry
    from netlab.runtime.ztunnel.tls import Contexts

    reg = Registry.from_dict({"trust_domain": "cluster.local", "workloads": [
        {"uid": "default/pp", "name": "pp", "namespace": "default", "node": "n1", "ip": "10.244.1.7",
         "service_account": "pp", "protocol": "HBONE"}]})
    px = Proxy(node="n1", mode="node-routing", registry=reg, contexts=Contexts(str(tmp_path)),
               access_log=AccessLog(io.StringIO()))
    scope = Scope(factory=None)  # type: ignore[arg-type]  # _connect is replaced
    tasks: list[asyncio.Task] = []

    async def on_request(conn, req, end) -> None:  # type: ignore[no-untyped-def]
        tasks.append(asyncio.current_task())  # type: ignore[arg-type]
        await px._inbound_stream(conn, req, end, scope, reg.workload_by_ip("10.244.1.7"), "10.244.0.5", 40000,
                                 "10.244.1.7", 15008, "spiffe://cluster.local/ns/default/sa/sleep")

    conn, t, client = H2ServerConn("test", on_request), _Transport(), hbone.HboneClient()
    conn.connection_made(t)  # type: ignore[arg-type]
    conn.start()
    conn.data_received(client.data_to_send())
    assert client.receive_data(t.take()) == []
    conn.data_received(client.data_to_send())
    client.receive_data(t.take())
    sid = client.connect("10.244.1.7:9080", forwarded_for="10.244.0.5:40000")
    conn.data_received(client.data_to_send())
    return px, conn, t, client, sid, tasks


def test_inbound_stream_cancelled_while_dialling_is_reset(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cancelled before the upstream answered: the stream is reset (not left half open) and forgotten."""
    async def hang(*a, **k):  # type: ignore[no-untyped-def]
        await asyncio.Event().wait()

    monkeypatch.setattr(proxy, "_connect", hang)

    async def run() -> None:
        px, conn, t, client, sid, tasks = _inbound_setup(tmp_path)
        for _ in range(3):
            await asyncio.sleep(0)
        [task] = tasks
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert conn.streams == {}
        assert client.receive_data(t.take()) == [StreamReset(sid, int(hbone.ErrorCode.CANCEL), True)]
        assert px.metrics.closed["destination"] == 1
    asyncio.run(run())


def test_inbound_stream_upstream_closed_when_wrap_fails(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The upstream socket is closed and the stream reset if it cannot be wrapped after the 200."""
    import socket

    a, b = socket.socketpair()

    async def connect(*args, **kw):  # type: ignore[no-untyped-def]
        return a

    async def wrap(*args, **kw):  # type: ignore[no-untyped-def]
        raise OSError(9, "bad file descriptor")

    monkeypatch.setattr(proxy, "_connect", connect)
    monkeypatch.setattr(proxy.TcpEnd, "wrap", wrap)

    async def run() -> None:
        px, conn, t, client, sid, tasks = _inbound_setup(tmp_path)
        for _ in range(3):
            await asyncio.sleep(0)
        [task] = tasks
        await task
        assert a.fileno() == -1 and conn.streams == {}
        evs = client.receive_data(t.take())
        assert evs == [hbone.Response(sid, 200), StreamReset(sid, int(hbone.ErrorCode.CANCEL), True)]
        assert px.metrics.failed["destination"] == 1
    try:
        asyncio.run(run())
    finally:
        a.close()
        b.close()
