"""The in-pod CNI agent as a real process against real pod netns, and ZDS from a foreign client.

The ZDS client here is built from protobuf classes generated at test time from the
``.proto`` schema (not netlab's checked-in ``zds_pb2``): what it receives proves wire compatibility, and
the netns fd it gets over SCM_RIGHTS must be the pod's netns (same inode).
"""

from __future__ import annotations

import array
import contextlib
import importlib.util
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from netlab import names
from netlab.apply import iptables
from netlab.apply.kernel import apply_plan
from netlab.lab import lifecycle as lab_mod
from netlab.linux.nsenter import netns_path
from netlab.plan import build_plan, inpod
from netlab.runtime.cniagent import agent as cniagent
from netlab.topology import Topo
from tests.kernel.helpers import REPO, ip, netns_inode

pytestmark = pytest.mark.root
# The schema as Istio 1.22 defines it (same message names, field numbers and types); the
# client's classes are generated from it now, independently of netlab's checked-in zds_pb2.
REFERENCE_PROTO = REPO / "netlab" / "protocols" / "zds.proto"


@pytest.fixture(scope="module")
def ref_pb(tmp_path_factory):
    """``zds_pb2`` generated now, with grpc_tools' protoc, from the schema."""
    d = tmp_path_factory.mktemp("refproto")
    shutil.copy(REFERENCE_PROTO, d / "zds.proto")
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{d}", f"--python_out={d}", str(d / "zds.proto")],
                   check=True, capture_output=True)
    spec = importlib.util.spec_from_file_location("reference_zds_pb2", d / "zds_pb2.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class RefClient:
    """A minimal ztunnel: hello V1, then ack every request; records (kind, uid, netns inode)."""

    def __init__(self, pb, path: str) -> None:
        self.pb = pb
        self.events: list[tuple[str, str, int | None]] = []
        self.cond = threading.Condition()
        self.closed = False
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.connect(path)
        self.sock.send(pb.ZdsHello(version=pb.V1).SerializeToString())
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        pb = self.pb
        try:
            while True:
                data, anc, flags, _ = self.sock.recvmsg(1024, socket.CMSG_SPACE(4))
                fds = []
                for level, kind, blob in anc:
                    if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                        fds += list(array.array("i", blob[: len(blob) - len(blob) % 4]))
                if not data and not fds:
                    break
                assert not flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC)
                req = pb.WorkloadRequest()
                req.ParseFromString(data)
                kind = req.WhichOneof("payload")
                ino = None
                for fd in fds:  # close at once: a test process holding a lab netns fd would be reaped
                    ino = os.fstat(fd).st_ino
                    os.close(fd)
                uid = getattr(req, kind).uid if kind in ("add", "keep", "del") else ""
                if kind == "add":
                    assert len(fds) == 1, fds
                    assert req.add.workload_info.name, "1.22 sends WorkloadInfo"
                    assert req.add.workload_info.trust_domain == "cluster.local"
                with self.cond:
                    self.events.append((kind, uid, ino))
                    self.cond.notify_all()
                self.sock.send(pb.WorkloadResponse(ack=pb.Ack(error="")).SerializeToString())
        except OSError:
            pass
        finally:
            with self.cond:
                self.closed = True
                self.cond.notify_all()

    def wait_closed(self, timeout: float = 15.0) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: self.closed, timeout), "ZDS connection still open"

    def wait(self, pred, timeout: float = 15.0) -> list:
        with self.cond:
            assert self.cond.wait_for(lambda: pred(self.events), timeout), self.events
            return list(self.events)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(5)


def snapshot_done(events) -> bool:
    return any(k == "snapshot_sent" for k, _, _ in events)


def ipset_members(node_ns: str, name: str) -> list[str]:
    p = subprocess.run(["ip", "netns", "exec", node_ns, "ipset", "list", name], capture_output=True, text=True)
    if p.returncode != 0:
        return []
    lines = p.stdout.split("Members:\n", 1)[1].splitlines()
    return sorted(ln.split()[0] for ln in lines if ln.strip())


def pod_state(ns: str) -> tuple[dict, list[str], str]:
    saved = iptables.save(ns)
    rules = [ln for ln in ip(ns, "rule", "show").splitlines() if ln.startswith("32764:")]
    return inpod.saved_chains(saved, (inpod.PRERT, inpod.OUTPUT)), rules, ip(ns, "route", "show", "table", "100")


