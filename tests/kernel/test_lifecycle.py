"""Real labs in real network namespaces: up, traffic, down, crash recovery, interruption."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from netlab import names
from tests.kernel.helpers import NETLAB, in_lab, lab_netns, lab_processes, lab_up, netlab

pytestmark = pytest.mark.root


def test_bookinfo_direct_serves_the_page_and_down_leaves_nothing() -> None:
    with lab_up("bookinfo", "lc1", "--mode", "none") as lab:
        r = in_lab(lab, "sleep", "curl", "-s", "--max-time", "10", "http://productpage:9080/")
        assert r.stdout.splitlines()[0] == "<!DOCTYPE html>"
        # productpage -> reviews (v2/v3) -> ratings really happened, across both nodes
        assert "Book Reviews" in r.stdout and "William Shakespeare" in r.stdout
        hits = [in_lab(lab, "sleep", "curl", "-s", "http://reviews:9080/reviews/0").stdout for _ in range(6)]
        assert any('"rating"' in h for h in hits)
        st = json.loads(netlab("status", lab, "--json").stdout)
        assert st["data"][0]["mode"] == "none" and st["data"][0]["ready"] == 8
        pids = lab_processes(lab)
        assert len(pids) == 8  # one process per pod, nothing else in the lab's namespaces
        again = netlab("up", "bookinfo", "--name", lab, "--mode", "none")
        assert "already up" in again.stderr
        clash = netlab("up", "minimal", "--name", lab, "--mode", "none", check=False)
        assert clash.returncode != 0 and "different topology" in clash.stderr
    assert lab_netns("lc1") == []
    assert not any(os.path.exists(f"/proc/{p}") for p in pids)
    assert not os.path.exists(names.state_dir("lc1"))
    assert not os.path.exists(names.etc_netns_dir(names.netns("lc1", "sleep")))
    mounts = open("/proc/self/mountinfo").read()
    assert names.lab_prefix("lc1") not in mounts


def test_kill9_supervisor_then_gc_cleans_up() -> None:
    netlab("up", "minimal", "--name", "lc2", "--mode", "none")
    try:
        sup = int(open(os.path.join(names.state_dir("lc2"), "supervisor.pid")).read())
        children = lab_processes("lc2")
        os.kill(sup, signal.SIGKILL)
        time.sleep(0.2)
        st = json.loads(netlab("status", "lc2", "--json").stdout)
        assert "broken" in st["data"][0]["state"]
        netlab("gc")
        assert lab_netns("lc2") == []
        time.sleep(0.2)
        assert not any(os.path.exists(f"/proc/{p}") and open(f"/proc/{p}/stat").read().split()[2] != "Z"
                       for p in children)
    finally:
        netlab("down", "lc2", check=False)


def test_ctrl_c_during_up_rolls_back() -> None:
    p = subprocess.Popen([*NETLAB, "up", "scale", "--name", "lc3", "--mode", "none"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # wait until it is really half way (some netns exist), then interrupt it
    deadline = time.time() + 30
    while time.time() < deadline and len(lab_netns("lc3")) < 20:
        time.sleep(0.02)
    p.send_signal(signal.SIGINT)
    try:
        out, err = p.communicate(timeout=60)
        assert p.returncode != 0
        assert "interrupted" in err
        assert lab_netns("lc3") == []
        assert not os.path.exists(names.state_dir("lc3"))
    finally:
        netlab("down", "lc3", check=False)


def test_two_labs_side_by_side() -> None:
    with lab_up("minimal", "lca", "--mode", "none"), \
            lab_up("minimal", "lcb", "--mode", "none"):
        for lab in ("lca", "lcb"):
            r = in_lab(lab, "client", "curl", "-s", "--max-time", "5", "http://server/")
            assert json.loads(r.stdout)["pod"] == "server"
        netlab("down", "lca")
        r = in_lab("lcb", "client", "curl", "-s", "--max-time", "5", "http://server/")
        assert json.loads(r.stdout)["pod"] == "server"


@pytest.mark.parametrize("args,msg", [
    (["up", "does-not-exist.yaml", "--name", "lcbad"], "no such topology file"),
    (["up", "minimal", "--name", "lcbad", "--mode", "sidecar"], "unknown mode"),
    (["down", "lcbad"], "no lab named"),
    (["exec", "lcbad", "x", "--", "true"], "no lab named"),
], ids=["missing-file", "bad-mode", "down-unknown", "exec-unknown"])
def test_bad_input_one_line_nonzero_nothing_changed(args, msg) -> None:
    """Only the lab the command names is looked at: other labs on the machine may come and go."""
    p = netlab(*args, check=False)
    assert p.returncode != 0
    assert msg in p.stderr and p.stderr.count("error:") == 1
    assert lab_netns("lcbad") == [] and not os.path.exists(names.state_dir("lcbad"))


def test_unknown_target_in_running_lab() -> None:
    with lab_up("minimal", "lc4", "--mode", "none") as lab:
        p = netlab("exec", lab, "nope", "--", "true", check=False)
        assert p.returncode != 0 and "no node or pod named 'nope'" in p.stderr
        s = netlab("show", lab, "node1", "routes")
        assert "10.244.1.3 dev veth" in s.stdout
