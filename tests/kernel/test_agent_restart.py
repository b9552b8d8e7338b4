"""The in-pod CNI agent restarted inside a running lab: nothing duplicated, nothing leaked.

A node agent restarts at any time (upgrade, crash). The new one must find the rules the old
one wrote (kept, not added again), hand ztunnel the same pods over a new ZDS connection, and
ztunnel must recognise them (same netns inode) instead of opening a second set of
listeners. Checked on bookinfo with its own traffic (productpage through the mesh), after run-time enroll/unenroll, and on
50 pods enrolled at once. (The agent alone against a ZDS client built from the schema is
``test_zds_agent.py``; ztunnel's pod manager alone is ``ztunnel/test_zt_inpod.py``.)
"""

from __future__ import annotations

import collections
import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml

from netlab import names
from netlab.apply import iptables
from netlab.lab.enroll import set_enrollment
from netlab.lab.state import load_record
from netlab.runtime import supervisor
from tests.kernel.helpers import in_lab, lab_up, netlab, run

pytestmark = pytest.mark.root
ZT_PORTS = (15001, 15006, 15008)
NODE = "ambient-worker2"  # productpage, details, reviews v1-v3, ratings: the busy node


# -- what is looked at -----------------------------------------------------------------------


def processes(lab: str) -> dict[str, dict]:
    return {p["name"]: p for p in supervisor.request(lab, {"op": "status"})["processes"]}


def listeners(ns: str) -> dict[int, int]:
    """How many LISTEN sockets each ztunnel port has inside ``ns`` (``ss -tlnH``)."""
    got = dict.fromkeys(ZT_PORTS, 0)
    for line in run("ss", "-tlnH", ns=ns, check=False).splitlines():
        port = int(line.split()[3].rsplit(":", 1)[1])
        if port in got:
            got[port] += 1
    return got


def pod_objects(ns: str) -> dict:
    """Per table, (chains, rules) of ``iptables-save``; ISTIO chains; rule 32764; table-100 routes."""
    tables: dict[str, list[int]] = {}
    table = ""
    saved = iptables.save(ns)
    for line in saved.splitlines():
        if line.startswith("*"):
            table = line[1:]
            tables[table] = [0, 0]
        elif line.startswith(":"):
            tables[table][0] += 1
        elif line.startswith("-A"):
            tables[table][1] += 1
    rules = [ln for ln in run("ip", "rule", "show", ns=ns, check=False).splitlines() if ln.startswith("32764:")]
    routes = run("ip", "route", "show", "table", "100", ns=ns, check=False).splitlines()
    return {"iptables": {t: tuple(v) for t, v in tables.items()}, "istio_chains": saved.count("\n:ISTIO_"),
            "rule32764": len(rules), "table100": len(routes)}


def node_objects(ns: str) -> dict:
    saved = iptables.save(ns)
    members = run("ipset", "list", "istio-inpod-probes", ns=ns, check=False).split("Members:\n", 1)[-1].split()
    return {"postrt_rules": sum(ln.startswith("-A ISTIO_POSTRT") for ln in saved.splitlines()),
            "postrt_jumps": saved.count("-A POSTROUTING -j ISTIO_POSTRT"),
            "probe_ipset": sorted(m for m in members if re.fullmatch(r"[\d.]+", m))}


def zt_fds(pid: int) -> collections.Counter:
    """ztunnel's open fds by kind: ``netns`` (pod netns it holds), ``socket``, ``other``."""
    c: collections.Counter = collections.Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        kind = ("netns" if target.startswith(("/run/netns/", "/var/run/netns/", "net:["))
                else "socket" if target.startswith("socket:") else "other")
        c[kind] += 1
    c["total"] = sum(c.values())
    return c


