"""Lifecycle soak: bookinfo up, one request, down, N times per design; leftovers after each."""

from __future__ import annotations

import statistics
import time

from scripts.soak.common import curl, lab_name, leftovers, netlab

FIRST_REQUEST_TIMEOUT_S = 20


def run(cycles: int, modes: list[str], topology: str = "bookinfo") -> list[dict]:
    rows = []
    for mode in modes:
        lab = lab_name("rl-soak", mode)
        ups, downs, served, left, codes = [], [], 0, {}, {}
        for i in range(cycles):
            t = time.monotonic()
            netlab("up", topology, "--name", lab, "--mode", mode)
            ups.append(time.monotonic() - t)
            # the first request, no retry; a generous timeout: the machine may be busy
            code = curl(lab, "sleep", "http://productpage:9080/", timeout=FIRST_REQUEST_TIMEOUT_S)
            served += code == "200"
            if code != "200":
                codes[i] = code
            t = time.monotonic()
            netlab("down", lab)
            downs.append(time.monotonic() - t)
            lo = leftovers(lab)
            if lo:
                left[i] = lo
        rows.append({"test": f"lifecycle soak, bookinfo, {mode}", "load": f"{cycles} up/down cycles",
                     "held": f"{served}/{cycles} first requests served (200), 0 leftover cycles"
                     if not left else f"{served}/{cycles} served", "lost": f"leftovers in {len(left)} cycles"
                     if left else "nothing" if served == cycles else f"first request not served in cycles {codes}",
                     "detail": left, "codes": codes,
                     "up_s_median": round(statistics.median(ups), 2), "down_s_median": round(statistics.median(downs), 2),
                     "ok": served == cycles and not left})
    return rows
