"""One JSON object per line over a unix stream socket: the lab's small control protocol.

The supervisor and the CNI agent's plugin socket both speak it; clients send one request
line and read one reply line.
"""

from __future__ import annotations

import errno
import json
import socket
from collections.abc import Callable


def read_line(sock: socket.socket) -> bytes:
    """Bytes up to the first newline (or EOF); the newline is dropped."""
    buf = b""
    while b"\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf.split(b"\n", 1)[0]


def request(path: str, req: dict, timeout: float = 10.0) -> dict:
    """Send ``req`` to the server at ``path`` and return its reply (OSError if unreachable)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(json.dumps(req).encode() + b"\n")
        line = read_line(s)
    if not line:
        raise ConnectionResetError(errno.ECONNRESET, f"no reply from {path}")
    return json.loads(line)


def serve_one(conn: socket.socket, handle: Callable[[dict], dict], timeout: float = 5.0) -> None:
    """Answer one request on an accepted connection; a bad request gets an error reply."""
    conn.settimeout(timeout)
    try:
        req = json.loads(read_line(conn) or b"{}")
        if not isinstance(req, dict):
            raise ValueError("not an object")
        resp = handle(req)
    except ValueError as e:
        resp = {"ok": False, "error": f"bad request: {e}"}
    except Exception as e:  # noqa: BLE001 - a bad request must not kill the server
        resp = {"ok": False, "error": repr(e)}
    conn.sendall(json.dumps(resp, sort_keys=True).encode() + b"\n")
