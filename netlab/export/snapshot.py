"""A real cluster's kernel objects, request latency and ztunnel access log, as a netlab ``report.json``.

This module is deliberately self-contained (Python standard library only, no netlab import):
``netlab export observe`` copies it verbatim next to ``observe.sh`` as ``netlab_snapshot.py``,
so the machine that runs the cluster needs nothing but ``python3`` to turn what the script
collected into a ``report.json`` that ``netlab report --compare LAB/report.json
observed/report.json`` reads next to a lab's.

Output shape: ``netlab report``'s ``Report`` (schema version :data:`SCHEMA_VERSION`) with one
design run, whose fields mean here:

* ``objects``: one entry per network namespace, counted as ``netlab show`` counts a lab's:
  ``member`` (a node name, ``ztunnel-<node>`` or a pod name, as netlab names lab members),
  ``netns`` (where it was read: the kind node, or ``node/namespace/pod``), ``role``, ``node``,
  ``ip_rules``, ``routes`` (table → routes of ``ip route show table all``, the kernel's
  local/broadcast entries left out as ``netlab show`` leaves them out), ``ipset_members``
  (set → members), ``iptables`` (table → chain → rules, chains with rules only), ``links``,
  ``listeners`` (TCP listening sockets with the process ``ss`` names) and ``lines`` (the objects
  themselves, for reading and diffs).
* ``latency``: the lab's request, sent ``requests`` times from the client pod with curl, one
  connection each, one after another (curl's own ``time_total``).
* what a real cluster run cannot give netlab's way (pcaps, hop path, rule trace, enrollment
  diff, bulk throughput) is ``null``/empty, and said in ``notes``.

ztunnel's access log has no place in the report schema: its connection-complete events are
written next to it as ``access-log.json`` (a list of :class:`AccessLogEntry`).

Raw layout read by :func:`collect` (what ``observe.sh`` writes)::

    raw/<role>/<member>/node           the topology node this netns lives on
    raw/<role>/<member>/netns          where it was read
    raw/<role>/<member>/<section>.txt  ip-rule, routes, ipset, iptables, links, listen
    raw/logs/<ztunnel member>.log      the ztunnel pod's log
    raw/latency.txt                    curl -w '%{time_total} %{http_code} %{size_download}' per request
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field

SCHEMA_VERSION = 1  # netlab report's report.json schema this writes
ROLES = ("node", "ztunnel", "pod")
#: ztunnel's end-of-connection messages: 1.22+ ``connection complete`` (target ``access``); up to
#: 1.21 ``complete`` (outbound) and ``connection complete`` (inbound plaintext)
COMPLETE = ("connection complete", "complete")
_KV = re.compile(r'([\w.]+)=("(?:[^"\\]|\\.)*"|\S+)')
# tracing's default layout: time, level, optional spans ``name{fields}:``, target, message and fields
_TRACING = re.compile(r"^(\S+)\s+(TRACE|DEBUG|INFO|WARN|ERROR)\s+(?:.*\}: )?([\w:]+): (.*)$")
_LINK = re.compile(r"^\d+: ([^:@]+)(?:@[^:]+)?: ")
_SS = re.compile(r'^LISTEN\s+\d+\s+\d+\s+(\S+):(\d+)\s+\S+(?:\s+users:\(\("([^"]*)",pid=(\d+))?')


@dataclass(frozen=True)
class Listener:
    address: str
    port: int
    owner: str  # the process name ss gives ("?" when it gives none)
    pid: int | None


@dataclass(frozen=True)
class NetnsObjects:
    member: str
    netns: str
    role: str  # node | ztunnel | pod
    node: str | None
    ip_rules: int
    routes: dict[str, int]
    ipset_members: dict[str, int]
    iptables: dict[str, dict[str, int]]
    links: list[str]
    listeners: list[Listener]
    lines: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Latency:
    url: str
    requests: int
    ok: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    requests_per_s: float
    response_bytes: int


@dataclass(frozen=True)
class Phase:
    name: str
    seconds: float


@dataclass(frozen=True)
class Scenario:
    topology: str
    client: str
    url: str
    requests: int
    bulk_mib: int


@dataclass(frozen=True)
class DesignRun:
    """One design run of netlab report's ``Report``; what a cluster cannot give is None / empty."""

    design: str
    lab: str
    istio_version: str | None
    encap: str | None
    phases: list[Phase]
    latency: Latency
    objects: list[NetnsObjects]
    notes: list[str]
    bulk: None = None
    ratios: None = None
    path: None = None
    trace: None = None
    enrollment: None = None
    pcaps: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Report:
    netlab_version: str
    created: str
    host: str
    scenario: Scenario
    designs: list[DesignRun]
    seconds: float
    schema_version: int = SCHEMA_VERSION