class Snapshot:
    """Everything that must be the same before and after an agent restart, for one node."""

    def __init__(self, lab: str, node: str) -> None:
        rec = load_record(lab)
        assert rec is not None
        self.enrolled = sorted(p for p, i in rec.pods.items() if i["node"] == node and i["ambient"])
        self.out = sorted(p for p, i in rec.pods.items() if i["node"] == node and not i["ambient"])
        self.listeners = {p: listeners(names.netns(lab, p)) for p in self.enrolled + self.out}
        self.pods = {p: pod_objects(names.netns(lab, p)) for p in self.enrolled + self.out}
        self.node = node_objects(names.netns(lab, node))
        self.zt_pid = processes(lab)[f"ztunnel/{node}"]["pid"]
        self.fds = zt_fds(self.zt_pid)

    def check_served(self) -> None:
        """One listener per port in each enrolled pod, none in the others; ztunnel holds one
        netns fd per enrolled pod."""
        for p in self.enrolled:
            assert self.listeners[p] == dict.fromkeys(ZT_PORTS, 1), (p, self.listeners[p])
            o = self.pods[p]
            # 1.22 (the default): ISTIO_PRERT and ISTIO_OUTPUT in mangle, ISTIO_OUTPUT in nat
            assert o["istio_chains"] == 3 and o["rule32764"] == 1 and o["table100"] == 1, (p, o)
        for p in self.out:
            assert self.listeners[p] == dict.fromkeys(ZT_PORTS, 0), (p, self.listeners[p])
            o = self.pods[p]
            assert o["istio_chains"] == o["rule32764"] == o["table100"] == 0, (p, o)
            assert all(rules == 0 for _, rules in o["iptables"].values()), (p, o)
        assert self.fds["netns"] == len(self.enrolled), self.fds

    def assert_unchanged_since(self, before: Snapshot) -> None:
        assert self.zt_pid == before.zt_pid, "ztunnel itself was restarted"
        assert (self.enrolled, self.out) == (before.enrolled, before.out)
        assert self.listeners == before.listeners
        assert self.pods == before.pods, "per-pod iptables/rule/route counts changed"
        assert self.node == before.node
        assert self.fds["netns"] == before.fds["netns"], (before.fds, self.fds)
        assert self.fds["total"] <= before.fds["total"], f"ztunnel fds grew: {before.fds} -> {self.fds}"


