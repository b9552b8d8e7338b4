#!/usr/bin/env python3
"""Report benchmark: the wall time of a full ``netlab report`` over none, node-routing and inpod.

Runs the report exactly as ``netlab report bookinfo -o DIR`` does (the library runner, the
default scenario: 50 requests, a 16 MiB iperf3 transfer, one captured connection, kernel
objects of every netns, one live enrollment), ``--rounds`` times, and prints the time of each
phase per design. The baseline is the ``--mode none`` design of the same run: each meshed
design's time is also given as a ratio to it (what the mesh adds to standing a lab up,
capturing it and reading it). Writes JSON (default ``bench-results/report.json``). Goal: a
full bookinfo report over the three designs in ≤ 90 s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

from netlab.observe.report import runner


def one(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="nl-bench-report-") as out:
        t0 = time.monotonic()
        rep = runner.run(runner.Options(topology=args.topology, out_dir=out, name=args.name,
                                        requests=args.requests, bulk_mib=args.mib))
        runner.write(rep, out)
        total = time.monotonic() - t0
    rows = {r.design: {p.name: p.seconds for p in r.phases} for r in rep.designs}
    return {"seconds": round(total, 2), "designs": rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--topology", default="bookinfo")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--mib", type=int, default=16)
    ap.add_argument("--name", default="bre", help="lab name prefix (labs <name>-none, -nr, -ip)")
    ap.add_argument("--json-out", default="bench-results/report.json")
    args = ap.parse_args()
    rounds = [one(args) for _ in range(args.rounds)]
    phases = ("up", "capture", "scenario", "trace", "objects", "enroll", "down")
    print(f"{'design':<14}" + "".join(f"{p:>10}" for p in phases) + f"{'total':>10}{'× none':>8}")
    last = rounds[-1]["designs"]
    base = sum(last.get("none", {}).values()) or None
    for d, ph in last.items():
        tot = sum(ph.values())
        print(f"{d:<14}" + "".join(f"{ph.get(p, 0):>10.2f}" for p in phases) + f"{tot:>10.2f}"
              + (f"{tot / base:>8.2f}" if base else f"{'':>8}"))
    totals = [r["seconds"] for r in rounds]
    print(f"full report: {statistics.median(totals):.1f} s (median of {len(totals)}: "
          f"{', '.join(f'{t:.1f}' for t in totals)}); goal ≤ 90 s")
    os.makedirs(os.path.dirname(args.json_out) or ".", exist_ok=True)
    with open(args.json_out, "w") as f:
        json.dump({"rounds": rounds, "median_seconds": statistics.median(totals), "cpus": os.cpu_count(),
                   "load": os.getloadavg()}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
