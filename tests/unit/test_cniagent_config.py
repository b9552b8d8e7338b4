"""The CNI agent's config file: one typed model written by the lab and read by the agent."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

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


def test_an_agent_stopped_during_its_first_enrollment_forgets_no_pod(tmp_path, monkeypatch) -> None:
    """The enrolled file is what a restarted agent serves: written part way through the
    start-up enrollment, it would hold only the pods done so far, and the next agent would
    take the others for unenrolled."""
    plan = build_plan(load_topology("bookinfo"), lab="cfg", mode="inpod", istio_version="1.22")
    cfg = AgentConfig.from_json(open(agent.write_config(plan, "ambient-worker", str(tmp_path))).read())
    a = agent.Agent(cfg)
    done: list[str] = []

    def pod_rules(p):
        if len(done) == 1:
            raise RuntimeError("agent stopped")
        done.append(p.name)
        return "created"

    monkeypatch.setattr(a, "host_rules", lambda ips: None)
    monkeypatch.setattr(a, "pod_rules", pod_rules)
    monkeypatch.setattr(agent, "add_entry", lambda *args, **kw: None)
    monkeypatch.setattr(a, "_ipset_handle", lambda: None)
    monkeypatch.setattr(agent.nsenter, "open_netns", lambda ns: os.open(os.devnull, os.O_RDONLY))
    monkeypatch.setattr(agent, "ThreadPoolExecutor", lambda **kw: ThreadPoolExecutor(max_workers=1))  # in order
    with pytest.raises(RuntimeError, match="agent stopped"):
        a.start()
    assert len(done) == 1
    assert not os.path.exists(cfg.enrolled_file)  # the next agent starts from the config again
