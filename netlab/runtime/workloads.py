"""The pods' applications: small real HTTP/1.1 servers, one process per pod.

bookinfo as Istio's sample app: ``productpage`` calls ``details`` and ``reviews``; ``reviews`` v2/v3
call ``ratings``; so one request to productpage crosses nodes and several mesh hops.
``echo`` answers with who called it, and serves ``/bytes/N`` and POST bodies for benchmarks.
Names resolve through the lab's hosts file (bind-mounted over /etc/hosts in the pod).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)
Handler = Callable[[str, str, dict[str, str], bytes, tuple], Awaitable[tuple[int, str, bytes]]]
CHUNK = 1 << 20


async def http_get(host: str, port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """One HTTP/1.1 GET with ``Connection: close`` (what bookinfo's services do per call)."""
    r, w = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        w.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n"
                f"User-Agent: netlab-bookinfo\r\n\r\n".encode())
        await w.drain()
        data = await asyncio.wait_for(r.read(), timeout)
    finally:
        w.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 502
    return status, body


def _page(title: str, body: str) -> bytes:
    return (f"<!DOCTYPE html>\n<html>\n<head><meta charset=\"utf-8\"><title>{title}</title></head>\n"
            f"<body>\n{body}\n</body>\n</html>\n").encode()


def make_handler(app: str, pod: str, version: str) -> Handler:
    async def productpage(method, path, headers, body, peer):
        if path.startswith("/health"):
            return 200, "text/plain", b"ok\n"
        parts = []
        try:
            s, d = await http_get("details", 9080, "/details/0")
            details = json.loads(d) if s == 200 else {"error": f"details returned {s}"}
        except (TimeoutError, OSError, ValueError) as e:
            details = {"error": f"details unavailable: {e}"}
        try:
            s, rv = await http_get("reviews", 9080, "/reviews/0")
            reviews = json.loads(rv) if s == 200 else {"error": f"reviews returned {s}"}
        except (TimeoutError, OSError, ValueError) as e:
            reviews = {"error": f"reviews unavailable: {e}"}
        parts.append("<h1>The Comedy of Errors</h1>")
        parts.append(f"<h2>Book Details</h2><pre>{json.dumps(details, indent=1)}</pre>")
        parts.append(f"<h2>Book Reviews</h2><pre>{json.dumps(reviews, indent=1)}</pre>")
        parts.append(f"<p>served by {pod}</p>")
        return 200, "text/html; charset=utf-8", _page("Simple Bookstore App", "\n".join(parts))

    async def details(method, path, headers, body, peer):
        return 200, "application/json", json.dumps({
            "id": 0, "author": "William Shakespeare", "year": 1595, "type": "paperback", "pages": 200,
            "publisher": "PublisherA", "language": "English", "ISBN-10": "1234567890",
            "ISBN-13": "123-1234567890", "served_by": pod}).encode()

    async def reviews(method, path, headers, body, peer):
        out: dict[str, Any] = {"id": "0", "podname": pod, "version": version, "reviews": [
            {"reviewer": "Reviewer1", "text": "An extremely entertaining play by Shakespeare."},
            {"reviewer": "Reviewer2", "text": "Absolutely fun and entertaining."}]}
        if version in ("v2", "v3"):
            try:
                s, r = await http_get("ratings", 9080, "/ratings/0")
                rating = json.loads(r) if s == 200 else {"error": f"ratings returned {s}"}
            except (TimeoutError, OSError, ValueError) as e:
                rating = {"error": f"ratings unavailable: {e}"}
            out["rating"] = {**rating, "color": "black" if version == "v2" else "red"}
        return 200, "application/json", json.dumps(out).encode()

    async def ratings(method, path, headers, body, peer):
        return 200, "application/json", json.dumps({"id": 0, "ratings": {"Reviewer1": 5, "Reviewer2": 4},
                                                    "served_by": pod}).encode()

    async def echo(method, path, headers, body, peer):
        if path.startswith("/bytes/"):
            try:
                n = int(path.split("/")[2])
            except (IndexError, ValueError):
                return 400, "text/plain", b"bad size\n"
            return 200, "application/octet-stream", b"x" * n
        return 200, "application/json", json.dumps({
            "pod": pod, "method": method, "path": path, "client": f"{peer[0]}:{peer[1]}",
            "received_bytes": len(body)}).encode() + b"\n"

    return {"productpage": productpage, "details": details, "reviews": reviews, "ratings": ratings,
            "echo": echo}[app]


async def _serve_conn(handler: Handler, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    peer = w.get_extra_info("peername") or ("?", 0)
    try:
        while True:
            line = await r.readline()
            if not line:
                return
            try:
                method, path, _ = line.decode("latin-1").split(" ", 2)
            except ValueError:
                return
            headers: dict[str, str] = {}
            while True:
                h = await r.readline()
                if h in (b"\r\n", b"\n", b""):
                    break
                k, _, v = h.decode("latin-1").partition(":")
                headers[k.strip().lower()] = v.strip()
            n = int(headers.get("content-length", "0") or 0)
            body = b""
            remaining = n
            while remaining > 0:  # bulk bodies are counted, not kept
                chunk = await r.read(min(CHUNK, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                if len(body) < 4096:
                    body += chunk[:4096]
            body_len = n - remaining
            status, ctype, out = await handler(method, path, headers, body[:body_len] if body_len < 4096 else
                                               b"\0" * body_len, peer)
            close = headers.get("connection", "").lower() == "close"
            reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}.get(status, "Error")
            w.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(out)}\r\n"
                    f"{'Connection: close' + chr(13) + chr(10) if close else ''}\r\n".encode() + out)
            await w.drain()
            if close:
                return
    except (ConnectionError, asyncio.IncompleteReadError):
        return
    finally:
        w.close()


async def serve(app: str, pod: str, port: int, version: str, ready: Callable[[], None] | None = None) -> None:
    handler = make_handler(app, pod, version)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", port))
    sock.listen(1024)
    server = await asyncio.start_server(lambda r, w: _serve_conn(handler, r, w), sock=sock)
    if ready:
        ready()
    async with server:
        await server.serve_forever()


def main(app: str, pod: str, port: int, version: str, ready_fd: int | None = None) -> None:
    def ready() -> None:
        if ready_fd is not None:
            os.write(ready_fd, b"ready\n")
            os.close(ready_fd)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(serve(app, pod, port, version, ready))