def restart_agent(lab: str, node: str, timeout: float = 30.0) -> None:
    """``netlab restart LAB cni-<node>``; returns once the new agent is ready and ztunnel has
    taken its snapshot over the new ZDS connection."""
    log = os.path.join(names.state_dir(lab), "logs", f"cni-agent.{node}.log")
    acked = open(log).read().count("snapshot of")
    old = processes(lab)[f"cni-agent/{node}"]["pid"]
    netlab("restart", lab, f"cni-{node}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p = processes(lab)[f"cni-agent/{node}"]
        if p["pid"] not in (None, old) and p["ready"] and open(log).read().count("snapshot of") > acked:
            return
        time.sleep(0.05)
    raise AssertionError(f"agent of {node} not back with a ZDS snapshot acked in {timeout:.0f} s")


def page(lab: str) -> str:
    return in_lab(lab, "sleep", "curl", "-s", "--max-time", "10", "http://productpage:9080/").stdout


# -- bookinfo --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bookinfo():
    with lab_up("bookinfo", "enrst", "--mode", "inpod") as lab:
        yield lab


def test_agent_restart_in_bookinfo_keeps_one_listener_set_and_no_leak(bookinfo) -> None:
    lab = bookinfo
    for _ in range(4):  # every reviews version once: ztunnel's HBONE pool is warm before counting
        assert page(lab).splitlines()[0] == "<!DOCTYPE html>"
    before = Snapshot(lab, NODE)
    before.check_served()
    assert before.node["postrt_rules"] == 1 and before.node["postrt_jumps"] == 1
    assert len(before.node["probe_ipset"]) == len(before.enrolled) == 6
    restart_agent(lab, NODE)
    after = Snapshot(lab, NODE)  # before any new traffic: only the restart can have changed fds
    after.assert_unchanged_since(before)
    assert page(lab).splitlines()[0] == "<!DOCTYPE html>"
    assert listeners(names.netns(lab, "productpage-v1")) == dict.fromkeys(ZT_PORTS, 1)


def test_agent_restart_after_run_time_enroll_and_unenroll(bookinfo) -> None:
    lab = bookinfo
    netlab("unenroll", lab, "reviews-v1")  # out at run time: must stay out
    netlab("unenroll", lab, "ratings-v1")
    netlab("enroll", lab, "ratings-v1")  # out and back in at run time: one listener set
    try:
        assert page(lab).splitlines()[0] == "<!DOCTYPE html>"
        before = Snapshot(lab, NODE)
        assert before.out == ["reviews-v1"]
        before.check_served()
        assert len(before.node["probe_ipset"]) == 5
        restart_agent(lab, NODE)
        after = Snapshot(lab, NODE)
        after.assert_unchanged_since(before)
        after.check_served()
        for _ in range(3):
            assert page(lab).splitlines()[0] == "<!DOCTYPE html>"
    finally:
        netlab("enroll", lab, "reviews-v1")
    restart_agent(lab, NODE)  # and once more with everything back in
    final = Snapshot(lab, NODE)
    assert final.out == [] and len(final.enrolled) == 6
    final.check_served()
    assert len(final.node["probe_ipset"]) == 6
    assert page(lab).splitlines()[0] == "<!DOCTYPE html>"


# -- fifty pods at once ----------------------------------------------------------------------


def test_fifty_pods_enrolled_at_once_then_agent_restart(tmp_path) -> None:
    lab, n = "enr50", 50
    topo = {"name": lab, "nodes": [{"name": "n1"}], "namespaces": [{"name": "default"}],
            "pods": [{"name": "p", "node": "n1", "app": "echo", "replicas": n, "labels": {"app": "echo"}}],
            "services": [{"name": "echo", "selector": {"app": "echo"}, "ports": [9080]}]}
    path = tmp_path / "fifty.yaml"
    path.write_text(yaml.safe_dump(topo))
    with lab_up(str(path), lab, "--mode", "inpod"):
        pods = sorted(load_record(lab).pods)
        assert len(pods) == n
        t0 = time.monotonic()
        with ThreadPoolExecutor(max_workers=n) as ex:  # as n `netlab enroll` at once, in one process
            results = list(ex.map(lambda p: set_enrollment(lab, p, True), pods))
        took = time.monotonic() - t0
        assert all(r.changed for r in results)
        rec = load_record(lab)
        assert all(rec.pods[p]["ambient"] for p in pods), "a concurrent enroll undid another's record"
        with open(os.path.join(names.state_dir(lab), "registry.json")) as f:
            reg = json.load(f)
        assert sorted(w["name"] for w in reg["workloads"] if w["protocol"] == "HBONE") == pods
        before = Snapshot(lab, "n1")
        assert before.enrolled == pods
        before.check_served()
        assert len(before.node["probe_ipset"]) == n
        restart_agent(lab, "n1")
        after = Snapshot(lab, "n1")
        after.assert_unchanged_since(before)
        dst = rec.pods[pods[-1]]["ip"]
        out = run("curl", "-s", "--max-time", "10", f"http://{dst}:9080/", ns=names.netns(lab, pods[0]), check=False)
        assert json.loads(out)["pod"] == pods[-1]
        access = os.path.join(names.state_dir(lab), "logs", "ztunnel.n1.access.log")
        deadline = time.monotonic() + 5
        while f'dst.workload="{pods[-1]}"' not in open(access).read():  # through ztunnel, logged at close
            assert time.monotonic() < deadline, "the request did not cross ztunnel"
            time.sleep(0.05)
        print(f"\n{n} pods enrolled at once in {took:.2f} s")
