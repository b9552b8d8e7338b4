"""What the human-facing output says: data on stdout, notes on stderr."""

from __future__ import annotations

import os

from netlab import names


def test_logs_prints_the_file_and_tails_it(run, fake_lab) -> None:
    lab = fake_lab()
    logs = os.path.join(names.state_dir(lab), "logs")
    with open(os.path.join(logs, "pod.server.log"), "w") as f:
        f.write("".join(f"line {i}\n" for i in range(10)))
    with open(os.path.join(logs, "supervisor.log"), "w") as f:
        f.write("started\n")
    r = run("logs", lab, "server")
    assert r.exit_code == 0 and r.stdout == "".join(f"line {i}\n" for i in range(10)) and r.stderr == ""
    r = run("logs", lab, "server", "-n", "2")
    assert r.stdout == "line 8\nline 9\n"
    assert run("logs", lab, "supervisor").stdout == "started\n"


def test_logs_of_a_node_name_each_file(run, fake_lab) -> None:
    lab = fake_lab()
    logs = os.path.join(names.state_dir(lab), "logs")
    for f in ("geneve.node1.log", "cni-agent.node1.log"):
        with open(os.path.join(logs, f), "w") as fh:
            fh.write(f"from {f}\n")
    r = run("logs", lab, "node1")
    assert r.stdout == "from geneve.node1.log\nfrom cni-agent.node1.log\n"
    assert r.stderr == "==> geneve.node1.log <==\n==> cni-agent.node1.log <==\n"


def test_enroll_a_pod_already_in_the_mesh_changes_nothing(run, fake_lab) -> None:
    lab = fake_lab()
    r = run("enroll", lab, "client")
    assert r.exit_code == 0
    assert r.stderr == "client is already in the mesh; nothing changed\n"


def test_status_table(run, fake_lab) -> None:
    lab = fake_lab()
    r = run("status", lab)
    assert r.exit_code == 0
    assert lab in r.stdout and "node-routing" in r.stdout and "geneve-user" in r.stdout
    r = run("status")
    assert r.exit_code == 0 and lab in r.stdout


def test_status_without_labs_says_so(run, state_root) -> None:
    r = run("status")
    assert r.exit_code == 0 and r.stdout == "" and r.stderr == "no labs\n"


def test_gc_with_nothing_to_clean(run, state_root, monkeypatch) -> None:
    from netlab.lab import lifecycle

    monkeypatch.setattr(lifecycle, "gc", lambda: [])
    r = run("gc")
    assert r.exit_code == 0 and r.stderr == "nothing to clean\n"


def test_restart_names_the_new_pid(run, fake_lab, monkeypatch) -> None:
    from netlab.runtime import supervisor

    lab = fake_lab()
    sent = []
    monkeypatch.setattr(supervisor, "request", lambda lab_, req: sent.append((lab_, req)) or {"ok": True, "pid": 4242})
    r = run("restart", lab, "ztunnel-node1")
    assert r.exit_code == 0 and r.stderr == "ztunnel/node1 restarted (pid 4242)\n"
    assert sent == [(lab, {"op": "restart", "name": "ztunnel/node1"})]
