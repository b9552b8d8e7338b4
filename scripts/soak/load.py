"""Load through ztunnel: N concurrent keep-alive connections held open at once, then M short
connections in a row, from a meshed pod to a meshed server behind a service; ztunnel's RSS and
fd count before and after (after a settle). With --side-by-side, two labs at once."""

from __future__ import annotations

import json
import sys
import threading
import time

from scripts.soak.common import lab_pids, lab_up, netlab, rss_fds

CLIENT = r'''
import asyncio, json, sys, time
conc, short = int(sys.argv[1]), int(sys.argv[2])
REQ = b"GET / HTTP/1.1\r\nHost: server\r\n\r\n"
async def get(r, w, close=False):
    w.write(REQ if not close else REQ.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
    await w.drain()
    head = await r.readuntil(b"\r\n\r\n")
    n = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0].split(b":")[1])
    await r.readexactly(n)
    return head.split(b" ", 2)[1] == b"200"
async def held():
    conns = []
    ok = 0
    for _ in range(conc):
        try:
            conns.append(await asyncio.wait_for(asyncio.open_connection("server", 80), 10))
        except Exception:
            pass
    res = await asyncio.gather(*(get(r, w) for r, w in conns), return_exceptions=True)
    ok = sum(1 for x in res if x is True)
    for _, w in conns:
        w.close()
    return len(conns), ok
async def shorts():
    ok = 0
    for _ in range(short):
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection("server", 80), 5)
            ok += await asyncio.wait_for(get(r, w, True), 5)
            w.close()
        except Exception:
            pass
    return ok
t = time.monotonic(); opened, held_ok = asyncio.run(held()); t1 = time.monotonic() - t
t = time.monotonic(); short_ok = asyncio.run(shorts()); t2 = time.monotonic() - t
print(json.dumps({"opened": opened, "held_ok": held_ok, "held_s": round(t1, 2), "short_ok": short_ok,
                  "short_s": round(t2, 2)}))
'''


def _ztunnels(lab: str) -> dict[str, tuple[int, int]]:
    return {n: rss_fds(p) for n, p in lab_pids(lab).items() if n.startswith("ztunnel/")}


def one(lab: str, concurrent: int, short: int, out: dict) -> None:
    before = _ztunnels(lab)
    p = netlab("exec", lab, "client", "--", sys.executable, "-c", CLIENT, str(concurrent), str(short),
               timeout=3600)
    res = json.loads(p.stdout.strip().splitlines()[-1])
    time.sleep(3)  # connections closed; let ztunnel drop them
    after = _ztunnels(lab)
    out[lab] = {"result": res, "before": before, "after": after}


def run(mode: str, concurrent: int, short: int, side_by_side: bool) -> dict:
    labs = ["rl-load-a", "rl-load-b"] if side_by_side else ["rl-load-a"]
    out: dict = {}
    import contextlib
    with contextlib.ExitStack() as stack:
        for lab in labs:
            stack.enter_context(lab_up("minimal", lab, "--mode", mode))
        # warm up (first SVIDs, first connection pools) before the "before" figures
        for lab in labs:
            netlab("exec", lab, "client", "--", sys.executable, "-c", CLIENT, "5", "20", timeout=600)
        ths = [threading.Thread(target=one, args=(lab, concurrent, short, out)) for lab in labs]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
    rows = []
    for lab, r in sorted(out.items()):
        res = r["result"]
        growth = {n: (r["after"][n][0] - r["before"][n][0], r["after"][n][1] - r["before"][n][1]) for n in r["before"]}
        rss = ", ".join(f"{r['before'][n][0] // 1024}->{r['after'][n][0] // 1024} MiB" for n in r["before"])
        fds = ", ".join(f"{r['before'][n][1]}->{r['after'][n][1]}" for n in r["before"])
        ok = res["held_ok"] == concurrent and res["short_ok"] == short and all(g[1] <= 2 for g in growth.values())
        rows.append({"test": f"load through ztunnel, {mode}" + (" (two labs at once)" if side_by_side else "")
                     + f", lab {lab}",
                     "load": f"{concurrent} concurrent + {short} short connections",
                     "held": f"{res['held_ok']}/{concurrent} held served in {res['held_s']}s, {res['short_ok']}/{short} "
                             f"short in {res['short_s']}s; ztunnel RSS {rss}, fds {fds}",
                     "lost": "nothing" if ok else "see detail", "detail": r, "ok": ok})
    return {"rows": rows}
