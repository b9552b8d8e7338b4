"""ztunnel's access-log lines (ztunnel 1.22+ ``src/proxy/metrics.rs``, ``src/telemetry.rs``), sans-IO.

Three events of tracing target ``access``, one table (:data:`EVENTS`) says which fields each
carries::

    <RFC3339 UTC, µs, Z>\\tdebug\\taccess\\tconnection opened\\tsrc.addr=... direction="outbound"
    <RFC3339 UTC, µs, Z>\\twarn\\taccess\\tconnection failed\\tsrc.addr=... dst.addr=... direction="outbound" error="..."
    <RFC3339 UTC, µs, Z>\\tinfo\\taccess\\tconnection complete\\tsrc.addr=... direction="outbound" ...

``connection opened`` (debug: hidden at the default level ``info``) once the destination is
resolved; ``connection failed`` (warn) when the connection is refused before any byte is
relayed; ``connection complete`` once per connection at the end. Field order is fixed; absent
fields are omitted; strings are Rust-Debug quoted, addresses and numbers are bare; a failed
connection completes at ``error`` with ``error="..."`` last.

>>> from datetime import datetime, timezone
>>> r = ConnRecord(direction="outbound", src_addr="10.0.0.1:5000", dst_addr="10.0.0.2:15008")
>>> r.bytes_sent, r.bytes_recv = 67, 490
>>> format_line(r, now=datetime(2024, 4, 11, 15, 38, 42, 182974, tzinfo=timezone.utc), duration_ms=13)
'2024-04-11T15:38:42.182974Z\\tinfo\\taccess\\tconnection complete\\tsrc.addr=10.0.0.1:5000 \
dst.addr=10.0.0.2:15008 direction="outbound" bytes_sent=67 bytes_recv=490 duration="13ms"'
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TextIO

log = logging.getLogger(__name__)

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\0": "\\0"}


_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f\x7f]')


@functools.lru_cache(maxsize=4096)
def debug_quote(value: str) -> str:
    """Quote like Rust's ``{:?}`` for str (what tracing does for string fields). Cached: the
    same workload names and identities come back on every connection."""
    if _NEEDS_ESCAPE.search(value) is None:
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


# tracing levels, lowest first; the default (ztunnel's RUST_LOG default) is "info"
LEVELS = ("debug", "info", "warn", "error")
DEFAULT_LEVEL = "info"

OPENED, FAILED, COMPLETE = "connection opened", "connection failed", "connection complete"
# message -> (level, fields); ``connection complete`` adds duration (and error) after its fields
# and is logged at ``error`` instead when the connection failed.
EVENTS: dict[str, tuple[str, tuple[tuple[str, str, bool], ...]]] = {
    OPENED: ("debug", tuple(f for f in FIELDS if not f[0].startswith("bytes_"))),  # no byte counts yet
    FAILED: ("warn", tuple(f for f in FIELDS if f[0] in ("src.addr", "dst.addr", "direction"))),
    COMPLETE: ("info", FIELDS),
}


def level_enabled(level: str, threshold: str) -> bool:
    """Whether an event at ``level`` shows when the log level is ``threshold``."""
    return LEVELS.index(level) >= LEVELS.index(threshold)


def _render(rec: ConnRecord, message: str, now: datetime, level: str | None = None,
            extra: tuple[str, ...] = ()) -> str:
    event_level, fields = EVENTS[message]
    parts = [f"{key}={debug_quote(v) if quoted else v}" for key, attr, quoted in fields
             if (v := getattr(rec, attr)) is not None]
    parts.extend(extra)
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return f"{stamp}\t{level or event_level}\taccess\t{message}\t" + " ".join(parts)


def format_line(rec: ConnRecord, *, now: datetime, duration_ms: int) -> str:
    """The ``connection complete`` line (``error`` level with ``error=`` last if it failed)."""
    extra = (f'duration="{duration_ms}ms"',)
    if rec.error is None:
        return _render(rec, COMPLETE, now, extra=extra)
    return _render(rec, COMPLETE, now, "error", (*extra, f"error={debug_quote(rec.error)}"))


def format_opened(rec: ConnRecord, *, now: datetime) -> str:
    """The ``connection opened`` line (debug): the closing line's src/dst/direction fields."""
    return _render(rec, OPENED, now)


def format_failed(rec: ConnRecord, error: str, *, now: datetime) -> str:
    """The ``connection failed`` line (warn): ``src.addr dst.addr direction error``."""
    return _render(rec, FAILED, now, extra=(f"error={debug_quote(error)}",))


class AccessLog:
    """Writes access lines to a line-buffered text stream (a file, or stdout).

    ``level`` is the lowest level written (``debug`` shows ``connection opened``); a
    ``connection complete`` line is written at ``info`` and ``error`` levels alike.
    """

    def __init__(self, stream: TextIO, level: str = DEFAULT_LEVEL) -> None:
        if level not in LEVELS:
            raise ValueError(f"log level must be one of {LEVELS}, not {level!r}")
        self._stream = stream
        self._lock = threading.Lock()
        self.level = level
        self.debug = level == "debug"
        self._warn = level_enabled("warn", level)
        self._info = level_enabled("info", level)

    def _write(self, line: str) -> str:
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()
        return line

    def opened(self, rec: ConnRecord) -> str | None:
        """``connection opened`` at debug; None (nothing formatted) at any other level."""
        if not self.debug:
            return None
        return self._write(format_opened(rec, now=datetime.now(UTC)))

    def failed(self, rec: ConnRecord, error: str | None = None) -> str | None:
        """``connection failed`` (warn) with ``error`` (default: the record's)."""
        if not self._warn:
            return None
        return self._write(format_failed(rec, error or rec.error or "unknown error", now=datetime.now(UTC)))

    def complete(self, rec: ConnRecord) -> str | None:
        if rec.error is None and not self._info:
            return None
        duration_ms = int((time.monotonic() - rec.start) * 1000)
        return self._write(format_line(rec, now=datetime.now(UTC), duration_ms=duration_ms))
