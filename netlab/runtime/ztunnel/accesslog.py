"""ztunnel's access-log line (reference section C), sans-IO.

One line per connection at completion::

    <RFC3339 UTC, µs, Z>\\tinfo\\taccess\\tconnection complete\\tsrc.addr=... direction="outbound" ...

Field order is fixed; absent fields are omitted; strings are Rust-Debug quoted, addresses
and numbers are bare; a failed connection is logged at ``error`` with ``error="..."`` last.

>>> from datetime import datetime, timezone
>>> r = ConnRecord(direction="outbound", src_addr="10.0.0.1:5000", dst_addr="10.0.0.2:15008")
>>> r.bytes_sent, r.bytes_recv = 67, 490
>>> format_line(r, now=datetime(2024, 4, 11, 15, 38, 42, 182974, tzinfo=timezone.utc), duration_ms=13)
'2024-04-11T15:38:42.182974Z\\tinfo\\taccess\\tconnection complete\\tsrc.addr=10.0.0.1:5000 \
dst.addr=10.0.0.2:15008 direction="outbound" bytes_sent=67 bytes_recv=490 duration="13ms"'
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TextIO

log = logging.getLogger(__name__)

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\0": "\\0"}


def debug_quote(value: str) -> str:
    """Quote like Rust's ``{:?}`` for str (what tracing does for string fields)."""
    if not any(c in _ESCAPES or c < " " for c in value):
        return f'"{value}"'
    out = []
    for c in value:
        if c in _ESCAPES:
            out.append(_ESCAPES[c])
        elif c < " " or c == "\x7f":
            out.append(f"\\u{{{ord(c):x}}}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


@dataclass(slots=True)
class ConnRecord:
    """Everything one access-log line says; filled in as the connection goes.

    ``bytes_sent``/``bytes_recv`` are already in the log's sense: outbound, sent = app bytes
    toward the destination; inbound, sent = bytes sent back toward the client.
    """

    direction: str
    src_addr: str
    dst_addr: str
    src_workload: str | None = None
    src_namespace: str | None = None
    src_identity: str | None = None
    dst_hbone_addr: str | None = None
    dst_service: str | None = None
    dst_workload: str | None = None
    dst_namespace: str | None = None
    dst_identity: str | None = None
    bytes_sent: int = 0
    bytes_recv: int = 0
    error: str | None = None
    start: float = field(default_factory=time.monotonic)


# ztunnel's field order; (key, attribute, Debug-quoted). Absent (None) values are omitted.
FIELDS = (
    ("src.addr", "src_addr", False), ("src.workload", "src_workload", True),
    ("src.namespace", "src_namespace", True), ("src.identity", "src_identity", True),
    ("dst.addr", "dst_addr", False), ("dst.hbone_addr", "dst_hbone_addr", False),
    ("dst.service", "dst_service", True), ("dst.workload", "dst_workload", True),
    ("dst.namespace", "dst_namespace", True), ("dst.identity", "dst_identity", True),
    ("direction", "direction", True), ("bytes_sent", "bytes_sent", False), ("bytes_recv", "bytes_recv", False),
)


def format_line(rec: ConnRecord, *, now: datetime, duration_ms: int) -> str:
    parts = [f"{key}={debug_quote(v) if quoted else v}" for key, attr, quoted in FIELDS
             if (v := getattr(rec, attr)) is not None]
    parts.append(f'duration="{duration_ms}ms"')
    level = "info"
    if rec.error is not None:
        level = "error"
        parts.append(f"error={debug_quote(rec.error)}")
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return f"{stamp}\t{level}\taccess\tconnection complete\t" + " ".join(parts)


class AccessLog:
    """Writes access lines to a line-buffered text stream (a file, or stdout)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def complete(self, rec: ConnRecord) -> str:
        duration_ms = int((time.monotonic() - rec.start) * 1000)
        line = format_line(rec, now=datetime.now(UTC), duration_ms=duration_ms)
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()
        return line
