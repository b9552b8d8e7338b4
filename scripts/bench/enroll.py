#!/usr/bin/env python3
"""Enrollment benchmark: per-pod latency from "enroll this pod" to "ztunnel listeners ready".

Each size is a two-node lab of echo pods in a namespace *without* the ambient label, stood up
for real (root needed); then every pod is enrolled one after the other through the real code
path (``netlab.lab.enroll.set_enrollment``, what ``netlab enroll`` runs), and the clock
stops when the pod is served:

* **inpod**: the CNI agent has written the rules in the pod netns, ztunnel has acked the ZDS
  ``AddWorkload`` and 15001/15006/15008 are LISTENing inside the pod netns (sock_diag from a
  socket made in the pod netns, as ``ss -tln`` there would show);
* **node-routing**: the pod's IP is in the node's ipset ``ztunnel-pods-ips``, its table-100
  route is present, and every ztunnel of the lab has reloaded the registry (a new
  ``registry loaded`` line in its log) with the pod as HBONE.

Readiness is checked once the call has returned, so the figures include netlab's own
bookkeeping (the lab record and the registry file rewritten). Then every pod is unenrolled
the same way (the clock stops when the listeners are gone, or
the ipset member, route and registry reload are). With fewer than ``--min-samples`` pods the
enroll/unenroll cycle is repeated.

Baselines measured in the same run: a no-op enroll (the pod is already in the mesh: the CLI
path up to the point where work would start) and, per size, ``up`` of the same lab with
``--mode none`` (what creating the pods costs without any mesh), per pod.

Prints a table and writes JSON (default ``bench-results/enroll.json``). Goal: ≤ 50 ms per pod
(mean). "call" is the enroll call alone (it returns once the CNI agent has its ZDS ack, or
the node's ipset and route are in), "registry" the moment every ztunnel had reloaded.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

import yaml

from netlab import names
from netlab.lab import lifecycle as lablib
from netlab.lab.enroll import set_enrollment
from netlab.lab.state import load_record
from netlab.linux import nsenter

GOAL_MS = 50.0
ZT_PORTS = (15001, 15006, 15008)
POLL_S = 0.001
READY_TIMEOUT_S = 10.0


def topology(pods: int) -> dict:
    """``pods`` echo pods over two nodes, none of them in the mesh yet."""
    if pods == 1:
        groups = [("ea", "node1", 1)]
    else:
        groups = [("ea", "node1", pods // 2), ("eb", "node2", pods - pods // 2)]
    return {"name": "bench", "nodes": [{"name": "node1"}, {"name": "node2"}],
            "namespaces": [{"name": "default"}],
            "pods": [{"name": n, "node": node, "app": "echo", "replicas": r, "labels": {"app": "echo"}}
                     for n, node, r in groups],
            "services": [{"name": "echo", "selector": {"app": "echo"}, "ports": [9080]}]}


def pct(xs: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(xs)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def summary(xs: list[float]) -> dict:
    if not xs:
        return {}
    return {"n": len(xs), "mean": round(statistics.fmean(xs), 2), "p50": round(pct(xs, 50), 2),
            "p99": round(pct(xs, 99), 2), "max": round(max(xs), 2)}


def wait_for(pred: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not ready after {READY_TIMEOUT_S:.0f} s: {what}")
        time.sleep(POLL_S)


# -- what "ready" means, read from the kernel and from ztunnel -------------------------------


class Listeners:
    """LISTEN sockets on the ztunnel ports inside one pod netns, by port (sock_diag, as ``ss``).

    The netlink socket is made inside the pod netns once, before the clock starts; each
    check is then one dump of that netns' listening TCP sockets (~0.3 ms). /proc/net/tcp
    would walk every socket of the machine (~5 ms with a few hundred netns).
    """

    def __init__(self, ns: str) -> None:
        from pyroute2 import DiagSocket

        with nsenter.netns(ns):
            self.ds = DiagSocket()
        self.ds.bind()

    def count(self) -> dict[int, int]:
        from pyroute2.netlink.diag import SS_LISTEN

        got = dict.fromkeys(ZT_PORTS, 0)
        for m in self.ds.get_sock_stats(family=socket.AF_INET, states=1 << SS_LISTEN):
            if m["idiag_sport"] in got:
                got[m["idiag_sport"]] += 1
        return got

    def close(self) -> None:
        self.ds.close()


class ZtunnelLogs:
    """Counts ztunnel's ``registry loaded`` lines (one per reload) in each ztunnel log."""

    MARK = b"registry loaded"

    def __init__(self, lab: str, nodes: list[str]) -> None:
        d = os.path.join(names.state_dir(lab), "logs")
        self.paths = [os.path.join(d, f"ztunnel.{n}.log") for n in nodes]
        self.offsets = dict.fromkeys(self.paths, 0)
        self.counts = dict.fromkeys(self.paths, 0)
        self.poll()

    def poll(self) -> dict[str, int]:
        for p in self.paths:
            with open(p, "rb") as f:
                f.seek(self.offsets[p])
                data = f.read()
            cut = data.rfind(b"\n") + 1  # whole lines only
            self.counts[p] += data[:cut].count(self.MARK)
            self.offsets[p] += cut
        return dict(self.counts)


