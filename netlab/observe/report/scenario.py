"""The scenario run in every design: N requests, one bulk transfer, both from a client pod.

Requests are the seed's ``curl`` from inside the client pod's netns (``ip netns exec``, so the
lab's hosts file resolves service names), one curl process for all N, each request on a new
connection (``Connection: close``) like N separate curls, each one timed by curl itself
(``%{time_total}``). The bulk transfer is Debian's iperf3: a one-shot server started in the
server pod's netns, the client in the client pod's, so the bytes take the same mesh path.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import signal
import statistics
import subprocess
import time
from urllib.parse import urlsplit

from netlab import names
from netlab.errors import LabError, ProcessError
from netlab.lab.state import LabRecord
from netlab.observe.report.schema import Bulk, Latency

log = logging.getLogger(__name__)
IPERF_PORT = 5201


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50), percentile([1.0, 2.0, 3.0, 4.0], 99)
    (2.0, 4.0)
    """
    s = sorted(values)
    k = max(0, min(len(s) - 1, -(-len(s) * q // 100) - 1))
    return s[int(k)]


def curl_argv(url: str, n: int) -> list[str]:
    """One curl for ``n`` requests, each on its own connection, each timed on its own line."""
    argv = ["curl", "-s", "--max-time", "30", "-H", "Connection: close",
            "-w", "%{http_code} %{time_total} %{size_download}\\n"]
    for _ in range(n):
        argv += ["-o", "/dev/null", url]
    return argv


def parse_curl(text: str, url: str) -> Latency:
    """Latency figures from :func:`curl_argv`'s output lines (``code seconds bytes``)."""
    rows = [ln.split() for ln in text.splitlines() if len(ln.split()) == 3]
    times = [float(t) * 1000 for code, t, _ in rows if code == "200"]
    if not times:
        raise ProcessError(f"no request to {url} succeeded ({len(rows)} tried)")
    return Latency(url=url, requests=len(rows), ok=len(times), p50_ms=round(percentile(times, 50), 3),
                   p99_ms=round(percentile(times, 99), 3), mean_ms=round(statistics.fmean(times), 3),
                   requests_per_s=round(len(times) / (sum(times) / 1000), 2), response_bytes=int(rows[-1][2]))


def in_netns(ns: str, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout)


def wait_path(ns: str, url: str, timeout: float = 15.0) -> float:
    """Until one request succeeds (inpod: ``up`` can return before ztunnel has the client pod's
    listeners open); returns the seconds it took."""
    t0 = time.monotonic()
    while True:
        p = in_netns(ns, ["curl", "-s", "-o", "/dev/null", "--max-time", "3", "-w", "%{http_code}", url], 10)
        if p.stdout.strip() == "200":
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise ProcessError(f"{url} does not answer from {ns} (curl exit {p.returncode}, http {p.stdout!r})")
        time.sleep(0.1)


def wait_mesh(rec: LabRecord, timeout: float = 15.0) -> None:
    """In-pod, until ztunnel listens inside every enrolled pod's netns (15001 and 15008).

    ``up`` returns once the CNI agents and ztunnels run, and the pods' listeners follow over
    ZDS. Waiting with a request would open the HBONE connections before the capture, which
    then would miss their handshakes (and, node-routing aside, the first packets' Geneve frames).
    """
    if rec.mode != "inpod":
        return
    pending = {p: rec.members[p] for p, v in rec.pods.items() if v["ambient"]}
    deadline = time.monotonic() + timeout
    while pending:
        for pod, ns in list(pending.items()):
            ports = in_netns(ns, ["ss", "-Hltn"], 5).stdout
            if ":15001 " in ports and ":15008 " in ports:
                del pending[pod]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise ProcessError(f"ztunnel does not listen in {', '.join(sorted(pending))} after {timeout:.0f}s")
        time.sleep(0.05)


def latency(ns: str, url: str, n: int) -> Latency:
    p = in_netns(ns, curl_argv(url, n), timeout=30 + 10 * n)
    return parse_curl(p.stdout, url)


def resolve(lab: str, client_ns: str, host: str) -> str:
    """The address ``host`` has inside the lab (the client pod's hosts file, else a literal IP)."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        with open(os.path.join(names.ETC_NETNS, client_ns, "hosts")) as f:
            for ln in f:
                parts = ln.split()
                if len(parts) >= 2 and host in parts[1:]:
                    return parts[0]
    except OSError:
        pass
    raise LabError(f"lab {lab}: {host!r} does not resolve in the client pod")


def server_pod(lab: str, client_ns: str, url: str, pods: dict[str, dict], services: dict[str, list[str]]) -> str:
    """The pod that answers ``url``: the pod with that IP, or the first pod behind that service."""
    host = urlsplit(url).hostname or ""
    if host in pods:
        return host
    name = host.split(".")[0]
    if name in services and services[name]:
        return services[name][0]
    ip = resolve(lab, client_ns, host)
    for pod, info in sorted(pods.items()):
        if info["ip"] == ip:
            return pod
    raise LabError(f"lab {lab}: no pod answers {url} (needed for the bulk transfer)")


def bulk(client_ns: str, server_ns: str, server: str, server_ip: str, mib: int) -> Bulk:
    """One iperf3 run of ``mib`` MiB, client pod -> server pod; the server is stopped by pid."""
    srv = subprocess.Popen(["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1", "-p", str(IPERF_PORT)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # until the server listens
            ss = in_netns(server_ns, ["ss", "-Hltn", f"sport = :{IPERF_PORT}"], 5)
            if ss.stdout.strip():
                break
            time.sleep(0.02)
        p = in_netns(client_ns, ["iperf3", "-c", server_ip, "-p", str(IPERF_PORT), "-n", f"{mib}M", "-J"],
                     timeout=60 + mib)
        try:
            data = json.loads(p.stdout)
        except ValueError:
            raise ProcessError(f"iperf3 gave no result ({p.stderr.strip()[:200]})") from None
        if "error" in data:
            raise ProcessError(f"iperf3: {data['error']}")
        recv = data["end"]["sum_received"]
        sent = data["end"]["sum_sent"]
        # The rate is the receiver's (bytes it counted / its seconds): through a proxy the
        # control connection's end-of-test can overtake data still in ztunnel's buffers, so the
        # receiver's byte count may stop short of what was sent; its rate is still exact.
        return Bulk(server=server, bytes=int(sent["bytes"]), seconds=round(float(recv["seconds"]), 4),
                    mbit_s=round(float(recv["bits_per_second"]) / 1e6, 1), retransmits=sent.get("retransmits"))
    finally:
        if srv.poll() is None:
            os.killpg(srv.pid, signal.SIGTERM)
        try:
            srv.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(srv.pid, signal.SIGKILL)
            srv.wait()
