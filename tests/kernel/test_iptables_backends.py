"""Both iptables backends leave the same rules, and the design comes off in istio-cni's order.

``--iptables-backend restore`` loads the plan with iptables-restore (nft here), ``python-iptables``
through libiptc (legacy tables); read back with the matching ``iptables-save`` they must be the
same rules, chain by chain, and the plan's. ``netlab down --design-only`` then runs istio-cni's
``cleanupNode`` on every node: the node ends up exactly as a ``--mode none`` node.
"""

from __future__ import annotations

import json
import re

import pytest

from netlab import names
from netlab.apply import iptables
from netlab.lab.lifecycle import make_plan
from netlab.plan.teardown import node_teardown
from netlab.protocols import iptables_save
from netlab.runtime import supervisor
from tests.kernel.helpers import in_lab, lab_netns, lab_up, netlab

pytestmark = pytest.mark.root
LAB = "ipb"
NODES = ("ambient-worker", "ambient-worker2")


def saved_rules(lab: str, backend: str) -> dict[str, dict]:
    v = iptables.backend_variant(backend)
    return {names.split_netns(n)[1]: iptables_save.by_chain(iptables.save(n, v)) for n in lab_netns(lab)}


def page(lab: str) -> str:
    p = in_lab(lab, "sleep", "curl", "-s", "-m", "5", "http://productpage:9080/")
    return p.stdout.splitlines()[0] if p.stdout else p.stderr


def test_both_backends_leave_the_plans_rules() -> None:
    plan = make_plan("bookinfo", name=LAB, mode="node-routing", istio_version=None, encap="geneve-user",
                     probe=False)
    want = {n.member: iptables_save.by_chain(n.iptables.render()) if n.iptables else {} for n in plan.namespaces}
    got = {}
    for backend in ("restore", "python-iptables"):
        with lab_up("bookinfo", LAB, "--iptables-backend", backend):
            got[backend] = saved_rules(LAB, backend)
            assert page(LAB) == "<!DOCTYPE html>", backend
            if backend == "python-iptables":
                # libiptc writes legacy tables: the nft view of the node holds none of Istio's chains
                nft = iptables.save(names.netns(LAB, "ambient-worker2"), "nft")
                assert "ztunnel-" not in nft
                show = netlab("show", LAB, "ambient-worker2", "iptables").stdout
                assert "iptables-legacy-save" in show and "-A ztunnel-PREROUTING" in show
    assert got["restore"] == got["python-iptables"]
    for member, tables in got["restore"].items():
        assert tables == want.get(member, {}), member
    assert got["restore"]["ambient-worker2"]["mangle"]["ztunnel-PREROUTING"]


def test_python_iptables_inpod_agent_writes_legacy_rules_too() -> None:
    """The CNI agent of a python-iptables lab writes its per-pod rules into the same (legacy) tables."""
    with lab_up("bookinfo", LAB, "--mode", "inpod", "--iptables-backend", "python-iptables"):
        assert page(LAB) == "<!DOCTYPE html>"
        pod = names.netns(LAB, "productpage-v1")
        assert "ISTIO_PRERT" in iptables_save.by_chain(iptables.save(pod, "legacy"))["mangle"]
        assert "ISTIO_" not in iptables.save(pod, "nft")
        p = netlab("down", LAB, "--design-only", check=False)
        assert p.returncode == 6 and "node-routing" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize("backend", ["restore", "python-iptables"])
