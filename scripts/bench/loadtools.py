"""Load tools nobody here wrote, driven inside lab pods: iperf3, sockperf, wrk against nginx.

The data path bench (``datapath.py``) uses these for its headline figures, so the baseline is
the kernel's direct path as Debian's tools see it, not netlab's own Python client. Servers run
in the server pod's netns (``nsenter --net``, one process each, stopped by pid); clients run in
the client pod's netns the same way and their output is parsed here. Every tool is a Debian 12
package (``scripts/install.sh`` installs them): ``iperf3``, ``sockperf``, ``wrk``,
``nginx-light``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass

from netlab.linux import nsenter

# Service ports the bench topology exposes, one per tool; targets are the same numbers.
IPERF_PORT = 5201
SOCKPERF_PORT = 11111
HTTP_PORT = 8080
SMALL_FILE = "small"       # 612 bytes, the size of nginx's own index page
LARGE_FILE = "1mib"        # 1 MiB
TOOLS = {"iperf3": "iperf3", "sockperf": "sockperf", "wrk": "wrk", "nginx": "nginx-light"}


def missing_tools() -> list[str]:
    """Debian packages whose binary is not on PATH (nginx lives in /usr/sbin)."""
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return [pkg for exe, pkg in TOOLS.items() if shutil.which(exe, path=path) is None]


def _nsexec(ns: str, argv: list[str]) -> list[str]:
    return ["nsenter", f"--net={nsenter.netns_path(ns)}", "--", *argv]


@dataclass
class Servers:
    """iperf3, sockperf and nginx running in one pod's netns."""

    ns: str
    root: str
    procs: list[subprocess.Popen]

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(self.root, ignore_errors=True)


NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
user root;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  client_body_temp_path {root}/tmp;
  proxy_temp_path {root}/tmp;
  fastcgi_temp_path {root}/tmp;
  uwsgi_temp_path {root}/tmp;
  scgi_temp_path {root}/tmp;
  server {{
    listen {port} reuseport;
    root {root}/www;
  }}
}}
"""


def start_servers(ns: str) -> Servers:
    """Start the three servers in ``ns``; nginx serves ``/small`` (612 B) and ``/1mib``."""
    root = tempfile.mkdtemp(prefix="nl-bench-")
    os.chmod(root, 0o755)
    os.makedirs(f"{root}/www")
    os.makedirs(f"{root}/tmp")
    with open(f"{root}/www/{SMALL_FILE}", "wb") as f:
        f.write(b"s" * 612)
    with open(f"{root}/www/{LARGE_FILE}", "wb") as f:
        f.write(os.urandom(1 << 20))
    with open(f"{root}/nginx.conf", "w") as f:
        f.write(NGINX_CONF.format(root=root, port=HTTP_PORT))
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "stdin": subprocess.DEVNULL}
    procs = [subprocess.Popen(_nsexec(ns, ["iperf3", "-s", "-p", str(IPERF_PORT)]), **quiet),
             subprocess.Popen(_nsexec(ns, ["sockperf", "server", "--tcp", "-i", "0.0.0.0", "-p", str(SOCKPERF_PORT)]),
                              **quiet),
             subprocess.Popen(_nsexec(ns, ["nginx", "-c", f"{root}/nginx.conf", "-p", root]), **quiet)]
    return Servers(ns, root, procs)


def wait_listening(client_ns: str, host: str, ports: list[int], timeout: float = 15.0) -> None:
    """Until a TCP connect from the client pod to every port succeeds (through the mesh when
    meshed): the servers have just been started and, in-pod, the agent may still be enrolling."""
    deadline = time.monotonic() + timeout
    for port in ports:
        while True:
            with nsenter.netns(client_ns):
                s = socket.socket()
            s.settimeout(2)
            try:
                s.connect((host, port))
                # through a mesh the connect succeeds at the local ztunnel; a byte back or a
                # clean wait proves the far side accepted. iperf3/sockperf speak first only
                # after a request, so only check the connect plus that the peer did not reset.
                s.setblocking(False)
                time.sleep(0.05)
                try:
                    if s.recv(1) == b"":
                        raise ConnectionError("closed")
                except BlockingIOError:
                    pass
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{host}:{port} not reachable from {client_ns} after {timeout:.0f} s") from None
                time.sleep(0.1)
            finally:
                s.close()


def _run(client_ns: str, argv: list[str], timeout: float) -> str:
    p = subprocess.run(_nsexec(client_ns, argv), capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({p.returncode}): {(p.stderr or p.stdout).strip()[-400:]}")
    return p.stdout


def iperf3(client_ns: str, host: str, seconds: float, streams: int) -> dict:
    """Bulk client → server; MB/s the server received (iperf3's own JSON)."""
    for _attempt in range(3):
        out = json.loads(_run(client_ns, ["iperf3", "-c", host, "-p", str(IPERF_PORT), "-t", f"{seconds:g}",
                                          "-P", str(streams), "-J"], timeout=seconds + 30))
        if "sum_received" in out.get("end", {}):
            return {"streams": streams, "mb_s": round(out["end"]["sum_received"]["bits_per_second"] / 8e6, 1)}
        # e.g. "the server is busy running a test" while it still tears the previous one down
        time.sleep(1)
    raise RuntimeError(f"iperf3 gave no result: {out.get('error', out)}")


_PCT = re.compile(r"percentile\s+([\d.]+)\s*=\s*([\d.]+)")


def sockperf(client_ns: str, host: str, seconds: float, msg: int = 64) -> dict:
    """TCP ping-pong on one kept connection; round-trip percentiles in µs (``--full-rtt``)."""
    out = _run(client_ns, ["sockperf", "ping-pong", "--tcp", "-i", host, "-p", str(SOCKPERF_PORT), "-t",
                           f"{seconds:g}", "-m", str(msg), "--full-rtt"], timeout=seconds + 30)
    pct = {float(k): float(v) for k, v in _PCT.findall(out)}
    if 50.0 not in pct:
        raise RuntimeError(f"sockperf printed no percentiles: {out.strip()[-300:]}")
    return {"msg_bytes": msg, "p50_us": pct[50.0], "p99_us": pct[99.0], "p99_9_us": pct[99.9]}


WRK_LUA = """\
done = function(summary, latency, requests)
  local secs = summary.duration / 1e6
  io.write(string.format('WRKJSON {"requests": %d, "rps": %.1f, "bytes": %d, "errors": %d, '
    .. '"p50_us": %.1f, "p99_us": %.1f, "p99_9_us": %.1f}\\n',
    summary.requests, summary.requests / secs, summary.bytes,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status
      + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
"""


def wrk(client_ns: str, url: str, seconds: float, conns: int, close: bool = False) -> dict:
    """wrk with ``conns`` connections (one thread, one vCPU's worth); ``close`` sends
    ``Connection: close`` so every request opens a fresh connection (through the mesh, a new
    HBONE CONNECT stream each time)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_LUA)
        script = f.name
    try:
        argv = ["wrk", "-t", "1", "-c", str(conns), "-d", f"{seconds:g}s", "-s", script, "--timeout", "5s"]
        if close:
            argv += ["-H", "Connection: close"]
        out = _run(client_ns, argv + [url], timeout=seconds + 30)
    finally:
        os.unlink(script)
    line = next((ln for ln in out.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary: {out.strip()[-300:]}")
    res = json.loads(line[len("WRKJSON "):])
    res["conns"] = conns
    res["close"] = close
    return res
