"""What 15008 refuses, on a real lab: another CA's certificate, an identity the policy does
not allow, plaintext and TLS 1.2, from an unenrolled pod that can reach the server; and a pod
of one lab cannot reach another lab's pods. A lab-CA certificate of the allowed identity is
the positive control (served 200), so a refusal is the server's doing, not the probe's."""

from __future__ import annotations

import json

import pytest

from netlab import names
from netlab.runtime.ztunnel import certs
from tests.kernel.helpers import in_lab, lab_up
from tests.reliability import mesh_probe as mp

pytestmark = pytest.mark.root

TOPO = """name: rl-sec
addressing: {pod_cidr: %s}
nodes: [{name: n1}, {name: n2}]
namespaces: [{name: default, labels: {istio.io/dataplane-mode: ambient}}]
pods:
  - {name: client, node: n1, app: sleep, service_account: client}
  - {name: intruder, node: n1, app: sleep, service_account: intruder, labels: {istio.io/dataplane-mode: none}}
  - {name: server, node: n2, app: echo, service_account: server, labels: {app: server}}
services: [{name: server, selector: {app: server}, ports: [{port: 80, target_port: 9080}]}]
policies:
  - {name: only-client, action: ALLOW, selector: {app: server}, principals: ["spiffe://cluster.local/ns/default/sa/client"]}
"""
CLIENT = "spiffe://cluster.local/ns/default/sa/client"
INTRUDER = "spiffe://cluster.local/ns/default/sa/intruder"


@pytest.fixture(scope="module", params=["inpod", "node-routing"])
def lab(request, tmp_path_factory):
    p = tmp_path_factory.mktemp("sec") / "t.yaml"
    p.write_text(TOPO % "10.244.0.0/16")
    with lab_up(str(p), f"rl-sec-{request.param[:2]}", "--mode", request.param) as name:
        rec = json.load(open(names.record_path(names.state_dir(name))))
        yield {"name": name, "server": rec["pods"]["server"]["ip"], "certs": f"{names.state_dir(name)}/certs"}


def lab_svid(lab: dict, spiffe: str) -> tuple[str, str]:
    ca, key = certs.load_ca(lab["certs"])
    return mp.pem_pair(certs.issue_svid(ca, key, spiffe, ttl_seconds=600))


def probe(lab: dict, ctx) -> str:
    return mp.hbone_connect(names.netns(lab["name"], "intruder"), lab["server"], f"{lab['server']}:9080", ctx)


def test_control_lab_ca_and_allowed_identity_is_served(lab) -> None:
    assert probe(lab, mp.client_ctx("", lab_svid(lab, CLIENT))) == "served 200"


def test_certificate_from_another_ca_is_refused(lab, tmp_path) -> None:
    certs.ensure_ca(str(tmp_path))
    ca, key = certs.load_ca(str(tmp_path))
    pair = mp.pem_pair(certs.issue_svid(ca, key, CLIENT, ttl_seconds=600))  # spoofed: the client's identity
    assert probe(lab, mp.client_ctx("", pair)).startswith("refused")


def test_identity_the_policy_does_not_allow_is_refused(lab) -> None:
    out = probe(lab, mp.client_ctx("", lab_svid(lab, INTRUDER)))
    assert out.startswith("refused") or out in ("served 401", "served 403"), out


def test_plaintext_is_refused(lab) -> None:
    assert probe(lab, None).startswith("refused")


def test_tls12_is_refused(lab) -> None:
    out = probe(lab, mp.client_ctx("", lab_svid(lab, CLIENT), tls12=True))
    assert out.startswith("refused: handshake"), out


def test_a_pod_of_one_lab_cannot_reach_another_labs_pods(lab, tmp_path) -> None:
    other = tmp_path / "o.yaml"
    other.write_text(TOPO.replace("name: rl-sec", "name: rl-sec-o") % "10.245.0.0/16")
    with lab_up(str(other), "rl-sec-o", "--mode", "none"):
        o = json.load(open(names.record_path(names.state_dir("rl-sec-o"))))["pods"]["server"]["ip"]
        assert o.startswith("10.245.")
        r = in_lab(lab["name"], "client", "curl", "-s", "--max-time", "3", "-o", "/dev/null", "-w", "%{http_code}",
                   f"http://{o}:9080/")
        assert r.stdout in ("000", ""), r.stdout
        # and the reverse, to a meshed pod's HBONE port
        assert mp.hbone_connect(names.netns("rl-sec-o", "client"), lab["server"], f"{lab['server']}:9080",
                                mp.client_ctx("", lab_svid(lab, CLIENT))).startswith("refused")
