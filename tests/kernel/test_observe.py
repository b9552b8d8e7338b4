"""Capture, hop reconstruction and trace against real labs, one lab per mode (module-scoped).

tshark is the independent decoder of what ``netlab capture`` wrote.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from netlab.lab.state import load_record
from netlab.observe import capture as caplib
from tests.kernel.helpers import in_lab, lab_netns, lab_up

pytestmark = pytest.mark.root
CURL = ("curl", "-s", "--max-time", "10", "http://productpage:9080/")


@pytest.fixture(scope="module")
def nr():
    with lab_up("topologies/bookinfo.yaml", "cp-onr", "--mode", "node-routing") as lab:
        assert in_lab(lab, "sleep", *CURL).stdout.startswith("<!DOCTYPE html>")  # warm the HBONE pool
        yield lab


def tshark(*args: str) -> list[list[str]]:
    p = subprocess.run(["tshark", *args], capture_output=True, text=True, check=True)
    return [ln.split("\t") for ln in p.stdout.splitlines() if ln]


def packet_sockets(lab: str) -> dict[str, int]:
    """AF_PACKET sockets open in each lab netns (``/proc/net/packet`` lines, header excluded)."""
    out = {}
    for ns in lab_netns(lab):
        p = subprocess.run(["ip", "netns", "exec", ns, "cat", "/proc/net/packet"], capture_output=True, text=True)
        out[ns] = len(p.stdout.splitlines()) - 1
    return out


@pytest.fixture(scope="module")
def nr_capture(nr, tmp_path_factory):
    """One capture of sleep's curl to productpage, shared by the node-routing tests."""
    before = packet_sockets(nr)
    rec = load_record(nr)
    d = str(tmp_path_factory.mktemp("nr"))
    res = caplib.capture(nr, d, members=rec.members, command=(rec.members["sleep"], [*CURL, "-o", os.devnull]))
    assert packet_sockets(nr) == before, "a capture socket was left open"
    return res


def test_capture_files_per_interface_and_merged(nr, nr_capture) -> None:
    res = nr_capture
    assert res.command_rc == 0 and not res.interrupted
    names = {(i.member, i.device) for i in res.interfaces}
    assert ("sleep", "eth0") in names and ("ambient-worker", "istioout") in names and ("net", "br0") in names
    assert len(res.interfaces) >= 40
    for i in res.interfaces:
        assert os.path.basename(i.pcap) == f"{i.netns}__{i.device}.pcap" and os.path.exists(i.pcap)
        assert i.kernel_drops == 0
    sleep = next(i for i in res.interfaces if (i.member, i.device) == ("sleep", "eth0"))
    assert sleep.packets > 0 and len(tshark("-r", sleep.pcap)) == sleep.packets
    rows = tshark("-r", res.merged, "-T", "fields", "-e", "frame.interface_name", "-e", "frame.interface_description")
    assert len(rows) == sum(i.packets for i in res.interfaces)
    assert [f"nl-{nr}-sleep/eth0", f"eth0 in netns nl-{nr}-sleep"] in rows


def test_geneve_decodes_and_hbone_is_tls_on_15008(nr, nr_capture) -> None:
    rows = tshark("-r", nr_capture.merged, "-Y", "geneve and tcp.flags.syn == 1 and tcp.flags.ack == 0",
                  "-T", "fields", "-e", "frame.interface_name", "-e", "geneve.vni", "-e", "tcp.dstport")
    assert any(int(r[1], 16) == 1001 for r in rows), rows  # the SYN to the ztunnel pod in VNI 1001
    tls = tshark("-r", nr_capture.merged, "-Y", "tls", "-T", "fields", "-e", "frame.interface_name", "-e", "tcp.port")
    assert tls and all("15008" in r[1] for r in tls)
    underlay = tshark("-r", nr_capture.merged, "-Y", f'frame.interface_name contains "nl-{nr}-net/" and tcp',
                      "-T", "fields", "-e", "tcp.srcport", "-e", "tcp.dstport")
    assert underlay and all("15008" in r for r in underlay), "plaintext crossed the underlay"


def test_ctrl_c_still_writes_closed_pcaps(nr, tmp_path) -> None:
    before = packet_sockets(nr)
    d = str(tmp_path / "cc")
    p = subprocess.Popen([sys.executable, "-m", "netlab", "capture", nr, "-o", d, "--seconds", "60", "--only",
                          "sleep,ambient-worker"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "capturing on" in p.stderr.readline()
        assert in_lab(nr, "sleep", *CURL).returncode == 0
        p.send_signal(signal.SIGINT)
        out, errtext = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, errtext
    assert "interrupted" in errtext
    files = sorted(os.listdir(d))
    assert "merged.pcapng" in files and f"nl-{nr}-sleep__eth0.pcap" in files
    assert not [f for f in files if f.endswith(".tmp")]
    for f in files:
        subprocess.run(["tshark", "-r", os.path.join(d, f), "-c", "1"], capture_output=True, check=True)
    assert tshark("-r", os.path.join(d, f"nl-{nr}-sleep__eth0.pcap"), "-Y", "tcp.flags.syn == 1")
    time.sleep(0.2)
    assert packet_sockets(nr) == before