@dataclass(frozen=True)
class AccessLogEntry:
    ztunnel: str
    time: str
    level: str
    message: str
    fields: dict[str, str]


# -- parsers: one per command, each over the command's plain text output -----------------------


def _nonblank(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def parse_ip_rule(text: str) -> list[str]:
    """``ip rule`` lines, whitespace normalised (``0:\\tfrom all lookup local`` → ``0: from all lookup local``)."""
    return [" ".join(ln.split()) for ln in _nonblank(text)]


def parse_routes(text: str) -> dict[str, list[str]]:
    """``ip route show table all`` → {table: routes}; the kernel's local and broadcast entries are
    left out, as ``netlab show`` leaves them out of a lab's routes.

    >>> parse_routes("default via 172.18.0.1 dev eth0\\n10.244.1.7 via 192.168.126.2 dev istioin table 100"
    ...              " src 10.244.1.1\\nlocal 10.244.1.1 dev veth1 table local proto kernel scope host\\n")
    {'main': ['default via 172.18.0.1 dev eth0'], '100': ['10.244.1.7 via 192.168.126.2 dev istioin table 100 src 10.244.1.1']}
    """
    out: dict[str, list[str]] = {}
    for ln in _nonblank(text):
        if ln.startswith(("broadcast ", "multicast ", "fe80::", "anycast ")) or "table local" in ln:
            continue
        m = re.search(r"\btable (\S+)", ln)
        out.setdefault(m.group(1) if m else "main", []).append(" ".join(ln.split()))
    return out


def parse_ipset(text: str) -> dict[str, list[str]]:
    """``ipset list`` → {set: member lines} (a member line keeps its comment, e.g. the pod UID)."""
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
            sets[name].append(ln.strip())
    return sets


def parse_iptables_save(text: str) -> dict[str, dict[str, list[str]]]:
    """``iptables-save`` → {table: {chain: ["-A chain ..." in order]}}; chains without rules left out."""
    tables: dict[str, dict[str, list[str]]] = {}
    table = None
    for ln in _nonblank(text):
        if ln.startswith("*"):
            table = ln[1:].strip()
        elif ln.startswith("-A ") and table is not None:
            tables.setdefault(table, {}).setdefault(ln.split()[1], []).append(ln)
    return tables


def parse_links(text: str) -> list[str]:
    """Link names from ``ip -d link show`` (``@peer`` suffixes dropped)."""
    return [m.group(1) for m in map(_LINK.match, text.splitlines()) if m]


def parse_ss_listen(text: str) -> list[Listener]:
    """TCP listeners from ``ss -Hltnp`` (a header line, if any, does not match and is skipped)."""
    out = []
    for ln in _nonblank(text):
        m = _SS.match(ln)
        if m:
            out.append(Listener(address=m.group(1).strip("[]"), port=int(m.group(2)), owner=m.group(3) or "?",
                                pid=int(m.group(4)) if m.group(4) else None))
    return sorted(set(out), key=lambda x: (x.port, x.address, x.owner))


def parse_access_log(ztunnel: str, text: str) -> list[AccessLogEntry]:
    """ztunnel's connection-complete events, in both of its log layouts.

    1.22+ plain format: ``<time>\\t<level>\\taccess\\tconnection complete\\tk=v ...``; before that
    tracing's default layout ``<time>  INFO <spans>: <module>: <message> k=v ...``. Values lose
    their Debug quotes.
    """
    out = []
    for ln in text.splitlines():
        cols = ln.split("\t")
        if len(cols) >= 5 and cols[2] == "access":
            when, level, message, rest = cols[0], cols[1].lower(), cols[3], "\t".join(cols[4:])
        else:
            m = _TRACING.match(ln.strip())
            if not m:
                continue
            when, level, body = m.group(1), m.group(2).lower(), m.group(4)
            first = _KV.search(body)
            message = (body[:first.start()] if first else body).strip()
            rest = body[first.start():] if first else ""
        if message not in COMPLETE:
            continue
        fields = {k: (v[1:-1].replace('\\"', '"') if v.startswith('"') else v) for k, v in _KV.findall(rest)}
        out.append(AccessLogEntry(ztunnel=ztunnel, time=when, level=level, message=message, fields=fields))
    return out


def parse_latency(url: str, text: str) -> Latency:
    """curl's ``%{time_total} %{http_code} %{size_download}`` lines → the report's latency figures.

    >>> parse_latency("http://x/", "0.010 200 5\\n0.030 200 5\\n0.020 503 0\\n")
    Latency(url='http://x/', requests=3, ok=2, p50_ms=20.0, p99_ms=30.0, mean_ms=20.0, requests_per_s=50.0, response_bytes=0)
    """
    rows = [ln.split() for ln in _nonblank(text)]
    rows = [r for r in rows if len(r) == 3 and r[1].isdigit()]
    times = sorted(float(r[0]) * 1000 for r in rows)
    if not times:
        return Latency(url=url, requests=0, ok=0, p50_ms=0.0, p99_ms=0.0, mean_ms=0.0, requests_per_s=0.0,
                       response_bytes=0)

    def pct(p: float) -> float:  # nearest-rank percentile
        return round(times[max(0, math.ceil(p * len(times)) - 1)], 3)

    total_s = sum(times) / 1000
    return Latency(url=url, requests=len(rows), ok=sum(1 for r in rows if r[1].startswith("2")),
                   p50_ms=pct(0.5), p99_ms=pct(0.99), mean_ms=round(statistics.fmean(times), 3),
                   requests_per_s=round(len(rows) / total_s, 2) if total_s else 0.0,
                   response_bytes=int(float(rows[-1][2])))


def netns_objects(member: str, netns: str, role: str, node: str | None, sections: dict[str, str]) -> NetnsObjects:
    """One netns from command outputs keyed like the raw files (``ip-rule``, ``routes``, ``ipset``,
    ``iptables``, ``links``, ``listen``); a missing one counts as empty."""
    rules = parse_ip_rule(sections.get("ip-rule", ""))
    routes = parse_routes(sections.get("routes", ""))
    ipsets = parse_ipset(sections.get("ipset", ""))
    ipt = parse_iptables_save(sections.get("iptables", ""))
    links = parse_links(sections.get("links", ""))
    listeners = parse_ss_listen(sections.get("listen", ""))
    lines = {"rules": rules, "routes": [r for t in sorted(routes) for r in routes[t]],
             "ipset": [f"{s} {m}" for s in sorted(ipsets) for m in ipsets[s]],
             "iptables": [f"{t} {r}" for t in sorted(ipt) for c in sorted(ipt[t]) for r in ipt[t][c]],
             "links": links, "listeners": [f"{x.address}:{x.port} {x.owner}" for x in listeners]}
    return NetnsObjects(member=member, netns=netns, role=role, node=node, ip_rules=len(rules),
                        routes={t: len(v) for t, v in sorted(routes.items())},
                        ipset_members={s: len(v) for s, v in sorted(ipsets.items())},
                        iptables={t: {c: len(r) for c, r in sorted(ch.items())} for t, ch in sorted(ipt.items())},
                        links=links, listeners=listeners, lines=lines)


def _read(path: str, default: str = "") -> str:
    if not os.path.exists(path):
        return default
    with open(path, encoding="utf-8", errors="replace") as fh:
        return fh.read()


def collect(raw: str) -> tuple[list[NetnsObjects], list[AccessLogEntry]]:
    """Read the raw directory ``observe.sh`` wrote (layout in the module docstring)."""
    objs = []
    for role in ROLES:
        base = os.path.join(raw, role)
        for member in sorted(os.listdir(base)) if os.path.isdir(base) else []:
            d = os.path.join(base, member)
            sections = {f[:-4]: _read(os.path.join(d, f)) for f in sorted(os.listdir(d)) if f.endswith(".txt")}
            objs.append(netns_objects(member, _read(os.path.join(d, "netns"), member).strip(), role,
                                      _read(os.path.join(d, "node"), member).strip() or None, sections))
    logs: list[AccessLogEntry] = []
    logdir = os.path.join(raw, "logs")
    for f in sorted(os.listdir(logdir)) if os.path.isdir(logdir) else []:
        if f.endswith(".log"):
            logs += parse_access_log(f[:-4], _read(os.path.join(logdir, f)))
    return objs, logs


def report(*, raw: str, cluster: str, topology: str, istio_version: str, design: str, client: str, url: str,
           netlab_version: str, host: str, seconds: float) -> tuple[Report, list[AccessLogEntry]]:
    """The report of one observed cluster, and the access-log entries that go beside it."""
    objs, logs = collect(raw)
    latency = parse_latency(url, _read(os.path.join(raw, "latency.txt")))
    notes = [f"a real cluster: kind cluster {cluster!r}, read by observe.sh (netlab export observe)",
             f"ztunnel access log: {len(logs)} connection-complete entries, in access-log.json",
             "not measured on a real cluster this way: pcaps, hop path, rule trace, enrollment diff, bulk throughput"]
    run = DesignRun(design=design, lab=cluster, istio_version=istio_version,
                    encap="geneve" if design == "node-routing" else None,
                    phases=[Phase("observe", seconds)], latency=latency, objects=objs, notes=notes)
    return Report(netlab_version=netlab_version, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  host=host, scenario=Scenario(topology=topology, client=client, url=url,
                                               requests=latency.requests, bulk_mib=0),
                  designs=[run], seconds=seconds), logs


def _write_json(path: str, doc: object) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Turn observe.sh's raw captures into a netlab report.json.")
    ap.add_argument("raw", help="the raw/ directory observe.sh wrote")
    ap.add_argument("-o", "--output", required=True, help="report.json to write (access-log.json goes beside it)")
    for opt in ("cluster", "topology", "istio-version", "client", "url", "netlab-version", "host"):
        ap.add_argument(f"--{opt}", required=True)
    ap.add_argument("--design", required=True, choices=("node-routing", "inpod", "none"))
    ap.add_argument("--seconds", type=float, default=0.0, help="how long the collection took")
    a = ap.parse_args(argv)
    doc, logs = report(raw=a.raw, cluster=a.cluster, topology=a.topology, istio_version=a.istio_version,
                       design=a.design, client=a.client, url=a.url, netlab_version=a.netlab_version, host=a.host,
                       seconds=a.seconds)
    _write_json(a.output, asdict(doc))
    _write_json(os.path.join(os.path.dirname(os.path.abspath(a.output)), "access-log.json"),
                [asdict(e) for e in logs])
    print(f"{a.output}: {len(doc.designs[0].objects)} network namespaces, {doc.scenario.requests} requests, "
          f"{len(logs)} access-log entries", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
