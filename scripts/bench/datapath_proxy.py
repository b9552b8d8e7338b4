#!/usr/bin/env python3
"""Proxy-only microbenchmark of netlab's ztunnel (root; netns only, the host is not touched).

Builds the kernel tests' two-node lab (``tests/kernel/ztunnel/ztlab.py``: client pod -> node A
ztunnel -> HBONE mTLS -> node B ztunnel -> server pod, TPROXY redirection), starts the two
ztunnel processes, and compares the mesh path with the direct path (port 19002, not captured):

* bulk: one connection sending N MiB (default 256), MB/s;
* rr:   p50/p99 of 100-byte request/response round trips on one connection;
* crr:  p50 of connect + 100-byte request/response + close (new connection each time).

    python scripts/bench/datapath_proxy.py [--mib 256] [--rr 2000] [--crr 200] [--json] [--json-out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "kernel" / "ztunnel")]

import ztlab  # noqa: E402

from netlab.runtime.ztunnel import certs  # noqa: E402


class _Sink(ztlab.socketserver.BaseRequestHandler):
    """Bulk: count to EOF then reply; rr: echo 100-byte messages."""

    def handle(self) -> None:
        buf = bytearray(1 << 20)
        first = self.request.recv_into(buf, 1)
        if not first:
            return
        if buf[0:1] == b"B":
            n = 1
            while k := self.request.recv_into(buf):
                n += k
            self.request.sendall(f"{n}\n".encode())
        else:
            pending = bytes(buf[:1])
            while True:
                while len(pending) < 100:
                    chunk = self.request.recv(100 - len(pending))
                    if not chunk:
                        return
                    pending += chunk
                self.request.sendall(pending)
                pending = b""


def _connect(ns: str, port: int) -> socket.socket:
    s = ztlab.connect(ns, ztlab.SERVER_IP, port, timeout=120)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def bulk(ns: str, port: int, mib: int) -> float:
    s = _connect(ns, port)
    buf = b"B" * (1 << 20)
    t0 = time.perf_counter()
    for _ in range(mib):
        s.sendall(buf)
    s.shutdown(socket.SHUT_WR)
    reply = s.makefile("rb").readline()
    dt = time.perf_counter() - t0
    s.close()
    assert int(reply) == mib << 20, reply
    return (mib << 20) / dt / 1e6


def _rt(s: socket.socket, msg: bytes) -> None:
    s.sendall(msg)
    got = 0
    while got < 100:
        chunk = s.recv(100 - got)
        if not chunk:
            raise ConnectionError("closed")
        got += len(chunk)


def rr(ns: str, port: int, n: int) -> list[float]:
    s = _connect(ns, port)
    msg = b"r" * 100
    for _ in range(50):
        _rt(s, msg)
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        _rt(s, msg)
        out.append((time.perf_counter() - t0) * 1e6)
    s.close()
    return out


def crr(ns: str, port: int, n: int) -> list[float]:
    msg = b"r" * 100
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        s = _connect(ns, port)
        _rt(s, msg)
        s.close()
        out.append((time.perf_counter() - t0) * 1e6)
    return out


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--rr", type=int, default=2000)
    ap.add_argument("--crr", type=int, default=200)
    ap.add_argument("--json", action="store_true", help="print the JSON on stdout instead of the table")
    ap.add_argument("--json-out", default="bench-results/datapath_proxy.json", help="where the JSON goes")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("datapath_proxy: needs root (creates network namespaces)", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="nl-zt-bench-"))
    certs_dir = work / "certs"
    reg = ztlab.registry_doc()
    certs.ensure_identities(str(certs_dir), [f"spiffe://cluster.local/ns/default/sa/{w['service_account']}"
                                             for w in reg["workloads"]])
    names = ztlab.build_lab()
    servers, zts = [], []
    try:
        for port in (9100, ztlab.DIRECT_PORT):
            servers.append(ztlab.serve(names["s"], ztlab.SERVER_IP, port, _Sink))
        zts.append(ztlab.Ztunnel(names["a"], "node-a", work / "zt-a", registry=reg, certs_dir=certs_dir))
        zts.append(ztlab.Ztunnel(names["b"], "node-b", work / "zt-b", registry=reg, certs_dir=certs_dir))
        c = names["c"]
        res: dict[str, dict[str, float]] = {}
        for label, port in (("direct", ztlab.DIRECT_PORT), ("mesh", 9100)):
            r, cr = rr(c, port, args.rr), crr(c, port, args.crr)
            res[label] = {"bulk_MBps": round(bulk(c, port, args.mib), 1),
                          "rr_p50_us": round(statistics.median(r), 1), "rr_p99_us": round(pct(r, 0.99), 1),
                          "crr_p50_us": round(statistics.median(cr), 1)}
        res["ratio"] = {"bulk_mesh_over_direct": round(res["mesh"]["bulk_MBps"] / res["direct"]["bulk_MBps"], 3),
                        "rr_p50_mesh_over_direct": round(res["mesh"]["rr_p50_us"] / res["direct"]["rr_p50_us"], 2),
                        "crr_p50_mesh_over_direct": round(res["mesh"]["crr_p50_us"] / res["direct"]["crr_p50_us"], 2)}
        os.makedirs(os.path.dirname(args.json_out) or ".", exist_ok=True)
        with open(args.json_out, "w") as f:
            json.dump(res, f, indent=2, sort_keys=True)
        if args.json:
            print(json.dumps(res, indent=2, sort_keys=True))
        else:
            for k, v in res.items():
                print(f"{k:7s} " + "  ".join(f"{kk}={vv}" for kk, vv in v.items()))
    finally:
        for z in zts:
            z.stop()
        for srv in servers:
            srv.shutdown()
            srv.server_close()
        ztlab.destroy_lab(names)
    return 0


if __name__ == "__main__":
    sys.exit(main())
