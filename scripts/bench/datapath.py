#!/usr/bin/env python3
"""Data path benchmark: direct pod-to-pod (no mesh) vs through the mesh, in the same run.

For each mode (none = the baseline, node-routing, inpod) a two-node lab is stood up: a
client pod on node1, a server pod on node2 behind a service. The headline figures come from
Debian's own load tools (``loadtools.py``), run in the client pod's netns against servers in the
server pod's netns, so every packet takes the real pod path (kube-proxy DNAT when direct; ipset
mark, Geneve tunnel, TPROXY, ztunnel, HBONE/mTLS when meshed): iperf3 bulk with 1 and 4 streams;
sockperf TCP ping-pong round-trip p50/p99/p99.9 on a kept connection; wrk against nginx
(a 612-byte and a 1 MiB file, 1 and 32 kept connections, and 1 connection opened afresh for
every request). The project's own Python client is the secondary line: small-request latency
and requests/s against the echo server, bulk MB/s, and with 1 connection the CPU spent per
request (``/proc/<pid>/task/*/schedstat``) in the ztunnels, the server pod and the client.

Each round stands every mode up in turn (round-robin); ``--rounds`` repeats the cycle and the
summary gives each figure's ratio to direct as the median of the rounds' ratios, with their
range, because on a shared VM the machine's speed drifts between runs more than the difference
being measured. ``--pin-cpus 0`` runs everything on one CPU: on a VM that takes the wake-ups of
idle vCPUs out of both paths and compares the work each path does. Refuses to start if a tool
is missing. Prints a table, writes JSON (default bench-results/datapath.json).
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

import loadtools  # sibling module: scripts/bench is sys.path[0] when this script runs
import yaml

from netlab import names
from netlab.lab import lifecycle as lablib
from netlab.linux import nsenter
from netlab.runtime import supervisor

TOPO = {"name": "bdp", "nodes": [{"name": "node1"}, {"name": "node2"}],
        "namespaces": [{"name": "default", "labels": {"istio.io/dataplane-mode": "ambient"}}],
        "pods": [{"name": "client", "node": "node1", "app": "sleep", "labels": {"app": "client"}},
                 {"name": "server", "node": "node2", "app": "echo", "labels": {"app": "server"}}],
        "services": [{"name": "server", "selector": {"app": "server"}, "ports": [9080, loadtools.IPERF_PORT, loadtools.SOCKPERF_PORT,
                                                                       loadtools.HTTP_PORT]}]}
VIP = "10.96.0.10"  # the first service VIP netlab assigns
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


# Figures where a smaller value is better (latencies): reported as ratio and as µs added.
LATENCY_SUFFIX = "_us"


def tool_figures(client_ns: str, host: str, seconds: float, pids: dict[str, int]) -> dict[str, float]:
    """One pass of every load tool; flat name → value. With the single iperf3 stream it also
    accounts the CPU the ztunnels spent per MB carried: unlike MB/s, that barely moves with the
    load other work puts on the machine."""
    f: dict[str, float] = {}
    zt = {n: p for n, p in pids.items() if cpu_group(n) == "ztunnel"}
    for streams in (1, 4):
        before = {n: task_cpu_ns(p) for n, p in zt.items()}
        f[f"iperf3_{streams}s_mb_s"] = mb_s = loadtools.iperf3(client_ns, host, seconds, streams)["mb_s"]
        if streams == 1 and zt:
            cpu_ms = sum(task_cpu_ns(p) - before[n] for n, p in zt.items()) / 1e6
            f["iperf3_1s_ztunnel_cpu_ms_per_mb"] = round(cpu_ms / (mb_s * seconds), 2)
    sp = loadtools.sockperf(client_ns, host, seconds)
    f |= {"sockperf_p50_us": sp["p50_us"], "sockperf_p99_us": sp["p99_us"], "sockperf_p99_9_us": sp["p99_9_us"]}
    for path in (loadtools.SMALL_FILE, loadtools.LARGE_FILE):
        for conns in (1, 32):
            w = loadtools.wrk(client_ns, f"http://{host}:{loadtools.HTTP_PORT}/{path}", seconds, conns)
            f |= {f"wrk_{path}_c{conns}_rps": w["rps"], f"wrk_{path}_c{conns}_p50_us": w["p50_us"],
                  f"wrk_{path}_c{conns}_p99_us": w["p99_us"]}
    w = loadtools.wrk(client_ns, f"http://{host}:{loadtools.HTTP_PORT}/{loadtools.SMALL_FILE}", seconds, 1, close=True)
    f |= {"wrk_fresh_conn_per_s": w["rps"], "wrk_fresh_p50_us": w["p50_us"], "wrk_fresh_p99_us": w["p99_us"]}
    return f


def run_mode(mode: str, seconds: float, mib: int, name: str = "bdp", own: bool = True) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(TOPO, f)
        path = f.name
    servers = None
    try:
        res = lablib.up(path, name=name, mode=mode)
        ns = names.netns(name, "client")
        addr = (VIP, 9080)
        servers = loadtools.start_servers(names.netns(name, "server"))
        wait_path(ns, addr)
        loadtools.wait_listening(ns, VIP, [loadtools.IPERF_PORT, loadtools.SOCKPERF_PORT, loadtools.HTTP_PORT])
        out = {"mode": mode, "istio_version": res.istio_version, "encap": res.encap,
               "load": os.getloadavg()[0], "tools": tool_figures(ns, VIP, seconds, lab_pids(name))}
        if own:
            rr(ns, addr, 1, 0.5)  # warm-up: pools, ARP, conntrack
            out |= {"rr1": rr(ns, addr, 1, seconds, lab=name), "rr32": rr(ns, addr, 32, seconds),
                    "bulk": bulk(ns, addr, mib)}
    finally:
        os.unlink(path)
        if servers is not None:
            servers.stop()
        if name in lablib.known_labs():
            lablib.down(name)
    return out


def figures(row: dict) -> dict[str, float]:
    """Every figure of one mode's run, flat: the tools' first, then the project's own client."""
    f = dict(row["tools"])
    if "rr1" in row:
        f |= {"own_rr1_p50_us": row["rr1"]["p50_us"], "own_rr1_p99_us": row["rr1"]["p99_us"],
              "own_rr1_rps": row["rr1"]["rps"], "own_rr32_rps": row["rr32"]["rps"], "own_bulk_mb_s": row["bulk"]["mb_s"]}
    return f


