"""ztunnel sees a new registry at once (inotify on its directory), and never misses one."""

from __future__ import annotations

import asyncio
import json
import os

from netlab.runtime.ztunnel.registry import Registry
from netlab.runtime.ztunnel.watch import FileWatch


def _replace(path: str, text: str) -> None:
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def test_watch_wakes_on_replace_only_for_its_file(tmp_path) -> None:
    path = str(tmp_path / "registry.json")
    _replace(path, "{}")

    async def main() -> None:
        w = FileWatch(path)
        try:
            waiter = asyncio.ensure_future(w.changed())
            await asyncio.sleep(0.05)
            _replace(str(tmp_path / "lab.json"), "{}")  # a neighbour: no wake-up
            await asyncio.sleep(0.05)
            assert not waiter.done()
            _replace(path, "{}")
            _replace(path, "{}")  # two writes, one wake-up
            await asyncio.wait_for(waiter, 2)
            again = asyncio.ensure_future(w.changed())
            await asyncio.sleep(0.05)
            assert not again.done()
            with open(path, "w") as f:  # written in place (closed after writing) also counts
                f.write("{}")
            await asyncio.wait_for(again, 2)
        finally:
            w.close()

    asyncio.run(main())


def test_reload_sees_a_replacement_with_the_same_mtime(tmp_path) -> None:
    """Two writes within one timestamp tick: the new inode (or size) still tells them apart."""
    p = tmp_path / "registry.json"
    wl = {"uid": "default/a", "name": "a", "namespace": "default", "node": "n1", "ip": "10.244.1.7",
          "service_account": "a", "protocol": "TCP"}
    p.write_text(json.dumps({"workloads": [wl]}))
    os.utime(p, ns=(1, 1))
    r = Registry.load(str(p))
    assert not r.workloads["default/a"].hbone
    _replace(str(p), json.dumps({"workloads": [dict(wl, protocol="HBONE")]}))
    os.utime(p, ns=(1, 1))
    assert r.reload() and r.workloads["default/a"].hbone
    assert not r.reload()
