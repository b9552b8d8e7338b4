"""Plan output as golden files, and the plan's refusals."""

from __future__ import annotations

import pytest

from netlab.errors import PlanError
from netlab.plan import build_plan
from netlab.topology import Topo, load_topology

CASES = [("bookinfo", "none", None), ("bookinfo", "node-routing", "1.20"), ("bookinfo", "node-routing", "1.18"),
         ("minimal", "none", None), ("minimal", "node-routing", "1.19")]


@pytest.mark.parametrize("topo,mode,version", CASES, ids=[f"{t}-{m}-{v}" for t, m, v in CASES])
def test_plan_golden(golden, topo: str, mode: str, version: str | None) -> None:
    plan = build_plan(load_topology(topo), mode=mode, istio_version=version)
    suffix = f"-{version}" if version and version != "1.20" else ""
    golden(f"{topo}/{mode}{suffix}/plan.txt", plan.render())
    for n in plan.namespaces:
        if n.iptables and n.role in ("node", "ztunnel"):
            golden(f"{topo}/{mode}{suffix}/iptables-{n.member}.txt", n.iptables.render())


def test_plan_is_deterministic() -> None:
    t = load_topology("bookinfo")
    assert build_plan(t, mode="node-routing").render() == build_plan(t, mode="node-routing").render()


def test_node_routing_objects_match_istio() -> None:
    """ip rules, routes and tables of a node as Istio 1.20's istio-cni makes them."""
    plan = build_plan(load_topology("bookinfo"), mode="node-routing")
    node = plan.by_member("ambient-worker2")
    assert [r.render() for r in node.rules] == [
        "rule add pref 100 fwmark 0x200/0x200 goto 32766",
        "rule add pref 101 fwmark 0x100/0x100 lookup 101",
        "rule add pref 102 fwmark 0x40/0x40 lookup 102",
        "rule add pref 103 lookup 100",
    ]
    t100 = [r.render() for r in node.routes if r.table == 100]
    assert "route add 10.244.1.7/32 via 192.168.126.2 dev istioin table 100 src 10.244.1.1" in t100
    t101 = [r.render() for r in node.routes if r.table == 101]
    assert "route add 0.0.0.0/0 via 192.168.127.2 dev istioout table 101" in t101
    assert {e.ip for e in node.ipsets[0].entries} == {f"10.244.1.{i}" for i in range(4, 10)}
    zt = plan.by_member("ztunnel-ambient-worker2")
    text = zt.iptables.render()
    for port, dev in ((15001, "pistioout"), (15006, "pistioin"), (15008, "pistioin")):
        assert f"-i {dev}" in text and f"--on-port {port} --on-ip 127.0.0.1 --tproxy-mark 0x400/0xfff" in text


def test_version_differences_in_ztunnel_output() -> None:
    t = load_topology("bookinfo")
    r18 = build_plan(t, mode="node-routing", istio_version="1.18").by_member("ambient-worker").iptables.render()
    r20 = build_plan(t, mode="node-routing", istio_version="1.20").by_member("ambient-worker").iptables.render()
    assert "-A ztunnel-OUTPUT -s 10.244.2.1/32 -j MARK --set-xmark 0x220/0xffffffff" in r18
    assert "--socket-exists" in r20 and "*filter" in r20 and "*filter" not in r18


@pytest.mark.parametrize("kw,msg", [
    ({"mode": "sidecar"}, "unknown mode"),
    ({"mode": "node-routing", "istio_version": "1.22"}, "reproduces Istio 1.18"),
    ({"lab": "Bad_Name"}, "lab name"),
    ({"encap": "auto"}, "not concrete"),
], ids=["mode", "version", "lab-name", "encap"])
def test_plan_refusals(kw, msg) -> None:
    with pytest.raises(PlanError, match=msg):
        build_plan(load_topology("minimal"), **kw)


def test_name_clash_with_ztunnel_pod() -> None:
    t = Topo("c").node("n1").pod("ztunnel-n1", node="n1").build()
    with pytest.raises(PlanError, match="used twice"):
        build_plan(t, mode="node-routing")
