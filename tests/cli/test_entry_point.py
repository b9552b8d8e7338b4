"""Every kernel-backed command, once, through the real entry point (``python3 -m netlab``,
what the installed ``netlab`` script calls) on a small real lab.

``netlab gc`` is the exception: it removes every crashed lab on the machine by marker, so a
test cannot run it without touching labs it did not make (tests/kernel/test_lifecycle.py runs
it where it owns the machine's only labs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.root
REPO = Path(__file__).resolve().parents[2]
LAB = "clep"


def netlab(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "netlab", *args], capture_output=True, text=True, timeout=timeout,
                          cwd="/", env=env)


def ok(*args: str) -> subprocess.CompletedProcess:
    p = netlab(*args)
    assert p.returncode == 0, f"netlab {' '.join(args)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}"
    return p


def data(p: subprocess.CompletedProcess) -> object:
    env = json.loads(p.stdout)
    assert env["status"] == "ok" and env["errors"] == []
    return env["data"]


def test_every_kernel_command_through_the_entry_point() -> None:
    doctor = ok("doctor", "--json")
    assert all(c["ok"] for c in data(doctor) if c["required"])

    up = data(ok("up", "minimal", "--name", LAB, "--mode", "node-routing", "--json"))
    try:
        assert up["lab"] == LAB and up["changed"] is True and up["mode"] == "node-routing"
        st = data(ok("status", LAB, "--json"))[0]
        assert st["state"] == "up" and st["ready"] == len(st["processes"]) > 0

        r = ok("exec", LAB, "client", "--", "curl", "-s", "--max-time", "10", "http://server/")
        assert json.loads(r.stdout)["pod"] == "server"

        rules = ok("show", LAB, "node1", "rules")
        assert rules.stdout.startswith("# node1$ ip rule show\n") and "lookup 101" in rules.stdout
        shown = data(ok("show", LAB, "node1", "ipset", "--json"))
        assert "ztunnel-pods-ips" in shown["sections"]["ipset list"]

        assert ok("logs", LAB, "supervisor").stdout
        r = ok("restart", LAB, "server")
        assert r.stderr.startswith("pod/server restarted (pid ")
        r = ok("unenroll", LAB, "client")
        assert r.stderr.splitlines()[-1] == "client removed from the mesh (label istio.io/dataplane-mode=none)"
        r = ok("enroll", LAB, "client")
        assert r.stderr.splitlines()[-1] == "client enrolled in the mesh (label istio.io/dataplane-mode=ambient)"
        r = ok("exec", LAB, "client", "--", "curl", "-s", "--max-time", "10", "--retry", "5",
               "--retry-connrefused", "http://server/")
        assert json.loads(r.stdout)["pod"] == "server"
    finally:
        down = netlab("down", LAB, "--json")
    assert down.returncode == 0, down.stderr
    (removed,) = data(down)
    assert removed["lab"] == LAB and removed["netns_removed"]

    gone = netlab("status", LAB)
    assert gone.returncode == 6 and gone.stderr.startswith(f"netlab: error: no lab named '{LAB}'")
