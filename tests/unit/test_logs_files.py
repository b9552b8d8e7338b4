"""``netlab logs LAB <node>`` finds every log a node's agents write, from the lab's state dir."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from netlab import names
from netlab.observe.logs import log_files


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(names, "STATE_ROOT", str(tmp_path))
    d = tmp_path / "lbx"
    (d / "logs").mkdir(parents=True)
    rec = {"lab": "lbx", "topology": "t.yaml", "mode": "node-routing", "istio_version": "1.20", "encap": "geneve-user",
           "plan_sha": "x", "roles": {"n1": "node"}, "members": {"n1": "nl-lbx-n1"}, "state": "up"}
    (d / "lab.json").write_text(json.dumps(rec))
    return d


def test_node_logs_include_the_node_routing_istio_cni_log(state: Path) -> None:
    """enroll/unenroll and --design-only write istio-cni.<node>.log: `logs LAB <node>` must print it."""
    (state / "logs" / "geneve.n1.log").write_text("ready\n")
    (state / "logs" / "istio-cni.n1.log").write_text("x\tinfo\tambient\tAdding pod 'sleep/default'\n")
    got = [os.path.basename(p) for p in log_files("lbx", "n1")]
    assert "istio-cni.n1.log" in got


def test_node_logs_include_the_inpod_agent_log(state: Path) -> None:
    (state / "logs" / "cni-agent.n1.log").write_text("ready\n")
    assert [os.path.basename(p) for p in log_files("lbx", "n1")] == ["cni-agent.n1.log"]
