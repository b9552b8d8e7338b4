#!/usr/bin/env python3
"""Capture benchmark: what capturing a whole lab adds to one request, and hop reconstruction speed.

Root needed: bookinfo is stood up for real in ``--mode none`` (the baseline) and
``--mode node-routing`` in the same run, then for each:

1. **curl alone**: ``sleep`` curls productpage (``ip netns exec``, what ``netlab exec`` runs),
   ``--rounds`` times;
2. **curl under capture**: the same curl run by ``netlab.observe.capture.capture`` (what
   ``netlab capture LAB -o DIR -- sleep curl ...`` runs) with every interface of the lab
   captured (~46 in bookinfo), sockets opened before, drained after, files closed and the merged
   pcapng written. "added" = median(curl under capture) − median(curl alone). Goal ≤ 1 s.
3. **hop reconstruction**: one curl fetches ``--connections`` URLs with ``Connection: close``
   (one TCP connection each) under capture; then :func:`netlab.observe.hops.paths_for_capture`
   (read the merged pcapng, decode, group, join with the access logs) is timed. In node-routing
   each request is three connections (app→ztunnel, HBONE, ztunnel→app), so both the request
   count and the connection count are reported. Goal: ≤ 2 s per 1,000 connections.

Prints a table and writes JSON (default ``bench-results/capture.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from netlab.lab import lifecycle as lablib
from netlab.lab.state import load_record
from netlab.observe import capture as caplib
from netlab.observe import hops

CURL = ["curl", "-s", "-o", os.devnull, "--max-time", "10", "http://productpage:9080/"]
GOAL_ADDED_S = 1.0
GOAL_HOPS_S_PER_1000 = 2.0


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_mode(mode: str, rounds: int, connections: int) -> dict:
    lab = f"cpb-{mode[0]}"
    lablib.up("bookinfo", name=lab, mode=mode)
    try:
        rec = load_record(lab)
        assert rec is not None
        sleep_ns = rec.members["sleep"]
        subprocess.run(["ip", "netns", "exec", sleep_ns, *CURL], check=True)  # warm: pools, caches
        alone, captured, ifaces = [], [], 0
        with tempfile.TemporaryDirectory(prefix="nl-bench-") as tmp:
            for i in range(rounds):  # interleaved, so load on the machine hits both alike
                alone.append(timed(lambda: subprocess.run(["ip", "netns", "exec", sleep_ns, *CURL], check=True)))
                d = os.path.join(tmp, f"r{i}")

                def run(d=d) -> None:
                    nonlocal ifaces
                    res = caplib.capture(lab, d, members=rec.members, command=(sleep_ns, CURL))
                    ifaces = len(res.interfaces)

                captured.append(timed(run))
            urls = f"http://details:9080/details/[1-{connections}]"
            bulk = os.path.join(tmp, "bulk")
            res = caplib.capture(lab, bulk, members=rec.members, command=(sleep_ns, [
                "curl", "-s", "-o", os.devnull, "-H", "Connection: close", urls]))
            packets = sum(i.packets for i in res.interfaces)
            t, c = time.perf_counter(), time.process_time()
            paths = hops.paths_for_capture(res)
            hops_s, hops_cpu = time.perf_counter() - t, time.process_time() - c
        legs = sum(len(p.legs) for p in paths)
        requests = sum(1 for p in paths if p.client == "sleep")
        return {"mode": mode, "interfaces": ifaces, "rounds": rounds,
                "curl_alone_s": round(statistics.median(alone), 3),
                "curl_captured_s": round(statistics.median(captured), 3),
                "added_s": round(statistics.median(captured) - statistics.median(alone), 3),
                "load_avg": os.getloadavg()[0],
                "hops": {"requests": requests, "connections": legs, "sightings": packets, "seconds": round(hops_s, 3),
                         "cpu_seconds": round(hops_cpu, 3),
                         "seconds_per_1000_connections": round(hops_s / max(legs, 1) * 1000, 3),
                         "cpu_seconds_per_1000_connections": round(hops_cpu / max(legs, 1) * 1000, 3)}}
    finally:
        lablib.down(lab)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--modes", default="none,node-routing", help="comma-separated; none is the baseline")
    ap.add_argument("--rounds", type=int, default=7, help="curls alone and under capture, interleaved")
    ap.add_argument("--connections", type=int, default=1000, help="URLs fetched for the hop reconstruction run")
    ap.add_argument("--json-out", default="bench-results/capture.json")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (stands labs up)", file=sys.stderr)
        return 2
    results = [bench_mode(m, args.rounds, args.connections) for m in args.modes.split(",")]
    print(f"{'mode':<13} {'ifaces':>6} {'curl s':>7} {'+capture s':>10} {'added s':>8} | "
          f"{'requests':>8} {'conns':>6} {'sightings':>9} {'hops s':>7} {'cpu s':>6} {'s/1000':>7} {'cpu/1000':>8} {'load':>5}")
    for r in results:
        h = r["hops"]
        print(f"{r['mode']:<13} {r['interfaces']:>6} {r['curl_alone_s']:>7.3f} {r['curl_captured_s']:>10.3f} "
              f"{r['added_s']:>8.3f} | {h['requests']:>8} {h['connections']:>6} {h['sightings']:>9} "
              f"{h['seconds']:>7.3f} {h['cpu_seconds']:>6.3f} {h['seconds_per_1000_connections']:>7.3f} "
              f"{h['cpu_seconds_per_1000_connections']:>8.3f} {r['load_avg']:>5.1f}")
    # on a shared machine the wall clock measures the neighbours too: the hops goal is judged on
    # the CPU time the reconstruction itself used (wall time is printed beside it)
    ok = all(r["added_s"] <= GOAL_ADDED_S and r["hops"]["cpu_seconds_per_1000_connections"] <= GOAL_HOPS_S_PER_1000
             for r in results)
    print(f"goals: added ≤ {GOAL_ADDED_S} s, hops ≤ {GOAL_HOPS_S_PER_1000} s (CPU) per 1,000 connections: "
          f"{'met' if ok else 'NOT met'}")
    os.makedirs(os.path.dirname(args.json_out) or ".", exist_ok=True)
    with open(args.json_out, "w") as f:
        json.dump({"results": results, "goals": {"added_s": GOAL_ADDED_S, "hops_s_per_1000": GOAL_HOPS_S_PER_1000},
                   "met": ok}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