class NodeView:
    """ipset members and table-100 routes of the lab's nodes (node-routing)."""

    def __init__(self, lab: str, nodes: list[str]) -> None:
        from pyroute2 import IPRoute

        from netlab.apply.ipset import open_ipset

        self.ipr = {}
        self.ips = {}
        for n in nodes:
            ns = names.netns(lab, n)
            self.ipr[n] = IPRoute(netns=ns)
            self.ips[n] = open_ipset(ns)

    def in_ipset(self, node: str, ip: str) -> bool:
        from pyroute2.netlink.exceptions import NetlinkError

        try:
            return bool(self.ips[node].test("ztunnel-pods-ips", ip, etype="ip"))
        except NetlinkError:
            return False

    def has_route(self, node: str, ip: str) -> bool:
        """The node's FIB sends ``ip`` into the inbound tunnel: its table-100 route is there (rule
        103 looks up table 100 first). A route lookup is ~0.4 ms; dumping table 100 to find
        one of 200 routes costs ~30 ms of parsing and would swamp what is measured."""
        from netlab.plan.noderouting import ZT_INBOUND_TUN_IP

        r = self.ipr[node].route("get", dst=ip)
        return bool(r) and r[0].get_attr("RTA_GATEWAY") == ZT_INBOUND_TUN_IP

    def close(self) -> None:
        for x in (*self.ipr.values(), *self.ips.values()):
            x.close()


# -- one lab ---------------------------------------------------------------------------------


def run_mode(topo_path: str, pods: int, mode: str, min_samples: int) -> dict:
    lab = f"en{mode[0]}{pods}"
    t0 = time.monotonic()
    lablib.up(topo_path, name=lab, mode=mode)
    up_s = time.monotonic() - t0
    view = None
    try:
        rec = load_record(lab)
        assert rec is not None
        pod_names = sorted(rec.pods, key=lambda p: (rec.pods[p]["node"], p))
        nodes = sorted(rec.nodes)
        zlogs = ZtunnelLogs(lab, nodes)
        if mode == "inpod":
            wait_inpod_connected(lab, nodes)
        else:
            view = NodeView(lab, nodes)
        rounds = max(1, math.ceil(min_samples / pods))
        enroll_ms: list[float] = []
        call_ms: list[float] = []
        unenroll_ms: list[float] = []
        noop_ms: list[float] = []
        registry_ms: list[float] = []
        for _ in range(rounds):
            for on in (True, False):
                for pod in pod_names:
                    info = rec.pods[pod]
                    lst = Listeners(names.netns(lab, pod)) if mode == "inpod" else None
                    before = zlogs.poll()
                    t0 = time.perf_counter()
                    r = set_enrollment(lab, pod, on)
                    t_call = time.perf_counter()
                    assert r.changed, (pod, on)
                    if mode == "inpod":
                        want = 1 if on else 0
                        wait_for(lambda lst=lst, want=want: all(v == want for v in lst.count().values()),
                                 f"{pod} listeners {'up' if on else 'gone'}")
                        t_ready = time.perf_counter()
                    else:
                        node, ip = info["node"], info["ip"]
                        wait_for(lambda node=node, ip=ip, on=on: view.in_ipset(node, ip) == on
                                 and view.has_route(node, ip) == on, f"{pod} ipset+route")
                    wait_for(lambda before=before: all(c > before[p] for p, c in zlogs.poll().items()),
                             f"registry reload for {pod}")
                    t_reg = time.perf_counter()
                    if mode != "inpod":
                        t_ready = t_reg
                    if lst is not None:
                        lst.close()
                    (enroll_ms if on else unenroll_ms).append(1000 * (t_ready - t0))
                    if on:
                        call_ms.append(1000 * (t_call - t0))
                        registry_ms.append(1000 * (t_reg - t0))
                        t0 = time.perf_counter()
                        assert not set_enrollment(lab, pod, True).changed
                        noop_ms.append(1000 * (time.perf_counter() - t0))
        return {"mode": mode, "pods": pods, "rounds": rounds, "up_s": round(up_s, 3),
                "enroll_ms": summary(enroll_ms), "enroll_call_ms": summary(call_ms),
                "registry_ms": summary(registry_ms), "unenroll_ms": summary(unenroll_ms),
                "noop_enroll_ms": summary(noop_ms), "samples_enroll_ms": [round(x, 2) for x in enroll_ms]}
    finally:
        if view is not None:
            view.close()
        lablib.down(lab)


