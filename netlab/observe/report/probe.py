"""The scenario's captured and traced connections, through the observe layer's capture, hop
reconstruction and trace.

One more request of the scenario (the same curl, one connection) runs under ``netlab capture``
on every interface of the lab; hop reconstruction joins its legs through the ztunnels' access
logs into one path, the request's own (client pod first). From that path come the counts, the
per-hop bytes (read back from each interface's pcap) and the diagram.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from urllib.parse import urlsplit

from netlab.lab.state import LabRecord
from netlab.observe.capture import capture
from netlab.observe.hops import hbone_overhead, paths_for_capture
from netlab.observe.model import Path, Trace
from netlab.observe.report.diagram import Where, layout, render_svg
from netlab.observe.report.schema import PathReport
from netlab.observe.report.wire import leg_bytes
from netlab.observe.trace import trace


def where_in(rec: LabRecord) -> Callable[[str], Where]:
    """Hop netns -> (node column, label, kind), from the lab record (netns names or TARGETs)."""
    by_netns = {ns: m for m, ns in rec.members.items()}

    def where(netns: str) -> Where:
        m = by_netns.get(netns, netns)
        role = rec.roles.get(m, "underlay")
        if role == "node":
            return Where(m, m, "node")
        if role == "ztunnel":
            return Where(m[len("ztunnel-"):], m, "ztunnel")
        if role == "pod":
            return Where(rec.pods[m]["node"], m, "pod")
        return Where("underlay", m, "underlay")

    return where


def crossings(path: Path) -> int:
    """How often consecutive hops of the request are in different netns."""
    hops = path.hops
    return sum(1 for a, b in zip(hops, hops[1:], strict=False) if a.netns != b.netns)


def pick(paths: list[Path], client: str, client_ip: str) -> Path | None:
    """The scenario request's own path: opened by the client pod, the longest if several."""
    mine = [p for p in paths if p.client in (client, client_ip) and p.hops]
    return max(mine, key=lambda p: (len(p.legs), len(p.hops))) if mine else None


def report_path(path: Path, rec: LabRecord, pcaps: dict[tuple[str, str], str], design: str) -> PathReport:
    framing = hbone_overhead(path)
    logged = {}
    if path.app_bytes_up is not None and path.app_bytes_down is not None:
        logged = {"app bytes up (access log bytes_sent)": path.app_bytes_up,
                  "app bytes down (access log bytes_recv)": path.app_bytes_down}
    svg = render_svg(layout(path, where_in(rec), title=f"{design}: {path.client} → {path.server}"))
    return PathReport(path=path, hops=len(path.hops), netns_crossings=crossings(path),
                      ztunnel_traversals=len(path.ztunnels), bytes=leg_bytes(path, pcaps),
                      access_log_bytes=logged, hbone_framing_bytes=sum(framing) if framing else None, svg=svg)


def capture_path(lab: str, rec: LabRecord, client: str, url: str, out_dir: str,
                 notes: list[str]) -> tuple[PathReport | None, list[str]]:
    os.makedirs(out_dir, exist_ok=True)
    res = capture(lab, out_dir, members=rec.members,
                  command=(rec.members[client], ["curl", "-s", "-o", "/dev/null", "--max-time", "10",
                                                 "-H", "Connection: close", url]),
                  command_stdout=subprocess.DEVNULL)
    files = [i.pcap for i in res.interfaces if i.packets] + [res.merged]
    if res.command_rc:
        notes.append(f"capture: the captured curl exited {res.command_rc}")
    path = pick(paths_for_capture(res), client, rec.pods[client]["ip"])
    if path is None:
        notes.append("capture: no connection from the client pod in the capture")
        return None, files
    pcaps = {(i.netns, i.device): i.pcap for i in res.interfaces}
    return report_path(path, rec, pcaps, rec.mode), files


def trace_connection(lab: str, client: str, url: str, notes: list[str]) -> Trace | None:
    """``netlab trace`` of one new connection client -> the URL's host and port."""
    u = urlsplit(url)
    port = u.port or (443 if u.scheme == "https" else 80)
    t = trace(lab, source=client, destination=f"{u.hostname}:{port}")
    if not t.connected:
        notes.append(f"trace: the traced connection to {u.hostname}:{port} was not accepted")
    return t
