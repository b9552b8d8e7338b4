"""In-pod mode: one listener set per enrolled pod, inside the pod's netns (as ztunnel's ``src/inpod``).

The ZDS client (``netlab.runtime.ztunnel.zds_client``, another module) receives pod netns fds over
the ZDS socket and calls this API::

    await pm.add_workload(uid, netns_fd, WorkloadInfo(name, namespace, service_account))
    await pm.del_workload(uid)
    await pm.drain_except(uids)      # after a snapshot: drop pods the agent no longer knows
    pm.uids()

``add_workload`` dups the fd (the caller keeps and closes its own), creates the pod's
listeners 15001/15006/15008 in the pod netns (IP_TRANSPARENT, SO_REUSEPORT, SO_MARK 0x539,
backlog 128) and serves them; upstream sockets for the pod are created in its netns too.
``del_workload`` closes the listeners, every connection of the pod and the dup'd fd.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass

from netlab.protocols.zds import WorkloadInfo
from netlab.runtime.ztunnel.listeners import ListenerSet
from netlab.runtime.ztunnel.proxy import Proxy, Scope
from netlab.runtime.ztunnel.registry import Workload
from netlab.runtime.ztunnel.sockets import InpodSocketFactory

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Pod:
    uid: str
    fd: int
    inode: int
    info: WorkloadInfo
    listeners: ListenerSet


class PodManager:
    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self._pods: dict[str, _Pod] = {}
        self._lock = asyncio.Lock()

    def uids(self) -> set[str]:
        return set(self._pods)

    def identities(self) -> set[str]:
        """The identities of the pods served (as ZDS described them, registry entry or not)."""
        return {self.proxy.registry.identity(p.listeners.scope.fallback) for p in self._pods.values()
                if p.listeners.scope.fallback is not None}

    async def add_workload(self, uid: str, netns_fd: int, info: WorkloadInfo) -> None:
        """Start serving pod ``uid``; idempotent for the same netns inode, replaces on a new one.

        Raises OSError (e.g. the ports are taken, setns refused) with nothing left open.
        """
        inode = os.fstat(netns_fd).st_ino
        async with self._lock:
            old = self._pods.get(uid)
            if old is not None:
                if old.inode == inode:
                    return
                log.info("pod %s: new netns (inode %d -> %d), replacing", uid, old.inode, inode)
                await self._remove(uid)
            fd = os.dup(netns_fd)  # non-inheritable (O_CLOEXEC) per PEP 446
            try:
                factory = InpodSocketFactory(fd)
                wl = self.proxy.registry.workload_for_pod(uid, info.namespace, info.name)
                fallback = Workload(uid=uid, name=info.name, namespace=info.namespace, node=self.proxy.node, ip="",
                                    service_account=info.service_account, k8s_uid=uid)
                scope = Scope(factory=factory, workload_uid=wl.uid if wl is not None else uid,
                              spoof_outbound=False, fallback=fallback)
                ls = ListenerSet(self.proxy, scope, f"pod {uid}")
                ls.open()
            except BaseException:
                os.close(fd)
                raise
            ls.start()
            self._pods[uid] = _Pod(uid, fd, inode, info, ls)
            log.info("pod %s added (netns inode %d)", uid, inode)

    async def del_workload(self, uid: str) -> None:
        async with self._lock:
            await self._remove(uid)

    async def _remove(self, uid: str) -> None:
        pod = self._pods.pop(uid, None)
        if pod is None:
            return
        await pod.listeners.close()
        self.proxy.pool.close_scope(pod.listeners.scope.workload_uid or "")
        os.close(pod.fd)
        log.info("pod %s removed", uid)

    async def drain_except(self, uids: set[str]) -> None:
        async with self._lock:
            for uid in sorted(set(self._pods) - set(uids)):
                await self._remove(uid)

    async def close(self) -> None:
        async with self._lock:
            for uid in sorted(self._pods):
                await self._remove(uid)
