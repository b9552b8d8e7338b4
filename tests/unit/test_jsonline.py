"""The lab control protocol: one JSON object per line over a unix stream socket."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from netlab.linux import jsonline


def _server(tmp_path, handle):
    path = os.path.join(tmp_path, "ctl.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)

    def run() -> None:
        conn, _ = srv.accept()
        with conn:
            jsonline.serve_one(conn, handle)
        srv.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return path, t


def test_request_reply(tmp_path) -> None:
    path, t = _server(tmp_path, lambda req: {"ok": True, "echo": req["op"]})
    assert jsonline.request(path, {"op": "status"}) == {"ok": True, "echo": "status"}
    t.join(2)


def test_handler_failure_is_an_error_reply(tmp_path) -> None:
    def boom(req):
        raise RuntimeError("no such process")

    path, t = _server(tmp_path, boom)
    reply = jsonline.request(path, {"op": "restart"})
    assert reply["ok"] is False and "no such process" in reply["error"]
    t.join(2)


def test_bad_request_is_refused(tmp_path) -> None:
    path, t = _server(tmp_path, lambda req: {"ok": True})
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        s.sendall(b"[1, 2]\n")
        assert b'"bad request: not an object"' in jsonline.read_line(s)
    t.join(2)


def test_unreachable_server_raises_oserror(tmp_path) -> None:
    with pytest.raises(OSError):
        jsonline.request(os.path.join(tmp_path, "none.sock"), {"op": "status"})
