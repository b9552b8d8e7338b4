"""Each failure class at the command line: its exit code and its one line on stderr.

The contract (README, "Commands"): stderr gets ``netlab: error: <reason>`` on one line,
possibly followed by one ``hint: <what to do>`` line, and nothing else; the exit code says
which kind of failure it was. Every input here is real (a missing file, a bad option, a lab
whose supervisor is not running) except the kernel refusal, which needs root and a kernel that
says no: there the lab layer's ``up`` is replaced by one that raises what apply raises.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from netlab import names
from netlab.errors import ApplyError


def failure_lines(stderr: str) -> tuple[str, str | None]:
    """The error line and the optional hint line; anything else on stderr fails the test."""
    lines = stderr.splitlines()
    assert 1 <= len(lines) <= 2, f"expected one error line (+ hint), got:\n{stderr}"
    assert lines[0].startswith("netlab: error: "), lines[0]
    if len(lines) == 2:
        assert lines[1].startswith("hint: "), lines[1]
    return lines[0].removeprefix("netlab: error: "), (lines[1].removeprefix("hint: ") if len(lines) == 2 else None)


def write(tmp_path: Path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


# (id, argv builder, exit code, expected substring of the error line)
CASES = [
    ("topology-missing-file", lambda t: ["up", "does-not-exist.yaml", "--dry-run"], 2,
     "does-not-exist.yaml: no such topology file"),
    ("topology-unknown-node", lambda t: ["up", write(t, "u.yaml", "nodes:\n  - name: n1\npods:\n"
                                                    "  - name: a\n    node: n9\n"), "--dry-run"], 2,
     "u.yaml:5: pods[0].node: pod 'a': unknown node 'n9'"),
    ("usage-missing-argument", lambda t: ["up"], 2, "Missing argument 'TOPOLOGY'"),
    ("usage-exec-no-command", lambda t: ["exec", "clx", "n1"], 2, "Missing argument 'CMD'"),
    ("usage-exec-empty-command", lambda t: ["exec", "clx", "n1", "--"], 2, "no command given"),
    ("usage-unknown-command", lambda t: ["bogus"], 2, "No such command 'bogus'"),
    ("usage-bad-integer", lambda t: ["logs", "clx", "server", "-n", "abc"], 2, "Invalid value for '--tail'"),
    ("usage-unknown-option", lambda t: ["status", "--bogus"], 2, "No such option: --bogus"),
    ("usage-bad-section", lambda t: ["show", "clx", "n1", "bogus"], 2,
     "unknown section 'bogus' (choose from links, routes, rules, ipset, iptables, all)"),
    ("plan-mode", lambda t: ["up", "minimal", "--mode", "sidecar"], 3,
     "unknown mode 'sidecar' (choose from none, node-routing, inpod)"),
    ("plan-encap", lambda t: ["up", "minimal", "--encap", "bogus"], 3,
     "unknown encap 'bogus' (choose from auto, geneve, geneve-user, vxlan)"),
    ("plan-istio-version", lambda t: ["up", "minimal", "--mode", "inpod", "--istio-version", "1.20", "--dry-run"], 3,
     "mode inpod reproduces Istio 1.21, 1.22, 1.23, 1.24, not 1.20"),
    ("plan-name", lambda t: ["up", "minimal", "--name", "Bad_Name"], 3, "lab name 'Bad_Name' must be"),
    ("plan-name-clash", lambda t: ["up", write(t, "c.yaml", "nodes: [{name: n1}]\npods: [{name: n1, node: n1}]\n"),
                                   "--dry-run"], 3, "name 'n1' is used twice"),
    ("lab-status-unknown", lambda t: ["status", "clnope"], 6, "no lab named 'clnope'"),
    ("lab-exec-unknown", lambda t: ["exec", "clnope", "x", "--", "true"], 6, "no lab named 'clnope'"),
    ("preflight-iptables-backend", lambda t: ["up", "minimal", "--iptables-backend", "bogus"], 7,
     "unknown iptables backend 'bogus' (choose restore or python-iptables)"),
]


@pytest.mark.parametrize(("argv", "code", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_failure_is_one_line_with_its_code(run, state_root, tmp_path, argv, code, message) -> None:
    r = run(*argv(tmp_path))
    assert r.exit_code == code, (r.stdout, r.stderr)
    line, _ = failure_lines(r.stderr)
    assert message in line
    assert r.stdout == ""


def test_bad_name_is_refused_before_any_kernel_probe(run, state_root, monkeypatch) -> None:
    """`--name` is checked first: the encap probe (which makes a netns named after the lab)
    never runs for a name that will be refused."""
    from netlab.lab import lifecycle

    probes: list[tuple] = []
    monkeypatch.setattr(lifecycle, "kernel_has", lambda *a, **k: probes.append(a) or False)
    for argv in (["up", "minimal", "--name", "Bad_Name", "--dry-run"], ["up", "minimal", "--name", "Bad_Name"]):
        r = run(*argv)
        assert r.exit_code == 3 and "lab name 'Bad_Name'" in r.stderr
    assert probes == []


def test_kernel_refusal_exits_4(run, state_root, monkeypatch) -> None:
    from netlab.lab import lifecycle

    calls: list[tuple] = []

    def refuse(topology: str, **kw: object) -> None:
        calls.append((topology, kw["name"], kw["mode"]))
        raise ApplyError("nl-clk.node1: ip link add istioin type geneve: Operation not supported",
                         obj="link istioin", errno=95)

    monkeypatch.setattr(lifecycle, "up", refuse)
    r = run("up", "minimal", "--name", "clk", "--mode", "node-routing")
    assert r.exit_code == 4
    assert failure_lines(r.stderr) == ("nl-clk.node1: ip link add istioin type geneve: Operation not supported", None)
    assert calls == [("minimal", "clk", "node-routing")]


def test_unreachable_supervisor_is_a_process_error(run, fake_lab) -> None:
    lab = fake_lab()
    r = run("restart", lab, "server")
    assert r.exit_code == 5
    line, hint = failure_lines(r.stderr)
    assert line.startswith(f"lab {lab}: supervisor not reachable")
    assert hint is not None and "gc" not in hint  # gc would tear the whole lab down


def test_lab_state_errors_on_a_recorded_lab(run, fake_lab) -> None:
    lab = fake_lab(mode="none")
    for argv, message in ((["logs", lab, "nope"], "no process for 'nope'"),
                          (["exec", lab, "nope", "--", "true"], "no node or pod named 'nope'"),
                          (["enroll", lab, "client"], "runs without a mesh"),
                          (["unenroll", lab, "nope"], "no pod named 'nope'")):
        r = run(*argv)
        assert r.exit_code == 6, (argv, r.stderr)
        assert message in failure_lines(r.stderr)[0]


def test_not_root_is_a_preflight_error(run, state_root, non_root) -> None:
    r = run("up", "minimal", "--name", "clnr")
    assert r.exit_code == 7
    line, hint = failure_lines(r.stderr)
    assert line == "netlab needs root to create network namespaces" and "--dry-run" in hint
    r = run("doctor")
    assert r.exit_code == 7
    line, hint = failure_lines(r.stderr)
    assert line == "1 required check failed: root" and hint == "run netlab with sudo or as root"
    assert "MISSING" in r.stdout


def test_dry_run_needs_no_root(run, state_root, non_root) -> None:
    r = run("up", "bookinfo", "--dry-run")
    assert r.exit_code == 0 and r.stdout.startswith("# lab bookinfo: mode node-routing")


def test_long_message_stays_on_one_line(run, state_root, tmp_path) -> None:
    """rich wraps at 80 columns when stderr is not a terminal; a script reading the first line
    must get the whole reason."""
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = write(deep, "t.yaml", "nodes: [{name: n1}]\npods: [{name: a, node: n1, port: 99999}]\n")
    r = run("up", path, "--dry-run")
    assert r.exit_code == 2
    line, hint = failure_lines(r.stderr)
    assert len(line) > 200 and line == f"{path}:2: pods[0].port: Input should be less than or equal to 65535"
    assert hint is None


def test_multi_line_reason_is_joined(run, state_root, monkeypatch) -> None:
    """A kernel tool's multi-line stderr inside a message still gives one line."""
    from netlab.lab import lifecycle

    def refuse(topology: str, **kw: object) -> None:
        raise ApplyError("iptables-restore failed:\nline 3: bad rule\n\nline 4: also bad")

    monkeypatch.setattr(lifecycle, "up", refuse)
    r = run("up", "minimal", "--name", "clml")
    assert failure_lines(r.stderr) == ("iptables-restore failed:; line 3: bad rule; line 4: also bad", None)


@pytest.mark.parametrize("argv", [["status", "clnope", "--json"], ["show", "clnope", "x", "--json"],
                                  ["up", "nope.yaml", "--dry-run", "--json"]], ids=["status", "show", "up"])
def test_json_failure_is_an_error_envelope(run, state_root, argv) -> None:
    r = run(*argv)
    assert r.exit_code in (2, 6)
    env = json.loads(r.stdout)
    assert env == {"netlab_result_version": 1, "command": argv[0], "status": "error", "data": None,
                   "errors": [failure_lines(r.stderr)[0]]}


def test_exec_replaces_itself_with_ip_netns_exec(run, fake_lab, monkeypatch) -> None:
    lab = fake_lab()
    called: list[tuple] = []

    def fake_execvp(file: str, argv: list[str]) -> None:
        called.append((file, argv))
        raise SystemExit(0)

    monkeypatch.setattr(os, "execvp", fake_execvp)
    r = run("exec", lab, "client", "--", "curl", "-s", "http://server/")
    assert r.exit_code == 0
    assert called == [("ip", ["ip", "netns", "exec", names.netns(lab, "client"), "curl", "-s", "http://server/"])]
