#!/usr/bin/env python3
"""How fast can any Python TLS relay pair go on this machine? The ceiling under the HBONE figures.

A meshed bulk transfer passes two userspace proxies: one encrypts (plain in, TLS out), the other
decrypts (TLS in, plain out). This bench measures the smallest such pair that can be written in
Python — no HTTP/2, no policy, no access log, no network namespaces of a lab — in the I/O
designs one would try for the ztunnel, against iperf3 straight to its server in the same run:

* ``uvloop``: asyncio on uvloop, its TLS transport (OpenSSL over memory BIOs), push-driven
  ``BufferedProtocol`` relays with write-buffer backpressure: the ztunnel's own design;
* ``threads``: one thread per direction per connection over a blocking ``ssl.SSLSocket``
  (kernel-buffered TLS: OpenSSL reads and writes the socket itself); OpenSSL releases the GIL.
  OpenSSL does not promise that one ``SSL`` object may be read and written from two threads at
  once; this variant shows what that design would buy if it could;
* ``threads-locked``: the same with the ``SSL`` object used under a lock, the socket
  non-blocking and waited on with ``poll`` outside the lock: the safe form of that design;
* ``threads-membio``: one thread per direction over ``ssl.SSLObject`` and memory BIOs (one
  ``recv``/``sendall`` per 256 KiB, the crypto under a lock).

iperf3 (one stream, ``--seconds``) runs client -> encrypting relay -> TLS -> decrypting relay ->
server, all on the loopback of a private network namespace (``unshare --net``: nothing of it
outlives the bench). For each design: MB/s, its ratio to direct iperf3, and each relay's CPU
per MB (``/proc/<pid>/stat``), the figure that moves least with the machine's load. Then sockperf
ping-pong (64 bytes, one kept connection) through the same pair: round-trip p50/p99 added.
TLS 1.3, ECDSA P-256 certificate, the cipher OpenSSL picks (AES-256-GCM), as the ztunnel has.

    python3 scripts/bench/tlsrelay.py [--seconds 4] [--rounds 2] [--designs uvloop,threads,...]

Prints a table, writes JSON (default bench-results/tlsrelay.json).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RELAY = Path(__file__).resolve().parent / "tlsrelay_pair.py"
DESIGNS = ("uvloop", "threads", "threads-locked", "threads-membio")
# iperf3 server, sockperf server (its own port: sockperf cannot bind one in TIME_WAIT), and the
# relays, decrypting and encrypting, in front of each.
SERVER, SOCKPERF, DEC, ENC = 5301, 5311, 5302, 5303
_PCT = re.compile(r"percentile\s+([\d.]+)\s*=\s*([\d.]+)")


def make_cert(path: str) -> None:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tlsrelay-bench")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    with open(path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def iperf3(port: int, seconds: float) -> float:
    out = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", f"{seconds:g}", "-J"],
                         capture_output=True, text=True, timeout=seconds + 30)
    res = json.loads(out.stdout)
    if "error" in res:
        raise RuntimeError(f"iperf3: {res['error']}")
    recv = res["end"]["sum_received"]
    return recv["bytes"] / 1e6 / recv["seconds"]


def sockperf(port: int, seconds: float) -> tuple[float, float]:
    out = subprocess.run(["sockperf", "ping-pong", "--tcp", "-i", "127.0.0.1", "-p", str(port), "-t", f"{seconds:g}",
                          "-m", "64", "--full-rtt"], capture_output=True, text=True, timeout=seconds + 30).stdout
    pct = {float(k): float(v) for k, v in _PCT.findall(out)}
    if 50.0 not in pct:
        raise RuntimeError(f"sockperf printed no percentiles: {out.strip()[-200:]}")
    return pct[50.0], pct[99.0]


def wait_port(port: int, timeout: float = 10.0) -> None:
    """Until something listens on ``port`` (read from /proc/net/tcp and tcp6: a test connection would go
    through the relays to the server, and iperf3 serves one client at a time)."""
    deadline = time.monotonic() + timeout
    while True:
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with open(table) as f:
                for line in f.readlines()[1:]:
                    local, state = line.split()[1], line.split()[3]
                    if state == "0A" and int(local.rpartition(":")[2], 16) == port:
                        return
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on {port}")
        time.sleep(0.05)


class Pair:
    """The two relay processes of one design (started and stopped by pid)."""

    def __init__(self, design: str, cert: str, server: int = SERVER) -> None:
        self.procs = []
        for role, listen, target in (("dec", DEC, server), ("enc", ENC, DEC)):
            self.procs.append(subprocess.Popen([sys.executable, str(RELAY), design, role, str(listen), str(target), cert],
                                               stderr=subprocess.DEVNULL))
            wait_port(listen)

    def ticks(self) -> list[int]:
        return [cpu_ticks(p.pid) for p in self.procs]

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait(timeout=10)


def measure(designs: list[str], seconds: float, cert: str) -> list[dict]:
    rows = []
    hz = os.sysconf("SC_CLK_TCK")
    iperf = subprocess.Popen(["iperf3", "-s", "-p", str(SERVER)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sperf = None
    try:
        wait_port(SERVER)
        direct = iperf3(SERVER, seconds)
        rows.append({"design": "direct", "mb_s": direct})
        for d in designs:
            pair = Pair(d, cert)
            try:
                t0 = pair.ticks()
                mbs = iperf3(ENC, seconds)
                t1 = pair.ticks()
            finally:
                pair.stop()
            mb = mbs * seconds
            rows.append({"design": d, "mb_s": mbs, "x_direct": mbs / direct,
                         "enc_cpu_ms_per_mb": (t1[1] - t0[1]) * 1000 / hz / mb,
                         "dec_cpu_ms_per_mb": (t1[0] - t0[0]) * 1000 / hz / mb})
        iperf.terminate()
        iperf.wait(timeout=10)
        sperf = subprocess.Popen(["sockperf", "server", "--tcp", "-i", "127.0.0.1", "-p", str(SOCKPERF)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(SOCKPERF)
        p50, p99 = sockperf(SOCKPERF, seconds)
        rows[0] |= {"p50_us": p50, "p99_us": p99}
        for row in rows[1:]:
            pair = Pair(row["design"], cert, SOCKPERF)
            try:
                r50, r99 = sockperf(ENC, seconds)
            finally:
                pair.stop()
            row |= {"p50_us": r50, "p99_us": r99, "p50_added_us": r50 - p50, "p99_added_us": r99 - p99}
    finally:
        for p in (iperf, sperf):
            if p is not None and p.poll() is None:
                p.terminate()
                p.wait(timeout=10)
    return rows


def inner(args: argparse.Namespace) -> None:
    """In the private netns: bring lo up, run the rounds, print JSON on stdout."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    with tempfile.TemporaryDirectory(prefix="nl-tlsrelay-") as tmp:
        cert = f"{tmp}/cert.pem"
        make_cert(cert)
        rounds = [measure(args.designs.split(","), args.seconds, cert) for _ in range(args.rounds)]
    print(json.dumps(rounds))


