"""Access-log lines in ztunnel's exact format (1.22+)."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest

from netlab.runtime.ztunnel.accesslog import (
    EVENTS,
    AccessLog,
    ConnRecord,
    debug_quote,
    format_failed,
    format_line,
    format_opened,
    level_enabled,
)

NOW = datetime(2024, 4, 11, 15, 38, 42, 182974, tzinfo=UTC)


def test_reference_example_outbound() -> None:
    """The section-C example, byte for byte."""
    r = ConnRecord(direction="outbound", src_addr="10.244.0.24:46238", dst_addr="10.244.0.42:15008",
                   src_workload="shell-6d8bcd654d-t88gp", src_namespace="default",
                   src_identity="spiffe://cluster.local/ns/default/sa/default", dst_hbone_addr="10.96.108.116:80",
                   dst_service="echo.default.svc.cluster.local", bytes_sent=67, bytes_recv=490)
    assert format_line(r, now=NOW, duration_ms=13) == (
        "2024-04-11T15:38:42.182974Z\tinfo\taccess\tconnection complete\t"
        'src.addr=10.244.0.24:46238 src.workload="shell-6d8bcd654d-t88gp" src.namespace="default" '
        'src.identity="spiffe://cluster.local/ns/default/sa/default" dst.addr=10.244.0.42:15008 '
        'dst.hbone_addr=10.96.108.116:80 dst.service="echo.default.svc.cluster.local" direction="outbound" '
        'bytes_sent=67 bytes_recv=490 duration="13ms"')


def test_inbound_line_with_all_fields() -> None:
    """All 14 fields, in order, as in a line captured from a real cluster's ztunnel."""
    r = ConnRecord(direction="inbound", src_addr="10.28.2.19:58000", dst_addr="10.28.2.18:15008",
                   src_workload="bookinfo-gateway-istio-64fc6d75d6-s442s", src_namespace="default",
                   src_identity="spiffe://cluster.local/ns/default/sa/bookinfo-gateway-istio",
                   dst_hbone_addr="10.28.2.18:9080", dst_service="productpage.default.svc.cluster.local",
                   dst_workload="productpage-v1-57ffb6658c-tgbjs", dst_namespace="default",
                   dst_identity="spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
                   bytes_sent=9603, bytes_recv=2052)
    line = format_line(r, now=datetime(2024, 11, 16, 10, 33, 1, 410751, tzinfo=UTC), duration_ms=2110)
    assert line == (
        "2024-11-16T10:33:01.410751Z\tinfo\taccess\tconnection complete\tsrc.addr=10.28.2.19:58000 "
        'src.workload="bookinfo-gateway-istio-64fc6d75d6-s442s" src.namespace="default" '
        'src.identity="spiffe://cluster.local/ns/default/sa/bookinfo-gateway-istio" dst.addr=10.28.2.18:15008 '
        'dst.hbone_addr=10.28.2.18:9080 dst.service="productpage.default.svc.cluster.local" '
        'dst.workload="productpage-v1-57ffb6658c-tgbjs" dst.namespace="default" '
        'dst.identity="spiffe://cluster.local/ns/default/sa/bookinfo-productpage" direction="inbound" '
        'bytes_sent=9603 bytes_recv=2052 duration="2110ms"')


def test_error_line_level_and_error_last() -> None:
    """Failures log at error with error="..." after duration; absent fields omitted."""
    r = ConnRecord(direction="outbound", src_addr="10.0.0.1:1", dst_addr="10.0.0.2:15008",
                   error='http status: 503 Service "Unavailable"')
    assert format_line(r, now=NOW, duration_ms=0) == (
        "2024-04-11T15:38:42.182974Z\terror\taccess\tconnection complete\tsrc.addr=10.0.0.1:1 dst.addr=10.0.0.2:15008 "
        'direction="outbound" bytes_sent=0 bytes_recv=0 duration="0ms" error="http status: 503 Service \\"Unavailable\\""')


def test_debug_quote_escapes() -> None:
    """Rust Debug quoting: quotes, backslashes, control characters."""
    assert debug_quote('a"b\\c\nd\te') == '"a\\"b\\\\c\\nd\\te"'
    assert debug_quote("\x01") == '"\\u{1}"'


def test_debug_quote_escapes_delete_alone() -> None:
    """DEL (0x7f) is escaped as Rust escapes it, also in a string with nothing else to escape
    (the quick check used to let it through unescaped)."""
    assert debug_quote("a\x7fb") == '"a\\u{7f}b"'


def test_access_log_writes_one_line() -> None:
    """AccessLog.complete writes the line with a newline and returns it."""
    buf = io.StringIO()
    line = AccessLog(buf).complete(ConnRecord(direction="inbound", src_addr="1.1.1.1:1", dst_addr="2.2.2.2:2"))
    assert buf.getvalue() == line + "\n" and line.split("\t")[1:4] == ["info", "access", "connection complete"]


