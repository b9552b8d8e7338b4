"""Regression tests (no root) for names that cannot collide, the per-lab lock, gc's verdicts,
supervisor identity, status of unreadable or stopped labs, fd budgets and underlay IPs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from netlab import names
from netlab.errors import TopologyError
from netlab.lab import cleanup, inventory, lock
from netlab.lab.state import LabRecord, write_supervisor_pid
from netlab.topology import load_topology


@pytest.fixture
def state_root(tmp_path, monkeypatch):
    monkeypatch.setattr(names, "STATE_ROOT", str(tmp_path))
    return tmp_path


# -- names ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("lab", "member", "other_lab", "other_member"), [
    ("relxn", "x-net", "relxn-x", "net"),  # a pod named x-net vs the underlay of lab relxn-x
    ("relp", "a-server", "relp-a", "server"),  # a pod a-server vs lab relp-a's pod server
], ids=["pod-vs-underlay", "pod-vs-longer-lab"])
def test_netns_names_never_collide_across_labs(lab, member, other_lab, other_member) -> None:
    mine, theirs = names.netns(lab, member), names.netns(other_lab, other_member)
    assert mine != theirs
    assert names.split_netns(mine) == (lab, member)
    assert names.split_netns(theirs) == (other_lab, other_member)
    assert not theirs.startswith(names.lab_prefix(lab))
    assert not mine.startswith(names.lab_prefix(other_lab))


def test_probe_netns_is_no_members_name() -> None:
    probe = names.probe_netns(1234)
    assert probe.startswith(names.MARKER)
    assert names.split_netns(probe) is None
    assert names.probe_pid(probe) == 1234
    assert probe != names.netns("x", "probe")


# -- the per-lab lock ----------------------------------------------------------------------

HOLD = textwrap.dedent("""
    import sys, time
    from netlab import names
    names.STATE_ROOT = sys.argv[1]
    from netlab.lab.lock import lab_lock
    with lab_lock("rl-l", sys.argv[2]):
        print("held", flush=True)
        time.sleep(float(sys.argv[3]))
""")


def test_second_holder_is_refused_with_the_first_ones_pid(state_root) -> None:
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(state_root), "up", "60"], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        with pytest.raises(lock.LabBusy, match=rf"pid {p.pid} is running `netlab up`"):
            with lock.lab_lock("rl-l", "down"):
                pass
        assert lock.holder("rl-l") == lock.Holder(p.pid, "up")
        with lock.try_lab_lock("rl-l", "gc") as got:
            assert got is False
    finally:
        p.kill()
        p.wait()
    # a holder killed with SIGKILL leaves a file nobody holds: the next taker gets it and removes it
    assert os.path.exists(names.lock_path("rl-l"))
    with lock.lab_lock("rl-l", "down"):
        pass
    assert not os.path.exists(names.lock_path("rl-l"))


def test_down_waits_for_a_gc_passing_by(state_root) -> None:
    """gc holds each lab's lock for a moment to look at it: a down meanwhile waits, not fails."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(state_root), "gc", "1.0"], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        with lock.lab_lock("rl-l", "down"):
            pass
        assert p.wait(5) == 0
    finally:
        p.kill()
        p.wait()


def test_lock_file_exists_only_while_held(state_root) -> None:
    with lock.lab_lock("rl-m", "up"):
        assert os.path.exists(names.lock_path("rl-m"))
    assert not os.path.exists(names.lock_path("rl-m"))
    assert lock.stale_locks() == []


# -- gc's verdict and the creator -----------------------------------------------------------

def _record(lab: str, **kw) -> LabRecord:
    rec = LabRecord(lab=lab, topology="t", mode="none", istio_version=None, encap=None, plan_sha="x", **kw)
    rec.save()
    return rec


def test_gc_keeps_a_lab_being_created_and_removes_one_whose_creator_died(state_root) -> None:
    _record("rl-c1", creator_pid=os.getpid(), creator_start=None)
    assert cleanup.gc_reason("rl-c1") is None
    dead = subprocess.Popen(["true"])
    dead.wait()
    _record("rl-c2", creator_pid=dead.pid, creator_start=None)
    assert "half-built" in (cleanup.gc_reason("rl-c2") or "")


def test_a_recycled_creator_pid_is_not_the_creator(state_root) -> None:
    # our own pid, with another start time: the `up` that wrote the record is gone
    _record("rl-c3", creator_pid=os.getpid(), creator_start=1)
    assert cleanup.gc_reason("rl-c3") is not None


FAKE_SUPERVISOR = "import time; time.sleep(60)"


def _fake_supervisor(lab: str) -> subprocess.Popen:
    # argv ends like a real supervisor's: `... netlab.runtime.supervisor <lab>`
    return subprocess.Popen([sys.executable, "-c", FAKE_SUPERVISOR, inventory.SUPERVISOR_MODULE, lab])


