"""Meshed bookinfo in both designs: real ztunnels, HBONE over mTLS, access logs, captures."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from netlab import names
from netlab.runtime import supervisor
from tests.kernel.helpers import in_lab, lab_up, netlab

pytestmark = pytest.mark.root


@pytest.fixture(scope="module", params=["node-routing", "inpod"])
def lab(request):
    name = {"node-routing": "mnr", "inpod": "mip"}[request.param]
    with lab_up("bookinfo", name, "--mode", request.param) as lab:
        yield lab, request.param


def page(lab: str) -> str:
    return in_lab(lab, "sleep", "curl", "-s", "--max-time", "10", "http://productpage:9080/").stdout


def access(lab: str, node: str) -> str:
    path = f"/run/netlab/{lab}/logs/ztunnel.{node}.access.log"
    return open(path).read() if os.path.exists(path) else ""


def test_page_through_the_mesh_with_identities_in_the_logs(lab) -> None:
    name, mode = lab
    assert page(name).splitlines()[0] == "<!DOCTYPE html>"
    time.sleep(0.3)
    out = access(name, "ambient-worker")
    inn = access(name, "ambient-worker2")
    assert 'src.identity="spiffe://cluster.local/ns/default/sa/sleep"' in out and 'direction="outbound"' in out
    assert 'dst.workload="productpage-v1"' in inn and 'direction="inbound"' in inn
    assert 'dst.identity="spiffe://cluster.local/ns/default/sa/bookinfo-details"' in inn
    assert 'dst.identity="spiffe://cluster.local/ns/default/sa/bookinfo-reviews"' in inn
    line = next(ln for ln in inn.splitlines() if 'dst.workload="productpage-v1"' in ln)
    assert line.split("\t")[1:4] == ["info", "access", "connection complete"]


def test_underlay_carries_only_tls_to_15008(lab) -> None:
    name, mode = lab
    pcap = f"/tmp/nl-{name}-underlay.pcap"
    p = subprocess.Popen(["ip", "netns", "exec", names.netns(name, "ambient-worker"), "tcpdump", "--immediate-mode", "-U", "-i", "eth0",
                          "-w", pcap, "tcp"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert "listening on" in p.stderr.readline()
        time.sleep(0.2)
        assert page(name).startswith("<!DOCTYPE html>")
        time.sleep(0.3)
    finally:
        p.send_signal(signal.SIGINT)
        p.wait(5)
    ports = subprocess.run(["tshark", "-r", pcap, "-T", "fields", "-e", "tcp.srcport", "-e", "tcp.dstport"],
                           capture_output=True, text=True).stdout.split()
    http = subprocess.run(["tshark", "-r", pcap, "-Y", "http", "-T", "fields", "-e", "frame.number"],
                          capture_output=True, text=True).stdout.split()
    tls = subprocess.run(["tshark", "-r", pcap, "-Y", "tls.handshake or tls.app_data", "-T", "fields",
                          "-e", "frame.number", "-d", "tcp.port==15008,tls"], capture_output=True, text=True).stdout
    os.unlink(pcap)
    assert ports and "15008" in ports
    assert "9080" not in ports, "plaintext 9080 crossed the underlay"
    assert not http
    assert tls.split()


def test_unenrolled_pods_bypass_ztunnel(lab) -> None:
    name, mode = lab
    netlab("unenroll", name, "sleep")
    netlab("unenroll", name, "productpage-v1")
    try:
        before = access(name, "ambient-worker2").count("\n") + access(name, "ambient-worker").count("\n")
        r = in_lab(name, "sleep", "curl", "-s", "--max-time", "5", "http://10.244.1.7:9080/health")
        assert r.stdout == "ok\n"
        time.sleep(0.3)
        after = access(name, "ambient-worker2").count("\n") + access(name, "ambient-worker").count("\n")
        assert after == before
    finally:
        netlab("enroll", name, "sleep")
        netlab("enroll", name, "productpage-v1")
    assert page(name).startswith("<!DOCTYPE html>")


def test_inpod_listeners_live_in_the_pod_and_survive_a_ztunnel_kill(lab) -> None:
    name, mode = lab
    if mode != "inpod":
        node = in_lab(name, "ambient-worker2", "ip", "rule").stdout
        assert "lookup 101" in node
        return
    ss = in_lab(name, "productpage-v1", "ss", "-tlnp").stdout
    zt = next(p for p in supervisor.request(name, {"op": "status"})["processes"] if p["name"] == "ztunnel/ambient-worker2")
    for port in (15001, 15006, 15008):
        assert any(f":{port} " in ln and f"pid={zt['pid']}," in ln for ln in ss.splitlines()), ss
    node = in_lab(name, "ambient-worker2", "ip", "rule").stdout
    assert "lookup 101" not in node and "goto 32766" not in node
    assert "ztunnel-pods-ips" not in in_lab(name, "ambient-worker2", "ipset", "list", "-n").stdout
    assert "istioin" not in in_lab(name, "ambient-worker2", "ip", "link").stdout
    os.kill(zt["pid"], signal.SIGKILL)
    deadline = time.time() + 20
    ok = False
    while time.time() < deadline:
        st = {p["name"]: p for p in supervisor.request(name, {"op": "status"})["processes"]}
        z = st["ztunnel/ambient-worker2"]
        if z["pid"] and z["pid"] != zt["pid"] and z["ready"]:
            ss = in_lab(name, "productpage-v1", "ss", "-tlnp").stdout
            if f"pid={z['pid']}," in ss and page(name).startswith("<!DOCTYPE html>"):
                ok = True
                break
        time.sleep(0.3)
    assert ok, "traffic did not come back after ztunnel was killed and restarted"
