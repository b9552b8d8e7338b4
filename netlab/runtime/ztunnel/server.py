"""The ztunnel process: its listener sets, metrics (15020), readiness (15021), registry
reload, certificate rotation, and in in-pod mode the ZDS client feeding the pod manager.

In node-routing one :class:`~netlab.runtime.ztunnel.listeners.ListenerSet` serves the node;
in in-pod mode the :class:`~netlab.runtime.ztunnel.podmanager.PodManager` opens one per pod
as ZDS hands pods over.

``python -m netlab.runtime.ztunnel --config PATH`` (:func:`main`) runs one ztunnel until
SIGTERM/SIGINT.

Access lines go to ``access_log`` (line-buffered; null = stdout), everything else to stderr.
The log level (both streams) is ``--log-level``, else ``debug`` with ``-v``, else the config's
``log_level`` (default ``info``); at ``debug`` the access log also has ``connection opened``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import h2

from netlab.errors import NetlabError
from netlab.linux import malloc
from netlab.runtime.ready import notify_ready
from netlab.runtime.tasks import create_task
from netlab.runtime.ztunnel import certs, h2lean, zds_client
from netlab.runtime.ztunnel.accesslog import LEVELS, AccessLog
from netlab.runtime.ztunnel.config import Config
from netlab.runtime.ztunnel.listeners import ListenerSet
from netlab.runtime.ztunnel.metrics import Metrics
from netlab.runtime.ztunnel.podmanager import PodManager
from netlab.runtime.ztunnel.proxy import Proxy, Scope
from netlab.runtime.ztunnel.registry import Registry
from netlab.runtime.ztunnel.sockets import NodeSocketFactory
from netlab.runtime.ztunnel.tls import Contexts
from netlab.runtime.ztunnel.watch import FileWatch

log = logging.getLogger(__name__)


async def _http_responder(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          route: Callable[[str], tuple[int, str]]) -> None:
    try:
        line = await asyncio.wait_for(reader.readline(), 5)
        parts = line.decode("latin-1").split()
        path = parts[1] if len(parts) >= 2 else "/"
        while await asyncio.wait_for(reader.readline(), 5) not in (b"\r\n", b"\n", b""):
            pass
        status, body = route(path)
        reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}.get(status, "")
        data = body.encode()
        writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; version=0.0.4\r\n"
                     f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
        await writer.drain()
    except (TimeoutError, OSError, UnicodeError):
        pass
    finally:
        writer.close()


class Ztunnel:
    """One ztunnel process (node-routing: one listener set for the node)."""

    def __init__(self, config: Config, access_log: AccessLog) -> None:
        self.config = config
        self.registry = Registry.load(config.registry)
        self.contexts = Contexts(config.certs_dir, config.trust_domain, cert_ttl=config.cert_ttl_seconds)
        self.metrics = Metrics()
        self.proxy = Proxy(node=config.node, mode=config.mode, registry=self.registry, contexts=self.contexts,
                           access_log=access_log, metrics=self.metrics)
        self.node_set: ListenerSet | None = None
        self.pod_manager: PodManager | None = None
        self.ready = False
        self._servers: list[asyncio.AbstractServer] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self._ensure_certs()

    def _ensure_certs(self) -> None:
        """The lab's SVID files (for clients outside ztunnel), then ztunnel's own in-memory
        SVIDs for this node's workloads (others are issued on first use); those of identities
        gone from the registry (and from the pods served in-pod) are dropped."""
        ids = [self.registry.identity(w) for w in self.registry.workloads.values()]
        certs.ensure_identities(self.config.certs_dir, ids)
        keep = set(ids)
        if self.pod_manager is not None:
            keep |= self.pod_manager.identities()
        self.contexts.retain(keep)
        self.contexts.prefetch(sorted({self.registry.identity(w) for w in self.registry.workloads.values()
                                       if w.node == self.config.node}))

    def _route(self, path: str) -> tuple[int, str]:
        if path.startswith("/healthz/ready"):
            return (200, "ready\n") if self.ready else (503, "not ready\n")
        if path in ("/metrics", "/stats/prometheus"):
            return 200, self.metrics.render([("netlab_ztunnel_cert_rotations_total",
                                              "Workload certificates renewed before expiry", self.contexts.rotations)])
        return 404, "not found\n"

    async def start(self) -> None:
        cfg = self.config
        for port in (cfg.metrics_port, cfg.readiness_port):
            srv = await asyncio.start_server(lambda r, w: _http_responder(r, w, self._route), "0.0.0.0", port,
                                             reuse_address=True)
            self._servers.append(srv)
        if cfg.mode == "node-routing":
            scope = Scope(factory=NodeSocketFactory(mark=cfg.mark), workload_uid=None, spoof_outbound=True)
            self.node_set = ListenerSet(self.proxy, scope, f"node {cfg.node}")
            self.node_set.open()
            self.node_set.start()
        else:
            self.pod_manager = PodManager(self.proxy)
            if cfg.zds_socket:
                self._tasks.append(create_task(self._run_zds(cfg.zds_socket), name="zds client"))
        self._tasks.append(create_task(self._housekeeping(), name="ztunnel housekeeping"))
        self._tasks.append(create_task(self._watch_registry(), name="ztunnel registry watch"))
        self._tasks.append(create_task(self._rotate_certs(), name="ztunnel certificate rotation"))
        self.ready = True
        log.info("ztunnel %s ready (mode %s, pid %d, HTTP/2: h2 %s, lean DATA path %s)", cfg.node, cfg.mode,
                 os.getpid(), h2.__version__, "on" if h2lean.lean_path_ok() else "off")
        notify_ready()

    async def _run_zds(self, path: str) -> None:
        try:
            await zds_client.run(path, self.pod_manager)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("ZDS client stopped")

    def _reload_registry(self) -> None:
        try:
            if self.registry.reload():
                self._ensure_certs()
        except Exception:  # keep serving with the old registry
            log.exception("registry reload failed")

    async def _watch_registry(self) -> None:
        """Reload as soon as the registry file is replaced, as istiod pushes a change (the 1 s
        poll in housekeeping alone made every enroll wait up to a second for ztunnel to see it)."""
        try:
            w = FileWatch(self.config.registry)
        except OSError as e:
            log.warning("registry watch unavailable (%s): reloading once a second", e)
            return
        try:
            while True:
                await w.changed()
                self._reload_registry()
        finally:
            w.close()

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self._reload_registry()
            self.proxy.pool.reap()

    async def _rotate_certs(self) -> None:
        """Renew each SVID half-way through its lifetime, as ztunnel does.

        Sleeps until the earliest renewal, waking at least every quarter TTL (at most 60 s) to
        see SVIDs issued meanwhile: a new one is then renewed by 3/4 of its lifetime at worst.
        """
        poll = min(60.0, self.contexts.cert_ttl / 4)
        while True:
            nxt = self.contexts.next_refresh()
            delay = poll if nxt is None else (nxt - dt.datetime.now(dt.UTC)).total_seconds() + 0.01
            await asyncio.sleep(min(max(delay, 0.0), poll))
            try:
                await self.contexts.rotate_due()
            except Exception:  # keep serving with the current certificates; retry shortly
                log.exception("certificate rotation failed")
                await asyncio.sleep(min(1.0, poll))

    def stop(self) -> None:
        self._stop.set()

    async def wait(self) -> None:
        await self._stop.wait()

    async def close(self) -> None:
        self.ready = False
        for t in self._tasks:
            t.cancel()
        for srv in self._servers:
            srv.close()
        if self.node_set is not None:
            await self.node_set.close()
        if self.pod_manager is not None:
            await self.pod_manager.close()
        self.proxy.pool.close()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2)


_PY_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}


async def _main(cfg: Config, access: AccessLog) -> None:
    zt = Ztunnel(cfg, access)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, zt.stop)
    await zt.start()
    try:
        await zt.wait()
    finally:
        log.info("ztunnel %s stopping", cfg.node)
        await zt.close()


def run(coro: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop when it is installed (compiled transports and TLS: less CPU per message,
    hence lower latency), else on asyncio's own loop. ``NETLAB_ZT_LOOP=asyncio`` forces the latter."""
    if os.environ.get("NETLAB_ZT_LOOP", "") != "asyncio":
        try:
            # Imported here: uvloop is optional (a compiled extension that may be absent on
            # the host); without it ztunnel runs on asyncio's own loop.
            import uvloop
        except ImportError:
            log.debug("uvloop not installed: running on asyncio's event loop")
        else:
            uvloop.run(coro)
            return
    asyncio.run(coro)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m netlab.runtime.ztunnel")
    ap.add_argument("--config", required=True, help="ztunnel config JSON")
    ap.add_argument("-v", "--verbose", action="store_true", help="same as --log-level debug")
    ap.add_argument("--log-level", choices=LEVELS, help="overrides the config's log_level (default info)")
    args = ap.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    malloc.tune_for_bulk()  # bulk relaying: keep the heap's top instead of brk() churn per read
    try:
        cfg = Config.load(args.config)
        level = args.log_level or ("debug" if args.verbose else cfg.log_level)
        logging.getLogger().setLevel(_PY_LEVELS[level])
        stream = open(cfg.access_log, "a", buffering=1, encoding="utf-8") if cfg.access_log else sys.stdout
        run(_main(cfg, AccessLog(stream, level)))
    except NetlabError as e:
        print(f"ztunnel: {e.message}", file=sys.stderr)
        return e.exit_code
    except OSError as e:
        print(f"ztunnel: {e}", file=sys.stderr)
        return 1
    return 0