def _outbound() -> ConnRecord:
    return ConnRecord(direction="outbound", src_addr="10.244.0.24:46238", dst_addr="10.244.0.42:15008",
                      src_workload="shell", src_namespace="default",
                      src_identity="spiffe://cluster.local/ns/default/sa/default", dst_hbone_addr="10.96.108.116:80",
                      dst_service="echo.default.svc.cluster.local", dst_workload="echo", dst_namespace="default",
                      dst_identity="spiffe://cluster.local/ns/default/sa/echo", bytes_sent=67, bytes_recv=490)


def test_connection_opened_line() -> None:
    """debug, `connection opened`, the closing line's src/dst/direction fields in order: no bytes, no duration."""
    assert format_opened(_outbound(), now=NOW) == (
        "2024-04-11T15:38:42.182974Z\tdebug\taccess\tconnection opened\t"
        'src.addr=10.244.0.24:46238 src.workload="shell" src.namespace="default" '
        'src.identity="spiffe://cluster.local/ns/default/sa/default" dst.addr=10.244.0.42:15008 '
        'dst.hbone_addr=10.96.108.116:80 dst.service="echo.default.svc.cluster.local" dst.workload="echo" '
        'dst.namespace="default" dst.identity="spiffe://cluster.local/ns/default/sa/echo" direction="outbound"')


def test_opened_is_the_complete_line_without_counters() -> None:
    """Same prefix of fields as `connection complete` (one table, EVENTS)."""
    r = _outbound()
    opened = format_opened(r, now=NOW).split("\t")[4]
    complete = format_line(r, now=NOW, duration_ms=13).split("\t")[4]
    assert complete.startswith(opened + " bytes_sent=67 ")
    assert [k for k, _, _ in EVENTS["connection opened"][1]][-1] == "direction"


@pytest.mark.parametrize("rec,error,expected", [
    (ConnRecord(direction="outbound", src_addr="10.244.1.10:40000", dst_addr="10.244.2.10:15008",
                src_workload="sleep", src_identity="spiffe://cluster.local/ns/default/sa/sleep"),
     "identity mismatch: expected a, got b",
     'src.addr=10.244.1.10:40000 dst.addr=10.244.2.10:15008 direction="outbound" '
     'error="identity mismatch: expected a, got b"'),
    (ConnRecord(direction="inbound", src_addr="172.18.0.2:5000", dst_addr="10.244.2.10:15008"),
     "tls handshake failed: certificate verify failed: certificate has expired",
     'src.addr=172.18.0.2:5000 dst.addr=10.244.2.10:15008 direction="inbound" '
     'error="tls handshake failed: certificate verify failed: certificate has expired"'),
    (ConnRecord(direction="inbound", src_addr="[fd00::1]:5000", dst_addr="[fd00::2]:15006"),
     'policy "x"', 'src.addr=[fd00::1]:5000 dst.addr=[fd00::2]:15006 direction="inbound" error="policy \\"x\\""'),
], ids=["outbound-identity", "inbound-expired", "quoted-error"])
def test_connection_failed_line(rec: ConnRecord, error: str, expected: str) -> None:
    """warn, `connection failed`, only src.addr dst.addr direction error (other fields of the record ignored)."""
    assert format_failed(rec, error, now=NOW) == (
        "2024-04-11T15:38:42.182974Z\twarn\taccess\tconnection failed\t" + expected)


@pytest.mark.parametrize("level,written", [
    ("debug", ["connection opened", "connection failed", "connection complete", "connection complete"]),
    ("info", ["connection failed", "connection complete", "connection complete"]),
    ("warn", ["connection failed", "connection complete"]),
    ("error", ["connection complete"]),
], ids=["debug", "info-default", "warn", "error"])
def test_access_log_level_filter(level: str, written: list[str]) -> None:
    """opened shows at debug only; failed from warn; complete at info, or at error when it failed."""
    buf = io.StringIO()
    log = AccessLog(buf, level)
    ok = ConnRecord(direction="inbound", src_addr="1.1.1.1:1", dst_addr="2.2.2.2:2")
    bad = ConnRecord(direction="inbound", src_addr="1.1.1.1:1", dst_addr="2.2.2.2:2", error="boom")
    log.opened(ok)
    log.failed(bad)
    log.complete(ok)
    log.complete(bad)
    assert [ln.split("\t")[3] for ln in buf.getvalue().splitlines()] == written
    assert AccessLog(io.StringIO()).level == "info"


def test_level_order_and_bad_level() -> None:
    """debug < info < warn < error; an unknown level is refused."""
    assert level_enabled("warn", "info") and not level_enabled("debug", "info") and level_enabled("error", "error")
    with pytest.raises(ValueError, match="log level"):
        AccessLog(io.StringIO(), "trace")
