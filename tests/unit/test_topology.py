"""Topology loading and validation: every bad input gets one precise TopologyError."""

from __future__ import annotations

import pytest

from netlab.errors import TopologyError
from netlab.topology import Topo, load_topology, load_topology_text

BAD = [
    ("yaml", "nodes: [a\n", r"<t>:2: invalid YAML"),
    ("not-mapping", "- a\n", r"<t>:1: a topology is a YAML mapping"),
    ("no-nodes", "pods: []\n", r"<t>:1: nodes: Field required"),
    ("unknown-field", "nodes: [{name: n1, colour: red}]\n", r"<t>:1: nodes\[0\]\.colour: Extra inputs"),
    ("unknown-node", "nodes: [{name: n1}]\npods:\n  - {name: a, node: n9}\n", r"<t>:3: pods\[0\]\.node: pod 'a': unknown node 'n9'"),
    ("duplicate-pod", "nodes: [{name: n1}]\npods:\n  - {name: a, node: n1}\n  - {name: a, node: n1}\n",
     r"<t>:4: pods\[1\]\.name: duplicate pod 'a'"),
    ("duplicate-node", "nodes: [{name: n1}, {name: n1}]\n", r"<t>:1: nodes\[1\]\.name: duplicate node 'n1'"),
    ("ip-clash", "nodes: [{name: n1}]\npods:\n  - {name: a, node: n1, ip: 10.244.1.9}\n"
                 "  - {name: b, node: n1, ip: 10.244.1.9}\n", r"<t>:4: pods\[1\]\.ip: pod 'b': ip 10.244.1.9 clashes with pod a"),
    ("ip-gateway", "nodes: [{name: n1}]\npods:\n  - {name: a, node: n1, ip: 10.244.1.1}\n",
     r"<t>:3: pods\[0\]\.ip: .*clashes with node n1 gateway"),
    ("ip-outside", "nodes: [{name: n1}]\npods:\n  - {name: a, node: n1, ip: 10.9.9.9}\n", r"<t>:3: pods\[0\]\.ip: .*is not in node 'n1' pod CIDR"),
    ("bad-cidr", "nodes: [{name: n1, pod_cidr: 10.244.1.300/24}]\n", r"<t>:1: nodes\[0\]\.pod_cidr"),
    ("ifname-long", "nodes: [{name: n1}]\npods:\n  - {name: a, node: n1, interface: averyveryverylongname}\n",
     r"<t>:3: pods\[0\]\.interface: .*1-15 characters"),
    ("bad-name", "nodes: [{name: N_1}]\n", r"node name 'N_1' must be lower-case"),
    ("bad-app", "nodes: [{name: n1}]\npods:\n  - {name: a, node: n1, app: mysql}\n", r"<t>:3: pods\[0\]\.app"),
    ("overlap", "nodes: [{name: n1, pod_cidr: 10.244.1.0/24}, {name: n2, pod_cidr: 10.244.1.0/25}]\n",
     r"<t>:1: nodes\[1\]\.pod_cidr: .*overlap"),
    ("replicas-ip", "nodes: [{name: n1}]\npods:\n  - {name: a, node: n1, replicas: 2, ip: 10.244.1.5}\n",
     r"<t>:3: pods\[0\]\.ip: .*fixed ip cannot be used with replicas"),
]


@pytest.mark.parametrize("text,pattern", [(t, p) for _, t, p in BAD], ids=[i for i, _, _ in BAD])
def test_bad_input_is_one_clear_error(text: str, pattern: str) -> None:
    with pytest.raises(TopologyError, match=pattern) as e:
        load_topology_text(text, "<t>")
    assert "\n" not in e.value.message


def test_line_numbers_point_at_the_field() -> None:
    text = "name: x\nnodes:\n  - name: n1\npods:\n  - name: a\n    node: n1\n    port: 99999\n"
    with pytest.raises(TopologyError, match=r"<t>:7: pods\[0\]\.port"):
        load_topology_text(text, "<t>")


BLOCK = """name: x
nodes:
  - name: n1
  - name: n2
pods:
  - name: a
    node: n1
    ip: 10.244.1.9
  - name: b
    node: {node}
    ip: {ip}
  - name: {dup}
    node: n2
services:
  - name: s
    selector: {{app: a}}
    ports: [80]
"""


@pytest.mark.parametrize(("fields", "pattern"), [
    ({"node": "n9", "ip": "10.244.1.10", "dup": "c"}, r"<t>:10: pods\[1\]\.node: pod 'b': unknown node 'n9'"),
    ({"node": "n1", "ip": "10.244.1.10", "dup": "a"}, r"<t>:12: pods\[2\]\.name: duplicate pod 'a'"),
    ({"node": "n1", "ip": "10.244.1.9", "dup": "c"}, r"<t>:11: pods\[1\]\.ip: pod 'b': ip 10.244.1.9 clashes"),
], ids=["unknown-node", "duplicate-pod", "ip-clash"])
def test_resolution_errors_point_at_their_line(fields: dict, pattern: str) -> None:
    """Errors found across several entries (not by pydantic on one field) carry their line too."""
    with pytest.raises(TopologyError, match=pattern):
        load_topology_text(BLOCK.format(**fields), "<t>")


def test_bookinfo_matches_a_kind_clusters_addresses() -> None:
    t = load_topology("bookinfo")
    ips = {p.name: str(p.ip) for p in t.pods}
    assert ips["productpage-v1"] == "10.244.1.7"
    assert ips["reviews-v1"] == "10.244.1.4" and ips["sleep"] == "10.244.2.4"
    w2 = t.node("ambient-worker2")
    assert str(w2.gateway) == "10.244.1.1" and str(w2.ztunnel_ip) == "10.244.1.2"
    assert all(t.ambient(p) for p in t.pods)
    assert [s.name for s in t.services] == ["productpage", "reviews", "ratings", "details"]


def test_replicas_expand_and_addresses_are_unique() -> None:
    t = load_topology("scale")
    assert len(t.pods) == 200
    assert len({p.ip for p in t.pods}) == 200
    assert {p.name for p in t.pods if p.name.startswith("echo-a-")} == {f"echo-a-{i}" for i in range(100)}


def test_enrollment_pod_label_overrides_namespace() -> None:
    t = (Topo("e").node("n1").namespace("default", ambient=True)
         .pod("in", node="n1").pod("out", node="n1", labels={"istio.io/dataplane-mode": "none"}).build())
    assert t.ambient(t.pod("in")) and not t.ambient(t.pod("out"))


def test_missing_file() -> None:
    with pytest.raises(TopologyError, match="no such topology file"):
        load_topology("does/not/exist.yaml")


def test_builder_errors_are_topology_errors() -> None:
    with pytest.raises(TopologyError, match=r"^topology 'b': pods\[0\]\.node: pod 'a': unknown node 'zz'") as e:
        Topo("b").node("n1").pod("a", node="zz").build()
    assert "\n" not in e.value.message
