"""Kernel regression tests for the lifecycle faults: gc racing up, colliding names, the probe
netns, concurrent up, signals, an unreadable record, a dead or stopped supervisor, a deleted
netns and in-pod readiness. Every lab here is named ``rl-*``; gc runs only over those."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from netlab import names
from netlab.linux.nsenter import netns_path
from tests.kernel.helpers import NETLAB, in_lab, lab_netns, lab_processes, lab_up, netlab

pytestmark = pytest.mark.root


def mine(lab: str) -> bool:
    return lab.startswith("rl")


def gc_mine() -> list[str]:
    from netlab.lab import lifecycle as lablib

    return [r.lab for r in lablib.gc(only=mine)]


def write(tmp_path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def wait_for(pred, timeout: float = 30.0, step: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(step)


def leaves_nothing(lab: str) -> None:
    assert lab_netns(lab) == []
    assert not os.path.exists(names.state_dir(lab))
    assert not os.path.exists(names.lock_path(lab))
    etc = os.listdir(names.ETC_NETNS) if os.path.isdir(names.ETC_NETNS) else []
    assert not [d for d in etc if d.startswith(names.lab_prefix(lab))]


def test_gc_leaves_a_lab_being_created_alone(tmp_path) -> None:
    topo = write(tmp_path, "t.yaml", "name: rl-gcr\nnodes: [{name: n1}]\n"
                 "pods: [{name: w, node: n1, app: sleep, replicas: 60}]\n")
    p = subprocess.Popen([*NETLAB, "up", topo, "--mode", "none"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        wait_for(lambda: len(lab_netns("rl-gcr")) > 5)
        assert "rl-gcr" not in gc_mine()  # its lock is held: not touched
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert len(lab_netns("rl-gcr")) == 62  # 60 pods, the node, the underlay
    finally:
        p.kill()
        netlab("down", "rl-gcr", check=False)
    leaves_nothing("rl-gcr")


def test_names_that_used_to_collide_stay_apart(tmp_path) -> None:
    relp = write(tmp_path, "p.yaml", "name: rl-p\nnodes: [{name: n1}]\npods: [{name: a-server, node: n1, app: echo}]\n")
    xn = write(tmp_path, "x.yaml", "name: rl-xn\nnodes: [{name: n1}]\npods: [{name: x-net, node: n1, app: echo}]\n")
    with lab_up(relp, "rl-p", "--mode", "none"), lab_up(xn, "rl-xn", "--mode", "none"):
        before = lab_processes("rl-p")
        # lab rl-p-a's names cannot be rl-p's: up is not refused, down does not touch rl-p
        netlab("up", "minimal", "--name", "rl-p-a", "--mode", "none")
        netlab("down", "rl-p-a")
        assert lab_processes("rl-p") == before
        assert names.netns("rl-p", "a-server") in lab_netns("rl-p")
        labs = [d["lab"] for d in json.loads(netlab("status", "--json").stdout)["data"]]
        assert "rl-xn-x" not in labs  # no phantom lab from the pod x-net
        assert "rl-xn" not in gc_mine()
    leaves_nothing("rl-xn")
    leaves_nothing("rl-p")


def test_a_pod_named_probe_keeps_its_netns(tmp_path) -> None:
    topo = write(tmp_path, "t.yaml", "name: rl-pr\nnodes: [{name: n1}]\npods: [{name: probe, node: n1, app: echo}]\n")
    with lab_up(topo, "rl-pr", "--mode", "node-routing"):
        ino = os.stat(netns_path(names.netns("rl-pr", "probe"))).st_ino
        netlab("up", topo, "--name", "rl-pr", "--dry-run")
        netlab("up", topo, "--name", "rl-pr")  # the no-op re-up
        assert os.stat(netns_path(names.netns("rl-pr", "probe"))).st_ino == ino
    leaves_nothing("rl-pr")


def test_concurrent_up_of_one_name_one_wins_the_other_gets_one_line() -> None:
    procs = [subprocess.Popen([*NETLAB, "up", "minimal", "--name", "rl-cc", "--mode", "none"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    try:
        results = [(p.wait(120), p.stderr.read()) for p in procs]
        assert all("Traceback" not in e for _, e in results), results
        assert sum(1 for rc, e in results if rc == 0 and "is up" in e) == 1, results
        for rc, e in results:
            if rc != 0:
                assert rc == 6 and "is busy: pid" in e, (rc, e)
        assert len(lab_netns("rl-cc")) == 4
    finally:
        netlab("down", "rl-cc", check=False)
    leaves_nothing("rl-cc")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=["TERM", "HUP", "INT"])
def test_a_signal_during_up_rolls_back(tmp_path, sig) -> None:
    topo = write(tmp_path, "t.yaml", "name: rl-sg\nnodes: [{name: n1}]\n"
                 "pods: [{name: w, node: n1, app: sleep, replicas: 40}]\n")
    p = subprocess.Popen([*NETLAB, "up", topo, "--mode", "none"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    wait_for(lambda: len(lab_netns("rl-sg")) > 3)
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 128 + sig, err
    assert err.count("\n") == 1 and f"interrupted by {signal.Signals(sig).name}" in err and "rolled back" in err
    leaves_nothing("rl-sg")


def test_sigkill_of_up_after_the_supervisor_started_is_collected_by_gc(tmp_path) -> None:
    p = subprocess.Popen([*NETLAB, "up", "minimal", "--name", "rl-kk", "--mode", "inpod"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: os.path.exists(names.supervisor_pid_path(names.state_dir("rl-kk"))), timeout=60, step=0.005)
        p.kill()
        p.wait()
        assert json.load(open(names.record_path(names.state_dir("rl-kk"))))["state"] == "creating"
        assert "rl-kk" in gc_mine()
    finally:
        netlab("down", "rl-kk", check=False)
    leaves_nothing("rl-kk")


def test_unreadable_record_breaks_only_its_own_lab() -> None:
    with lab_up("minimal", "rl-ok", "--mode", "none"), lab_up("minimal", "rl-bad", "--mode", "none"):
        with open(names.record_path(names.state_dir("rl-bad")), "w") as f:
            f.write("{")
        st = {d["lab"]: d for d in json.loads(netlab("status", "--json").stdout)["data"]}
        assert st["rl-bad"]["state"] == "unreadable"
        assert st["rl-ok"]["state"] == "up"
        netlab("down", "rl-bad")
    leaves_nothing("rl-bad")


def test_dead_supervisor_is_restarted_in_place_and_restart_works() -> None:
    with lab_up("minimal", "rl-sv", "--mode", "node-routing") as lab:
        sup = int(open(names.supervisor_pid_path(names.state_dir(lab))).read())
        os.kill(sup, signal.SIGKILL)
        wait_for(lambda: not os.path.exists(f"/proc/{sup}/stat") or open(f"/proc/{sup}/stat").read().split(") ")[1][0] == "Z")
        st = json.loads(netlab("status", lab, "--json").stdout)["data"][0]
        assert st["state"] == "broken" and "netlab up" in st["problems"][0]
        r = netlab("up", "minimal", "--name", lab, "--json")
        assert json.loads(r.stdout)["data"]["recovered"] is True
        st = json.loads(netlab("status", lab, "--json").stdout)["data"][0]
        assert st["state"] == "up" and st["ready"] == len(st["processes"])
        netlab("restart", lab, "server")
        assert in_lab(lab, "client", "curl", "-s", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}",
                      "http://server/").stdout == "200"
    leaves_nothing("rl-sv")


def test_deleted_netns_is_degraded_and_down_still_removes_everything() -> None:
    with lab_up("minimal", "rl-del", "--mode", "none") as lab:
        subprocess.run(["ip", "netns", "del", names.netns(lab, "server")], check=True)
        st = json.loads(netlab("status", lab, "--json").stdout)["data"][0]
        assert st["state"] == "degraded" and "netns missing" in st["problems"][0]
        r = netlab("show", lab, "server", check=False)  # every section fails: an error, not rc 0
        assert r.returncode == 4 and r.stderr.startswith("netlab: error:")
    leaves_nothing("rl-del")
    assert lab_processes("rl-del") == set()


def test_inpod_up_returns_only_when_the_mesh_serves() -> None:
    with lab_up("minimal", "rl-mr", "--mode", "inpod") as lab:
        # no retry, no sleep: the first request after `up` must be served through ztunnel
        r = in_lab(lab, "client", "curl", "-s", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}",
                   "http://server/")
        assert r.stdout == "200"
        st = json.loads(netlab("status", lab, "--json").stdout)["data"][0]
        assert sorted(st["mesh"]["ready"]) == ["client", "server"] and st["mesh"]["waiting"] == []
    leaves_nothing("rl-mr")
