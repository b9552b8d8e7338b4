"""Kernel objects and ztunnel access logs of one run, in the JSON shape ``netlab report`` reads.

This module is deliberately self-contained (Python standard library only, no netlab import):
``netlab export observe`` copies it verbatim next to ``observe.sh`` as ``netlab_snapshot.py``,
so the machine that runs the real cluster needs nothing but ``python3`` to turn what the script
collected into ``report.json``. The same functions parse the same commands' output from a lab
(``netlab show``), so both sides of ``netlab report --compare`` come out of one parser.

Shape (``schema`` ``netlab.report``, ``schema_version`` 1)::

    {"schema": "netlab.report", "schema_version": 1,
     "source": {"kind": "cluster" | "lab", "name": ..., "tool": ..., "istio_version": ..., "design": ...},
     "runs": [{"design": "node-routing" | "inpod" | "none", "istio_version": "1.20",
               "kernel_objects": [KernelObjects...], "access_log": [AccessLogEntry...]}]}

``KernelObjects`` is one network namespace seen the way a student sees it: ``target`` (a node
name, ``ztunnel-<node>`` or a pod name, as netlab names lab members), ``role``, ``node``,
``ip_rules`` (``ip rule`` lines), ``routes`` (table → ``ip route show table T`` lines),
``ipsets`` (set → member addresses), ``iptables`` (table → chain → ``-A`` lines of
``iptables-save``; every declared chain is present, even empty), ``listeners`` (TCP listening
sockets: address, port, owning process) and ``counts`` (the same, counted).

Raw layout read by :func:`collect` (what ``observe.sh`` writes)::

    raw/<role>/<target>/node            the node this namespace lives on
    raw/<role>/<target>/ip-rule.txt     ip rule
    raw/<role>/<target>/route-<T>.txt   ip route show table T
    raw/<role>/<target>/ipset.txt       ipset list
    raw/<role>/<target>/iptables.txt    iptables-save
    raw/<role>/<target>/listen.txt      ss -ltnp
    raw/logs/<ztunnel target>.log       the ztunnel pod's log
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import asdict, dataclass, field

SCHEMA = "netlab.report"
SCHEMA_VERSION = 1
ROLES = ("node", "ztunnel", "pod")
#: ztunnel's end-of-connection messages: 1.22+ ``connection complete`` (target ``access``); up to
#: 1.21 ``complete`` (outbound) and ``connection complete`` (inbound plaintext)
COMPLETE = ("connection complete", "complete")
_KV = re.compile(r'([\w.]+)=("(?:[^"\\]|\\.)*"|\S+)')
# tracing's default layout: time, level, optional spans ``name{fields}:``, target, message and fields
_TRACING = re.compile(r"^(\S+)\s+(TRACE|DEBUG|INFO|WARN|ERROR)\s+(?:.*\}: )?([\w:]+): (.*)$")


@dataclass(frozen=True)
class Listener:
    address: str
    port: int
    process: str  # "" when ss could not name it


@dataclass(frozen=True)
class KernelObjects:
    target: str
    role: str  # node | ztunnel | pod
    node: str
    ip_rules: list[str] = field(default_factory=list)
    routes: dict[str, list[str]] = field(default_factory=dict)
    ipsets: dict[str, list[str]] = field(default_factory=dict)
    iptables: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    listeners: list[Listener] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return {"ip_rules": len(self.ip_rules),
                "routes": sum(len(v) for v in self.routes.values()),
                "ipset_members": sum(len(v) for v in self.ipsets.values()),
                "iptables_rules": sum(len(r) for chains in self.iptables.values() for r in chains.values()),
                "listeners": len(self.listeners)}

    def to_json(self) -> dict:
        d = asdict(self)
        d["counts"] = self.counts
        return d


@dataclass(frozen=True)
class AccessLogEntry:
    ztunnel: str
    time: str
    level: str
    message: str
    fields: dict[str, str]


@dataclass(frozen=True)
class Run:
    design: str
    istio_version: str
    kernel_objects: list[KernelObjects]
    access_log: list[AccessLogEntry]


@dataclass(frozen=True)
class Source:
    kind: str  # "cluster" (observe.sh on a real cluster) or "lab"
    name: str
    tool: str
    istio_version: str
    design: str


def report_json(source: Source, runs: list[Run]) -> dict:
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "source": asdict(source),
            "runs": [{"design": r.design, "istio_version": r.istio_version,
                      "kernel_objects": [k.to_json() for k in r.kernel_objects],
                      "access_log": [asdict(e) for e in r.access_log]} for r in runs]}


# -- parsers: one per command, each taking the command's plain text output ------------------


def _lines(text: str) -> list[str]:
    return [ln.rstrip() for ln in text.splitlines() if ln.strip()]


def parse_ip_rule(text: str) -> list[str]:
    """``ip rule`` lines, whitespace normalised (``0:\\tfrom all lookup local`` → ``0: from all lookup local``)."""
    return [" ".join(ln.split()) for ln in _lines(text)]


def parse_routes(text: str) -> list[str]:
    return [" ".join(ln.split()) for ln in _lines(text)]


def parse_ipset(text: str) -> dict[str, list[str]]:
    """``ipset list`` → {set: [member address]} (comments and timeouts after the address dropped)."""
    sets: dict[str, list[str]] = {}
    name, in_members = None, False
    for ln in text.splitlines():
        if ln.startswith("Name: "):
            name, in_members = ln[len("Name: "):].strip(), False
            sets[name] = []
        elif ln.startswith("Members:"):
            in_members = True
        elif not ln.strip():
            in_members = False
        elif in_members and name is not None:
            sets[name].append(ln.split()[0])
    return sets


def parse_iptables_save(text: str) -> dict[str, dict[str, list[str]]]:
    """``iptables-save`` → {table: {chain: ["-A chain ..." lines in order]}}; declared chains kept even empty."""
    tables: dict[str, dict[str, list[str]]] = {}
    table = None
    for ln in _lines(text):
        if ln.startswith("*"):
            table = ln[1:].strip()
            tables.setdefault(table, {})
        elif table is None or ln.startswith("#") or ln == "COMMIT":
            continue
        elif ln.startswith(":"):
            tables[table].setdefault(ln[1:].split()[0], [])
        elif ln.startswith("-A "):
            tables[table].setdefault(ln.split()[1], []).append(ln)
    return tables


def parse_ss_listen(text: str) -> list[Listener]:
    """``ss -ltnp`` → listeners; the header line, if any, is skipped."""
    out = []
    for ln in _lines(text):
        cols = ln.split()
        if cols[0] in ("State", "Netid") or len(cols) < 4:
            continue
        if cols[0] in ("tcp", "udp"):  # ss -a style with a Netid column
            cols = cols[1:]
        addr, _, port = cols[3].rpartition(":")
        m = re.search(r'users:\(\("([^"]+)"', ln)
        if port.isdigit():
            out.append(Listener(address=addr.strip("[]"), port=int(port), process=m.group(1) if m else ""))
    return sorted(set(out), key=lambda x: (x.port, x.address, x.process))


def parse_access_log(ztunnel: str, text: str) -> list[AccessLogEntry]:
    """ztunnel's connection-complete events, in both of its log layouts.

    1.22+ plain format: ``<time>\\t<level>\\taccess\\tconnection complete\\tk=v ...``; before that
    tracing's default layout ``<time>  INFO <module>: <message> k=v ...``. Values keep their
    meaning, with the Debug quotes removed.
    """
    out = []
    for ln in text.splitlines():
        cols = ln.split("\t")
        if len(cols) >= 5 and cols[2] == "access":
            time, level, message, rest = cols[0], cols[1].lower(), cols[3], "\t".join(cols[4:])
        else:
            m = _TRACING.match(ln.strip())
            if not m:
                continue
            time, level, body = m.group(1), m.group(2).lower(), m.group(4)
            first = _KV.search(body)
            message = (body[:first.start()] if first else body).strip()
            rest = body[first.start():] if first else ""
        if message not in COMPLETE:
            continue
        fields = {k: (v[1:-1].replace('\\"', '"') if v.startswith('"') else v) for k, v in _KV.findall(rest)}
        out.append(AccessLogEntry(ztunnel=ztunnel, time=time, level=level, message=message, fields=fields))
    return out


def kernel_objects(target: str, role: str, node: str, sections: dict[str, str]) -> KernelObjects:
    """Build one namespace's objects from command outputs keyed like the raw files
    (``ip-rule``, ``route-<table>``, ``ipset``, ``iptables``, ``listen``); absent ones stay empty."""
    routes = {k[len("route-"):]: parse_routes(v) for k, v in sorted(sections.items()) if k.startswith("route-")}
    return KernelObjects(target=target, role=role, node=node,
                         ip_rules=parse_ip_rule(sections.get("ip-rule", "")), routes=routes,
                         ipsets=parse_ipset(sections.get("ipset", "")),
                         iptables=parse_iptables_save(sections.get("iptables", "")),
                         listeners=parse_ss_listen(sections.get("listen", "")))


def collect(raw: str) -> tuple[list[KernelObjects], list[AccessLogEntry]]:
    """Read the raw directory ``observe.sh`` wrote (layout in the module docstring)."""
    objs = []
    for role in ROLES:
        base = os.path.join(raw, role)
        if not os.path.isdir(base):
            continue
        for target in sorted(os.listdir(base)):
            d = os.path.join(base, target)
            sections = {}
            for f in sorted(os.listdir(d)):
                if f.endswith(".txt"):
                    with open(os.path.join(d, f), encoding="utf-8", errors="replace") as fh:
                        sections[f[:-4]] = fh.read()
            node = target
            if os.path.exists(os.path.join(d, "node")):
                with open(os.path.join(d, "node"), encoding="utf-8") as fh:
                    node = fh.read().strip()
            objs.append(kernel_objects(target, role, node, sections))
    logs = []
    logdir = os.path.join(raw, "logs")
    if os.path.isdir(logdir):
        for f in sorted(os.listdir(logdir)):
            if f.endswith(".log"):
                with open(os.path.join(logdir, f), encoding="utf-8", errors="replace") as fh:
                    logs += parse_access_log(f[:-4], fh.read())
    return objs, logs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Turn observe.sh's raw captures into netlab's report.json.")
    ap.add_argument("raw", help="the raw/ directory observe.sh wrote")
    ap.add_argument("--name", required=True, help="cluster name")
    ap.add_argument("--istio-version", required=True)
    ap.add_argument("--design", required=True, choices=("node-routing", "inpod", "none"))
    ap.add_argument("-o", "--output", required=True)
    a = ap.parse_args(argv)
    objs, logs = collect(a.raw)
    src = Source(kind="cluster", name=a.name, tool="netlab export observe", istio_version=a.istio_version,
                 design=a.design)
    doc = report_json(src, [Run(design=a.design, istio_version=a.istio_version, kernel_objects=objs,
                                access_log=logs)])
    with open(a.output, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1, sort_keys=True)
        fh.write("\n")
    print(f"{a.output}: {len(objs)} namespaces, {len(logs)} access-log entries", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
