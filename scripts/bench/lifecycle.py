#!/usr/bin/env python3
"""Lab lifecycle benchmark: `up` until the mesh serves every pod, and `down`, for growing labs.

Pods are placed as Kubernetes places them: at most 110 per node (kubelet's default
``maxPods``), on as many nodes as that takes, so 1,000 pods run on 10 nodes (each node's pod
/24 holds them with room to spare). Every pod is an echo server (its own netns, veth and
process); one more pod, ``client`` on the first node, probes them.

The clock runs from the call to ``up`` until every pod has answered an HTTP request from the
client pod: through the mesh when meshed, since the client pod is in the mesh from the start
(in-pod: the bench first waits until ztunnel listens on 15001 inside the client pod's netns,
so no probe can go around it; node-routing: ``up`` adds the pod to ``ztunnel-pods-ips``
before it returns). A probe that fails is retried until it succeeds or ``--timeout``. ``up``'s
own return time is reported too: in-pod, the CNI agent and ztunnel may still be enrolling pods
then. With every probe connection still open (one per pod) the bench reads the ztunnels'
resident memory (VmRSS), and how often during the run the kernel's neighbour (ARP) table,
one for the whole machine, was full (``arp full``: packets dropped until entries age out;
see :func:`arp_table_fulls`). Each mode runs in turn for each size (``--rounds`` repeats the cycle);
``--mode none`` is the baseline. Prints a table and writes JSON (default
bench-results/lifecycle.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import socket
import sys
import tempfile
import time

import yaml

from netlab import names
from netlab.lab import lifecycle as lablib
from netlab.linux import nsenter
from netlab.runtime import supervisor
from netlab.topology.load import load_topology

MAX_PODS_PER_NODE = 110  # kubelet's default maxPods
PORT = 9080
ZT_OUTBOUND = 15001
ANSWER_TIMEOUT = 20.0


def topology(pods: int, name: str) -> dict:
    """``pods`` echo pods plus the client, at most 110 pods per node."""
    nodes = max(1, math.ceil((pods + 1) / MAX_PODS_PER_NODE))
    spec = []
    left = pods
    for i in range(nodes):
        room = MAX_PODS_PER_NODE - (1 if i == 0 else 0)
        n = min(room, math.ceil(left / (nodes - i)))
        if n:
            spec.append({"name": f"e{i + 1}", "node": f"node{i + 1}", "app": "echo", "replicas": n,
                         "labels": {"app": "echo"}})
        left -= n
    return {"name": name, "nodes": [{"name": f"node{i + 1}"} for i in range(nodes)],
            "namespaces": [{"name": "default", "labels": {"istio.io/dataplane-mode": "ambient"}}],
            "pods": [{"name": "client", "node": "node1", "app": "sleep", "labels": {"app": "client"}}, *spec],
            "services": [{"name": "echo", "selector": {"app": "echo"}, "ports": [PORT]}]}


def listening(ns: str, port: int) -> bool:
    """A LISTEN socket on ``port`` inside ``ns`` (sock_diag, as ``ss -lnt``)."""
    from pyroute2 import DiagSocket
    from pyroute2.netlink.diag import SS_LISTEN

    with nsenter.netns(ns):
        ds = DiagSocket()
    try:
        ds.bind()
        return any(m["idiag_sport"] == port
                   for m in ds.get_sock_stats(family=socket.AF_INET, states=1 << SS_LISTEN))
    finally:
        ds.close()


async def _probe(ns: str, ip: str, deadline: float, held: list[socket.socket]) -> None:
    """One HTTP request to ``ip`` from ``ns``, retried until answered; the socket is kept."""
    loop = asyncio.get_running_loop()
    req = f"GET / HTTP/1.1\r\nHost: {ip}\r\n\r\n".encode()
    while True:
        with nsenter.netns(ns):
            s = socket.socket()
        s.setblocking(False)
        try:
            # Wait for the answer rather than retry on a slow one: through the mesh the first
            # request to a pod waits for a new HBONE connection (TLS handshake), and on a busy
            # machine a short timeout would abandon handshakes over and over.
            await asyncio.wait_for(loop.sock_connect(s, (ip, PORT)), ANSWER_TIMEOUT)
            await loop.sock_sendall(s, req)
            data = b""
            while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _length(data):
                chunk = await asyncio.wait_for(loop.sock_recv(s, 65536), ANSWER_TIMEOUT)
                if not chunk:
                    raise ConnectionError("closed")
                data += chunk
            if not data.startswith(b"HTTP/1.1 200"):
                raise ConnectionError(data[:40].decode(errors="replace"))
            held.append(s)
            return
        except (TimeoutError, OSError):
            s.close()
            if time.monotonic() > deadline:
                raise TimeoutError(f"pod {ip} not served from {ns}") from None
            await asyncio.sleep(0.05)


def _length(data: bytes) -> int:
    head = data.partition(b"\r\n\r\n")[0].lower()
    return int(head.split(b"content-length:")[1].split(b"\r\n")[0]) if b"content-length:" in head else 0


async def _serve_all(ns: str, ips: list[str], timeout: float, held: list[socket.socket]) -> None:
    deadline = time.monotonic() + timeout
    sem = asyncio.Semaphore(64)

    async def one(ip: str) -> None:
        async with sem:
            await _probe(ns, ip, deadline, held)
    await asyncio.gather(*(one(ip) for ip in ips))


def arp_table_fulls() -> int:
    """How many times the kernel's IPv4 neighbour table was full (``/proc/net/stat/arp_cache``,
    summed over CPUs). The table is one for the whole machine, every netns included, and holds
    ``net.ipv4.neigh.default.gc_thresh3`` entries (1024 by default); a lab needs about two per
    pod it talks to (the node's entry for the pod, the pod's for its gateway), so at 1,000 pods
    new entries wait for old ones to age out and packets are dropped meanwhile."""
    with open("/proc/net/stat/arp_cache") as f:
        head = f.readline().split()
        col = head.index("table_fulls")
        return sum(int(ln.split()[col], 16) for ln in f if ln.strip())


def gc_thresh3() -> int | None:
    try:
        with open("/proc/sys/net/ipv4/neigh/default/gc_thresh3") as f:
            return int(f.read())
    except OSError:
        return None


def _cpu() -> tuple[int, int]:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v), v[3] + v[4]  # all, idle + iowait


def settle(limit: float = 60.0, busy: float = 0.25) -> float:
    """Wait until the CPUs are idle again (under ``busy`` for two seconds in a row): after
    ``down`` the kernel frees the lab's netns asynchronously (~10 s of one CPU at 1,000 pods),
    and the next mode's ``up`` must not be timed against that. Returns the seconds waited."""
    t0 = time.monotonic()
    calm = 0
    a = _cpu()
    while calm < 2 and time.monotonic() - t0 < limit:
        time.sleep(1.0)
        b = _cpu()
        calm = calm + 1 if (1 - (b[1] - a[1]) / max(1, b[0] - a[0])) < busy else 0
        a = b
    return round(time.monotonic() - t0, 1)