def ratios(rows: list[dict]) -> None:
    """Each row's figures relative to the direct (mode none) row of the same round: a ratio for
    every figure, and for latencies also the µs added."""
    base = next((r for r in rows if r["mode"] == "none"), None)
    for r in rows:
        r["figures"] = figures(r)
        if base is None:
            continue
        b = figures(base)
        r["vs_direct"] = {k: round(v / b[k], 3) for k, v in r["figures"].items() if b.get(k)}
        r["added_us"] = {k: round(v - b[k], 1) for k, v in r["figures"].items() if k.endswith(LATENCY_SUFFIX)}


def _spread(vals: list[float]) -> dict:
    return {"median": round(statistics.median(vals), 3), "min": min(vals), "max": max(vals)}


def summary(rounds: list[list[dict]]) -> list[dict]:
    out = []
    for mode in [r["mode"] for r in rounds[0]]:
        rows = [r for rnd in rounds for r in rnd if r["mode"] == mode]
        keys = list(rows[0]["figures"])
        s = {"mode": mode, "rounds": len(rows), "load_1min": _spread([r["load"] for r in rows]),
             "median": {k: round(statistics.median(r["figures"][k] for r in rows), 1) for k in keys}}
        if "vs_direct" in rows[0]:
            s["vs_direct"] = {k: _spread([r["vs_direct"][k] for r in rows]) for k in rows[0]["vs_direct"]}
            s["added_us"] = {k: _spread([r["added_us"][k] for r in rows]) for k in rows[0]["added_us"]}
        if "rr1" in rows[0]:
            s["cpu_us_per_request_median"] = {
                k: round(statistics.median(r["rr1"]["cpu_us_per_request"][k] for r in rows), 1)
                for k in rows[0]["rr1"].get("cpu_us_per_request", {})}
        out.append(s)
    return out


