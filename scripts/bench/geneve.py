#!/usr/bin/env python3
"""Benchmark the userspace Geneve forwarder against a plain veth, between the same two netns.

Creates ``nl-gv.bnode`` and ``nl-gv.bzt`` (deleted at the end, also on error/Ctrl-C), a veth
``10.244.9.1/24 <-> 10.244.9.2/24`` between them, the four TAPs (``netlab.apply.tuntap``) with
Istio's tunnel addresses and MTU 1450, and one forwarder subprocess per forwarder variant. For
each path it measures, node -> ztunnel pod:

* ``tcp_MBps``: a bulk TCP transfer (1 MiB writes), bounded by ``--seconds`` and ``--max-bytes``;
* ``udp_pps``: small UDP datagrams (``--udp-size`` bytes) blasted for ``--seconds``; pps received
  (and the loss against what was sent);
* ``udp_rr``: UDP request/response transactions per second (one in flight: latency-bound).

Paths: ``veth`` (10.244.9.1 -> .2, no tunnel) and ``geneve`` (192.168.127.1 -> .2 over istioout,
VNI 1001, through the forwarder). ``--variants`` adds forwarder variants (``threads`` = one thread
per fd, ``plain`` = no offload) to back the design choice. Traffic stays inside the bench namespaces.

    sudo python scripts/bench/geneve.py [--seconds 3] [--variants epoll,threads,plain,plain-threads]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from netlab import names  # noqa: E402
from netlab.apply import tuntap  # noqa: E402
from netlab.linux import nsenter  # noqa: E402

NODE, ZT = names.netns("gv", "bnode"), names.netns("gv", "bzt")
NODE_IP, ZT_IP = "10.244.9.1", "10.244.9.2"
VARIANTS = {  # the forwarder's default is "epoll" (offload on, one epoll thread)
    "epoll": ["--io", "epoll"],
    "threads": ["--io", "threads"],
    "plain": ["--no-offload", "--io", "epoll"],
    "plain-threads": ["--no-offload", "--io", "threads"],
}
TUNNELS = (("istioin", "pistioin", "192.168.126.1", "192.168.126.2"),
           ("istioout", "pistioout", "192.168.127.1", "192.168.127.2"))


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True)


def setup() -> None:
    teardown()
    ip("netns", "add", NODE)
    ip("netns", "add", ZT)
    ip("-n", NODE, "link", "add", "vethgvb", "type", "veth", "peer", "name", "eth0", "netns", ZT)
    ip("-n", NODE, "addr", "add", f"{NODE_IP}/24", "dev", "vethgvb")
    ip("-n", ZT, "addr", "add", f"{ZT_IP}/24", "dev", "eth0")
    for ns in (NODE, ZT):
        ip("-n", ns, "link", "set", "lo", "up")
    ip("-n", NODE, "link", "set", "vethgvb", "up")
    ip("-n", ZT, "link", "set", "eth0", "up")
    for node_tap, pod_tap, node_addr, pod_addr in TUNNELS:
        for ns, tap, addr in ((NODE, node_tap, node_addr), (ZT, pod_tap, pod_addr)):
            tuntap.create_tap(ns, tap)
            ip("-n", ns, "addr", "add", f"{addr}/30", "dev", tap)
            ip("-n", ns, "link", "set", tap, "mtu", "1450", "up")


def teardown() -> None:
    for ns in (NODE, ZT):
        if os.path.exists(nsenter.netns_path(ns)):
            subprocess.run(["ip", "netns", "del", ns], check=False)


def start_forwarder(extra: list[str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "netlab.runtime.geneve", "--node-netns", NODE, "--pod-netns", ZT,
         "--node-ip", NODE_IP, "--pod-ip", ZT_IP, *extra],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != "ready":
        proc.kill()
        raise SystemExit(f"forwarder did not start: {line!r}")
    return proc


def stop_forwarder(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.wait(timeout=10)


# ---- traffic: each side in its own process, sockets opened inside the netns ---------------------


def _sock(ns: str, kind: int) -> socket.socket:
    with nsenter.netns(ns):
        return socket.socket(socket.AF_INET, kind)


def _tcp_sink(addr: str, port: int, ready, result) -> None:  # type: ignore[no-untyped-def]
    srv = _sock(ZT, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, port))
    srv.listen(1)
    ready.set()
    conn, _ = srv.accept()
    buf = bytearray(1 << 20)
    total = 0
    t0 = None
    while True:
        n = conn.recv_into(buf)
        if not n:
            break
        if t0 is None:
            t0 = time.perf_counter()
        total += n
    result.put((total, time.perf_counter() - (t0 or time.perf_counter())))
    conn.close()
    srv.close()


def tcp_bulk(dst: str, seconds: float, max_bytes: int) -> dict[str, float]:
    ctx = mp.get_context("fork")
    ready, result = ctx.Event(), ctx.Queue()
    port = 5201
    p = ctx.Process(target=_tcp_sink, args=(dst, port, ready, result))
    p.start()
    ready.wait(10)
    c = _sock(NODE, socket.SOCK_STREAM)
    c.settimeout(10)
    c.connect((dst, port))
    chunk = b"\x5a" * (1 << 20)
    sent = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline and sent < max_bytes:
        c.sendall(chunk)
        sent += len(chunk)
    c.close()
    total, elapsed = result.get(timeout=60)
    p.join(10)
    return {"tcp_MBps": round(total / elapsed / 1e6, 1), "tcp_bytes": total}


def _udp_sink(addr: str, port: int, ready, result, seconds: float) -> None:  # type: ignore[no-untyped-def]
    s = _sock(ZT, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE
    s.bind((addr, port))
    s.settimeout(0.5)
    ready.set()
    got = 0
    t0 = t1 = None
    try:
        while True:
            s.recv(2048)
            t1 = time.perf_counter()
            if t0 is None:
                t0 = t1
            got += 1
    except TimeoutError:
        pass
    result.put((got, (t1 or 0) - (t0 or 0)))
    s.close()


def udp_flood(dst: str, seconds: float, size: int) -> dict[str, float]:
    ctx = mp.get_context("fork")
    ready, result = ctx.Event(), ctx.Queue()
    port = 5202
    p = ctx.Process(target=_udp_sink, args=(dst, port, ready, result, seconds))
    p.start()
    ready.wait(10)
    s = _sock(NODE, socket.SOCK_DGRAM)
    s.connect((dst, port))
    payload = b"\x00" * size
    sent = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(256):
            try:
                s.send(payload)
                sent += 1
            except OSError:
                pass
    s.close()
    got, elapsed = result.get(timeout=60)
    p.join(10)
    return {"udp_pps": round(got / elapsed) if elapsed > 0 else 0, "udp_sent": sent, "udp_received": got,
            "udp_loss_pct": round(100 * (1 - got / sent), 1) if sent else 0.0}


def _udp_echo(addr: str, port: int, ready) -> None:  # type: ignore[no-untyped-def]
    s = _sock(ZT, socket.SOCK_DGRAM)
    s.bind((addr, port))
    s.settimeout(2)
    ready.set()
    try:
        while True:
            data, peer = s.recvfrom(2048)
            s.sendto(data, peer)
    except TimeoutError:
        pass
    s.close()


def udp_rr(dst: str, seconds: float) -> dict[str, float]:
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    port = 5203
    p = ctx.Process(target=_udp_echo, args=(dst, port, ready))
    p.start()
    ready.wait(10)
    s = _sock(NODE, socket.SOCK_DGRAM)
    s.settimeout(1)
    s.connect((dst, port))
    n = lost = 0
    for _ in range(3):  # ARP / warm-up
        try:
            s.send(b"w")
            s.recv(64)
        except TimeoutError:
            pass
    deadline = time.perf_counter() + seconds
    t0 = time.perf_counter()
    while time.perf_counter() < deadline:
        s.send(b"x" * 32)
        try:
            s.recv(64)
            n += 1
        except TimeoutError:
            lost += 1
    elapsed = time.perf_counter() - t0
    s.close()
    p.join(10)
    return {"udp_rr_per_s": round(n / elapsed), "udp_rr_us": round(1e6 * elapsed / max(n, 1), 1)}


def measure(path: str, dst: str, args: argparse.Namespace) -> dict[str, object]:
    row: dict[str, object] = {"path": path, "dst": dst}
    row.update(tcp_bulk(dst, args.seconds, args.max_bytes))
    row.update(udp_flood(dst, args.seconds, args.udp_size))
    row.update(udp_rr(dst, min(args.seconds, 2.0)))
    return row


def show(rows: list[dict[str, object]]) -> None:
    cols = ["path", "tcp_MBps", "udp_pps", "udp_loss_pct", "udp_rr_per_s", "udp_rr_us"]
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="geneve forwarder vs veth (node -> ztunnel pod)")
        for c in cols:
            table.add_column(c, justify="left" if c == "path" else "right")
        for r in rows:
            table.add_row(*(str(r.get(c, "")) for c in cols))
        Console(markup=False, highlight=False).print(table)
    except ImportError:
        print("  ".join(f"{c:>14}" for c in cols))
        for r in rows:
            print("  ".join(f"{r.get(c, '')!s:>14}" for c in cols))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="per measurement (default 3)")
    ap.add_argument("--max-bytes", type=int, default=8 << 30, help="cap on the TCP transfer")
    ap.add_argument("--udp-size", type=int, default=64, help="UDP payload bytes for the pps test")
    ap.add_argument("--variants", default="epoll",
                    help=f"comma list of forwarder variants among {','.join(VARIANTS)} (default epoll)")
    ap.add_argument("--json-out", default="bench-results/geneve.json")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (creates network namespaces)", file=sys.stderr)
        return 1
    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        if v not in VARIANTS:
            ap.error(f"unknown variant {v}")
    rows: list[dict[str, object]] = []
    try:
        setup()
        rows.append(measure("veth", ZT_IP, args))
        for v in variants:
            proc = start_forwarder(VARIANTS[v])
            try:
                rows.append(measure(f"geneve-{v}", "192.168.127.2", args))
            finally:
                stop_forwarder(proc)
    finally:
        teardown()
    show(rows)
    out = Path(args.json_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"kernel": os.uname().release, "cpus": os.cpu_count(), "python": sys.version.split()[0],
            "seconds": args.seconds, "udp_size": args.udp_size, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    out.write_text(json.dumps({"meta": meta, "results": rows}, indent=2, sort_keys=True) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
