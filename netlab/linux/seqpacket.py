"""Datagrams with file descriptors over a unix ``SOCK_SEQPACKET`` socket, with deadlines.

The transport of ZDS (how the in-pod CNI agent passes a pod's netns fd to ztunnel): one
message per datagram, at most one fd per message as ``SCM_RIGHTS``, a 1024-byte receive
buffer as istio-cni and ztunnel use, and truncation (``MSG_TRUNC``/``MSG_CTRUNC``) treated as
an error. Blocking functions for the agent's threads, asyncio twins for ztunnel.
"""

from __future__ import annotations

import array
import asyncio
import os
import socket

from netlab.errors import ProtocolError
from netlab.protocols.zds import DEADLINE_S, RECV_BUF, Code

FD_SPACE = socket.CMSG_SPACE(array.array("i", [0]).itemsize)  # room for exactly one fd


def _fds_of(anc: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            a = array.array("i")
            a.frombytes(data[: len(data) - len(data) % a.itemsize])
            fds += list(a)
    return fds


def _check(data: bytes, anc: list, flags: int) -> tuple[bytes, list[int]]:
    fds = _fds_of(anc)
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        for fd in fds:
            os.close(fd)
        raise ProtocolError("ZDS: truncated message (data over 1024 bytes or more than one fd)",
                            code=Code.TRUNCATED)
    if not data and not fds:
        raise ProtocolError("ZDS: connection closed by peer", code=Code.CLOSED)
    return data, fds


def recv_msg(sock: socket.socket, timeout: float | None = DEADLINE_S) -> tuple[bytes, list[int]]:
    """One datagram and its fds (blocking, with deadline); EOF, truncation or timeout raise."""
    sock.settimeout(timeout)
    try:
        data, anc, flags, _ = sock.recvmsg(RECV_BUF, FD_SPACE, socket.MSG_CMSG_CLOEXEC)
    except TimeoutError:
        raise ProtocolError("ZDS: no message within the deadline", code=Code.TIMEOUT) from None
    return _check(data, anc, flags)


def send_msg(sock: socket.socket, data: bytes, fds: tuple[int, ...] = (), timeout: float = DEADLINE_S) -> None:
    sock.settimeout(timeout)
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    try:
        sock.sendmsg([data], anc)
    except TimeoutError:
        raise ProtocolError("ZDS: send deadline exceeded", code=Code.TIMEOUT) from None


async def _wait_fd(sock: socket.socket, write: bool, timeout: float | None) -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    fd = sock.fileno()
    (loop.add_writer if write else loop.add_reader)(fd, ready)
    try:
        await asyncio.wait_for(fut, timeout)
    except TimeoutError:
        raise ProtocolError("ZDS: deadline exceeded", code=Code.TIMEOUT) from None
    finally:
        (loop.remove_writer if write else loop.remove_reader)(fd)


async def arecv_msg(sock: socket.socket, timeout: float | None = None) -> tuple[bytes, list[int]]:
    """:func:`recv_msg` for a non-blocking socket in asyncio (ztunnel's side)."""
    while True:
        try:
            data, anc, flags, _ = sock.recvmsg(RECV_BUF, FD_SPACE, socket.MSG_CMSG_CLOEXEC)
        except (BlockingIOError, InterruptedError):
            await _wait_fd(sock, False, timeout)
            continue
        return _check(data, anc, flags)


async def asend_msg(sock: socket.socket, data: bytes, fds: tuple[int, ...] = (),
                    timeout: float = DEADLINE_S) -> None:
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    while True:
        try:
            sock.sendmsg([data], anc)
            return
        except (BlockingIOError, InterruptedError):
            await _wait_fd(sock, True, timeout)


