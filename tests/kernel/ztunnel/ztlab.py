"""A tiny two-node node-routing lab for the ztunnel kernel tests (all netns named ``nl-zt<T>.<role>``, from :func:`netlab.names.netns`).

::

    nl-zt<T>.c (client pod "sleep" 10.244.1.10)          nl-zt<T>.s (server pod "echo" 10.244.2.10)
          | eth0 <-> vc                                         | eth0 <-> vs
    nl-zt<T>.a (node A + its ztunnel) eth0 172.18.0.2 <-> eth0 172.18.0.3 nl-zt<T>.b (node B + ztunnel)
          | vl <-> eth0
    nl-zt<T>.l (pod "local-srv" 10.244.1.20, on node A)

Node and ztunnel pod are collapsed into one netns per node; the redirection is the A4 rule set
minus the geneve hop: TPROXY (mark 0x400/0xfff, rule 20000) from the pods to 15001, from the
underlay to 15008/15006, and 0x4d3/0xfff (rule 20003) for replies to spoofed connections.
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
from netlab.linux import nsenter

REPO = Path(__file__).resolve().parents[3]
TAG = f"{os.getpid() % 100000}"

CLIENT_IP, LOCAL_IP, SERVER_IP = "10.244.1.10", "10.244.1.20", "10.244.2.10"
A_IP, B_IP, VIP = "172.18.0.2", "172.18.0.3", "10.96.0.10"
DIRECT_PORT = 19002  # not captured anywhere: the no-mesh baseline


def run(*args: str, ns: str | None = None, check: bool = True, input: str | None = None) -> str:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    p = subprocess.run(cmd, capture_output=True, text=True, input=input)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {p.stderr.strip()}")
    return p.stdout


def ns_name(role: str) -> str:
    return names.netns(f"zt{TAG}", role)


def _sysctls(ns: str, forward: bool) -> None:
    for key, val in (("net.ipv4.conf.all.rp_filter", "0"), ("net.ipv4.conf.default.rp_filter", "0"),
                     ("net.ipv4.ip_forward", "1" if forward else "0")):
        run("sysctl", "-qw", f"{key}={val}", ns=ns)


def _veth(ns1: str, if1: str, ns2: str, if2: str) -> None:
    """Create the pair inside ns1 with the peer put straight into ns2 (never the root netns)."""
    run("ip", "link", "add", if1, "type", "veth", "peer", "name", if2, "netns", ns2, ns=ns1)
    run("ip", "link", "set", if1, "up", ns=ns1)
    run("ip", "link", "set", if2, "up", ns=ns2)


def _pod(ns: str, ip: str, gw: str) -> None:
    run("ip", "addr", "add", f"{ip}/32", "dev", "eth0", ns=ns)
    run("ip", "route", "add", gw, "dev", "eth0", ns=ns)
    run("ip", "route", "add", "default", "via", gw, "dev", "eth0", ns=ns)


def _ztunnel_rules(ns: str, rules: str) -> None:
    run("iptables-restore", "--noflush", ns=ns, input=rules)
    run("ip", "rule", "add", "fwmark", "0x400/0xfff", "lookup", "100", "pref", "20000", ns=ns)
    run("ip", "rule", "add", "fwmark", "0x4d3/0xfff", "lookup", "100", "pref", "20003", ns=ns)
    run("ip", "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "100", ns=ns)


def build_lab() -> dict[str, str]:
    names = {r: ns_name(r) for r in "cabsl"}
    try:
        for ns in names.values():
            run("ip", "netns", "add", ns)
            run("ip", "link", "set", "lo", "up", ns=ns)
            _sysctls(ns, forward=ns in (names["a"], names["b"]))
        a, b = names["a"], names["b"]
        _veth(a, "vc", names["c"], "eth0")
        _veth(a, "vl", names["l"], "eth0")
        _veth(a, "eth0", b, "eth0")
        _veth(b, "vs", names["s"], "eth0")
        for ns in (a, b):
            for dev in ("all", "default", "eth0"):
                run("sysctl", "-qw", f"net.ipv4.conf.{dev}.rp_filter=0", ns=ns)
        run("ip", "addr", "add", "10.244.1.1/32", "dev", "vc", ns=a)
        run("ip", "addr", "add", "10.244.1.1/32", "dev", "vl", ns=a)
        run("ip", "route", "add", f"{CLIENT_IP}/32", "dev", "vc", ns=a)
        run("ip", "route", "add", f"{LOCAL_IP}/32", "dev", "vl", ns=a)
        run("ip", "addr", "add", f"{A_IP}/16", "dev", "eth0", ns=a)
        run("ip", "route", "add", "10.244.2.0/24", "via", B_IP, ns=a)
        run("ip", "addr", "add", f"{B_IP}/16", "dev", "eth0", ns=b)
        run("ip", "addr", "add", "10.244.2.1/32", "dev", "vs", ns=b)
        run("ip", "route", "add", f"{SERVER_IP}/32", "dev", "vs", ns=b)
        run("ip", "route", "add", "10.244.1.0/24", "via", A_IP, ns=b)
        _pod(names["c"], CLIENT_IP, "10.244.1.1")
        _pod(names["l"], LOCAL_IP, "10.244.1.1")
        _pod(names["s"], SERVER_IP, "10.244.2.1")
        tp = "-j TPROXY --on-ip 127.0.0.1 --tproxy-mark 0x400/0xfff --on-port"
        # replies to ztunnel's spoofed sockets only (A4 marks all of them; matching the socket
        # lets the bench port DIRECT_PORT bypass the mesh for the "direct" baseline)
        ret = "-m socket --transparent"
        _ztunnel_rules(a, "*mangle\n"
                       f"-A PREROUTING -i vc -p tcp -m tcp --dport {DIRECT_PORT} -j RETURN\n"
                       f"-A PREROUTING -i vc -p tcp {tp} 15001\n"
                       f"-A PREROUTING -i vl -p tcp {ret} -j MARK --set-xmark 0x4d3/0xfff\n"
                       f"-A PREROUTING ! -d {A_IP}/32 -i eth0 -p tcp {ret} -j MARK --set-xmark 0x4d3/0xfff\n"
                       "COMMIT\n")
        _ztunnel_rules(b, "*mangle\n"
                       f"-A PREROUTING -i eth0 -p tcp -m tcp --dport 15008 {tp} 15008\n"
                       f"-A PREROUTING -i eth0 -p tcp -m tcp --dport {DIRECT_PORT} -j RETURN\n"
                       f"-A PREROUTING -i eth0 -d 10.244.2.0/24 -p tcp {tp} 15006\n"
                       f"-A PREROUTING -i vs -p tcp {ret} -j MARK --set-xmark 0x4d3/0xfff\n"
                       "COMMIT\n")
    except BaseException:
        destroy_lab(names)
        raise
    return names


def destroy_lab(names: dict[str, str]) -> None:
    for ns in names.values():
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


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


