"""Teaching labs 1, 2, 3 and 6 on one node-routing bookinfo: `lab run` passes, `lab check` names
the skipped or undone step, and every broken state of lab 6 is detected and named."""

from __future__ import annotations

import json

import pytest

from tests.kernel.helpers import netlab

pytestmark = pytest.mark.root
LAB = "lbtn"


@pytest.fixture(scope="module")
def lab():
    netlab("lab", "start", "1", "--name", LAB, timeout=180)
    try:
        yield LAB
    finally:
        if netlab("down", LAB, check=False, timeout=300).returncode:
            netlab("down", LAB, check=False, timeout=300)  # once more: a busy host can time the first out


def check(number: int) -> tuple[int, dict]:
    p = netlab("lab", "check", str(number), "--name", LAB, "--json", check=False)
    return p.returncode, json.loads(p.stdout)["data"]


def test_check_names_the_skipped_step_then_the_undone_one(lab) -> None:
    netlab("lab", "start", "1", "--name", lab)
    netlab("unenroll", lab, "notsleep")  # step 5, with step 2 (the request) skipped
    rc, data = check(1)
    steps = {s["index"]: s for s in data["steps"]}
    assert rc == 1 and not data["done"]
    assert not steps[2]["ok"]
    assert "no outbound connection from sleep to productpage-v1" in steps[2]["detail"]
    assert steps[5]["ok"], steps[5]
    hint = netlab("lab", "hint", "1", "--name", lab).stdout
    assert "step 2/6" in hint and f"netlab exec {lab} sleep -- curl" in hint

    netlab("enroll", lab, "notsleep")  # step 5 undone
    _, data = check(1)
    s5 = data["steps"][4]
    assert not s5["ok"] and "notsleep is still in the mesh: 10.244.2.5 is still in ipset ztunnel-pods-ips" \
        in s5["detail"]


@pytest.mark.parametrize("number", [1, 2, 3, 6])
def test_lab_run_passes(lab, number: int) -> None:
    p = netlab("lab", "run", str(number), "--name", lab, timeout=300, check=False)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    assert f"lab {number}: all" in p.stdout


BREAKS = [
    ("ipset-missing:sleep", ["exec", LAB, "ambient-worker", "--", "ipset", "del", "ztunnel-pods-ips", "10.244.2.4"],
     "missing from ipset ztunnel-pods-ips on ambient-worker"),
    ("rule-missing:ambient-worker:101", ["exec", LAB, "ambient-worker", "--", "ip", "rule", "del", "priority", "101"],
     "ip rule 101 (from all fwmark 0x100/0x100 lookup 101) is missing on ambient-worker"),
    ("rule-missing:ambient-worker2:103", ["exec", LAB, "ambient-worker2", "--", "ip", "rule", "del", "priority", "103"],
     "table 100 is never consulted"),
    ("unenrolled:productpage-v1", ["unenroll", LAB, "productpage-v1"], "taken out of the mesh at run time"),
]


@pytest.mark.parametrize("key,breaker,symptom", BREAKS, ids=[b[0] for b in BREAKS])
def test_lab6_names_each_broken_state_and_its_repair(lab, key: str, breaker: list[str], symptom: str) -> None:
    netlab("lab", "start", "6", "--name", lab)
    rc, data = check(6)
    assert not data["broken"], data["broken"]
    netlab(*breaker)
    rc, data = check(6)
    found = {f["key"]: f for f in data["broken"]}
    assert rc == 1 and set(found) == {key}, found
    assert symptom in found[key]["symptom"]
    p = netlab("lab", "check", "6", "--name", lab, check=False)
    assert f"BROKEN {key}" in p.stdout
    repair = found[key]["repair"]
    if repair.startswith("netlab "):
        netlab(*repair.split()[1:])
    _, data = check(6)
    assert not data["broken"], f"repair `{repair}` left {data['broken']}"


def test_lab6_names_a_killed_ztunnel(lab) -> None:
    import os
    import signal
    import time

    from netlab.runtime import supervisor

    netlab("lab", "start", "6", "--name", lab)
    pid = {p["name"]: p for p in supervisor.request(lab, {"op": "status"})["processes"]}["ztunnel/ambient-worker2"]["pid"]
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    _, data = check(6)
    keys = {f["key"] for f in data["broken"]}
    assert keys & {"ztunnel-restarted:ambient-worker2", "ztunnel-down:ambient-worker2"}, keys


def test_concepts_diagram_is_what_a_live_lab_draws(lab) -> None:
    from netlab.teach.diagram import render
    from tests.unit.test_docs_links import diagram_block

    netlab("lab", "start", "1", "--name", lab)  # every pod enrolled, as in the doc
    assert render(lab) == diagram_block("node-routing")


def test_walk_and_node_routing_docs_commands_print_what_the_docs_show(lab) -> None:
    from tests.kernel.doc_snippets import check_doc

    netlab("lab", "start", "1", "--name", lab)
    netlab("exec", lab, "sleep", "--", "curl", "-s", "-o", "/dev/null", "http://productpage:9080/")
    problems = check_doc("docs/walk-node-routing.md", lab)
    assert not problems, "\n".join(problems)
