"""Socket factories: where ztunnel's sockets live and which options they carry.

* :class:`NodeSocketFactory` (node-routing, Istio 1.18-1.20, as ztunnel
  1.20's ``src/socket.rs``): sockets in the
  netns the process runs in (the node's ztunnel pod). Listeners ``0.0.0.0`` with
  IP_TRANSPARENT (TPROXY delivers them); upstream sockets that keep another IP's source get
  IP_TRANSPARENT + IP_FREEBIND and are bound to ``<orig src>:0``.
* :class:`InpodSocketFactory` (in-pod, 1.21+, as ztunnel's ``src/inpod``
  socket factory): every socket is created inside
  the pod netns (``setns`` for the creation only) and carries SO_MARK 0x539; listeners also
  SO_REUSEPORT, backlog 128.
"""

from __future__ import annotations

import logging
import socket
import struct

from netlab.linux import nsenter

log = logging.getLogger(__name__)

SOL_IP = getattr(socket, "SOL_IP", 0)
IP_TRANSPARENT = getattr(socket, "IP_TRANSPARENT", 19)
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
SO_MARK = getattr(socket, "SO_MARK", 36)
SO_ORIGINAL_DST = 80
INPOD_MARK = 0x539
LISTEN_BACKLOG = 128
SOCK_BUF = 4 * 1024 * 1024


def original_dst(sock: socket.socket) -> tuple[str, int]:
    """SO_ORIGINAL_DST first (nat REDIRECT), else the local address (TPROXY keeps it)."""
    try:
        raw = sock.getsockopt(SOL_IP, SO_ORIGINAL_DST, 16)
        port, packed = struct.unpack_from("!2xH4s", raw)
        return socket.inet_ntoa(packed), port
    except OSError:
        host, port = sock.getsockname()[:2]
        return host, port


def _listener(port: int, *, host: str, mark: int | None, reuseport: bool, transparent_required: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            level = socket.IPPROTO_IPV6 if family == socket.AF_INET6 else SOL_IP
            s.setsockopt(level, IP_TRANSPARENT if family == socket.AF_INET else 75, 1)
        except OSError as e:
            if transparent_required:
                raise
            log.warning("IP_TRANSPARENT on listener :%d failed (%s); original-source features off", port, e)
        if mark is not None:
            s.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
        s.bind((host, port))
        s.listen(LISTEN_BACKLOG)
        s.setblocking(False)
        return s
    except BaseException:
        s.close()
        raise


def _upstream(bind_ip: str | None, mark: int | None, v6: bool = False) -> socket.socket:
    s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if mark is not None:
            s.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
        if bind_ip is not None:
            s.setsockopt(SOL_IP, IP_TRANSPARENT, 1)
            s.setsockopt(SOL_IP, IP_FREEBIND, 1)
            s.bind((bind_ip, 0))
        return s
    except BaseException:
        s.close()
        raise


class SocketFactory:
    """Makes listeners and upstream sockets. ``bind_ip`` = spoof that source address."""

    mark: int | None = None

    def listener(self, port: int, *, host: str = "0.0.0.0") -> socket.socket:
        raise NotImplementedError

    def upstream(self, *, bind_ip: str | None = None) -> socket.socket:
        raise NotImplementedError


class NodeSocketFactory(SocketFactory):
    """node-routing: the current netns; SO_MARK set too (harmless there: the legacy rules
    route ztunnel's spoofed packets by source, not by mark)."""

    def __init__(self, mark: int | None = INPOD_MARK) -> None:
        self.mark = mark

    def listener(self, port: int, *, host: str = "0.0.0.0") -> socket.socket:
        return _listener(port, host=host, mark=None, reuseport=False, transparent_required=False)

    def upstream(self, *, bind_ip: str | None = None) -> socket.socket:
        return _upstream(bind_ip, self.mark)


class InpodSocketFactory(SocketFactory):
    """in-pod: create inside the pod netns behind ``netns_fd`` (not owned), SO_MARK 0x539."""

    def __init__(self, netns_fd: int, mark: int = INPOD_MARK) -> None:
        self.netns_fd = netns_fd
        self.mark = mark

    def listener(self, port: int, *, host: str = "0.0.0.0") -> socket.socket:
        with nsenter.netns_fd(self.netns_fd):
            return _listener(port, host=host, mark=self.mark, reuseport=True, transparent_required=False)

    def upstream(self, *, bind_ip: str | None = None) -> socket.socket:
        with nsenter.netns_fd(self.netns_fd):
            return _upstream(bind_ip, self.mark)
