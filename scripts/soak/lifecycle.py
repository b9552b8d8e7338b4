"""Lifecycle soak: bookinfo up, one request, down, N times per design; leftovers after each."""

from __future__ import annotations

import statistics
import time

from scripts.soak.common import curl, leftovers, netlab


def run(cycles: int, modes: list[str], topology: str = "bookinfo") -> list[dict]:
    rows = []
    for mode in modes:
        lab = f"rl-soak-{mode[:2]}"
        ups, downs, served, left = [], [], 0, {}
        for i in range(cycles):
            t = time.monotonic()
            netlab("up", topology, "--name", lab, "--mode", mode)
            ups.append(time.monotonic() - t)
            served += curl(lab, "sleep", "http://productpage:9080/") == "200"
            t = time.monotonic()
            netlab("down", lab)
            downs.append(time.monotonic() - t)
            lo = leftovers(lab)
            if lo:
                left[i] = lo
        rows.append({"test": f"lifecycle soak, bookinfo, {mode}", "load": f"{cycles} up/down cycles",
                     "held": f"{served}/{cycles} first requests served (200), 0 leftover cycles"
                     if not left else f"{served}/{cycles} served", "lost": f"leftovers in {len(left)} cycles"
                     if left else "nothing", "detail": left,
                     "up_s_median": round(statistics.median(ups), 2), "down_s_median": round(statistics.median(downs), 2),
                     "ok": served == cycles and not left})
    return rows
