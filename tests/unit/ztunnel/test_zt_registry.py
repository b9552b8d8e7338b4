"""Registry: lookups, round robin, identities, L4 policy, reload."""

from __future__ import annotations

import json
import logging
import os

import pytest

from netlab.runtime.ztunnel.registry import Registry, RegistryError


def doc(**over) -> dict:
    d = {
        "trust_domain": "cluster.local",
        "workloads": [
            {"uid": "default/productpage-v1", "name": "productpage-v1", "namespace": "default", "node": "w2",
             "ip": "10.244.1.7", "service_account": "bookinfo-productpage", "protocol": "HBONE",
             "labels": {"app": "productpage", "version": "v1"}},
            {"uid": "default/reviews-v1", "name": "reviews-v1", "namespace": "default", "node": "w2",
             "ip": "10.244.1.8", "service_account": "bookinfo-reviews", "protocol": "HBONE", "labels": {"app": "reviews"}},
            {"uid": "default/reviews-v2", "name": "reviews-v2", "namespace": "default", "node": "w2",
             "ip": "10.244.1.9", "service_account": "bookinfo-reviews", "protocol": "TCP", "labels": {"app": "reviews"}},
        ],
        "services": [
            {"name": "productpage", "namespace": "default", "hostname": "productpage.default.svc.cluster.local",
             "vip": "10.96.0.10", "ports": [{"port": 9080, "target_port": 9080}],
             "endpoints": ["default/productpage-v1"]},
            {"name": "reviews", "namespace": "default", "hostname": "reviews.default.svc.cluster.local",
             "vip": "10.96.0.11", "ports": [{"port": 80, "target_port": 9080}],
             "endpoints": ["default/reviews-v1", "default/reviews-v2", "default/missing"]},
        ],
        "ztunnels": [{"node": "w2", "ip": "10.244.1.2"}],
        "policies": [],
    }
    d.update(over)
    return d


def test_lookups_and_identity() -> None:
    """By IP, by VIP:port, identity = spiffe://td/ns/N/sa/S, protocol flag."""
    r = Registry.from_dict(doc())
    w = r.workload_by_ip("10.244.1.7")
    assert w is not None and w.hbone and r.identity(w) == "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
    assert r.workload_by_ip("10.244.9.9") is None
    assert r.service_by_vip("10.96.0.10", 9081) is None
    svc, port = r.service_by_vip("10.96.0.11", 80)
    assert svc.hostname == "reviews.default.svc.cluster.local" and port.target_port == 9080
    assert not r.workload_by_ip("10.244.1.9").hbone
    assert r.service_for(w, 9080).name == "productpage"
    assert r.ztunnels == {"w2": "10.244.1.2"}


def test_round_robin_skips_unknown_endpoints() -> None:
    """Endpoints rotate; uids not in the registry are skipped."""
    r = Registry.from_dict(doc())
    svc, _ = r.service_by_vip("10.96.0.11", 80)
    assert [r.pick_endpoint(svc).name for _ in range(4)] == ["reviews-v1", "reviews-v2"] * 2


@pytest.mark.parametrize("policies,port,src,allowed", [
    ([], 9080, None, True),
    ([{"name": "deny-notsleep", "namespace": "default", "action": "DENY", "selector": {"app": "productpage"},
       "principals": ["spiffe://cluster.local/ns/default/sa/notsleep"], "ports": [9080]}],
     9080, "spiffe://cluster.local/ns/default/sa/notsleep", False),
    ([{"name": "deny-notsleep", "namespace": "default", "action": "DENY", "selector": {"app": "productpage"},
       "principals": ["spiffe://cluster.local/ns/default/sa/notsleep"], "ports": [9080]}],
     9080, "spiffe://cluster.local/ns/default/sa/sleep", True),
    ([{"name": "deny-other-port", "namespace": "default", "action": "DENY", "selector": None,
       "principals": [], "ports": [1234]}], 9080, None, True),
    ([{"name": "allow-sleep", "namespace": "default", "action": "ALLOW", "selector": None,
       "principals": ["spiffe://cluster.local/ns/default/sa/sleep"], "ports": []}],
     9080, "spiffe://cluster.local/ns/default/sa/sleep", True),
    ([{"name": "allow-sleep", "namespace": "default", "action": "ALLOW", "selector": None,
       "principals": ["spiffe://cluster.local/ns/default/sa/sleep"], "ports": []}], 9080, None, False),
    ([{"name": "other-ns", "namespace": "prod", "action": "DENY", "selector": None, "principals": [], "ports": []}],
     9080, None, True),
], ids=["no-policy", "deny-match", "deny-other-principal", "deny-other-port", "allow-match", "allow-plaintext",
        "other-namespace"])
def test_policy(policies: list, port: int, src: str | None, allowed: bool) -> None:
    """DENY wins; ALLOW policies require a match; plaintext matches no principal."""
    r = Registry.from_dict(doc(policies=policies))
    assert r.check_policy(r.workload_by_ip("10.244.1.7"), port, src)[0] is allowed


def test_reload_on_mtime_and_keep_old_on_error(tmp_path) -> None:
    """reload() picks up a changed file; a broken file keeps the previous registry."""
    p = tmp_path / "registry.json"
    p.write_text(json.dumps(doc()))
    r = Registry.load(str(p))
    assert not r.reload()
    d = doc()
    d["workloads"] = d["workloads"][:1]
    p.write_text(json.dumps(d))
    os.utime(p, (1, 1))
    assert r.reload() and len(r.workloads) == 1
    p.write_text("{not json")
    os.utime(p, (2, 2))
    assert not r.reload() and len(r.workloads) == 1