def summarise(rounds: list[list[dict]]) -> list[dict]:
    out = []
    for i, first in enumerate(rounds[0]):
        row = {"design": first["design"]}
        for key in first:
            if key != "design":
                vals = [r[i][key] for r in rounds]
                row[key] = statistics.median(vals)
                row[key + "_range"] = [min(vals), max(vals)]
        out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--seconds", type=float, default=4.0, help="duration of each iperf3 and sockperf run")
    ap.add_argument("--rounds", type=int, default=2, help="repeat every design; the table gives medians")
    ap.add_argument("--designs", default=",".join(DESIGNS), help=f"comma-separated, of {', '.join(DESIGNS)}")
    ap.add_argument("--json-out", default=str(ROOT / "bench-results" / "tlsrelay.json"), help="where the JSON goes")
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    bad = [d for d in args.designs.split(",") if d not in DESIGNS]
    if bad:
        sys.exit(f"tlsrelay: unknown design {bad[0]!r} (known: {', '.join(DESIGNS)})")
    if args.inner:
        inner(args)
        return
    for tool in ("iperf3", "sockperf", "unshare"):
        if shutil.which(tool) is None:
            sys.exit(f"tlsrelay bench needs {tool}: run scripts/install.sh")
    if os.geteuid() != 0:
        sys.exit("tlsrelay bench: run as root (it makes a private network namespace)")
    argv = [sys.executable, __file__, "--inner", "--seconds", str(args.seconds), "--rounds", str(args.rounds),
            "--designs", args.designs]
    res = subprocess.run(["unshare", "--net", "--", *argv], capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"tlsrelay: {res.stderr.strip().splitlines()[-1] if res.stderr.strip() else 'failed'}")
    rounds = json.loads(res.stdout)
    summ = summarise(rounds)
    print(f"{'design':16s} {'MB/s':>8s} {'x direct':>9s} {'enc ms/MB':>10s} {'dec ms/MB':>10s} "
          f"{'p50 µs':>8s} {'p99 µs':>8s} {'p50 added':>10s}")
    for r in summ:
        print(f"{r['design']:16s} {r['mb_s']:8.1f} {r.get('x_direct', 1.0):9.2f} {r.get('enc_cpu_ms_per_mb', 0):10.2f} "
              f"{r.get('dec_cpu_ms_per_mb', 0):10.2f} {r['p50_us']:8.1f} {r['p99_us']:8.1f} "
              f"{r.get('p50_added_us', 0):10.1f}")
    out = {"bench": "tlsrelay", "seconds": args.seconds, "rounds": rounds, "summary": summ,
           "load": os.getloadavg()[0], "cpus": os.cpu_count()}
    Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json_out).write_text(json.dumps(out, indent=1))
    print(f"JSON: {args.json_out}")


if __name__ == "__main__":
    main()
