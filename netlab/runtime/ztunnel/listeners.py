"""A :class:`ListenerSet`: ztunnel's three listening sockets (15001, 15006, 15008) for one
:class:`~netlab.runtime.ztunnel.proxy.Scope`, and the connection tasks they spawn.

One set serves the whole node in node-routing, one set per pod in in-pod mode. The set owns
its listening sockets and every connection task it spawned, so closing it leaves nothing
behind (in-pod: no fd of the pod's netns stays open).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Coroutine
from typing import Any

from netlab.runtime.tasks import create_task
from netlab.runtime.ztunnel.proxy import HBONE_PORT, INBOUND_PLAIN_PORT, OUTBOUND_PORT, Proxy, Scope

log = logging.getLogger(__name__)

Handler = Callable[[socket.socket, Scope], Coroutine[Any, Any, None]]


class ListenerSet:
    """15001/15006/15008 for one scope; ``open()`` is all-or-nothing."""

    def __init__(self, proxy: Proxy, scope: Scope, name: str) -> None:
        self.proxy = proxy
        self.scope = scope
        self.name = name
        self.sockets: list[socket.socket] = []
        self._accept_tasks: list[asyncio.Task[None]] = []
        self._conn_tasks: set[asyncio.Task[None]] = set()

    def open(self) -> None:
        try:
            for port in (OUTBOUND_PORT, INBOUND_PLAIN_PORT, HBONE_PORT):
                self.sockets.append(self.scope.factory.listener(port))
        except BaseException:
            for s in self.sockets:
                s.close()
            self.sockets.clear()
            raise

    def start(self) -> None:
        p = self.proxy
        handlers: tuple[Handler, ...] = (p.outbound, p.inbound_plain, p.inbound_hbone)
        for sock, handler in zip(self.sockets, handlers, strict=True):
            port = sock.getsockname()[1]
            self._accept_tasks.append(create_task(self._accept(sock, handler), name=f"accept {self.name}:{port}"))

    async def _accept(self, lsock: socket.socket, handler: Handler) -> None:
        loop = asyncio.get_running_loop()
        port = lsock.getsockname()[1]
        while True:
            try:
                conn, _ = await loop.sock_accept(lsock)
            except OSError as e:
                log.error("accept on %s:%d failed: %s", self.name, port, e)
                await asyncio.sleep(0.1)
                continue
            conn.setblocking(False)
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            t = create_task(handler(conn, self.scope), name=f"conn {self.name}:{port}")
            self._conn_tasks.add(t)
            t.add_done_callback(self._conn_tasks.discard)

    async def close(self) -> None:
        for t in self._accept_tasks:
            t.cancel()
        for s in self.sockets:
            s.close()
        self.sockets.clear()
        tasks = list(self._conn_tasks)
        for t in tasks:
            t.cancel()
        if self._accept_tasks or tasks:
            await asyncio.wait(self._accept_tasks + tasks, timeout=5)
        self._accept_tasks.clear()
