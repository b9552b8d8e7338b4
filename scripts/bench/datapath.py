#!/usr/bin/env python3
"""Data path benchmark: direct pod-to-pod (no mesh) vs through the mesh, in the same run.

For each mode (none = the baseline, node-routing, inpod) a two-node lab is stood up: a
client pod on node1, an echo server on node2 behind a service. The bench opens its sockets
inside the client pod's netns (one thread switched in, the socket stays there), so every
packet takes the real pod path: kube-proxy DNAT when direct; ipset mark, Geneve tunnel,
TPROXY, ztunnel, HBONE/mTLS when meshed. Measures small-request latency p50/p99 and
requests/s with 1 and 32 keep-alive connections, and bulk MB/s. Bounded in time and count.

With 1 connection it also accounts the CPU spent per request (the kernel's per-task run time,
``/proc/<pid>/task/*/schedstat``): in the ztunnels, in the server pod, in the bench client thread
and in the other lab processes. Each round stands every mode up in turn; ``--rounds`` repeats
the cycle and the summary gives each ratio to direct as the median of the rounds' ratios, with
their range, because on a shared VM the machine's speed drifts between runs more than the
difference being measured. ``--pin-cpus 0`` runs everything on one CPU: on a VM that takes the
wake-ups of idle vCPUs out of both paths and compares the work each path does.
Prints a table, writes JSON (default bench-results/datapath.json).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time

import yaml

from netlab import names
from netlab.lab import lifecycle as lablib
from netlab.linux import nsenter
from netlab.runtime import supervisor

TOPO = {"name": "bdp", "nodes": [{"name": "node1"}, {"name": "node2"}],
        "namespaces": [{"name": "default", "labels": {"istio.io/dataplane-mode": "ambient"}}],
        "pods": [{"name": "client", "node": "node1", "app": "sleep", "labels": {"app": "client"}},
                 {"name": "server", "node": "node2", "app": "echo", "labels": {"app": "server"}}],
        "services": [{"name": "server", "selector": {"app": "server"}, "ports": [9080]}]}
REQ = b"GET /small HTTP/1.1\r\nHost: server\r\n\r\n"


def conn(ns: str, addr: tuple[str, int]) -> socket.socket:
    with nsenter.netns(ns):
        s = socket.socket()
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.connect(addr)
    return s


def read_response(s: socket.socket, buf: bytearray) -> int:
    """Read one HTTP/1.1 response with Content-Length; returns body length."""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    n = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    got = len(rest)
    while got < n:
        chunk = s.recv(1 << 20)
        if not chunk:
            raise ConnectionError("closed")
        got += len(chunk)
    buf.clear()
    buf += rest[n:] if got == len(rest) else b""
    return n


def wait_path(ns: str, addr, timeout: float = 10.0) -> None:
    """Until one request gets its answer: in-pod, `up` can return before the CNI agent has
    handed the client pod to ztunnel (its redirect is in place, the listener not yet)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            s = conn(ns, addr)
            try:
                s.settimeout(2)
                s.sendall(REQ)
                read_response(s, bytearray())
                return
            finally:
                s.close()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def task_cpu_ns(pid: int) -> int:
    """CPU time of every thread of ``pid`` so far (ns), 0 if it is gone."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
    except OSError:
        pass
    return total


def lab_pids(lab: str) -> dict[str, int]:
    """Lab process name -> pid, from the lab's supervisor."""
    return {p["name"]: p["pid"] for p in supervisor.request(lab, {"op": "status"}, timeout=5)["processes"] if p["pid"]}


def cpu_group(name: str) -> str:
    if name.startswith("ztunnel/"):
        return "ztunnel"
    return "server" if name == "pod/server" else "other"


