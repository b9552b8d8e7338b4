#!/usr/bin/env python3
"""Lab lifecycle benchmark: `up` and `down` wall time for growing pod counts.

Each size is a two-node lab of echo pods (plus a client), stood up and torn down for real
(root needed), in --mode none (the baseline) and, with --modes, the mesh designs. Prints a
table and writes JSON (default bench-results/lifecycle.json). Per-pod cost is the slope
between the smallest and largest size, which is what "near-linear" is about.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import yaml

from netlab.lab import lifecycle as lablib


def topology(pods: int) -> dict:
    half = max(1, (pods - 1) // 2)
    return {"name": "bench", "nodes": [{"name": "node1"}, {"name": "node2"}],
            "namespaces": [{"name": "default", "labels": {"istio.io/dataplane-mode": "ambient"}}],
            "pods": [{"name": "client", "node": "node1", "app": "sleep", "labels": {"app": "client"}},
                     {"name": "ea", "node": "node1", "app": "echo", "replicas": half, "labels": {"app": "echo"}},
                     {"name": "eb", "node": "node2", "app": "echo", "replicas": max(1, pods - 1 - half),
                      "labels": {"app": "echo"}}],
            "services": [{"name": "echo", "selector": {"app": "echo"}, "ports": [9080]}]}


def measure(pods: int, mode: str) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(topology(pods), f)
        path = f.name
    name = f"bl{pods}"
    try:
        t0 = time.monotonic()
        res = lablib.up(path, name=name, mode=mode)
        t_up = time.monotonic() - t0
        t0 = time.monotonic()
        lablib.down(name)
        t_down = time.monotonic() - t0
    finally:
        os.unlink(path)
        if name in lablib.known_labs():
            lablib.down(name)
    return {"pods": pods, "mode": mode, "up_s": round(t_up, 3), "down_s": round(t_down, 3),
            "netns": res.netns, "processes": res.processes}


def bookinfo(mode: str) -> dict:
    t0 = time.monotonic()
    lablib.up("bookinfo", name="blbook", mode=mode)
    t_up = time.monotonic() - t0
    t0 = time.monotonic()
    lablib.down("blbook")
    return {"pods": "bookinfo", "mode": mode, "up_s": round(t_up, 3), "down_s": round(time.monotonic() - t0, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="10,50,200", help="pod counts (comma separated)")
    ap.add_argument("--modes", default="none,node-routing", help="modes to measure")
    ap.add_argument("--json-out", default="bench-results/lifecycle.json")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("lifecycle bench needs root")
    rows = []
    for mode in a.modes.split(","):
        rows.append(bookinfo(mode))
        for n in (int(x) for x in a.sizes.split(",")):
            rows.append(measure(n, mode))
            print(f"  {mode} {n} pods: up {rows[-1]['up_s']}s down {rows[-1]['down_s']}s", file=sys.stderr)
    for mode in a.modes.split(","):
        sized = [r for r in rows if r["mode"] == mode and isinstance(r["pods"], int)]
        if len(sized) >= 2:
            lo, hi = sized[0], sized[-1]
            slope = (hi["up_s"] - lo["up_s"]) / (hi["pods"] - lo["pods"])
            for r in sized:
                r["per_pod_up_ms"] = round(1000 * slope, 2)
    print(f"{'mode':<14}{'pods':>9}{'up s':>9}{'down s':>9}{'per-pod up ms':>15}")
    for r in rows:
        print(f"{r['mode']:<14}{str(r['pods']):>9}{r['up_s']:>9.2f}{r['down_s']:>9.2f}{r.get('per_pod_up_ms', ''):>15}")
    os.makedirs(os.path.dirname(a.json_out) or ".", exist_ok=True)
    with open(a.json_out, "w") as f:
        json.dump({"benchmark": "lifecycle", "cores": os.cpu_count(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