def print_summary(summ: list[dict]) -> None:
    """One line per figure: each mode's median, then median (range) of the ratio to direct and,
    for latencies, of the µs added."""
    modes = [s["mode"] for s in summ]
    print(f"\n{'figure':<31}" + "".join(f"{m:>13}" for m in modes) + "   mesh ÷ direct, median (range) per round")
    keys = list(dict.fromkeys(k for s in summ for k in s["median"]))
    for k in keys:
        line = f"{k[:30]:<31}" + "".join(f"{s['median'][k]:>13,.1f}" if k in s["median"] else f"{'-':>13}"
                                          for s in summ) + "  "
        for s in summ:
            if s["mode"] == "none" or "vs_direct" not in s or k not in s["vs_direct"]:
                continue
            v = s["vs_direct"][k]
            line += f" {s['mode']} {v['median']:.2f} ({v['min']:.2f}-{v['max']:.2f})"
            if k in s.get("added_us", {}):
                a = s["added_us"][k]
                line += f" +{a['median']:.0f} µs"
        print(line, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modes", default="none,node-routing,inpod",
                    help="comma-separated, in order: none (the direct baseline), node-routing, inpod")
    ap.add_argument("--seconds", type=float, default=2.0, help="duration of each tool run and request/response run")
    ap.add_argument("--mib", type=int, default=64, help="bulk transfer size of the project's own client")
    ap.add_argument("--rounds", type=int, default=3, help="repeat the cycle of modes; the summary takes medians")
    ap.add_argument("--no-own-client", action="store_true", help="skip the project's own client (secondary line)")
    ap.add_argument("--json-out", default="bench-results/datapath.json", help="where the JSON goes")
    ap.add_argument("--name", default="bdp", help="lab name (netns nl-NAME.*)")
    ap.add_argument("--pin-cpus", default="", metavar="LIST",
                    help="run the bench and every lab process on these CPUs only (e.g. 0): takes the "
                         "cross-CPU wake-ups out and leaves the path's own work")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("datapath bench needs root")
    missing = loadtools.missing_tools()
    if missing:
        sys.exit(f"datapath bench needs {', '.join(missing)}: run scripts/install.sh "
                 f"(or apt-get install {' '.join(missing)})")
    pinned = sorted({int(c) for c in a.pin_cpus.split(",") if c.strip()})
    if pinned:  # inherited by the supervisor and everything it starts
        os.sched_setaffinity(0, pinned)
    rounds = []
    for i in range(a.rounds):
        rows = []
        for m in a.modes.split(","):
            rows.append(run_mode(m, a.seconds, a.mib, a.name, own=not a.no_own_client))
            f = figures(rows[-1])
            print(f"round {i + 1} {m:<13} load {rows[-1]['load']:.1f}  iperf3 1/4 streams {f['iperf3_1s_mb_s']:.0f}/"
                  f"{f['iperf3_4s_mb_s']:.0f} MB/s  sockperf p50/p99 {f['sockperf_p50_us']:.0f}/"
                  f"{f['sockperf_p99_us']:.0f} µs  wrk small 1c/32c {f['wrk_small_c1_rps']:.0f}/"
                  f"{f['wrk_small_c32_rps']:.0f} rps", flush=True)
        ratios(rows)
        rounds.append(rows)
    summ = summary(rounds)
    print_summary(summ)
    os.makedirs(os.path.dirname(a.json_out) or ".", exist_ok=True)
    with open(a.json_out, "w") as f:
        json.dump({"benchmark": "datapath", "cores": os.cpu_count(), "pinned_cpus": pinned,
                   "seconds": a.seconds, "rounds": rounds, "summary": summ}, f, indent=1)


if __name__ == "__main__":
    main()