def wait_inpod_connected(lab: str, nodes: list[str]) -> None:
    """Every node's ztunnel has connected to its CNI agent (ZDS), so adds are not 'partial'."""
    from netlab.linux import jsonline

    sock_dir = os.path.join(names.state_dir(lab), "sockets")
    for n in nodes:
        wait_for(lambda n=n: jsonline.request(os.path.join(sock_dir, f"cni-{n}.sock"), {"op": "status"}, 5)
                 .get("ztunnel_connections", 0) >= 1, f"ztunnel of {n} connected to its agent")


def baseline_up(topo_path: str, pods: int) -> dict:
    lab = f"enz{pods}"
    t0 = time.monotonic()
    lablib.up(topo_path, name=lab, mode="none")
    up_s = time.monotonic() - t0
    lablib.down(lab)
    return {"mode": "none", "pods": pods, "up_s": round(up_s, 3), "up_per_pod_ms": round(1000 * up_s / pods, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,50,200", help="pod counts (comma separated)")
    ap.add_argument("--modes", default="inpod,node-routing", help="mesh designs to measure")
    ap.add_argument("--min-samples", type=int, default=20, help="repeat the cycle until this many enrolls")
    ap.add_argument("--json-out", default="bench-results/enroll.json")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("enroll bench needs root")
    rows = []
    for n in (int(x) for x in a.sizes.split(",")):
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            yaml.safe_dump(topology(n), f)
            path = f.name
        try:
            rows.append(baseline_up(path, n))
            print(f"  none {n} pods: up {rows[-1]['up_s']} s", file=sys.stderr)
            for mode in a.modes.split(","):
                rows.append(run_mode(path, n, mode, a.min_samples))
                e = rows[-1]["enroll_ms"]
                print(f"  {mode} {n} pods: enroll mean {e['mean']} p50 {e['p50']} p99 {e['p99']} ms",
                      file=sys.stderr)
        finally:
            os.unlink(path)
            for lab in (f"enz{n}", *(f"en{m[0]}{n}" for m in a.modes.split(","))):
                if lab in lablib.known_labs():
                    try:
                        lablib.down(lab)
                    except Exception as e:  # keep tearing the others down, but say so
                        print(f"bench: could not tear down lab {lab}: {e} (try `netlab down {lab}`)",
                              file=sys.stderr)
    print_table(rows)
    os.makedirs(os.path.dirname(a.json_out) or ".", exist_ok=True)
    with open(a.json_out, "w") as f:
        json.dump({"benchmark": "enroll", "cores": os.cpu_count(), "goal_ms": GOAL_MS, "rows": rows}, f, indent=1)


def print_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"per-pod enroll latency, ms (goal: mean ≤ {GOAL_MS:.0f} ms)")
    for c in ("mode", "pods", "enrolls", "mean", "p50", "p99", "goal", "call p50", "registry p50",
              "unenroll p50", "no-op p50", "up s", "none up s"):
        t.add_column(c, justify="left" if c == "mode" else "right")
    none = {r["pods"]: r for r in rows if r["mode"] == "none"}
    for r in rows:
        if r["mode"] == "none":
            continue
        e = r["enroll_ms"]
        t.add_row(r["mode"], str(r["pods"]), str(e["n"]), f"{e['mean']:.1f}", f"{e['p50']:.1f}", f"{e['p99']:.1f}",
                  "met" if e["mean"] <= GOAL_MS else "missed", f"{r['enroll_call_ms']['p50']:.1f}",
                  f"{r['registry_ms']['p50']:.1f}", f"{r['unenroll_ms']['p50']:.1f}",
                  f"{r['noop_enroll_ms']['p50']:.1f}", f"{r['up_s']:.2f}",
                  f"{none[r['pods']]['up_s']:.2f}" if r["pods"] in none else "")
    Console(width=150).print(t)


if __name__ == "__main__":
    main()
