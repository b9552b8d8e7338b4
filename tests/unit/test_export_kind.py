"""`netlab export kind`: the files it writes, checked against kind's and Kubernetes' own APIs.

Nothing here runs a cluster (no docker engine or kind cluster can run on the test machine): the
kind config is checked field by field against kind's v1alpha4 API, every manifest against the
OpenAPI schemas Kubernetes publishes (shipped offline by the ``kubernetes-validate`` package),
the scripts with ``bash -n`` and shellcheck, and every file against its golden copy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from netlab.export.bundle import ExportInfo, render_kind, render_observe
from netlab.export.versions import RELEASES, SCHEMA_KUBERNETES
from netlab.topology import load_topology

CASES = [("bookinfo", "1.20"), ("bookinfo", "1.22"), ("bookinfo", "1.24"), ("minimal", "1.22")]
IDS = [f"{t}-{v}" for t, v in CASES]

# kind's v1alpha4 Cluster API, every YAML key of every struct, as declared by the struct tags of
# kubernetes-sigs/kind@00b38e3bbfdd20ec214924967fcfa7b5b0f51373 pkg/apis/config/v1alpha4/types.go
# (Cluster with its inline TypeMeta, Node, Networking, PatchJSON6902, Mount, PortMapping), and the
# values its string enums (NodeRole, ClusterIPFamily, ProxyMode) accept.
KIND_V1ALPHA4: dict[str, dict[str, str | None]] = {
    "Cluster": {"kind": None, "apiVersion": None, "name": None, "nodes": "Node", "networking": "Networking",
                "featureGates": None, "runtimeConfig": None, "kubeadmConfigPatches": None,
                "kubeadmConfigPatchesJSON6902": "PatchJSON6902", "containerdConfigPatches": None,
                "containerdConfigPatchesJSON6902": None},
    "Node": {"role": None, "image": None, "labels": None, "extraMounts": "Mount",
             "extraPortMappings": "PortMapping", "gpus": None, "kubeadmConfigPatches": None,
             "kubeadmConfigPatchesJSON6902": "PatchJSON6902"},
    "Networking": {"ipFamily": None, "apiServerPort": None, "apiServerAddress": None, "podSubnet": None,
                   "serviceSubnet": None, "disableDefaultCNI": None, "kubeProxyMode": None, "dnsSearch": None},
    "PatchJSON6902": {"group": None, "version": None, "kind": None, "patch": None},
    "Mount": {"containerPath": None, "hostPath": None, "readOnly": None, "selinuxRelabel": None,
              "propagation": None},
    "PortMapping": {"containerPort": None, "hostPort": None, "listenAddress": None, "protocol": None},
}
KIND_ENUMS = {("Node", "role"): {"control-plane", "worker"}, ("Networking", "ipFamily"): {"ipv4", "ipv6", "dual"},
              ("Networking", "kubeProxyMode"): {"iptables", "ipvs", "none"}}


def _check_kind(obj: object, struct: str, path: str) -> None:
    if isinstance(obj, list):
        for i, item in enumerate(obj):
            _check_kind(item, struct, f"{path}[{i}]")
        return
    assert isinstance(obj, dict), f"{path}: a {struct} must be a mapping"
    fields = KIND_V1ALPHA4[struct]
    for key, value in obj.items():
        assert key in fields, f"{path}.{key}: not a field of kind v1alpha4 {struct} (fields: {sorted(fields)})"
        if (struct, key) in KIND_ENUMS:
            assert value in KIND_ENUMS[(struct, key)], f"{path}.{key}: {value!r} not accepted by kind"
        if fields[key] is not None:
            _check_kind(value, fields[key], f"{path}.{key}")


def _files(topo: str, minor: str) -> dict[str, str]:
    files = render_kind(load_topology(topo), minor)
    files.update(render_observe(ExportInfo.model_validate_json(files["export.json"])))
    return files


@pytest.mark.parametrize("topo,minor", CASES, ids=IDS)
def test_export_golden(golden, topo: str, minor: str) -> None:
    for name, text in sorted(_files(topo, minor).items()):
        if name != "netlab_snapshot.py":  # a verbatim copy of netlab/export/snapshot.py, checked below
            golden(f"export/{topo}-{minor}/{name}", text)


def test_snapshot_script_is_the_module_verbatim() -> None:
    from netlab.export import snapshot

    assert _files("minimal", "1.22")["netlab_snapshot.py"] == Path(snapshot.__file__).read_text()


@pytest.mark.parametrize("topo,minor", CASES, ids=IDS)
def test_kind_config_uses_only_kind_v1alpha4_fields(topo: str, minor: str) -> None:
    cfg = yaml.safe_load(render_kind(load_topology(topo), minor)["kind.yaml"])
    assert (cfg["kind"], cfg["apiVersion"]) == ("Cluster", "kind.x-k8s.io/v1alpha4")
    _check_kind(cfg, "Cluster", "kind.yaml")
    roles = [n["role"] for n in cfg["nodes"]]
    assert roles == ["control-plane"] + ["worker"] * len(load_topology(topo).nodes)


def test_kind_field_check_rejects_an_unknown_field() -> None:
    with pytest.raises(AssertionError, match="podCidr"):
        _check_kind({"networking": {"podCidr": "10.244.0.0/16"}}, "Cluster", "kind.yaml")


def test_bookinfo_workers_get_the_topology_names_and_cidrs() -> None:
    """kind names workers <cluster>-worker, -worker2: bookinfo's node names, in that order."""
    cfg = yaml.safe_load(render_kind(load_topology("bookinfo"), "1.20")["kind.yaml"])
    assert cfg["name"] == "ambient"
    assert [n.get("labels") for n in cfg["nodes"]] == [
        None, {"netlab/node": "ambient-worker"}, {"netlab/node": "ambient-worker2"}]
    assert cfg["networking"]["podSubnet"] == "10.244.0.0/16"
    assert cfg["networking"]["serviceSubnet"] == "10.96.0.0/16"


