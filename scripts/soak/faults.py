"""Faults: kill -9 of each lab process kind during traffic, signals at random moments of
``up`` and ``down``, a netns deleted behind netlab's back, a full state disk, gc racing."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time

from netlab import names
from scripts.soak.common import NETLAB, curl, gc_mine, lab_pids, lab_up, leftovers, netlab, wait_for


def kill9(mode: str, kills: int, rnd: random.Random) -> dict:
    """kill -9 a random process of each kind, then wait until productpage serves again."""
    lab = f"rl-k9-{mode[:2]}"
    recovered, worst, n = 0, 0.0, 0
    kinds: dict[str, int] = {}
    with lab_up("bookinfo", lab, "--mode", mode):
        for _ in range(kills):
            pids = lab_pids(lab)
            kind_names = sorted({p.split("/")[0] for p in pids})
            kind = rnd.choice(kind_names)
            victim = rnd.choice(sorted(p for p in pids if p.startswith(kind + "/") and
                                       not p.endswith(("/sleep", "/notsleep"))) or sorted(pids))
            time.sleep(rnd.uniform(0.0, 1.0))
            os.kill(pids[victim], signal.SIGKILL)
            n += 1
            kinds[kind] = kinds.get(kind, 0) + 1
            t = time.monotonic()
            if wait_for(lambda: curl(lab, "sleep", "http://productpage:9080/", timeout=3) == "200", timeout=60,
                        step=0.1):
                recovered += 1
                worst = max(worst, time.monotonic() - t)
    lo = leftovers(lab)
    return {"test": f"kill -9 during traffic, bookinfo, {mode}",
            "load": f"{n} kills ({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))})",
            "held": f"traffic recovered after {recovered}/{n} kills (slowest {worst:.1f}s); down left nothing"
            if not lo else f"recovered {recovered}/{n}", "lost": "nothing" if recovered == n and not lo else
            f"{n - recovered} not recovered; leftovers {lo}", "ok": recovered == n and not lo}


def _topo(tmpdir: str, pods: int) -> str:
    p = os.path.join(tmpdir, "sig.yaml")
    with open(p, "w") as f:
        f.write(f"name: rl-sig\nnodes: [{{name: n1}}, {{name: n2}}]\n"
                f"namespaces: [{{name: default, labels: {{istio.io/dataplane-mode: ambient}}}}]\n"
                f"pods: [{{name: w, node: n1, app: echo, replicas: {pods}}}, {{name: c, node: n2, app: sleep}}]\n")
    return p


def signals(trials: int, rnd: random.Random, tmpdir: str) -> list[dict]:
    """SIGINT/SIGTERM/SIGKILL at a random moment of `up` (inpod, 20 pods) and of `down`."""
    topo = _topo(tmpdir, 20)
    t = time.monotonic()
    netlab("up", topo, "--mode", "inpod")
    t_up = time.monotonic() - t
    netlab("down", "rl-sig")
    rows = []
    for phase in ("up", "down"):
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            codes: dict[int, int] = {}
            lines: set[str] = set()
            dirty = 0
            for _ in range(trials):
                if phase == "down":
                    netlab("up", topo, "--mode", "inpod")
                argv = [*NETLAB, "up", topo, "--mode", "inpod"] if phase == "up" else [*NETLAB, "down", "rl-sig"]
                p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                time.sleep(rnd.uniform(0, t_up if phase == "up" else 1.5))
                p.send_signal(sig)
                _, err = p.communicate(timeout=120)
                codes[p.returncode] = codes.get(p.returncode, 0) + 1
                if err.strip():
                    lines.add(err.strip().splitlines()[-1][:90])
                # what a user does next: SIGKILL leaves a lab for gc (up) or another down
                if sig == signal.SIGKILL and phase == "up":
                    gc_mine("rl-sig")
                if "rl-sig" in (os.listdir(names.STATE_ROOT) if os.path.isdir(names.STATE_ROOT) else []) \
                        or leftovers("rl-sig").get("netns"):
                    netlab("down", "rl-sig", check=False)
                if leftovers("rl-sig"):
                    dirty += 1
            rows.append({"test": f"{signal.Signals(sig).name} at a random moment of `{phase}` (inpod, 21 pods)",
                         "load": f"{trials} trials", "exit codes": codes, "messages": sorted(lines),
                         "held": f"exit codes {codes}; then "
                                 + ("gc" if sig == signal.SIGKILL and phase == "up" else "down (if needed)")
                                 + f" left nothing in {trials - dirty}/{trials}",
                         "lost": "nothing" if not dirty else f"leftovers in {dirty}", "ok": not dirty})
    return rows


def netns_deleted() -> dict:
    lab = "rl-nsdel"
    with lab_up("bookinfo", lab, "--mode", "inpod"):
        subprocess.run(["ip", "netns", "del", names.netns(lab, "reviews-v1")], check=True)
        import json
        st = json.loads(netlab("status", lab, "--json").stdout)["data"][0]
    lo = leftovers(lab)
    return {"test": "a pod netns deleted behind netlab's back (bookinfo, inpod)", "load": "1 netns",
            "held": f"status: {st['state']} ({'; '.join(st['problems'])[:80]}); down left nothing" if not lo else "",
            "lost": "nothing" if not lo else str(lo), "ok": st["state"] == "degraded" and not lo}


FULL = """
set -u
mkdir -p /tmp/rl-full && mount -t tmpfs -o size={size}k tmpfs /tmp/rl-full
export NETLAB_STATE_ROOT=/tmp/rl-full
{py} -m netlab up bookinfo --name rl-full --mode inpod; echo "rc=$?"
ls /var/run/netns | grep -c '^nl-rl-full\\.' ; ls -A /tmp/rl-full | wc -l
{py} -m netlab down rl-full >/dev/null 2>&1
umount /tmp/rl-full
"""


def full_disk(size_kib: int = 64) -> dict:
    """The state dir on a tiny tmpfs, in a private mount namespace (nothing mounted on the host)."""
    import sys
    p = subprocess.run(["unshare", "-m", "--propagation", "slave", "sh", "-c",
                        FULL.format(size=size_kib, py=sys.executable)], capture_output=True, text=True, timeout=300)
    out = p.stdout.split()
    rc = next((w for w in out if w.startswith("rc=")), "rc=?")
    netns_left, files_left = (out[-2], out[-1]) if len(out) >= 2 else ("?", "?")
    line = p.stderr.strip().splitlines()[0] if p.stderr.strip() else ""
    return {"test": f"state dir on a full {size_kib} KiB tmpfs (bookinfo, inpod)", "load": "1 up",
            "held": f"{rc}, one line: {line[:100]!r}; rolled back: {netns_left} netns, {files_left} state files left",
            "lost": "nothing" if netns_left == "0" and files_left == "0" else "leftovers",
            "ok": rc not in ("rc=0", "rc=?") and "Traceback" not in p.stderr and netns_left == "0"}


def gc_race(rounds: int) -> dict:
    """gc (over rl-race only) in a tight loop while `up` and then `down` run."""
    bad_up = bad_down = removed_busy = 0
    errors: list[str] = []
    for _ in range(rounds):
        for phase in ("up", "down"):
            argv = [*NETLAB, "up", "minimal", "--name", "rl-race", "--mode", "inpod"] if phase == "up" \
                else [*NETLAB, "down", "rl-race"]
            p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            stop = threading.Event()
            hits: list[str] = []

            def loop(stop: threading.Event = stop, hits: list[str] = hits) -> None:
                while not stop.is_set():
                    hits.extend(gc_mine("rl-race"))

            th = threading.Thread(target=loop)
            th.start()
            _, err = p.communicate(timeout=120)
            stop.set()
            th.join()
            removed_busy += hits.count("rl-race")
            if p.returncode != 0:
                errors.append(f"{phase}: {err.strip()[:120]}")
            if phase == "up":
                bad_up += p.returncode != 0
                if p.returncode != 0:
                    netlab("down", "rl-race", check=False)
                    break
            else:
                bad_down += p.returncode != 0
    lo = leftovers("rl-race")
    return {"test": "gc racing `up` and `down` (minimal, inpod)", "load": f"{rounds} up + {rounds} down with gc "
            "in a tight loop", "held": f"up failed {bad_up}, down failed {bad_down}, gc removed a busy lab "
            f"{removed_busy} times; " + ("nothing left" if not lo else "leftovers"), "errors": errors,
            "lost": "nothing" if not (lo or errors) else f"{errors[:2]} {lo}",
            "ok": not (bad_up or bad_down or removed_busy or lo)}
