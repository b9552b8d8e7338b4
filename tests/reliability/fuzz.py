"""Hypothesis strategies for topology YAML and ``up`` arguments: mostly near-valid files
(the interesting failures live next to valid input), plus raw garbage.

Shared by ``tests/reliability/test_fuzz.py`` (a few hundred examples in CI) and
``scripts/soak.py fuzz`` (thousands)."""

from __future__ import annotations

import yaml
from hypothesis import strategies as st

NAMES = st.one_of(st.sampled_from(["n1", "n2", "a", "net", "probe", "x-net", "ztunnel-n1", "sleep", "A", "a_b",
                                   "-a", "a.b", "", "a" * 70]),
                  st.text(alphabet="abcxyz019-._/ ", min_size=0, max_size=20))
IPS = st.one_of(st.sampled_from(["172.18.0.1", "172.18.0.2", "172.18.0.0", "172.18.255.255", "10.244.1.1",
                                 "10.244.1.2", "10.244.1.3", "10.244.2.5", "1.2.3.4", "300.1.1.1", "::1", "x"]),
                st.ip_addresses(v=4).map(str))
CIDRS = st.sampled_from(["172.18.0.0/16", "10.244.0.0/16", "10.244.0.0/24", "10.96.0.0/16", "10.0.0.0/30",
                         "10.244.1.0/24", "1.2.3.4/33", "bad", "192.168.0.0/23"])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 70000), st.text(max_size=8), st.floats(allow_nan=True))


def _maybe(d: dict, key: str, strat) -> st.SearchStrategy:
    return st.one_of(st.just(d), strat.map(lambda v: {**d, key: v}))


@st.composite
def node(draw) -> dict:
    d = {"name": draw(NAMES)}
    if draw(st.booleans()):
        d["underlay_ip"] = draw(IPS)
    if draw(st.integers(0, 4)) == 0:
        d["pod_cidr"] = draw(CIDRS)
    if draw(st.integers(0, 9)) == 0:
        d[draw(st.text(max_size=5))] = draw(SCALARS)
    return d


@st.composite
def pod(draw, nodes: list[str]) -> dict:
    d = {"name": draw(NAMES), "node": draw(st.sampled_from(nodes + ["ghost"]) if nodes else NAMES)}
    if draw(st.booleans()):
        d["app"] = draw(st.sampled_from(["sleep", "echo", "productpage", "details", "reviews", "ratings", "nginx"]))
    if draw(st.integers(0, 3)) == 0:
        d["replicas"] = draw(st.integers(-1, 300))
    if draw(st.integers(0, 3)) == 0:
        d["ip"] = draw(IPS)
    if draw(st.integers(0, 4)) == 0:
        d["labels"] = draw(st.dictionaries(st.sampled_from(["app", "istio.io/dataplane-mode", "version"]),
                                           st.sampled_from(["ambient", "none", "x", ""]), max_size=3))
    if draw(st.integers(0, 6)) == 0:
        d["namespace"] = draw(NAMES)
    if draw(st.integers(0, 9)) == 0:
        d["interface"] = draw(st.sampled_from(["eth0", "a/b", "x" * 16, "", "eth 0"]))
    return d


@st.composite
def service(draw) -> dict:
    d = {"name": draw(NAMES), "selector": {"app": draw(st.sampled_from(["sleep", "echo", "x"]))}}
    d["ports"] = draw(st.lists(st.fixed_dictionaries({"port": st.integers(-1, 70000)},
                                                     optional={"target_port": st.integers(-1, 70000)}),
                               max_size=3))
    if draw(st.integers(0, 4)) == 0:
        d["vip"] = draw(IPS)
    return d


@st.composite
def topology_doc(draw) -> dict:
    nodes = draw(st.lists(node(), min_size=0, max_size=4))
    names = [n["name"] for n in nodes if isinstance(n.get("name"), str)]
    doc: dict = {"nodes": nodes}
    if draw(st.booleans()):
        doc["name"] = draw(NAMES)
    doc["pods"] = draw(st.lists(pod(names), max_size=6))
    if draw(st.booleans()):
        doc["services"] = draw(st.lists(service(), max_size=3))
    if draw(st.integers(0, 3)) == 0:
        doc["addressing"] = draw(st.fixed_dictionaries({}, optional={"underlay": CIDRS, "pod_cidr": CIDRS,
                                                                     "service_cidr": CIDRS}))
    if draw(st.integers(0, 3)) == 0:
        doc["namespaces"] = [{"name": draw(NAMES), "labels": {"istio.io/dataplane-mode": "ambient"}}]
    if draw(st.integers(0, 9)) == 0:
        doc[draw(st.text(max_size=6))] = draw(SCALARS)
    return doc


def topology_text() -> st.SearchStrategy[str]:
    """Mostly structured documents dumped as YAML; sometimes raw text or a cut-off document."""
    structured = topology_doc().map(lambda d: yaml.safe_dump(d, sort_keys=False))
    cut = st.tuples(structured, st.integers(0, 400)).map(lambda t: t[0][: t[1]])
    raw = st.text(max_size=200)
    return st.one_of(structured, structured, structured, cut, raw)


MODES = st.sampled_from(["none", "node-routing", "inpod", "sidecar", ""])
VERSIONS = st.sampled_from([None, "1.18", "1.20", "1.22", "1.24", "1.99", "x"])
ENCAPS = st.sampled_from(["auto", "geneve", "geneve-user", "vxlan", "bogus"])
LAB_NAMES = st.one_of(st.none(), NAMES)
