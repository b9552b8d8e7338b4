"""observe.sh, as `netlab export observe` writes it, run against a live lab instead of a kind cluster.

No docker engine or kind cluster runs on the test machine, so the script's ``docker``,
``kubectl`` and ``crictl`` are adapters (tests/kernel/export_adapters.py) that map a kind node to
the lab node's netns, a pod to the pod's netns, and ``kubectl logs`` to the lab's ztunnel access
log. Everything else is the generated script itself: its nsenter into each pod's netns, the
node's own ip/iptables-save/ss/ipset, the request sent REQUESTS times through the mesh, and
netlab_snapshot.py turning it into report.json. The figures are checked against the lab's
kernel read directly. This proves the script and the parser; it does not stand for a run on a
real cluster.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kernel.helpers import lab_up, netlab

pytestmark = pytest.mark.root
ADAPTERS = Path(__file__).with_name("export_adapters.py")


def _adapters(tmp: Path, lab: str) -> dict[str, str]:
    from netlab.lab.lifecycle import record_of
    from netlab.observe.logs import log_files

    rec = record_of(lab)
    nodes = {m: rec.members[m] for m, r in rec.roles.items() if r == "node"}
    mapping = {"nodes": nodes,
               "pods": {m: rec.members[m] for m, r in rec.roles.items() if r == "pod"},
               "ztunnels": {n: rec.members[f"ztunnel-{n}"] for n in nodes},
               "logs": {f"ztunnel-{n}": log_files(lab, f"ztunnel-{n}")[0] for n in nodes}}
    (tmp / "map.json").write_text(json.dumps(mapping))
    bindir = tmp / "bin"
    bindir.mkdir()
    for tool in ("docker", "kubectl", "crictl"):
        (bindir / tool).write_text(f'#!/bin/sh\nexec {sys.executable} {ADAPTERS} {tool} "$@"\n')
        (bindir / tool).chmod(0o755)
    return {"PATH": f"{bindir}:{os.environ['PATH']}", "NETLAB_ADAPTER_MAP": str(tmp / "map.json")}


def _ns(lab: str, member: str, *cmd: str) -> str:
    from netlab.lab.lifecycle import target_netns

    return subprocess.run(["ip", "netns", "exec", target_netns(lab, member), *cmd], capture_output=True,
                          text=True, check=True).stdout


@pytest.mark.parametrize("mode,version", [("node-routing", "1.20"), ("inpod", "1.22")], ids=["node-routing", "inpod"])
def test_observe_sh_reads_a_lab_through_adapters(tmp_path: Path, mode: str, version: str) -> None:
    name = f"ex-obs-{'nr' if mode == 'node-routing' else 'ip'}"
    out = tmp_path / "export"
    netlab("export", "kind", "minimal", "-o", str(out), "--istio-version", version)
    netlab("export", "observe", str(out))
    with lab_up("minimal", name, "--mode", mode) as lab:
        env = {**os.environ, **_adapters(tmp_path, lab), "REQUESTS": "5"}
        try:
            p = subprocess.run(["bash", str(out / "observe.sh")], env=env, capture_output=True, text=True,
                               timeout=180)
        finally:
            pids = tmp_path / "map.json.pids"
            for pid in pids.read_text().split() if pids.exists() else []:
                os.killpg(int(pid), signal.SIGTERM)
        assert p.returncode == 0, p.stderr
        doc = json.loads((out / "observed" / "report.json").read_text())
        [run] = doc["designs"]
        objs = {o["member"]: o for o in run["objects"]}
        node = objs["node1"]
        assert node["ip_rules"] == len(_ns(lab, "node1", "ip", "rule", "show").splitlines())
        assert run["latency"]["requests"] == 5 and run["latency"]["ok"] == 5, run["latency"]
        entries = json.loads((out / "observed" / "access-log.json").read_text())
        assert any(e["fields"].get("direction") == "inbound" for e in entries), entries
        if mode == "node-routing":
            assert node["ipset_members"] == {"ztunnel-pods-ips": 2}
            assert node["routes"]["101"] == 2 and node["iptables"]["mangle"]["ztunnel-PREROUTING"] == 15
            zt = objs["ztunnel-node1"]
            assert sum("TPROXY" in ln for ln in zt["lines"]["iptables"]) == 3
            assert {15001, 15006, 15008} <= {x["port"] for x in zt["listeners"]}
        else:
            assert "ztunnel-node1" not in objs
            server = objs["server"]
            assert server["iptables"]["mangle"]["ISTIO_PRERT"] == 6
            assert {15001, 15006, 15008} <= {x["port"] for x in server["listeners"]}
        if importlib.util.find_spec("netlab.observe.report") is not None:  # netlab report's own model
            from netlab.observe.report import schema

            schema.Report.model_validate(doc)
