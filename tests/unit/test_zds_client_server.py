"""netlab's two ends of ZDS talking over a real unix socket, without root.

The agent's :class:`~netlab.runtime.cniagent.zds_server.ZdsServer` and ztunnel's
:func:`~netlab.runtime.ztunnel.zds_client.run` exchange this process's own netns fd (any
process may open ``/proc/self/ns/net``), so the whole protocol runs here: backoff connect,
snapshot, nack and retry, add/del, reconnect, and no fd left behind.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
from pathlib import Path

from netlab.protocols import zds
from netlab.runtime.cniagent import zds_server
from netlab.runtime.ztunnel import zds_client


def _fds() -> int:
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


class FakePodManager:
    """Records what ztunnel's pod manager would be asked; fails the first add of 'flaky'."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.flaky_failures = 1

    async def add_workload(self, uid: str, netns_fd: int, info) -> None:
        if uid == "flaky" and self.flaky_failures:
            self.flaky_failures -= 1
            raise OSError(98, "Address already in use")
        self.calls.append(("add", uid, os.fstat(netns_fd).st_ino, info.name))

    async def del_workload(self, uid: str) -> None:
        self.calls.append(("del", uid))

    async def drain_except(self, uids: set[str]) -> None:
        self.calls.append(("drain_except", tuple(sorted(uids))))


def test_zds_client_against_the_agent_server(tmp_path: Path) -> None:
    """netlab's ztunnel-side client: backoff connect, snapshot, nack+retry, add/del, reconnect."""
    before = _fds()
    path = str(tmp_path / "zds.sock")
    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    info = zds.WorkloadInfo("a", "default", "a", "cluster.local")
    items = [zds_server.SnapshotItem("a", own, info), zds_server.SnapshotItem("flaky", own, info), zds_server.SnapshotItem("k", None, None)]
    pm = FakePodManager()
    loop = asyncio.new_event_loop()
    task = loop.create_task(zds_client.run(path, pm))
    th = threading.Thread(target=loop.run_forever, daemon=True)
    th.start()

    def wait_for(pred, timeout=15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return
            time.sleep(0.01)
        raise AssertionError(pm.calls)

    server = zds_server.ZdsServer(path, lambda: items)
    try:
        time.sleep(0.2)  # the client is retrying (ENOENT) with backoff meanwhile
        server.start()
        wait_for(lambda: ("drain_except", ("a", "flaky", "k")) in pm.calls)
        ino = os.fstat(own).st_ino
        assert pm.calls[0] == ("add", "a", ino, "a")
        assert server.add_workload("b", own, zds.WorkloadInfo("b", "default", "b")) == ""
        assert ("add", "b", ino, "b") in pm.calls
        assert server.del_workload("b") == []
        assert pm.calls[-1] == ("del", "b")
        wait_for(lambda: ("add", "flaky", ino, "a") in pm.calls, timeout=12)  # retried after 5 s
        server.close()
        server = zds_server.ZdsServer(path, lambda: items[:1])  # a restarted agent: new snapshot, drain the rest
        server.start()
        wait_for(lambda: pm.calls[-1] == ("drain_except", ("a",)))
    finally:
        server.close()
        loop.call_soon_threadsafe(task.cancel)
        time.sleep(0.1)
        loop.call_soon_threadsafe(loop.stop)
        th.join(5)
        os.close(own)
    loop.close()
    # every netns fd received over SCM_RIGHTS (six adds, one retried) was closed again
    assert _fds() == before, sorted(set(os.listdir("/proc/self/fd")))
