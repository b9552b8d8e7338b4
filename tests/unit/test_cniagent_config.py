"""The CNI agent's config file: one typed model written by the lab and read by the agent."""

from __future__ import annotations

import json

from netlab.plan import build_plan
from netlab.runtime.cniagent import agent
from netlab.runtime.cniagent.config import AgentConfig
from netlab.topology import load_topology


def test_written_config_reads_back_with_the_nodes_pods(tmp_path) -> None:
    plan = build_plan(load_topology("bookinfo"), lab="cfg", mode="inpod", istio_version="1.22")
    path = agent.write_config(plan, "ambient-worker", str(tmp_path))
    cfg = AgentConfig.from_json(open(path).read())
    pods = {w.name: w for w in plan.registry.workloads if w.node == "ambient-worker"}
    assert [p.name for p in cfg.pods] == sorted(pods)
    assert all(p.uid == pods[p.name].pod_uid and p.ambient == pods[p.name].hbone for p in cfg.pods)
    assert (cfg.lab, cfg.node, cfg.version, cfg.trust_domain) == ("cfg", "ambient-worker", "1.22", "cluster.local")


def test_a_bad_config_is_one_error_and_exit_2(tmp_path, caplog) -> None:
    path = tmp_path / "cni-n1.json"
    path.write_text(json.dumps({"lab": "x", "node": "n1", "version": "1.22"}))  # no sockets, no netns
    assert agent.main(["--lab", "x", "--node", "n1", "--config", str(path)]) == 2
    assert "node_netns" in caplog.text and "Field required" in caplog.text