def ztunnel_rss_mb(lab: str) -> list[float]:
    out = []
    for p in supervisor.request(lab, {"op": "status"}, timeout=10)["processes"]:
        if p["name"].startswith("ztunnel/") and p["pid"]:
            with open(f"/proc/{p['pid']}/status") as f:
                kb = next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:"))
            out.append(round(kb / 1024, 1))
    return out


def measure(pods: int, mode: str, name: str, timeout: float, up_timeout: float | None = None) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(topology(pods, name), f)
        path = f.name
    held: list[socket.socket] = []
    try:
        topo = load_topology(path)
        client_ns = names.netns(name, "client")
        ips = [str(p.ip) for p in topo.pods if p.name != "client"]
        fulls0 = arp_table_fulls()
        t0 = time.monotonic()
        res = lablib.up(path, name=name, mode=mode, timeout=up_timeout)
        t_up = time.monotonic() - t0
        deadline = time.monotonic() + timeout
        if mode == "inpod":
            while not listening(client_ns, ZT_OUTBOUND):
                if time.monotonic() > deadline:
                    raise TimeoutError("the client pod was not enrolled in ztunnel")
                time.sleep(0.02)
        asyncio.run(_serve_all(client_ns, ips, max(1.0, deadline - time.monotonic()), held))
        t_served = time.monotonic() - t0
        fulls = arp_table_fulls() - fulls0
        rss = ztunnel_rss_mb(name) if mode != "none" else []
        for s in held:
            s.close()
        held.clear()
        t0 = time.monotonic()
        lablib.down(name)
        t_down = time.monotonic() - t0
    finally:
        for s in held:
            s.close()
        os.unlink(path)
        if name in lablib.known_labs():
            lablib.down(name)
    return {"pods": pods, "nodes": len(topo.nodes), "mode": mode, "up_return_s": round(t_up, 2),
            "up_serving_s": round(t_served, 2), "down_s": round(t_down, 2), "netns": res.netns,
            "processes": res.processes, "ztunnel_rss_mb": rss,
            "arp_table_fulls": fulls, "load_1min": round(os.getloadavg()[0], 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000", help="echo pod counts (comma separated); 110 pods per node")
    ap.add_argument("--modes", default="none,node-routing,inpod", help="modes to measure, in turn")
    ap.add_argument("--rounds", type=int, default=1, help="repeat the cycle of modes")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds until every pod must be served")
    ap.add_argument("--up-timeout", type=float, default=None,
                    help="seconds `up` may wait for the lab's processes (default: netlab's, 20 s + 0.1 s per process)")
    ap.add_argument("--name", default="bl", help="lab name (netns nl-NAME.*)")
    ap.add_argument("--json-out", default="bench-results/lifecycle.json")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("lifecycle bench needs root")
    sizes = [int(x) for x in a.sizes.split(",")]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < max(sizes) + 256:
        sys.exit(f"lifecycle bench keeps one connection per pod open: raise the open-files limit to at least "
                 f"{max(sizes) + 256} (ulimit -n)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    rows = []
    print(f"{'round':<6}{'mode':<14}{'pods':>6}{'nodes':>6}{'up returns s':>14}{'up serving s':>14}{'down s':>8}"
          f"{'ztunnel RSS MB max/sum':>24}{'arp full':>10}{'load':>6}")
    for rnd in range(a.rounds):
        for n in sizes:
            for mode in a.modes.split(","):
                waited = settle()
                r = measure(n, mode, a.name, a.timeout, a.up_timeout)
                r["settled_s"] = waited
                r["round"] = rnd + 1
                rows.append(r)
                rss = f"{max(r['ztunnel_rss_mb']):.0f}/{sum(r['ztunnel_rss_mb']):.0f}" if r["ztunnel_rss_mb"] else "-"
                print(f"{rnd + 1:<6}{mode:<14}{n:>6}{r['nodes']:>6}{r['up_return_s']:>14.2f}{r['up_serving_s']:>14.2f}"
                      f"{r['down_s']:>8.2f}{rss:>24}{r['arp_table_fulls']:>10}{r['load_1min']:>6}", flush=True)
    os.makedirs(os.path.dirname(a.json_out) or ".", exist_ok=True)
    with open(a.json_out, "w") as f:
        json.dump({"benchmark": "lifecycle", "cores": os.cpu_count(), "max_pods_per_node": MAX_PODS_PER_NODE,
                   "gc_thresh3": gc_thresh3(),
                   "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
