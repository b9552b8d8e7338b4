"""Capture files: per-interface nanosecond pcaps merged into one pcapng that names netns/device.

tshark (when installed) is the independent decoder: it must read the interface names and
descriptions, the nanosecond timestamps and the directions back.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from netlab.observe import pcapfiles

FRAME = bytes(Ether() / IP(src="10.244.2.4", dst="10.96.0.10") / TCP(sport=40000, dport=9080, flags="S"))


def _write(tmp_path, netns: str, device: str, packets: list[tuple[int, bool]]) -> pcapfiles.MergeInput:
    path = str(tmp_path / pcapfiles.pcap_name(netns, device))
    w = pcapfiles.InterfaceWriter(path)
    for ts, outgoing in packets:
        w.write(FRAME, ts, outgoing)
    w.close()
    return pcapfiles.MergeInput(netns, device, path, bytes(w.directions), len(packets), 0)


def test_merge_orders_by_nanosecond_and_keeps_netns_device_direction(tmp_path) -> None:
    base = 1_700_000_000_000_000_000
    a = _write(tmp_path, "nl-x.sleep", "eth0", [(base + 100, True), (base + 900, False)])
    b = _write(tmp_path, "nl-x.node", "veth1", [(base + 101, False)])  # same microsecond as a's first
    empty = _write(tmp_path, "nl-x.node", "lo", [])
    merged = str(tmp_path / "merged.pcapng")
    assert pcapfiles.merge([a, b, empty], merged) == 3
    got = [(s.ts_ns - base, s.netns, s.device, s.outgoing) for s in pcapfiles.read_merged(merged)]
    assert got == [(100, "nl-x.sleep", "eth0", True), (101, "nl-x.node", "veth1", False),
                   (900, "nl-x.sleep", "eth0", False)]
    assert all(s.data == FRAME for s in pcapfiles.read_merged(merged))


@pytest.mark.skipif(not shutil.which("tshark"), reason="tshark not installed")
def test_tshark_reads_the_merged_file(tmp_path) -> None:
    base = 1_700_000_000_123_456_789
    a = _write(tmp_path, "nl-x.sleep", "eth0", [(base, True)])
    b = _write(tmp_path, "nl-x.node", "veth1", [(base + 7, False)])
    merged = str(tmp_path / "merged.pcapng")
    pcapfiles.merge([a, b], merged)
    p = subprocess.run(["tshark", "-r", merged, "-T", "fields", "-e", "frame.time_epoch", "-e", "frame.interface_name",
                        "-e", "frame.interface_description", "-e", "frame.packet_flags_direction", "-e", "tcp.dstport"],
                       capture_output=True, text=True, check=True)
    rows = [ln.split("\t") for ln in p.stdout.splitlines()]
    assert rows == [["1700000000.123456789", "nl-x.sleep/eth0", "eth0 in netns nl-x.sleep", "0x00000002", "9080"],
                    ["1700000000.123456796", "nl-x.node/veth1", "veth1 in netns nl-x.node", "0x00000001", "9080"]]
    # the per-interface file is a plain nanosecond pcap
    p = subprocess.run(["tshark", "-r", a.path, "-T", "fields", "-e", "frame.time_epoch"], capture_output=True,
                       text=True, check=True)
    assert p.stdout.split() == ["1700000000.123456789"]


def test_if_name_round_trip() -> None:
    assert pcapfiles.split_if_name(pcapfiles.if_name("nl-a-b-ztunnel-w", "pistioout")) == ("nl-a-b-ztunnel-w", "pistioout")


def test_lean_reader_agrees_with_scapys_parser(tmp_path) -> None:
    """The merged reader's lean path returns what scapy's own EPB parser returns."""
    from scapy.utils import RawPcapNgReader

    base = 1_700_000_000_000_000_000
    big = bytes(Ether() / IP() / TCP() / (b"x" * 3000))
    path = str(tmp_path / pcapfiles.pcap_name("nl-x.a", "eth0"))
    w = pcapfiles.InterfaceWriter(path)
    w.write(FRAME, base + 5, True)
    w.write(big, base + 9, False)
    w.close()
    merged = str(tmp_path / "m.pcapng")
    pcapfiles.merge([pcapfiles.MergeInput("nl-x.a", "eth0", path, bytes(w.directions), 2, 0)], merged)
    lean = list(pcapfiles.read_merged(merged))
    with RawPcapNgReader(merged) as r:
        ref = [(d, m) for d, m in r]
    assert len(lean) == len(ref) == 2
    for s, (d, m) in zip(lean, ref, strict=True):
        assert s.ts_ns == ((m.tshigh << 32) | m.tslow) * 10**9 // m.tsresol
        assert (s.outgoing, s.wirelen) == (m.direction == pcapfiles.DIR_OUT, m.wirelen)
        assert s.data[:len(d)] == d
    assert lean[1].data == big and lean[1].wirelen == len(big)
