"""The python-iptables backend: the same rendered rules, loaded through libiptc.

libiptc is iptables' legacy (x_tables) interface, so rules loaded this way show up in
``iptables-legacy-save``; with this backend netlab reads them back with the legacy tools
(Istio's own auto-detection would pick legacy on such a node, too). Each ``-A`` line is
parsed once into (rule fields, matches, target) — a small, tested translation — and the
whole table is committed atomically by libiptc.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from netlab.errors import ApplyError
from netlab.linux import nsenter
from netlab.plan.objects import Iptables

RULE_FIELDS = {"-s": "src", "-d": "dst", "-i": "in_interface", "-o": "out_interface", "-p": "protocol"}


@dataclass
class ParsedRule:
    chain: str
    fields: dict[str, str] = field(default_factory=dict)
    matches: list[tuple[str, list[tuple[str, str | list[str]]]]] = field(default_factory=list)
    target: tuple[str, list[tuple[str, str | list[str]]]] | None = None


def parse_rule(line: str) -> ParsedRule:
    """``parse_rule('-A X ! -i lo -m mark --mark 0x1/0x1 -j RETURN')`` -> chain, fields, matches, target."""
    toks = shlex.split(line)
    if len(toks) < 2 or toks[0] != "-A":
        raise ValueError(f"not an -A rule: {line}")
    r = ParsedRule(toks[1])
    i, neg = 2, False
    current: list[tuple[str, str | list[str]]] | None = None
    while i < len(toks):
        t = toks[i]
        if t == "!":
            neg = True
            i += 1
            continue
        if t in RULE_FIELDS:
            r.fields[RULE_FIELDS[t]] = ("!" if neg else "") + toks[i + 1]
            neg, i = False, i + 2
            continue
        if t == "-m":
            current = []
            r.matches.append((toks[i + 1], current))
            i += 2
            continue
        if t == "-j":
            current = []
            r.target = (toks[i + 1], current)
            i += 2
            continue
        if t.startswith("--"):
            vals = []
            j = i + 1
            while j < len(toks) and not toks[j].startswith("-") and toks[j] != "!":
                vals.append(toks[j])
                j += 1
            name = t[2:].replace("-", "_")
            value: str | list[str] = vals[0] if len(vals) == 1 else (vals if vals else "")
            if neg and isinstance(value, str):
                value = "!" + value
            if current is None:
                raise ValueError(f"option {t} before any -m/-j in: {line}")
            current.append((name, value))
            neg, i = False, j
            continue
        raise ValueError(f"cannot parse {t!r} in: {line}")
    return r


def _fresh_table(iptc, name: str):
    """A libiptc handle opened in *this* thread's netns.

    python-iptables keeps one ``Table`` per name in a process-wide cache, and libiptc binds
    its socket to the netns current when the handle was opened: reusing a cached handle
    after switching netns would read one netns's table and commit into another (the kernel
    refuses that with EAGAIN, as the entry counts differ). So every netns gets its own
    handle, and it is dropped from the cache when done.
    """
    iptc.Table._cache.pop(name, None)
    return iptc.Table(name, autocommit=False)


def _rule(iptc, p: ParsedRule):
    rule = iptc.Rule()
    for k, v in p.fields.items():
        setattr(rule, k, v)
    for mname, opts in p.matches:
        m = rule.create_match(mname)
        for k, opt in opts:
            setattr(m, k, opt)
    if p.target:
        tg = rule.create_target(p.target[0])
        for k, opt in p.target[1]:
            setattr(tg, k, opt)
    return rule


def restore(ns: str, ipt: Iptables) -> None:
    """Load every table of ``ipt`` into ``ns``: flush, chains, rules, one commit per table."""
    with nsenter.netns(ns):
        # Imported here, not at the top: python-iptables loads libiptc/libxtables through
        # ctypes when imported and raises if they are missing or of another version. Only
        # this optional backend needs them; every other command must work without.
        import iptc

        for tbl in ipt.tables:
            table = _fresh_table(iptc, tbl.name)
            try:
                table.flush()
                for c in tbl.chains:
                    if not table.is_chain(c):
                        table.create_chain(c)
                for line in tbl.rules:
                    p = parse_rule(line)
                    iptc.Chain(table, p.chain).append_rule(_rule(iptc, p))
                table.commit()
            except (ValueError, iptc.IPTCError) as e:
                raise ApplyError(f"{ns}: python-iptables: {tbl.name}: {e}", obj="python-iptables") from None
            finally:
                table.close()
                iptc.Table._cache.pop(tbl.name, None)
