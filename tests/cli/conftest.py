"""Fixtures for the CLI tests: typer's CliRunner on the assembled app, a private state root.

Every test here runs without root and changes nothing outside its temporary directory: labs the
commands look at are records in a private ``NETLAB_STATE_ROOT`` (as ``netlab up`` writes them,
built from the real plan of a shipped topology), and layer functions that would act on the
machine (``down``, ``gc``, a real ``up``) are replaced by recorders that assert the exact call.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from netlab import names
from netlab.cli.main import app


@pytest.fixture
def run() -> Callable[..., object]:
    """``run("status", "--json")`` -> click's Result (stdout, stderr and exit_code kept apart)."""
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, list(args), catch_exceptions=False)

    return invoke


@pytest.fixture
def state_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "state"
    root.mkdir()
    monkeypatch.setattr(names, "STATE_ROOT", str(root))
    # the machine's own labs (other netns on this host) are not this test's business: the
    # commands see no netns at all, only the records in this root
    from netlab.apply import netns

    monkeypatch.setattr(netns, "list_netns", lambda prefix="": [])
    return root


@pytest.fixture
def fake_lab(state_root: Path) -> Callable[..., str]:
    """Write the record ``netlab up`` would write for a shipped topology, without a kernel.

    Its supervisor is not running (no socket), so status shows it broken and restart fails.
    """
    from netlab.lab.lifecycle import make_plan, plan_sha
    from netlab.lab.state import LabRecord

    def make(lab: str = "clfake", topology: str = "minimal", mode: str = "node-routing") -> str:
        plan = make_plan(topology, name=lab, mode=mode, istio_version=None, encap="geneve-user", probe=False)
        rec = LabRecord(
            lab=lab, topology=topology, mode=plan.mode, istio_version=plan.istio_version, encap=plan.encap,
            plan_sha=plan_sha(plan), members={n.member: n.name for n in plan.namespaces},
            roles={n.member: n.role for n in plan.namespaces},
            pods={w.name: {"node": w.node, "ip": w.ip, "namespace": w.namespace, "ambient": w.hbone, "uid": w.pod_uid}
                  for w in plan.registry.workloads},
            nodes=plan.nodes, state="up")
        rec.save()
        os.makedirs(os.path.join(names.state_dir(lab), "logs"), exist_ok=True)
        return lab

    return make


@pytest.fixture
def non_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run as an unprivileged user would (the checks read os.geteuid)."""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