def test_design_teardown_in_a6_order(backend: str) -> None:
    v = iptables.backend_variant(backend)
    none_plan = make_plan("bookinfo", name=LAB, mode="none", istio_version=None, encap="geneve-user", probe=False)
    with lab_up("bookinfo", LAB, "--iptables-backend", backend):
        before = {p["name"] for p in supervisor.request(LAB, {"op": "status"})["processes"]}
        assert {"ztunnel/ambient-worker", "geneve/ambient-worker2"} <= before
        assert page(LAB) == "<!DOCTYPE html>"
        res = netlab("down", LAB, "--design-only")
        expected = [s.render() for s in node_teardown("1.20")]
        for node in NODES:
            # every cleanupNode step found its object, and the node's istio-cni log lists them in order
            with open(f"{names.state_dir(LAB)}/logs/istio-cni.{node}.log") as f:
                logged = re.findall(r"cleanupNode: (.*)", f.read())
            assert logged == expected, node
            nns = names.netns(LAB, node)
            assert iptables_save.by_chain(iptables.save(nns, v)) == \
                iptables_save.by_chain(none_plan.by_member(node).iptables.render())
            rules = in_lab(LAB, node, "ip", "rule").stdout
            assert not re.search(r"^10[0-3]:", rules, re.M), rules
            for table in ("100", "101", "102"):
                assert in_lab(LAB, node, "ip", "route", "show", "table", table).stdout.strip() == ""
            links = in_lab(LAB, node, "ip", "-o", "link").stdout
            assert "istioin" not in links and "istioout" not in links
            assert "ztunnel-pods-ips" not in in_lab(LAB, node, "ipset", "list", "-n").stdout
        assert f"({2 * len(expected)} objects" in res.stderr
        # the ztunnel pods went with their processes; workloads stayed, and talk directly now
        assert not [n for n in lab_netns(LAB) if "ztunnel" in n]
        after = {p["name"] for p in supervisor.request(LAB, {"op": "status"})["processes"]}
        assert after == {n for n in before if n.startswith("pod/")}
        log = f"{names.state_dir(LAB)}/logs/ztunnel.ambient-worker2.access.log"
        size = _size(log)
        assert page(LAB) == "<!DOCTYPE html>"
        assert _size(log) == size
        # the lab is now the --mode none lab of the same topology: `up` of that changes nothing
        again = netlab("up", "bookinfo", "--name", LAB, "--mode", "none")
        assert "nothing changed" in again.stderr
        status = json.loads(netlab("status", LAB, "--json").stdout)["data"][0]
        assert status["mode"] == "none" and status["enrolled"] == []
    assert not lab_netns(LAB)


def _size(path: str) -> int:
    try:
        with open(path, "rb") as f:
            return len(f.read())
    except FileNotFoundError:
        return 0


def test_design_only_without_a_supervisor_is_one_clear_error() -> None:
    import os
    import signal
    import time

    from netlab.lab.state import supervisor_pid

    with lab_up("minimal", "ipd") as lab:
        pid = supervisor_pid(lab)
        os.kill(pid, signal.SIGKILL)
        while os.path.exists(f"/proc/{pid}") and "zombie" not in open(f"/proc/{pid}/status").read().lower():
            time.sleep(0.02)
        p = netlab("down", lab, "--design-only", check=False)
        assert p.returncode == 6, p.stderr
        assert "supervisor not reachable" in p.stderr and "Traceback" not in p.stderr
        # nothing was touched: the node still has its design
        assert "ztunnel-pods-ips" in in_lab(lab, "node1", "ipset", "list", "-n").stdout


@pytest.mark.parametrize(("env", "args", "msg"), [
    ({}, ("--iptables-backend", "bogus"), "unknown iptables backend 'bogus'"),
    ({"NETLAB_ZTUNNEL_LOG_LEVEL": "verbose"}, (), "NETLAB_ZTUNNEL_LOG_LEVEL='verbose'"),
])
def test_bad_up_options_refuse_before_building(env: dict, args: tuple, msg: str) -> None:
    import os

    p = netlab("up", "minimal", "--name", "ipe", *args, check=False, env={**os.environ, **env})
    assert p.returncode == 7 and msg in p.stderr.replace("\n", " ") and "Traceback" not in p.stderr
    assert not lab_netns("ipe") and not os.path.exists(names.state_dir("ipe"))


def test_design_only_takes_one_lab() -> None:
    p = netlab("down", "--all", "--design-only", check=False)
    assert p.returncode == 6 and "--design-only takes one lab" in p.stderr