def test_malformed_registry_is_a_clear_error(tmp_path) -> None:
    """A missing key names its place."""
    p = tmp_path / "registry.json"
    p.write_text(json.dumps({"workloads": [{"uid": "x"}]}))
    with pytest.raises(RegistryError, match=r"workloads\[0\]: missing key 'name'"):
        Registry.load(str(p))


K8S_UID = "8f2c9d1e-5b7a-5c3e-9d2f-0a1b2c3d4e5f"


def _with_k8s_uid() -> dict:
    d = doc()
    d["workloads"][0]["k8s_uid"] = K8S_UID
    return d


def test_lookup_by_k8s_uid_and_registry_uid() -> None:
    """ZDS's uid is the pod's Kubernetes UID: indexed next to the registry's own ns/name uid."""
    r = Registry.from_dict(_with_k8s_uid())
    assert r.workload_by_uid(K8S_UID).name == "productpage-v1"
    assert r.workload_by_uid("default/productpage-v1").k8s_uid == K8S_UID
    assert r.by_k8s_uid == {K8S_UID: r.workload_by_uid(K8S_UID)}
    assert r.workload_by_uid("00000000-0000-5000-8000-000000000000") is None


def test_workload_for_pod_uid_first_then_name_with_warning(caplog) -> None:
    """By uid first (silently); by namespace/name only as a fallback, with a warning; else None."""
    r = Registry.from_dict(_with_k8s_uid())
    with caplog.at_level(logging.WARNING, logger="netlab.runtime.ztunnel.registry"):
        # uid wins even if ZDS's name disagrees
        assert r.workload_for_pod(K8S_UID, "default", "renamed").name == "productpage-v1"
        assert not caplog.records
        w = r.workload_for_pod("11111111-2222-5333-8444-555555555555", "default", "reviews-v1")
        assert w is not None and w.uid == "default/reviews-v1"
        assert len(caplog.records) == 1 and "matched default/reviews-v1 by name" in caplog.records[0].getMessage()
        assert r.workload_for_pod("11111111-2222-5333-8444-555555555555", "default", "nope") is None


def test_plan_registry_uids_resolve() -> None:
    """The registry the plan writes (uid ns/name + uuid5 k8s_uid, what the CNI agent sends) resolves by uid."""
    from netlab.plan.registry import build_registry, pod_uid
    from netlab.topology.load import load_topology

    topo = load_topology("bookinfo")
    r = Registry.from_doc(build_registry(topo, mode="inpod"))
    for pod in topo.pods:
        w = r.workload_by_uid(pod_uid(pod))
        assert w is not None and (w.namespace, w.name) == (pod.namespace, pod.name)


def test_duplicate_uid_refused() -> None:
    d = doc()
    d["workloads"].append(dict(d["workloads"][0], ip="10.244.1.99"))
    with pytest.raises(RegistryError, match=r"workloads\[3\]: duplicate uid 'default/productpage-v1'"):
        Registry.from_dict(d)


def test_the_registry_file_round_trips_through_its_one_model() -> None:
    """What the lab writes (RegistryDoc.to_json) is what ztunnel reads back, field for field."""
    from netlab.plan.registry import RegistryDoc, build_registry
    from netlab.topology.load import load_topology

    topo = load_topology("bookinfo")
    reg = build_registry(topo, mode="inpod")
    text = reg.to_json()
    assert RegistryDoc.from_json(text) == reg
    live = Registry.from_dict(json.loads(text))
    assert live.doc == reg and sorted(live.workloads) == sorted(w.uid for w in reg.workloads)
    w = reg.workloads[0]
    assert w.pod_uid == w.k8s_uid != w.uid  # the Kubernetes UID wins when the plan set one


def test_pod_uid_falls_back_to_the_registry_uid() -> None:
    w = Registry.from_dict(doc()).workload_by_ip("10.244.1.7")
    assert w.k8s_uid == "" and w.pod_uid == "default/productpage-v1"


def test_with_protocol_marks_only_the_named_pods() -> None:
    r = Registry.from_dict(doc()).doc.with_protocol(False, {"reviews-v1"})
    assert [w.protocol for w in r.workloads] == ["HBONE", "TCP", "TCP"]
    assert all(w.protocol == "HBONE" for w in r.with_protocol(True).workloads)


@pytest.mark.parametrize("patch,message", [
    ({"workloads": [{**doc()["workloads"][0], "protocol": "UDP"}]}, r"workloads\[0\]\.protocol: Input should be"),
    ({"workloads": [{**doc()["workloads"][0], "colour": "red"}]}, r"workloads\[0\]\.colour: Extra inputs"),
    ({"policies": [{"name": "p", "namespace": "default", "action": "AUDIT"}]}, r"policies\[0\]\.action"),
    ({"services": [{"name": "s", "namespace": "default", "hostname": "h", "vip": "10.96.0.1"}]},
     r"services\[0\]: missing key 'ports'"),
], ids=["bad-protocol", "unknown-key", "bad-action", "service-without-ports"])
def test_malformed_entries_name_their_place(patch: dict, message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        Registry.from_dict(doc(**patch))


def test_service_target_port_defaults_to_port() -> None:
    d = doc()
    d["services"][0]["ports"] = [{"port": 9080}]
    assert Registry.from_dict(d).service_by_vip("10.96.0.10", 9080)[1].target_port == 9080