def _manifest_docs(topo: str, minor: str) -> list[dict]:
    files = render_kind(load_topology(topo), minor)
    return [d for name, text in sorted(files.items()) if name.startswith("manifests/")
            for d in yaml.safe_load_all(text)]


@pytest.mark.parametrize("topo,minor", CASES, ids=IDS)
def test_every_manifest_validates_against_kubernetes_schemas(topo: str, minor: str) -> None:
    """Strict (no unknown field) against a recent Kubernetes, and the release's kind node version."""
    docs = _manifest_docs(topo, minor)
    assert docs
    for version in (SCHEMA_KUBERNETES, RELEASES[minor].kubernetes.rsplit(".", 1)[0] + ".0"):
        for d in docs:
            kubernetes_validate.validate(d, version, strict=True)


def test_schema_validation_is_strict() -> None:
    """The validator really rejects a misspelt field (so the test above can fail)."""
    d = next(d for d in _manifest_docs("minimal", "1.22") if d["kind"] == "Service")
    d["spec"]["ports"][0]["targtPort"] = d["spec"]["ports"][0].pop("targetPort")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(d, SCHEMA_KUBERNETES, strict=True)


def test_bookinfo_manifests_follow_the_topology() -> None:
    docs = _manifest_docs("bookinfo", "1.22")
    by_kind: dict[str, list[dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    assert by_kind["Namespace"][0]["metadata"]["labels"] == {"istio.io/dataplane-mode": "ambient"}
    deps = {d["metadata"]["name"]: d for d in by_kind["Deployment"]}
    assert sorted(deps) == sorted(p.name for p in load_topology("bookinfo").pods)
    spec = deps["reviews-v2"]["spec"]["template"]["spec"]
    assert spec["containers"][0]["image"] == "docker.io/istio/examples-bookinfo-reviews-v2:1.19.1"
    assert spec["serviceAccountName"] == "bookinfo-reviews"
    term = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert term == [{"matchExpressions": [{"key": "netlab/node", "operator": "In", "values": ["ambient-worker2"]}]}]
    sleep = deps["sleep"]["spec"]["template"]["spec"]["containers"][0]
    assert (sleep["image"], sleep["command"]) == ("curlimages/curl", ["/bin/sleep", "infinity"])
    selectors = [tuple(sorted(d["spec"]["selector"]["matchLabels"].items())) for d in deps.values()]
    assert len(set(selectors)) == len(selectors), "Deployment selectors must not overlap"
    svcs = {s["metadata"]["name"]: s["spec"] for s in by_kind["Service"]}
    assert svcs["reviews"] == {"selector": {"app": "reviews"},
                               "ports": [{"name": "http", "port": 9080, "targetPort": 9080, "protocol": "TCP"}]}


def test_minimal_echo_server_listens_on_the_service_target_port() -> None:
    docs = _manifest_docs("minimal", "1.24")
    dep = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "server")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    svc = next(d for d in docs if d["kind"] == "Service")
    assert svc["spec"]["ports"][0]["targetPort"] == c["ports"][0]["containerPort"] == 9080
    assert "-listen=:9080" in c["args"]


def test_install_commands_differ_per_release() -> None:
    run = {v: render_kind(load_topology("minimal"), v)["run.sh"] for v in RELEASES}
    assert "-f manifests/charts/istio-cni/ambient-values.yaml" in run["1.20"]
    assert "profile=ambient --wait" not in run["1.20"]
    for v in ("1.22", "1.24"):
        assert "helm install istio-cni istio/cni" in run[v] and "--set profile=ambient --wait" in run[v]
    order = {v: [ln.split()[2] for ln in run[v].splitlines() if ln.strip().startswith("helm install")] for v in run}
    assert order["1.22"] == ["istio-base", "istio-cni", "istiod", "ztunnel"]
    assert order["1.24"] == ["istio-base", "istiod", "istio-cni", "ztunnel"]
    for v, text in run.items():
        assert 'istioctl" --context "$CTX" install --set profile=ambient --skip-confirmation' in text
        assert f"ISTIO_VERSION=${{ISTIO_VERSION:-{RELEASES[v].patch}}}" in text


def test_run_sh_runs_the_seed_request() -> None:
    run = render_kind(load_topology("bookinfo"), "1.20")["run.sh"]
    assert "k -n default exec deploy/sleep -- curl -sS --max-time 10 http://productpage:9080/" in run


@pytest.mark.parametrize("topo,minor", CASES, ids=IDS)
def test_scripts_pass_bash_n_and_shellcheck(tmp_path: Path, topo: str, minor: str) -> None:
    files = _files(topo, minor)
    scripts = []
    for name in ("run.sh", "observe.sh"):
        p = tmp_path / name
        p.write_text(files[name])
        scripts.append(str(p))
        subprocess.run(["bash", "-n", str(p)], check=True)
    if shutil.which("shellcheck") is None:
        if os.environ.get("CI"):
            pytest.fail("shellcheck is not installed (scripts/install.sh installs it)")
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    r = subprocess.run(["shellcheck", "--severity=style", *scripts], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


def test_docs_release_table_is_the_code() -> None:
    """docs/real-cluster.md's release table states exactly what the export writes."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "real-cluster.md").read_text()
    rows = {cells[0]: cells for ln in doc.splitlines() if ln.startswith("| 1.")
            for cells in [[c.strip() for c in ln.strip("|").split("|")]]}
    assert set(rows) == set(RELEASES)
    for minor, r in RELEASES.items():
        assert rows[minor] == [minor, r.design, r.patch, r.kind_node_image, r.bookinfo_tag, r.sleep_image]