class AgentProc:
    def __init__(self, node_ns: str, lab: str, node: str, cfg: str, log: Path) -> None:
        r, w = os.pipe()
        env = dict(os.environ, NETLAB_READY_FD=str(w))
        self.logf = open(log, "a")  # noqa: SIM115
        self.p = subprocess.Popen(
            ["nsenter", f"--net={netns_path(node_ns)}", sys.executable, "-m", "netlab.runtime.cniagent",
             "--lab", lab, "--node", node, "--config", cfg],
            pass_fds=(w,), env=env, stdout=self.logf, stderr=subprocess.STDOUT)
        os.close(w)
        t0 = time.monotonic()
        ready, _, _ = select.select([r], [], [], 60)
        msg = os.read(r, 64) if ready else b""
        os.close(r)
        self.ready_s = time.monotonic() - t0
        assert msg == b"ready\n", f"agent not ready: {log.read_text()[-3000:]}"

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.p.poll() is None:
            os.kill(self.p.pid, sig)
        try:
            code = self.p.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(self.p.pid, signal.SIGKILL)
            code = self.p.wait(5)
        self.logf.close()
        return code


@contextlib.contextmanager
def inpod_lab(lab: str, topo, state: Path):
    plan = build_plan(topo, lab=lab, mode="inpod", istio_version="1.22")
    agents: list[AgentProc] = []
    try:
        apply_plan(plan)
        cfg = cniagent.write_config(plan, topo.nodes[0].name, str(state))
        yield plan, cfg, agents
    finally:
        for a in agents:
            with contextlib.suppress(Exception):
                a.stop(signal.SIGKILL)
        with contextlib.suppress(Exception):
            lab_mod.down(lab)


def test_agent_enrolls_serves_zds_and_restarts_idempotently(tmp_path: Path, ref_pb) -> None:
    lab = "zdsk1"
    topo = (Topo(lab).node("n1").namespace("mesh", ambient=True).namespace("plain")
            .pod("a", node="n1", namespace="mesh", app="sleep").pod("b", node="n1", namespace="mesh", app="sleep")
            .pod("c", node="n1", namespace="plain", app="sleep").build())
    with inpod_lab(lab, topo, tmp_path) as (plan, cfg_path, agents):
        cfg = json.loads(Path(cfg_path).read_text())
        assert cfg["zds_socket"] == str(tmp_path / "sockets" / "ztunnel-n1.sock")
        assert cfg["plugin_socket"] == str(tmp_path / "sockets" / "cni-n1.sock")
        pods = {p["name"]: p for p in cfg["pods"]}
        assert {n: p["ambient"] for n, p in pods.items()} == {"a": True, "b": True, "c": False}
        node_ns, log = names.netns(lab, "n1"), tmp_path / "agent.log"
        want = inpod.wanted_chains("1.22")
        snat = ("-A ISTIO_POSTRT -p tcp -m owner --socket-exists -m set --match-set istio-inpod-probes dst "
                "-j SNAT --to-source 169.254.7.127")
        route100 = "local default dev lo scope host \n"

        # before the agent: no in-pod rules anywhere (up does not make them)
        assert pod_state(names.netns(lab, "a")) == ({}, [], "")
        agents.append(AgentProc(node_ns, lab, "n1", cfg_path, log))

        # host rules (probe SNAT) and the startup pods' in-pod rules
        node_save = iptables.save(node_ns)
        assert snat in node_save.splitlines() and "-A POSTROUTING -j ISTIO_POSTRT" in node_save.splitlines()
        assert ipset_members(node_ns, "istio-inpod-probes") == sorted([pods["a"]["ip"], pods["b"]["ip"]])
        for name in ("a", "b"):
            chains, rules, r100 = pod_state(names.netns(lab, name))
            assert chains == want
            assert rules == ["32764:\tfrom all fwmark 0x111/0xfff lookup 100"]
            assert r100 == route100
        assert pod_state(names.netns(lab, "c")) == ({}, [], "")
        tproxy = "\n".join(iptables.save(names.netns(lab, "a")).splitlines())
        assert ("-A ISTIO_PRERT ! -d 127.0.0.1/32 -p tcp -m mark ! --mark 0x539/0xfff -j TPROXY --on-port 15006 "
                "--on-ip 0.0.0.0 --tproxy-mark 0x111/0xfff") in tproxy

        # ZDS: snapshot to a foreign client, with the pods' real netns fds
        client = RefClient(ref_pb, cfg["zds_socket"])
        ev = client.wait(snapshot_done)
        assert [(k, u) for k, u, _ in ev] == [("add", pods["a"]["uid"]), ("add", pods["b"]["uid"]),
                                              ("snapshot_sent", "")]
        assert ev[0][2] == netns_inode(names.netns(lab, "a")) and ev[1][2] == netns_inode(names.netns(lab, "b"))

        # run-time enrollment of c (AddPodToMesh), then unenrollment
        t0 = time.monotonic()
        r = cniagent.plugin_event(cfg["plugin_socket"], "add", "c")
        enroll_s = time.monotonic() - t0
        assert r["ok"] and r["enrolled"] and r["zds"] == "acked", r
        ev = client.wait(lambda e: len(e) == 4)
        assert ev[3] == ("add", pods["c"]["uid"], netns_inode(names.netns(lab, "c")))
        chains, rules, r100 = pod_state(names.netns(lab, "c"))
        assert chains == want and len(rules) == 1 and r100 == route100
        assert pods["c"]["ip"] in ipset_members(node_ns, "istio-inpod-probes")
        text = log.read_text()
        assert f"Adding pod 'c/plain' ({pods['c']['uid']}) to ipset" in text
        assert f"pod 'c/plain' ({pods['c']['uid']}) is enrolled in ambient" in text
        r = cniagent.plugin_event(cfg["plugin_socket"], "del", "c")
        assert r["ok"] and not r["enrolled"], r
        ev = client.wait(lambda e: len(e) == 5)
        assert ev[4] == ("del", pods["c"]["uid"], None)
        assert pod_state(names.netns(lab, "c")) == ({}, [], "")
        assert pods["c"]["ip"] not in ipset_members(node_ns, "istio-inpod-probes")
        assert cniagent.plugin_event(cfg["plugin_socket"], "add", "nope")["ok"] is False
        print(f"\nrun-time enroll latency: {enroll_s * 1000:.1f} ms (agent reports {r['seconds'] * 1000:.1f} ms del)")

        # SIGTERM: host rules and probe set go, pod rules stay; ztunnel sees the connection end
        assert agents[0].stop() == 0
        client.wait_closed()
        client.close()
        assert "ISTIO_POSTRT" not in iptables.save(node_ns)
        assert ipset_members(node_ns, "istio-inpod-probes") == []
        assert pod_state(names.netns(lab, "a"))[0] == want

        # restart: snapshot again, nothing duplicated; then a kill -9 and another restart
        for how in ("restart", "after-kill"):
            agents.append(AgentProc(node_ns, lab, "n1", cfg_path, log))
            client = RefClient(ref_pb, cfg["zds_socket"])
            ev = client.wait(snapshot_done)
            assert [k for k, _, _ in ev] == ["add", "add", "snapshot_sent"], how
            assert {i for _, _, i in ev[:2]} == {netns_inode(names.netns(lab, "a")), netns_inode(names.netns(lab, "b"))}
            for name in ("a", "b"):
                chains, rules, r100 = pod_state(names.netns(lab, name))
                assert chains == want and len(rules) == 1 and r100 == route100, (how, name)
            assert pod_state(names.netns(lab, "c")) == ({}, [], ""), how  # unenrolled at run time stays so
            assert iptables.save(node_ns).splitlines().count(snat) == 1, how
            assert ipset_members(node_ns, "istio-inpod-probes") == sorted([pods["a"]["ip"], pods["b"]["ip"]])
            if how == "restart":
                agents[-1].stop(signal.SIGKILL)  # crash: host rules stay behind for the next agent
            else:
                assert agents[-1].stop() == 0
            client.wait_closed()
            client.close()


