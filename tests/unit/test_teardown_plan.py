"""The node-routing teardown as data: ``cleanupNode``'s order per version, and its iptables-restore form."""

from __future__ import annotations

import pytest

from netlab import names
from netlab.apply.teardown import _present_iptables, restore_text
from netlab.plan import build_plan
from netlab.plan.teardown import node_teardown, render
from netlab.topology import load_topology


@pytest.mark.parametrize("version", ["1.18", "1.19", "1.20"])
def test_teardown_golden(golden, version: str) -> None:
    golden(f"teardown/node-routing-{version}.txt", render(node_teardown(version)))


def test_a6_order() -> None:
    kinds = [s.kind for s in node_teardown("1.20")]
    # 1. flush every chain, 2. jumps+chains, 3. routes, 4. rules, 5. tunnels, 6. ipset - never interleaved
    order = ["chain-flush", "jump-delete", "route-flush", "rule-delete", "link-down", "ipset-destroy"]
    phases = [k if k != "chain-delete" else "jump-delete" for k in kinds]  # jump+chain go in pairs
    phases = ["link-down" if k == "link-delete" else k for k in phases]  # down+delete go in pairs
    collapsed = [k for i, k in enumerate(phases) if i == 0 or phases[i - 1] != k]
    assert collapsed == order
    assert kinds.count("chain-flush") == 8 and kinds.count("chain-delete") == 8
    assert node_teardown("1.18")[7].render() == "iptables -t nat -D PREROUTING -j ztunnel-PREROUTING"
    assert not any(s.table == "filter" for s in node_teardown("1.18"))


@pytest.mark.parametrize("version", ["1.18", "1.20"])
def test_teardown_removes_every_design_object_of_the_plan(version: str) -> None:
    """Whatever the node-routing plan adds to a node over --mode none, the teardown names."""
    topo = load_topology("bookinfo")
    nr = build_plan(topo, lab="t", mode="node-routing", istio_version=version, encap="geneve-user")
    none = build_plan(topo, lab="t", mode="none", encap="geneve-user")
    steps = node_teardown(version)
    for member in ("ambient-worker", "ambient-worker2"):
        a, b = nr.by_member(member), none.by_member(member)
        chains, jumps = _present_iptables(a.iptables.render())
        base, _ = _present_iptables(b.iptables.render())
        assert {(s.table, s.chain) for s in steps if s.kind == "chain-delete"} == {c for c in chains - base}
        assert {(s.table, s.hook, s.chain) for s in steps if s.kind == "jump-delete"} == \
            {j for j in jumps if j[2].startswith("ztunnel-")}
        assert {s.number for s in steps if s.kind == "rule-delete"} == {r.priority for r in a.rules} - \
            {r.priority for r in b.rules}
        assert {s.number for s in steps if s.kind == "route-flush"} >= {r.table for r in a.routes} - {254}
        new_links = {ln.name for ln in a.links} - {ln.name for ln in b.links}
        # the ztunnel pod's veth is not the node's: it goes with the pod's netns
        assert {s.name for s in steps if s.kind == "link-delete"} == \
            new_links - {names.pod_host_veth("t", names.ztunnel_pod(member))}
        assert {s.name for s in steps if s.kind == "ipset-destroy"} == {st.name for st in a.ipsets}


def test_restore_text_keeps_cross_table_order() -> None:
    steps = [s for s in node_teardown("1.20") if s.is_iptables]
    text = restore_text(steps)
    blocks = [ln for ln in text.splitlines() if ln.startswith("*")]
    assert blocks[:3] == ["*nat", "*mangle", "*filter"]
    assert text.count("COMMIT") == len(blocks)
    assert text.index("-F ztunnel-FORWARD") < text.index("-D PREROUTING -j ztunnel-PREROUTING")
