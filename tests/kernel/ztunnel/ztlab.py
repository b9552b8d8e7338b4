"""A tiny two-node node-routing lab for the ztunnel kernel tests (all netns named ``nl-zt<T>.<role>``, from :func:`netlab.names.netns`).

::

    nl-zt<T>.c (client pod "sleep" 10.244.1.10)          nl-zt<T>.s (server pod "echo" 10.244.2.10)
          | eth0 <-> vc                                         | eth0 <-> vs
    nl-zt<T>.a (node A + its ztunnel) eth0 172.18.0.2 <-> eth0 172.18.0.3 nl-zt<T>.b (node B + ztunnel)
          | vl <-> eth0
    nl-zt<T>.l (pod "local-srv" 10.244.1.20, on node A)

Node and ztunnel pod are collapsed into one netns per node, so the redirection is Istio's
node-routing rule set minus the Geneve hop: TPROXY (mark 0x400/0xfff, ip rule 20000 -> table
100 ``local 0.0.0.0/0 dev lo``) from the pods to 15001, from the underlay to 15008/15006, and
mark 0x4d3/0xfff (rule 20003) for replies to ztunnel's spoofed-source connections.

The lab is a :class:`netlab.plan.objects.Plan` built here and applied with netlab's own
:func:`netlab.apply.kernel.apply_plan` (netlink for links, addresses, routes and rules,
``iptables-restore`` for the rules, /proc for sysctls), so it is made exactly as netlab makes
its labs; ``lab_plan().render()`` prints it as the equivalent ``ip`` commands.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from netlab import names
from netlab.apply import netns as netns_mod
from netlab.apply.kernel import apply_plan
from netlab.linux import nsenter
from netlab.plan.objects import (
    Addr,
    Iptables,
    IptablesTable,
    Link,
    NetnsPlan,
    Plan,
    Route,
    Rule,
    Sysctl,
)

REPO = Path(__file__).resolve().parents[3]
TAG = f"{os.getpid() % 100000}"

CLIENT_IP, LOCAL_IP, SERVER_IP = "10.244.1.10", "10.244.1.20", "10.244.2.10"
A_IP, B_IP, VIP = "172.18.0.2", "172.18.0.3", "10.96.0.10"
DIRECT_PORT = 19002  # not captured anywhere: the no-mesh baseline
TPROXY = "-j TPROXY --on-ip 127.0.0.1 --tproxy-mark 0x400/0xfff --on-port"
# replies to ztunnel's spoofed sockets only (Istio marks all of them; matching the socket lets
# the bench port DIRECT_PORT bypass the mesh for the "direct" baseline)
REPLY = "-m socket --transparent -j MARK --set-xmark 0x4d3/0xfff"


def ns_name(role: str) -> str:
    return names.netns(f"zt{TAG}", role)


def _sysctls(ns: str, *, node: bool) -> tuple[Sysctl, ...]:
    devs = ("all", "default", "eth0") if node else ("all", "default")
    return (*(Sysctl(ns, f"net.ipv4.conf.{d}.rp_filter", "0") for d in devs),
            Sysctl(ns, "net.ipv4.ip_forward", "1" if node else "0"))


def _pod(role: str, ip: str, gw: str) -> NetnsPlan:
    ns = ns_name(role)
    return NetnsPlan(ns, "pod", role, addrs=(Addr(ns, "eth0", f"{ip}/32"),),
                     routes=(Route(ns, gw, dev="eth0", scope="link"), Route(ns, "default", via=gw, dev="eth0")),
                     sysctls=_sysctls(ns, node=False))


def _node(role: str, *, links: tuple[Link, ...], addrs: tuple[Addr, ...], routes: tuple[Route, ...],
          prerouting: tuple[str, ...]) -> NetnsPlan:
    ns = ns_name(role)
    return NetnsPlan(
        ns, "node", role, links=links, addrs=addrs,
        routes=(*routes, Route(ns, "0.0.0.0/0", dev="lo", table=100, type="local")),
        rules=(Rule(ns, 20000, fwmark=0x400, mask=0xfff, table=100), Rule(ns, 20003, fwmark=0x4d3, mask=0xfff, table=100)),
        sysctls=_sysctls(ns, node=True),
        iptables=Iptables(ns, (IptablesTable("mangle", (), tuple(f"-A PREROUTING {r}" for r in prerouting),
                                             builtin=("PREROUTING",)),)))


def lab_plan() -> Plan:
    c, a, b, s, lp = (ns_name(r) for r in "cabsl")
    node_a = _node(
        "a",
        links=(Link(a, "vc", "veth", peer="eth0", peer_ns=c), Link(a, "vl", "veth", peer="eth0", peer_ns=lp),
               Link(a, "eth0", "veth", peer="eth0", peer_ns=b)),
        addrs=(Addr(a, "vc", "10.244.1.1/32"), Addr(a, "vl", "10.244.1.1/32"), Addr(a, "eth0", f"{A_IP}/16")),
        routes=(Route(a, f"{CLIENT_IP}/32", dev="vc"), Route(a, f"{LOCAL_IP}/32", dev="vl"),
                Route(a, "10.244.2.0/24", via=B_IP)),
        prerouting=(f"-i vc -p tcp -m tcp --dport {DIRECT_PORT} -j RETURN",
                    f"-i vc -p tcp {TPROXY} 15001",
                    f"-i vl -p tcp {REPLY}",
                    f"! -d {A_IP}/32 -i eth0 -p tcp {REPLY}"))
    node_b = _node(
        "b",
        links=(Link(b, "vs", "veth", peer="eth0", peer_ns=s),),
        addrs=(Addr(b, "eth0", f"{B_IP}/16"), Addr(b, "vs", "10.244.2.1/32")),
        routes=(Route(b, f"{SERVER_IP}/32", dev="vs"), Route(b, "10.244.1.0/24", via=A_IP)),
        prerouting=(f"-i eth0 -p tcp -m tcp --dport 15008 {TPROXY} 15008",
                    f"-i eth0 -p tcp -m tcp --dport {DIRECT_PORT} -j RETURN",
                    f"-i eth0 -d 10.244.2.0/24 -p tcp {TPROXY} 15006",
                    f"-i vs -p tcp {REPLY}"))
    pods = (_pod("c", CLIENT_IP, "10.244.1.1"), _pod("l", LOCAL_IP, "10.244.1.1"), _pod("s", SERVER_IP, "10.244.2.1"))
    return Plan(f"zt{TAG}", "node-routing", None, None, tuple(sorted((node_a, node_b, *pods), key=lambda n: n.name)))


def build_lab() -> dict[str, str]:
    """Apply :func:`lab_plan`; ``{role: netns}``. Half-built labs are removed before raising."""
    names = {r: ns_name(r) for r in "cabsl"}
    try:
        apply_plan(lab_plan())
    except BaseException:
        destroy_lab(names)
        raise
    return names


def destroy_lab(names: dict[str, str]) -> None:
    for ns in names.values():
        netns_mod.remove(ns)


def registry_doc(*, echo_sa: str = "echo") -> dict:
    def wl(name: str, node: str, ip: str, sa: str, proto: str = "HBONE") -> dict:
        return {"uid": f"default/{name}", "name": name, "namespace": "default", "node": node, "ip": ip,
                "service_account": sa, "protocol": proto, "labels": {"app": name}, "workload_type": "deployment",
                "canonical_name": name, "canonical_revision": "v1"}

    return {
        "trust_domain": "cluster.local",
        "workloads": [wl("sleep", "node-a", CLIENT_IP, "sleep"), wl("local-srv", "node-a", LOCAL_IP, "localsrv"),
                      wl("echo", "node-b", SERVER_IP, echo_sa)],
        "services": [{"name": "echo", "namespace": "default", "hostname": "echo.default.svc.cluster.local",
                      "vip": VIP, "ports": [{"port": 80, "target_port": 9000}], "endpoints": ["default/echo"]}],
        "ztunnels": [{"node": "node-a", "ip": A_IP}, {"node": "node-b", "ip": B_IP}],
        "policies": [{"name": "deny-sleep-9001", "namespace": "default", "action": "DENY", "selector": {"app": "echo"},
                      "principals": ["spiffe://cluster.local/ns/default/sa/sleep"], "ports": [9001]}],
    }


class Ztunnel:
    """A ``python -m netlab.runtime.ztunnel`` subprocess inside a node netns."""

    def __init__(self, ns: str, node: str, workdir: Path, *, registry: dict, certs_dir: Path,
                 mode: str = "node-routing", extra: dict | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.ns = ns
        self.log_path = workdir / "access.log"
        self.log_path.write_text("")
        reg = workdir / "registry.json"
        reg.write_text(json.dumps(registry))
        cfg = workdir / "config.json"
        cfg.write_text(json.dumps({"node": node, "mode": mode, "registry": str(reg), "certs_dir": str(certs_dir),
                                   "access_log": str(self.log_path), "zds_socket": None,
                                   "trust_domain": "cluster.local", **(extra or {})}))
        self.stderr = open(workdir / "stderr.log", "w")  # noqa: SIM115
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "netlab.runtime.ztunnel",
                                      "--config", str(cfg)], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                     stderr=self.stderr)
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ztunnel exited: {(workdir / 'stderr.log').read_text()}")
            try:
                body = http_get(ns, "127.0.0.1", 15021, "/healthz/ready")
                if body.startswith("HTTP/1.1 200"):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("ztunnel not ready in 15 s")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def all_lines(self) -> list[str]:
        # Whole lines only: a read racing ztunnel's write can end half-way through a line.
        text = self.log_path.read_text()
        return [ln for ln in text[:text.rfind("\n") + 1].splitlines() if ln]

    def lines(self) -> list[str]:
        """The ``connection complete`` lines (one per connection)."""
        return [ln for ln in self.all_lines() if "\tconnection complete\t" in ln]

    def events(self, message: str) -> list[str]:
        """The ``connection opened`` / ``connection failed`` lines."""
        return [ln for ln in self.all_lines() if f"\t{message}\t" in ln]

    def wait_events(self, message: str, pred: Callable[[str], bool], n: int = 1, timeout: float = 10) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            got = [ln for ln in self.events(message) if pred(ln)]
            if len(got) >= n or time.monotonic() > deadline:
                return got
            time.sleep(0.05)

    def mark(self) -> int:
        """Remember how many lines there are; ``wait_lines(since=...)`` then sees only new ones."""
        return len(self.lines())

    def wait_lines(self, pred: Callable[[str], bool] = lambda ln: True, n: int = 1, timeout: float = 10,
                   since: int = 0) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            got = [ln for ln in self.lines()[since:] if pred(ln)]
            if len(got) >= n or time.monotonic() > deadline:
                return got
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()


def connect(ns: str, ip: str, port: int, timeout: float = 10) -> socket.socket:
    with nsenter.netns(ns):
        return socket.create_connection((ip, port), timeout=timeout)


def http_get(ns: str, ip: str, port: int, path: str) -> str:
    s = connect(ns, ip, port, timeout=2)
    try:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out.decode()
    finally:
        s.close()


# --- app servers (threads in this process, sockets created inside the pod netns) ------------------
class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(262144):
            self.request.sendall(data)
        self.request.shutdown(socket.SHUT_WR)


class _Counter(socketserver.BaseRequestHandler):
    """Reads to EOF, then answers how many bytes it got (tests half-close and bulk counts)."""

    def handle(self) -> None:
        n = 0
        buf = bytearray(1 << 20)
        while k := self.request.recv_into(buf):
            n += k
        self.request.sendall(f"got {n}\n".encode())
        self.request.shutdown(socket.SHUT_WR)


class _Http(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.request.recv(65536)
            if not chunk:
                return
            data += chunk
        body = b"hello from echo over HBONE\n"
        self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512


def serve(ns: str, ip: str, port: int, handler: type[socketserver.BaseRequestHandler]) -> _Server:
    with nsenter.netns(ns):
        srv = _Server((ip, port), handler)
    threading.Thread(target=srv.serve_forever, name=f"srv {port}", daemon=True).start()
    return srv


