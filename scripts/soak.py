#!/usr/bin/env python3
"""Long reliability runs (root): lifecycle soak, faults, load, fuzz. Prints a table, writes JSON.

    python3 scripts/soak.py lifecycle --cycles 100            # bookinfo up/down x100 per design
    python3 scripts/soak.py faults --kills 20 --trials 10     # kill -9, signals, netns deleted, full disk, gc races
    python3 scripts/soak.py load --concurrent 500 --short 10000 [--side-by-side]
    python3 scripts/soak.py fuzz --examples 2000              # hypothesis over topology YAML and CLI args
    python3 scripts/soak.py all --short-run                   # the CI-sized version of everything

Every lab is named ``rl-*``; gc runs only over those (``lifecycle.gc(only=...)``), so other
labs on the machine are never candidates. The root netns is snapshotted (links, addresses,
every route table, rules, iptables-save, ipset list, sysctls) before and after the whole run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from scripts.soak import common, faults, lifecycle, load  # noqa: E402

MODES = ["none", "node-routing", "inpod"]


def fuzz(examples: int) -> dict:
    env = {**os.environ, "NETLAB_FUZZ_EXAMPLES": str(examples), "NETLAB_FUZZ_RANDOM": "1", "PYTHONPATH": ROOT}
    t = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/reliability/test_fuzz.py"],
                       cwd=ROOT, env=env, capture_output=True, text=True)
    last = (p.stdout.strip().splitlines() or [""])[-1]
    return {"test": "hypothesis fuzzer: topology YAML (+ mode/version/name) and `up --dry-run` arguments",
            "load": f"{examples} files x2 tests + {max(50, examples // 3)} argument lists",
            "held": f"every case a plan or one error line with exit 2-7, no traceback ({last}, "
                    f"{time.monotonic() - t:.0f}s)", "lost": "nothing" if p.returncode == 0 else p.stdout[-800:],
            "ok": p.returncode == 0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["lifecycle", "faults", "load", "fuzz", "all"])
    ap.add_argument("--cycles", type=int, default=100)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--kills", type=int, default=20, help="kill -9 per design")
    ap.add_argument("--trials", type=int, default=10, help="signal trials per signal and phase")
    ap.add_argument("--races", type=int, default=10, help="gc-vs-up/down rounds")
    ap.add_argument("--concurrent", type=int, default=500)
    ap.add_argument("--short", type=int, default=10000)
    ap.add_argument("--side-by-side", action="store_true", help="load: two labs at full load at once")
    ap.add_argument("--examples", type=int, default=2000)
    ap.add_argument("--short-run", action="store_true", help="CI size: 2 cycles, 2 kills, 1 trial, small load")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json-out", default="bench-results/soak.json")
    a = ap.parse_args()
    if a.short_run:
        a.cycles, a.kills, a.trials, a.races, a.concurrent, a.short, a.examples = 2, 2, 1, 2, 50, 200, 100
    if os.geteuid() != 0 and a.what != "fuzz":
        print("soak: needs root (real labs)", file=sys.stderr)
        return 7
    rnd = random.Random(a.seed)
    modes = [m for m in a.modes.split(",") if m]
    before = common.root_snapshot()
    rows: list[dict] = []
    t0 = time.monotonic()
    if a.what in ("lifecycle", "all"):
        rows += lifecycle.run(a.cycles, modes)
    if a.what in ("faults", "all"):
        for m in [m for m in modes if m != "none"]:
            rows.append(faults.kill9(m, a.kills, rnd))
        with tempfile.TemporaryDirectory(prefix="rl-soak-") as d:
            rows += faults.signals(a.trials, rnd, d)
        rows.append(faults.netns_deleted())
        rows.append(faults.full_disk())
        rows.append(faults.gc_race(a.races))
    if a.what in ("load", "all"):
        for m in [m for m in modes if m != "none"]:
            rows += load.run(m, a.concurrent, a.short, a.side_by_side)["rows"]
    if a.what in ("fuzz", "all"):
        rows.append(fuzz(a.examples))
    changed = common.snapshot_diff(before, common.root_snapshot())
    rows.append({"test": "root netns before/after the whole run", "load": "links, addresses, routes (all tables, "
                 "v4+v6), rules, iptables-save, ipset list, sysctls", "held": "identical" if not changed else
                 f"changed: {changed}", "lost": "nothing" if not changed else "see held", "ok": not changed})
    for r in rows:
        print(f"{'ok ' if r['ok'] else 'BAD'} | {r['test']} | {r['load']} | {r['held']} | {r['lost']}")
    print(f"soak: {time.monotonic() - t0:.0f}s, {sum(not r['ok'] for r in rows)} failed", file=sys.stderr)
    os.makedirs(os.path.dirname(os.path.abspath(a.json_out)), exist_ok=True)
    with open(a.json_out, "w") as f:
        json.dump({"args": vars(a), "rows": rows, "seconds": round(time.monotonic() - t0)}, f, indent=1, default=str)
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
