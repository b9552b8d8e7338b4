"""The in-pod design's per-node CNI agent (istio-cni's node agent, Istio 1.21+).

``python -m netlab.runtime.cniagent --lab LAB --node NODE --config PATH``, started by the
supervisor in the node's netns. What it does, in istio-cni's order (``cni/pkg/nodeagent``):

1. at start, the node's probe rules: ipset ``istio-inpod-probes[-v4]`` and the nat
   ``ISTIO_POSTRT`` SNAT (``CreateHostRulesForHealthChecks``), stale set entries pruned;
2. for every ambient pod of the node (``AddPodToMesh``): its IP into the probe set, then
   inside its netns the table-100 local route, ip rule 32764 and ``iptables-restore
   --noflush`` (:mod:`netlab.plan.inpod` renders all of it), and an open netns fd kept;
3. ZDS on ``<state>/sockets/ztunnel-<node>.sock``: a snapshot to every ztunnel that
   connects, ``AddWorkload``/``DelWorkload`` later (:mod:`netlab.protocols.zds`);
4. the plugin socket ``<state>/sockets/cni-<node>.sock`` (JSON lines, in place of istio's
   HTTP ``pluginevent.sock``): ``{"op": "add"|"del", "pod": NAME}`` enrolls or unenrolls a
   running pod (``netlab enroll`` / ``unenroll``), ``{"op": "status"}`` reports.

Everything is idempotent: a restarted agent finds the rules it (or a previous agent) made by
reading ``iptables-save``, keeps exact ones, and replaces drifted ones; ztunnel ignores an
``AddWorkload`` for a uid it already serves from the same netns inode. On SIGTERM it stops
serving and removes the host rules and the probe set (``DeleteHostRules``); pod rules stay,
as in Istio. Run-time enrollment changes are kept in ``<state>/cni-<node>.enrolled.json`` so
a restarted agent serves the same pods.

It never touches the root netns: it runs in the node netns, and enters pod netns only per
thread (``netlab.linux.nsenter``) or through per-netns sockets and ``nsenter`` child processes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from netlab import names
from netlab.apply import iptables
from netlab.apply.ipset import add_entry, apply_ipset, del_entry, open_ipset
from netlab.apply.netlink import NetnsLinks
from netlab.apply.nlbatch import RtnlBatch
from netlab.linux import jsonline, nsenter
from netlab.linux.files import write_atomic
from netlab.plan import inpod
from netlab.plan.objects import IpsetSet, Plan
from netlab.protocols.zds import WorkloadInfo
from netlab.runtime.cniagent.config import AgentConfig, PodEntry
from netlab.runtime.cniagent.zds_server import SnapshotItem, ZdsServer
from netlab.runtime.ready import notify_ready

log = logging.getLogger(__name__)
PLUGIN_TIMEOUT_S = 10.0


# -- config (written by the lab when it starts the agent, read by the agent) -----------------


def config_path(state_dir: str, node: str) -> str:
    return os.path.join(state_dir, f"cni-{node}.json")


def write_config(plan: Plan, node: str, state_dir: str) -> str:
    """Write ``<state_dir>/cni-<node>.json`` for the agent of ``node``; returns its path.

    Pods of the node with their name, namespace, uid, ip, netns, ambient flag and service
    account come from the plan's registry (the topology as ztunnel sees it).
    """
    pods = sorted((PodEntry(name=w.name, namespace=w.namespace, uid=w.pod_uid, ip=w.ip,
                            netns=names.netns(plan.lab, w.name), ambient=w.hbone, service_account=w.service_account)
                   for w in plan.registry.workloads if w.node == node), key=lambda p: p.name)
    cfg = AgentConfig(
        lab=plan.lab, node=node, version=plan.istio_version or inpod.VERSIONS[1], dns=False,
        node_netns=names.netns(plan.lab, node), zds_socket=names.zds_socket(state_dir, node),
        plugin_socket=names.cni_socket(state_dir, node),
        enrolled_file=os.path.join(state_dir, f"cni-{node}.enrolled.json"),
        trust_domain=plan.registry.trust_domain, pods=tuple(pods))
    os.makedirs(names.sockets_dir(state_dir), exist_ok=True)
    path = config_path(state_dir, node)
    write_atomic(path, cfg.to_json())
    return path


# -- plugin socket client --------------------------------------------------------------------


def plugin_event(socket_path: str, op: str, pod: str, timeout: float = PLUGIN_TIMEOUT_S) -> dict:
    """Ask the node's agent to enroll (``op="add"``) or unenroll (``"del"``) ``pod``; its reply.

    The reply is ``{"ok": true, "pod", "uid", "enrolled", "zds", "seconds"}`` or
    ``{"ok": false, "error": "..."}``. Raises ``OSError`` if the agent cannot be reached.
    """
    return jsonline.request(socket_path, {"op": op, "pod": pod}, timeout)


# -- the agent -------------------------------------------------------------------------------


class Agent:
    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.version = inpod.check_version(cfg.version)
        self.dns = cfg.dns
        self.node_ns = cfg.node_netns
        self.pods = {p.name: p for p in cfg.pods}
        self.fds: dict[str, int] = {}  # uid -> open netns fd of each enrolled pod (the netns cache)
        self.enrolled: set[str] = set()  # pod names
        self.lock = threading.RLock()  # netns cache, ipset socket, enrolled set
        self._pod_locks: dict[str, threading.Lock] = {}  # one enroll/unenroll at a time per pod
        self.stopping = threading.Event()
        self.zds: ZdsServer | None = None
        self._plugin: socket.socket | None = None
        self._ipset: Any = None

    # ---- host rules (the node's probe SNAT: ``CreateHostRulesForHealthChecks``)

    def _ipset_handle(self) -> Any:
        if self._ipset is None:
            self._ipset = open_ipset(self.node_ns)
        return self._ipset

    def _set_members(self, name: str) -> set[str]:
        ips: set[str] = set()
        for msg in self._ipset_handle().list(name):
            adt = msg.get_attr("IPSET_ATTR_ADT")
            for data in adt.get_attrs("IPSET_ATTR_DATA") if adt else ():
                ipf = data.get_attr("IPSET_ATTR_IP_FROM")
                ip = ipf.get_attr("IPSET_ATTR_IPADDR_IPV4") if ipf else None
                if ip:
                    ips.add(ip)
        return ips

    def host_rules(self, startup_ips: set[str]) -> None:
        name = inpod.probe_ipset(self.version)
        apply_ipset(self.node_ns, IpsetSet(self.node_ns, name))
        for ip in sorted(self._set_members(name) - startup_ips):
            log.info("Removing stale IP %s from ipset %s", ip, name)
            del_entry(self._ipset_handle(), name, ip)
        saved = iptables.save(self.node_ns)
        have = inpod.saved_chains(saved, (inpod.POSTRT,))
        if have == inpod.wanted_host_chains(self.version):
            log.info("host rules already in place (nat %s)", inpod.POSTRT)
            return
        if have:
            iptables.restore(self.node_ns, inpod.teardown_text_for(saved, (inpod.POSTRT,)), noflush=True)
        iptables.restore(self.node_ns, inpod.host_iptables_text(self.version), noflush=True)
        log.info("created host rules: nat %s SNAT to %s for ipset %s", inpod.POSTRT, inpod.PROBE_SNAT_IP, name)

    def delete_host_rules(self) -> None:
        try:
            saved = iptables.save(self.node_ns)
            text = inpod.teardown_text_for(saved, (inpod.POSTRT,))
            if text:
                iptables.restore(self.node_ns, text, noflush=True)
            ips = self._ipset_handle()
            name = inpod.probe_ipset(self.version)
            with contextlib.suppress(Exception):
                ips.flush(name)
            with contextlib.suppress(Exception):
                ips.destroy(name)
            log.info("deleted host rules and ipset %s", name)
        except Exception as e:  # stopping: report, never hang
            log.warning("deleting host rules: %s", e)

    # ---- pod rules (``CreateInpodRules`` / ``DeleteInpodRules``)

    def pod_rules(self, p: PodEntry) -> str:
        """Make the in-pod rules, reusing exact ones; returns what was done."""
        routes, rules, text = inpod.pod_objects(p.netns, self.version, dns=self.dns)
        nl = RtnlBatch(p.netns)  # a raw netlink socket: no pyroute2 request machinery per pod
        try:
            nl.refresh_index()
            for r in routes:
                nl.add_route(r)
            nl.commit()
            for ru in rules:
                nl.add_rule(ru)
            nl.commit()
        finally:
            nl.close()
        saved = iptables.save(p.netns)
        have = inpod.saved_chains(saved, (inpod.PRERT, inpod.OUTPUT))
        if have == inpod.wanted_chains(self.version, self.dns):
            return "kept"
        if have:
            iptables.restore(p.netns, inpod.teardown_text_for(saved), noflush=True)
        iptables.restore(p.netns, text, noflush=True)
        return "replaced" if have else "created"

    def delete_pod_rules(self, p: PodEntry) -> None:
        """``DeleteInpodRules``: jumps, chains, then ip rule 32764 and the table-100 route."""
        text = inpod.teardown_text_for(iptables.save(p.netns))
        if text:
            iptables.restore(p.netns, text, noflush=True)
        with NetnsLinks(p.netns) as nl:
            nl.del_rule(inpod.RULE_PRIORITY)
            for r in inpod.pod_routes(p.netns):
                nl.del_route(r)

    def info(self, p: PodEntry) -> WorkloadInfo | None:
        if not inpod.sends_workload_info(self.version):
            return None
        td = self.cfg.trust_domain if inpod.sends_trust_domain(self.version) else ""
        return WorkloadInfo(p.name, p.namespace, p.service_account, td)

    # ---- enrollment (``AddPodToMesh`` / ``RemovePodFromMesh``)

    def _pod_lock(self, name: str) -> threading.Lock:
        with self.lock:
            return self._pod_locks.setdefault(name, threading.Lock())

    def enroll(self, p: PodEntry, *, notify: bool = True) -> dict:
        """``AddPodToMesh``: netns cache, probe ipset, in-pod rules, then ZDS ``AddWorkload``."""
        t0 = time.monotonic()
        ref = f"'{p.name}/{p.namespace}' ({p.uid})"
        with self._pod_lock(p.name):
            with self.lock:
                if p.uid not in self.fds:
                    self.fds[p.uid] = nsenter.open_netns(p.netns)
                fd = self.fds[p.uid]
                log.info("Adding pod %s to ipset", ref)
                add_entry(self._ipset_handle(), inpod.probe_ipset(self.version), p.ip, p.uid, ns=self.node_ns)
            done = self.pod_rules(p)  # kernel work in the pod netns: pods proceed in parallel
            log.info("in-pod rules %s for pod %s (netns %s)", done, ref, p.netns)
            with self.lock:
                self.enrolled.add(p.name)
                if notify:  # at start-up the whole set is saved once, when every pod is done
                    self._save_enrolled()
            zds_result = "not sent"
            if notify and self.zds is not None:
                try:
                    err = self.zds.add_workload(p.uid, fd, self.info(p))
                    zds_result = f"nack: {err}" if err else "acked"
                except Exception as e:
                    zds_result = f"partial add: {e}"
                    log.warning("pod %s: partial add (rules stay): %s", ref, e)
        log.info("pod %s is enrolled in ambient (ztunnel: %s)", ref, zds_result)
        return {"ok": True, "pod": p.name, "uid": p.uid, "enrolled": True, "zds": zds_result, "rules": done,
                "seconds": round(time.monotonic() - t0, 4)}

    def unenroll(self, p: PodEntry) -> dict:
        """``RemovePodFromMesh``: in-pod rules off, out of the probe ipset, ZDS ``DelWorkload`` to all."""
        t0 = time.monotonic()
        ref = f"'{p.name}/{p.namespace}' ({p.uid})"
        with self._pod_lock(p.name):
            log.info("Removing pod %s from ambient", ref)
            self.delete_pod_rules(p)
            with self.lock:
                log.info("Removing pod %s from ipset", ref)
                del_entry(self._ipset_handle(), inpod.probe_ipset(self.version), p.ip)
                self.enrolled.discard(p.name)
                self._save_enrolled()
            errors = self.zds.del_workload(p.uid) if self.zds is not None else []
            with self.lock:
                fd = self.fds.pop(p.uid, None)
                if fd is not None:
                    os.close(fd)
        log.info("pod %s is removed from ambient", ref)
        return {"ok": True, "pod": p.name, "uid": p.uid, "enrolled": False,
                "zds": "; ".join(errors) if errors else "acked", "seconds": round(time.monotonic() - t0, 4)}

    def snapshot(self) -> list[SnapshotItem]:
        with self.lock:
            return [SnapshotItem(p.uid, self.fds.get(p.uid), self.info(p))
                    for p in sorted((self.pods[n] for n in self.enrolled), key=lambda p: p.name)]

    def _initial_enrolled(self) -> set[str]:
        path = self.cfg.enrolled_file
        if path and os.path.exists(path):
            with open(path) as f:
                return set(json.load(f)) & set(self.pods)
        return {n for n, p in self.pods.items() if p.ambient}

    def _save_enrolled(self) -> None:
        path = self.cfg.enrolled_file
        if path:
            write_atomic(path, json.dumps(sorted(self.enrolled)))

    # ---- plugin socket

    def handle(self, req: dict) -> dict:
        op, name = req.get("op"), req.get("pod")
        if op == "status":
            acked = self.zds.acked() if self.zds else set()
            return {"ok": True, "node": self.cfg.node, "version": self.version,
                    "enrolled": sorted(self.enrolled),
                    "mesh_ready": sorted(n for n in self.enrolled if self.pods[n].uid in acked),
                    "ztunnel_connections": self.zds.connections() if self.zds else 0}
        if op not in ("add", "del"):
            return {"ok": False, "error": f"unknown op {op!r} (add, del or status)"}
        p = self.pods.get(name or "")
        if p is None:
            return {"ok": False, "error": f"pod {name!r} is not on node {self.cfg.node}"}
        try:
            return self.enroll(p) if op == "add" else self.unenroll(p)
        except Exception as e:
            log.error("%s %s failed: %s", op, name, e)
            return {"ok": False, "pod": name, "error": str(e)}

    def _serve_plugin_conn(self, conn: socket.socket) -> None:
        with conn:
            try:
                jsonline.serve_one(conn, self.handle, PLUGIN_TIMEOUT_S)
            except OSError as e:
                log.warning("plugin connection: %s", e)

    def _serve_plugin(self) -> None:
        assert self._plugin is not None
        while not self.stopping.is_set():
            try:
                conn, _ = self._plugin.accept()
            except OSError:
                return
            threading.Thread(target=self._serve_plugin_conn, args=(conn,), name="plugin-conn", daemon=True).start()

    # ---- lifecycle

    def start(self) -> None:
        startup = self._initial_enrolled()
        self.host_rules({self.pods[n].ip for n in startup})
        with ThreadPoolExecutor(max_workers=8, thread_name_prefix="enroll") as ex:
            list(ex.map(lambda n: self.enroll(self.pods[n], notify=False), sorted(startup)))
        self.enrolled = set(startup)
        self._save_enrolled()
        self.zds = ZdsServer(self.cfg.zds_socket, self.snapshot)
        self.zds.start()
        path = self.cfg.plugin_socket
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        s.listen(64)
        self._plugin = s
        threading.Thread(target=self._serve_plugin, name="plugin-accept", daemon=True).start()
        log.info("cni agent ready: node %s, Istio %s, %d pods enrolled", self.cfg.node, self.version,
                 len(self.enrolled))

    def stop(self) -> None:
        self.stopping.set()
        if self._plugin is not None:
            with contextlib.suppress(OSError):
                self._plugin.shutdown(socket.SHUT_RDWR)
            self._plugin.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.cfg.plugin_socket)
        if self.zds is not None:
            self.zds.close()
        with self.lock:
            self.delete_host_rules()
            for fd in self.fds.values():
                os.close(fd)
            self.fds.clear()
            if self._ipset is not None:
                self._ipset.close()
                self._ipset = None
        log.info("cni agent stopped (pod rules left in place)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="netlab.runtime.cniagent", description=__doc__.splitlines()[0])
    ap.add_argument("--lab", required=True)
    ap.add_argument("--node", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s\t%(levelname)s\t%(name)s\t%(message)s")
    try:
        with open(a.config) as f:
            cfg = AgentConfig.from_json(f.read())
    except (OSError, ValueError) as e:
        log.error("config %s: %s", a.config, e)
        return 2
    if cfg.lab != a.lab or cfg.node != a.node:
        log.error("config %s is for %s/%s, not %s/%s", a.config, cfg.lab, cfg.node, a.lab, a.node)
        return 2
    agent = Agent(cfg)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        agent.start()
    except Exception as e:
        log.error("cni agent failed to start: %s", e)
        agent.stop()
        return 1
    notify_ready()
    while not stop.wait(1.0):
        pass
    agent.stop()
    return 0