def rr(ns: str, addr, conns: int, seconds: float, max_req: int = 200000, lab: str | None = None) -> dict:
    lat: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds
    client_cpu = [0.0]

    def worker() -> None:
        s = conn(ns, addr)
        buf = bytearray()
        mine = []
        c0 = time.thread_time()
        while time.monotonic() < stop and len(mine) < max_req // conns:
            t = time.perf_counter()
            s.sendall(REQ)
            read_response(s, buf)
            mine.append(time.perf_counter() - t)
        c1 = time.thread_time()
        s.close()
        with lock:
            lat.extend(mine)
            client_cpu[0] += c1 - c0

    pids = lab_pids(lab) if lab else {}
    before = {n: task_cpu_ns(p) for n, p in pids.items()}
    t0 = time.monotonic()
    ts = [threading.Thread(target=worker) for _ in range(conns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.monotonic() - t0
    lat.sort()
    out = {"conns": conns, "requests": len(lat), "rps": round(len(lat) / wall, 1),
           "p50_us": round(1e6 * statistics.median(lat), 1), "p99_us": round(1e6 * lat[int(len(lat) * 0.99) - 1], 1)}
    if pids:
        cpu = {"ztunnel": 0.0, "server": 0.0, "client": 1e9 * client_cpu[0], "other": 0.0}
        for n, p in pids.items():
            cpu[cpu_group(n)] += task_cpu_ns(p) - before[n]
        out["cpu_us_per_request"] = {k: round(v / 1e3 / len(lat), 1) for k, v in cpu.items()}
    return out


def bulk(ns: str, addr, mib: int) -> dict:
    s = conn(ns, addr)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    n = mib << 20
    t0 = time.perf_counter()
    s.sendall(f"GET /bytes/{n} HTTP/1.1\r\nHost: server\r\n\r\n".encode())
    got = read_response(s, bytearray())
    dt = time.perf_counter() - t0
    s.close()
    assert got == n
    return {"mib": mib, "seconds": round(dt, 3), "mb_s": round(n / dt / 1e6, 1)}


def run_mode(mode: str, seconds: float, mib: int, name: str = "bdp") -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(TOPO, f)
        path = f.name
    try:
        res = lablib.up(path, name=name, mode=mode)
        ns = names.netns(name, "client")
        addr = ("10.96.0.10", 9080)
        wait_path(ns, addr)
        rr(ns, addr, 1, 0.5)  # warm-up: pools, ARP, conntrack
        out = {"mode": mode, "istio_version": res.istio_version, "encap": res.encap,
               "rr1": rr(ns, addr, 1, seconds, lab=name), "rr32": rr(ns, addr, 32, seconds), "bulk": bulk(ns, addr, mib)}
    finally:
        os.unlink(path)
        if name in lablib.known_labs():
            lablib.down(name)
    return out


def ratios(rows: list[dict]) -> None:
    """Each row's bulk and p50 relative to the direct (mode none) row of the same round."""
    base = next((r for r in rows if r["mode"] == "none"), None)
    for r in rows:
        r["bulk_vs_direct"] = round(r["bulk"]["mb_s"] / base["bulk"]["mb_s"], 3) if base else None
        r["p50_vs_direct"] = round(r["rr1"]["p50_us"] / base["rr1"]["p50_us"], 2) if base else None


def _spread(rows: list[dict], key: str) -> dict | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return {"median": round(statistics.median(vals), 2), "min": min(vals), "max": max(vals)} if vals else None


def summary(rounds: list[list[dict]]) -> list[dict]:
    out = []
    for mode in [r["mode"] for r in rounds[0]]:
        rows = [r for rnd in rounds for r in rnd if r["mode"] == mode]
        out.append({"mode": mode, "p50_vs_direct": _spread(rows, "p50_vs_direct"), "bulk_vs_direct": _spread(rows, "bulk_vs_direct"),
                    "p50_us_median": round(statistics.median(r["rr1"]["p50_us"] for r in rows), 1),
                    "cpu_us_per_request_median": {
                        k: round(statistics.median(r["rr1"]["cpu_us_per_request"][k] for r in rows), 1)
                        for k in rows[0]["rr1"].get("cpu_us_per_request", {})}})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modes", default="none,node-routing,inpod",
                    help="comma-separated, in order: none (the direct baseline), node-routing, inpod")
    ap.add_argument("--seconds", type=float, default=3.0, help="duration of each request/response run")
    ap.add_argument("--mib", type=int, default=128, help="bulk transfer size")
    ap.add_argument("--rounds", type=int, default=1, help="repeat the cycle of modes; the summary takes medians")
    ap.add_argument("--json-out", default="bench-results/datapath.json", help="where the JSON goes")
    ap.add_argument("--name", default="bdp", help="lab name (netns nl-NAME-*)")
    ap.add_argument("--pin-cpus", default="", metavar="LIST",
                    help="run the bench and every lab process on these CPUs only (e.g. 0): takes the "
                         "cross-CPU wake-ups out and leaves the path's own work")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("datapath bench needs root")
    pinned = sorted({int(c) for c in a.pin_cpus.split(",") if c.strip()})
    if pinned:  # inherited by the supervisor and everything it starts
        os.sched_setaffinity(0, pinned)
    rounds = []
    print(f"{'round':<6}{'mode':<14}{'rps 1c':>9}{'p50 µs':>9}{'p99 µs':>9}{'rps 32c':>9}{'p50 µs':>9}{'p99 µs':>9}"
          f"{'bulk MB/s':>11}{'bulk ×direct':>13}{'p50 ×direct':>12}{'CPU µs/req zt+srv+cli':>23}")
    for i in range(a.rounds):
        rows = [run_mode(m, a.seconds, a.mib, a.name) for m in a.modes.split(",")]
        ratios(rows)
        rounds.append(rows)
        for r in rows:
            c = r["rr1"].get("cpu_us_per_request", {})
            cpu = f"{c.get('ztunnel', 0):.0f}+{c.get('server', 0):.0f}+{c.get('client', 0):.0f}"
            print(f"{i + 1:<6}{r['mode']:<14}{r['rr1']['rps']:>9}{r['rr1']['p50_us']:>9}{r['rr1']['p99_us']:>9}"
                  f"{r['rr32']['rps']:>9}{r['rr32']['p50_us']:>9}{r['rr32']['p99_us']:>9}{r['bulk']['mb_s']:>11}"
                  f"{r['bulk_vs_direct'] or float('nan'):>13.2f}{r['p50_vs_direct'] or float('nan'):>12.2f}{cpu:>23}",
                  flush=True)
    summ = summary(rounds)
    if a.rounds > 1:
        print(f"\nover {a.rounds} rounds: median (min-max) of each round's ratio to direct")
        for s in summ:
            p, b = s["p50_vs_direct"], s["bulk_vs_direct"]
            if p and b:
                print(f"{s['mode']:<14} p50 ×direct {p['median']:.2f} ({p['min']:.2f}-{p['max']:.2f})   "
                      f"bulk ×direct {b['median']:.2f} ({b['min']:.2f}-{b['max']:.2f})")
    os.makedirs(os.path.dirname(a.json_out) or ".", exist_ok=True)
    with open(a.json_out, "w") as f:
        json.dump({"benchmark": "datapath", "cores": os.cpu_count(), "pinned_cpus": pinned, "rounds": rounds,
                   "summary": summ}, f, indent=1)


if __name__ == "__main__":
    main()
