"""ztunnel's access log read back: one :class:`AccessEntry` per ``connection complete`` line.

The lines are the ones ``netlab.runtime.ztunnel.accesslog`` writes (ztunnel's format: an RFC 3339
UTC stamp, level, target ``access``, message, then ``key=value`` fields with Rust-Debug quoted
strings). Hop reconstruction joins them to captured TCP connections by address, bytes and time.

>>> e = parse_line('2024-04-11T15:38:42.182974Z\\tinfo\\taccess\\tconnection complete\\tsrc.addr=10.0.0.1:5000 '
...                'dst.addr=10.0.0.2:15008 direction="outbound" bytes_sent=67 bytes_recv=490 duration="13ms"',
...                node="w1")
>>> (e.direction, e.src, e.dst, e.bytes_sent, e.bytes_recv, round(e.end - e.start, 3))  # duration + 1 ms of rounding slack
('outbound', ('10.0.0.1', 5000), ('10.0.0.2', 15008), 67, 490, 0.014)
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from netlab import names

_FIELD = re.compile(r'([a-z_.]+)=("(?:[^"\\]|\\.)*"|\S+)')
COMPLETE = "connection complete"


def _addr(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    host, _, port = value.rpartition(":")
    return (host, int(port)) if port.isdigit() else None


@dataclass(frozen=True)
class AccessEntry:
    """A finished connection as one ztunnel saw it (``node``'s ztunnel)."""

    node: str
    direction: str  # outbound | inbound
    src: tuple[str, int]
    dst: tuple[str, int]
    hbone: tuple[str, int] | None  # dst.hbone_addr
    src_workload: str | None
    dst_workload: str | None
    dst_service: str | None
    bytes_sent: int
    bytes_recv: int
    start: float  # epoch seconds (end minus duration)
    end: float
    error: str | None
    line: str

    @property
    def ztunnel(self) -> str:
        return names.ztunnel_pod(self.node)


def parse_line(line: str, *, node: str) -> AccessEntry | None:
    """One ``connection complete`` line, or None for any other line."""
    parts = line.rstrip("\n").split("\t", 4)
    if len(parts) != 5 or parts[2] != "access" or parts[3] != COMPLETE:
        return None
    f = {k: v[1:-1] if v.startswith('"') else v for k, v in _FIELD.findall(parts[4])}
    src, dst = _addr(f.get("src.addr")), _addr(f.get("dst.addr"))
    if src is None or dst is None:
        return None
    end = datetime.strptime(parts[0], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
    dur = f.get("duration", "0ms")
    ms = int(dur[:-2]) if dur.endswith("ms") and dur[:-2].isdigit() else 0
    return AccessEntry(node=node, direction=f.get("direction", ""), src=src, dst=dst, hbone=_addr(f.get("dst.hbone_addr")),
                       src_workload=f.get("src.workload"), dst_workload=f.get("dst.workload"),
                       dst_service=f.get("dst.service"), bytes_sent=int(f.get("bytes_sent", 0)),
                       bytes_recv=int(f.get("bytes_recv", 0)), start=end - ms / 1000 - 0.001, end=end,
                       error=f.get("error"), line=line.rstrip("\n"))


def read_lab(lab: str, nodes: list[str], *, since: float = 0.0) -> list[AccessEntry]:
    """Every node's ``connection complete`` entries ending after ``since``."""
    out = []
    for node in nodes:
        path = os.path.join(names.state_dir(lab), "logs", f"ztunnel.{node}.access.log")
        try:
            with open(path, errors="replace") as fh:
                for ln in fh:
                    e = parse_line(ln, node=node)
                    if e is not None and e.end >= since:
                        out.append(e)
        except FileNotFoundError:
            continue
    return out

