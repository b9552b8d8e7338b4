"""Trace plumbing without a kernel: trace messages decoded, packets split, rules mapped."""

from __future__ import annotations

import pytest

from netlab.errors import PreflightError
from netlab.observe import nftrace, trace


def _msg(**attrs) -> bytes:
    m = nftrace.nft_trace_msg()
    m["header"]["type"] = nftrace.TRACE_MSG_TYPE
    m["nfgen_family"] = attrs.pop("family", 2)
    m["attrs"] = [(k, v) for k, v in attrs.items()]
    m.encode()
    return bytes(m.data)


def test_trace_messages_decode_with_handle_verdict_and_mark() -> None:
    data = _msg(NFTA_TRACE_TABLE="mangle", NFTA_TRACE_CHAIN="ztunnel-PREROUTING", NFTA_TRACE_RULE_HANDLE=30,
                NFTA_TRACE_TYPE=3, NFTA_TRACE_VERDICT={"attrs": [("NFTA_VERDICT_CODE", 0xFFFFFFFF)]},
                NFTA_TRACE_ID=7, NFTA_TRACE_MARK=0x100, NFTA_TRACE_IIF=2)
    data += _msg(NFTA_TRACE_TABLE="nat", NFTA_TRACE_CHAIN="PREROUTING", NFTA_TRACE_TYPE=1, NFTA_TRACE_ID=7,
                 NFTA_TRACE_POLICY=1)
    a, b = nftrace.parse(data, "nl-x.w1")
    assert (a.table, a.chain, a.handle, a.kind, a.verdict, a.mark, a.iif, a.trace_id) == (
        "mangle", "ztunnel-PREROUTING", 30, "rule", "continue", 0x100, 2, 7)
    assert (b.kind, b.verdict, b.handle, b.mark) == ("policy", "ACCEPT", None, 0)


def _ev(table, chain, handle, mark=0, tid=1, th=None, nh=None, kind="rule", verdict="continue"):
    return nftrace.TraceEvent("ns", tid, 1 if table.startswith(trace.TRACE_TABLE) else 2, table, chain, kind, handle, verdict,
                              None, mark, None, None, nh, th)


def test_packets_split_at_our_own_nftrace_rule() -> None:
    syn = b"\x00" * 13 + bytes([0x02]) + b"\x00" * 6
    ack = b"\x00" * 13 + bytes([0x10]) + b"\x00" * 6
    ours, other = trace.trace_table(40000), trace.trace_table(50000)
    events = [_ev(ours, "pre", 2, th=syn), _ev("mangle", "PREROUTING", 11),
              _ev(other, "pre", 2, th=syn, tid=9), _ev("mangle", "PREROUTING", 11, tid=9),
              _ev(ours, "pre", 2, th=ack), _ev("mangle", "PREROUTING", 11, mark=0x40)]
    pkts = trace.packets_of(events, ours)
    assert [(p.flags, [e.table for e in p.events]) for p in pkts] == [
        ("SYN", [ours, "mangle"]), ("ACK", [ours, "mangle"])]


def test_trace_table_matches_only_the_source_port() -> None:
    text = trace.trace_rules(43210)
    assert text.count("tcp sport 43210 meta nftrace set 1") == 2
    assert "priority -500" in text and "table inet nl-trace-43210 {" in text


def test_target_is_the_rules_own() -> None:
    assert trace._target("-A X -p tcp -j TPROXY --on-port 15001", "accept", None) == "TPROXY"
    assert trace._target("nft ip mangle X handle 3", "jump", "ztunnel-PREROUTING") == "ztunnel-PREROUTING"


def test_a_lab_with_legacy_rules_is_refused_with_the_reason() -> None:
    with pytest.raises(PreflightError, match="legacy x_tables"):
        trace.check_backend("python-iptables")
