"""ztunnel's side of ZDS: receive pods (netns fds) from the node's CNI agent, drive the pod manager.

``run(socket_path, pod_manager)`` never returns on its own: it connects (backoff from 10 ms,
doubling, capped at 15 s, as ztunnel's ``inpod`` workload-proxy manager does), says hello,
takes the snapshot and then steady-state requests, acking each one, and reconnects after
any error. The pod manager owns the listeners; this module only translates:

* ``AddWorkload`` -> ``await pod_manager.add_workload(uid, netns_fd, info)`` (the manager
  dups the fd it keeps; the received fd is closed here right after);
* ``KeepWorkload`` -> nothing but remembering the uid for the snapshot;
* ``SnapshotSent`` -> ``pod_manager.drain_except(uids)``;
* ``DelWorkload`` -> ``await pod_manager.del_workload(uid)``.

A proxy that fails to start (``OSError``: ports taken, setns refused) is nacked, the
connection stays up, and the pod is retried every 5 s; any other failure is nacked and the
connection is dropped and re-made (ztunnel's ``src/inpod`` workload-proxy manager).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import socket
from typing import Any

from netlab.errors import ProtocolError
from netlab.linux import seqpacket
from netlab.protocols import zds
from netlab.protocols.zds import WorkloadInfo

log = logging.getLogger(__name__)

BACKOFF_START_S = 0.010
BACKOFF_MAX_S = 15.0
RETRY_PENDING_S = 5.0


def to_info(info: WorkloadInfo | None) -> WorkloadInfo:
    """The pod's ``WorkloadInfo`` as received; none sent (Istio 1.21) -> empty names.

    An empty ``trust_domain`` (not sent: 1.21, 1.23+) stays empty: ztunnel then uses its own
    configured trust domain (the registry's) for the pod's identity, as Istio's ztunnel does.
    """
    return info if info is not None else WorkloadInfo("", "", "")


async def _maybe_await(x: Any) -> Any:
    return await x if inspect.isawaitable(x) else x


def connect(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        s.connect(path)
    except OSError:
        s.close()
        raise
    s.setblocking(False)
    return s


class _Session:
    """One connection's worth of ZDS, ztunnel side (the driver of :class:`zds.ZtunnelConn`)."""

    def __init__(self, sock: socket.socket, pod_manager: Any) -> None:
        self.sock = sock
        self.pm = pod_manager
        self.core = zds.ZtunnelConn(log)
        self.pending: dict[str, tuple[int, Any]] = {}  # uid -> (dup'd netns fd, info) to retry

    async def flush(self) -> None:
        for data, fds in self.core.data_to_send():
            await seqpacket.asend_msg(self.sock, data, fds)

    async def run(self) -> None:
        self.core.hello()
        await self.flush()
        try:
            while True:
                timeout = RETRY_PENDING_S if self.pending else None
                try:
                    data, fds = await seqpacket.arecv_msg(self.sock, timeout)
                except ProtocolError as e:
                    if e.code == zds.Code.TIMEOUT:
                        await self.retry_pending()
                        continue
                    raise
                try:
                    events = self.core.receive_data(data, fds)
                except ProtocolError:
                    for fd in fds:
                        os.close(fd)
                    raise
                for ev in events:
                    await self.handle(ev)
                await self.flush()
        finally:
            for fd, _ in self.pending.values():
                os.close(fd)
            self.pending.clear()

    async def handle(self, ev: zds.Event) -> None:
        if isinstance(ev, zds.AddReceived):
            try:
                old = self.pending.pop(ev.uid, None)
                if old:
                    os.close(old[0])
                info = to_info(ev.info)
                try:
                    await self.pm.add_workload(ev.uid, ev.fd, info)
                except OSError as e:  # proxy start failure: nack, stay, retry later
                    log.warning("pod %s: proxy did not start: %s (will retry)", ev.uid, e)
                    self.pending[ev.uid] = (os.dup(ev.fd), info)
                    self.core.ack(f"failed to start proxy: {e}")
                    return
                except Exception as e:
                    self.core.ack(f"failed to add workload: {e}")
                    await self.flush()
                    raise ProtocolError(f"ZDS: add {ev.uid} failed: {e}", code=zds.Code.NACK) from e
                log.info("pod %s received (%s/%s)", ev.uid, info.namespace, info.name)
                self.core.ack()
            finally:
                os.close(ev.fd)
        elif isinstance(ev, zds.KeepReceived):
            self.core.ack()
        elif isinstance(ev, zds.SnapshotReceived):
            keep = set(ev.uids)
            await _maybe_await(self.pm.drain_except(keep))
            log.info("snapshot received: %d pods", len(keep))
            self.core.ack()
        elif isinstance(ev, zds.DelReceived):
            old = self.pending.pop(ev.uid, None)
            if old:
                os.close(old[0])
            try:
                await self.pm.del_workload(ev.uid)
            except Exception as e:
                self.core.ack(f"failed to delete workload: {e}")
                await self.flush()
                raise ProtocolError(f"ZDS: del {ev.uid} failed: {e}", code=zds.Code.NACK) from e
            log.info("pod %s deleted", ev.uid)
            self.core.ack()

    async def retry_pending(self) -> None:
        for uid, (fd, info) in sorted(self.pending.items()):
            try:
                await self.pm.add_workload(uid, fd, info)
            except OSError as e:
                log.warning("pod %s: retry failed: %s", uid, e)
                continue
            del self.pending[uid]
            os.close(fd)
            log.info("pod %s: proxy started on retry", uid)


async def run(socket_path: str, pod_manager: Any) -> None:
    """Serve ZDS for ``pod_manager`` until cancelled, reconnecting after any error.

    ``pod_manager`` needs ``async add_workload(uid, netns_fd, info)``, ``async
    del_workload(uid)`` and ``drain_except(uids)`` (sync or async).
    """
    backoff = BACKOFF_START_S
    while True:
        try:
            sock = connect(socket_path)
        except OSError as e:
            log.debug("ZDS connect %s: %s (retry in %.3fs)", socket_path, e.strerror, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)
            continue
        log.info("ZDS connected to %s", socket_path)
        backoff = BACKOFF_START_S
        try:
            await _Session(sock, pod_manager).run()
        except (ProtocolError, OSError) as e:
            log.warning("ZDS connection lost: %s", e)
        finally:
            with contextlib.suppress(OSError):
                sock.close()
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, BACKOFF_MAX_S)
