"""``--json`` output: one envelope, sorted keys, the data each command documents.

Envelope: ``{"netlab_result_version": 1, "command", "status": "ok"|"error", "data", "errors"}``.
Commands that would act on this machine (a real up, down, gc) run against recorders standing in
for the lab layer, which also check that the CLI passed exactly the user's options.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from netlab import names
from netlab.lab.design import DesignTeardown
from netlab.lab.lifecycle import DownResult, UpResult

ENVELOPE = {"netlab_result_version", "command", "status", "data", "errors"}


def envelope(r, command: str, status: str = "ok"):
    assert r.stdout == json.dumps(json.loads(r.stdout), sort_keys=True, indent=1) + "\n"  # sorted, one document
    env = json.loads(r.stdout)
    assert set(env) == ENVELOPE
    assert (env["netlab_result_version"], env["command"], env["status"]) == (1, command, status)
    assert env["errors"] == [] if status == "ok" else env["errors"]
    return env["data"]


def test_up_dry_run(run, state_root) -> None:
    r = run("up", "minimal", "--name", "cldry", "--mode", "inpod", "--dry-run", "--json")
    assert r.exit_code == 0
    data = envelope(r, "up")
    assert set(data) == {"lab", "mode", "plan"}
    assert (data["lab"], data["mode"]) == ("cldry", "inpod")
    assert data["plan"].startswith("# lab cldry: mode inpod, istio 1.22")


def test_up(run, state_root, monkeypatch) -> None:
    from netlab.lab import lifecycle

    calls = []

    def up(topology, **kw):
        res = UpResult("clup", "inpod", "1.24", "geneve-user", True, 1.5, netns=5, processes=4)
        calls.append((topology, kw, res))
        return res

    monkeypatch.setattr(lifecycle, "up", up)
    r = run("up", "minimal", "--name", "clup", "--mode", "inpod", "--istio-version", "1.24", "--retain",
            "--iptables-backend", "restore", "--json")
    assert r.exit_code == 0, r.stderr
    assert envelope(r, "up") == dataclasses.asdict(calls[0][2])
    assert {"lab", "mode", "istio_version", "encap", "changed", "seconds", "netns", "processes"} <= set(
        envelope(r, "up"))
    (topology, kw, _), = calls
    assert topology == "minimal"
    assert {k: kw[k] for k in ("name", "mode", "istio_version", "encap", "retain", "iptables_backend")} == {
        "name": "clup", "mode": "inpod", "istio_version": "1.24", "encap": "auto", "retain": True,
        "iptables_backend": "restore"}


def test_down_and_gc(run, fake_lab, monkeypatch) -> None:
    from netlab.lab import lifecycle

    lab = fake_lab()
    res = DownResult(lab, ["nl-clfake.node1"], [123], ["/run/netlab/clfake"], 0.25)
    downs: list[str] = []
    monkeypatch.setattr(lifecycle, "down", lambda x: downs.append(x) or res)
    monkeypatch.setattr(lifecycle, "gc", lambda: [res])
    r = run("down", lab, "--json")
    assert r.exit_code == 0 and downs == [lab]
    assert envelope(r, "down") == [dataclasses.asdict(res)]
    r = run("down", "--json")  # the only lab is the default
    assert r.exit_code == 0 and downs == [lab, lab]
    r = run("gc", "--json")
    assert envelope(r, "gc") == [dataclasses.asdict(res)]


def test_down_design_only(run, fake_lab, monkeypatch) -> None:
    from netlab.lab import design

    lab = fake_lab()
    res = DesignTeardown(lab, {"node1": ["ip rule del priority 100"]}, ["ztunnel/node1"], ["nl-clfake.ztunnel-node1"])
    monkeypatch.setattr(design, "remove_design", lambda x: res if x == lab else None)
    r = run("down", lab, "--design-only", "--json")
    assert r.exit_code == 0, r.stderr
    assert envelope(r, "down") == dataclasses.asdict(res)


def test_status(run, fake_lab) -> None:
    lab = fake_lab()
    one = envelope(run("status", lab, "--json"), "status")
    every = envelope(run("status", "--json"), "status")
    assert one == every and len(one) == 1
    s = one[0]
    assert {"lab", "state", "mode", "istio_version", "encap", "topology", "netns", "pods", "processes",
            "supervisor", "ready", "enrolled"} <= set(s)
    assert (s["lab"], s["mode"], s["istio_version"], s["encap"], s["pods"]) == (lab, "node-routing", "1.20",
                                                                                "geneve-user", 2)
    assert s["supervisor"] == "down" and s["processes"] == [] and s["ready"] == 0  # nothing runs
    assert s["enrolled"] == ["client", "server"]


def test_status_without_labs(run, state_root) -> None:
    assert envelope(run("status", "--json"), "status") == []


def test_show(run, fake_lab, monkeypatch) -> None:
    from netlab.observe import show

    lab = fake_lab()
    seen = []

    def fake_run_in(ns: str, argv: list[str]) -> tuple[str, bool]:
        seen.append(ns)
        return f"output of {' '.join(argv)}\n", True

    monkeypatch.setattr(show, "_run_in", fake_run_in)
    data = envelope(run("show", lab, "node1", "rules", "--json"), "show")
    assert data == {"lab": lab, "target": "node1", "netns": names.netns(lab, "node1"),
                    "sections": {"ip rule show": "output of ip rule show\n"}}
    data = envelope(run("show", lab, "client", "--json"), "show")
    assert list(data["sections"]) == ["ip -d link show", "ip addr show", "ip route show table all", "ip rule show",
                                      "ipset list", "iptables-save"]
    assert set(seen) == {names.netns(lab, "node1"), names.netns(lab, "client")}


@pytest.mark.usefixtures("non_root")
def test_doctor(run) -> None:
    r = run("doctor", "--json")
    assert r.exit_code == 7
    data = envelope(r, "doctor", status="error")
    keys = {"name", "ok", "detail", "fix", "required", "instead", "loses"}
    assert all(set(c) == keys for c in data)
    assert data[0] == {"name": "root", "ok": False, "detail": "not root", "fix": "run netlab with sudo or as root",
                       "required": True, "instead": "", "loses": ""}
    assert json.loads(r.stdout)["errors"] == ["root: not root"]