def test_stale_supervisor_pid_naming_another_labs_supervisor_is_not_ours(state_root) -> None:
    other = _fake_supervisor("rl-other")
    try:
        _record("rl-mine", state="up")
        write_supervisor_pid("rl-mine", other.pid)  # stale: that pid is now rl-other's supervisor
        time.sleep(0.2)
        assert inventory.supervisor_of("rl-mine") is None
        os.makedirs(names.state_dir("rl-other"), exist_ok=True)
        write_supervisor_pid("rl-other", other.pid)
        assert inventory.supervisor_of("rl-other") == other.pid
    finally:
        other.kill()
        other.wait()


# -- status ---------------------------------------------------------------------------------

def test_one_corrupt_record_does_not_break_status_of_the_others(state_root) -> None:
    from netlab.observe import status

    _record("rl-ok", state="up")
    os.makedirs(names.state_dir("rl-bad"))
    with open(names.record_path(names.state_dir("rl-bad")), "w") as f:
        f.write("{not json")
    by_lab = {s.lab: s for s in status.all_status()}
    assert by_lab["rl-bad"].state == "unreadable"
    assert any("netlab down rl-bad" in p for p in by_lab["rl-bad"].problems)
    assert by_lab["rl-ok"].state == "broken"  # no supervisor: said so, not an exception
    json.dumps([s.as_json() for s in by_lab.values()])


def test_a_stopped_supervisor_is_reported_stopped_not_gone(state_root) -> None:
    from netlab.observe import status

    sup = _fake_supervisor("rl-stop")
    try:
        _record("rl-stop", state="up")
        write_supervisor_pid("rl-stop", sup.pid)
        time.sleep(0.2)
        os.kill(sup.pid, signal.SIGSTOP)
        time.sleep(0.1)
        st = status.lab_status("rl-stop")
        assert st.supervisor == f"pid {sup.pid} (stopped)"
        assert "SIGSTOP" in st.problems[0]
        assert cleanup.gc_reason("rl-stop") is None  # alive: gc leaves it
    finally:
        sup.kill()
        sup.wait()


def test_status_json_keeps_its_keys(state_root) -> None:
    from netlab.observe import status

    _record("rl-j", state="up")
    d = status.lab_status("rl-j").as_json()
    assert {"lab", "netns", "state", "mode", "istio_version", "encap", "topology", "pods", "processes",
            "supervisor", "ready", "enrolled"} <= set(d)


# -- limits and topology validation ----------------------------------------------------------

def test_up_refuses_early_a_lab_the_fd_limit_cannot_hold(tmp_path) -> None:
    topo = tmp_path / "big.yaml"
    topo.write_text("name: rl-big\nnodes: [{name: n1}, {name: n2}]\n"
                    "pods:\n  - {name: w, node: n1, app: sleep, replicas: 240}\n  - {name: v, node: n2, app: sleep, replicas: 240}\n")
    code = textwrap.dedent(f"""
        import resource
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
        from netlab.lab.lifecycle import check_fd_budget, make_plan
        plan = make_plan({str(topo)!r}, name=None, mode="none", istio_version=None, encap="geneve-user", probe=False)
        try:
            check_fd_budget(plan)
        except Exception as e:
            print(type(e).__name__, e)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("PreflightError")
    assert "limit is 1024" in out and "at most about 237 pods fit, this topology has 480" in out


@pytest.mark.parametrize(("nodes", "err"), [
    ("[{name: a, underlay_ip: 172.18.0.2}, {name: b, underlay_ip: 172.18.0.2}]", "already node 'a'"),
    ("[{name: a, underlay_ip: 172.18.0.1}]", "bridge's own address"),
    ("[{name: a, underlay_ip: 172.18.255.255}]", "broadcast"),
    ("[{name: a, underlay_ip: 172.18.0.0}]", "network address"),
], ids=["duplicate", "bridge", "broadcast", "network"])
def test_duplicate_or_reserved_underlay_ips_are_refused(tmp_path, nodes, err) -> None:
    p = tmp_path / "t.yaml"
    p.write_text(f"name: rl-u\nnodes: {nodes}\n")
    with pytest.raises(TopologyError, match=err):
        load_topology(str(p))


def test_cli_signal_handlers_do_not_run_in_forked_helpers() -> None:
    """pyroute2's helper children inherit the handlers and get SIGTERM when done: they must die
    of it, not unwind a copy of the CLI (which printed "interrupted" and removed the probe netns)."""
    code = textwrap.dedent("""
        import os, signal, sys, time
        from netlab.lab import interrupt
        interrupt.install_cli_defaults()
        pid = os.fork()
        if pid == 0:
            try:
                time.sleep(30)
            finally:
                sys.stdout.write("child unwound\\n")  # must not happen
                sys.stdout.flush()
            os._exit(0)
        time.sleep(0.3)
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
        print("signalled" if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM else status)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30).stdout
    assert out.strip() == "signalled", out