def test_fifty_pods_enrolled_at_once(tmp_path: Path, ref_pb) -> None:
    lab = "zdsk50"
    t = Topo(lab).node("n1").namespace("plain")
    for i in range(50):
        t = t.pod(f"p{i:02d}", node="n1", namespace="plain", app="sleep")
    topo = t.build()
    with inpod_lab(lab, topo, tmp_path) as (plan, cfg_path, agents):
        cfg = json.loads(Path(cfg_path).read_text())
        node_ns = names.netns(lab, "n1")
        agents.append(AgentProc(node_ns, lab, "n1", cfg_path, tmp_path / "agent.log"))
        client = RefClient(ref_pb, cfg["zds_socket"])
        client.wait(snapshot_done)
        names_ = [p["name"] for p in cfg["pods"]]
        t0 = time.monotonic()
        with ThreadPoolExecutor(max_workers=50) as ex:
            replies = list(ex.map(lambda n: cniagent.plugin_event(cfg["plugin_socket"], "add", n, timeout=60), names_))
        took = time.monotonic() - t0
        assert all(r["ok"] and r["zds"] == "acked" for r in replies), [r for r in replies if not r.get("ok")]
        ev = client.wait(lambda e: sum(k == "add" for k, _, _ in e) == 50, timeout=30)
        adds = {u: i for k, u, i in ev if k == "add"}
        assert adds == {p["uid"]: netns_inode(p["netns"]) for p in cfg["pods"]}
        assert len(ipset_members(node_ns, "istio-inpod-probes")) == 50
        want = inpod.wanted_chains("1.22")
        for p in cfg["pods"]:
            chains, rules, r100 = pod_state(p["netns"])
            assert chains == want and len(rules) == 1 and r100 == "local default dev lo scope host \n", p["name"]
        print(f"\n50 pods enrolled at once in {took:.2f} s "
              f"(median per pod {sorted(r['seconds'] for r in replies)[25] * 1000:.0f} ms)")
        client.close()
