"""``netlab trace``: every netfilter rule and routing decision one new TCP connection meets.

Everything comes from the kernel, nothing from a script of expected steps:

* **Rules.** The connection's source port is chosen first (its socket is bound in the client
  pod's netns before anything else happens). Every lab netns gets a short-lived table
  ``inet nl-trace-<port>`` whose prerouting and output chains (priority -500, before raw, mangle and
  nat) set ``meta nftrace`` on packets from that port only; nf_tables then reports each rule the
  packet matches in that netns (:mod:`netlab.observe.nftrace`). The lab's rules are iptables-nft
  rules: a trace event names the rule by handle, and the rules of an iptables-nft chain are in
  the order ``iptables-save`` prints them, so handle n-th in ``nft -a list chain`` is the n-th
  ``-A`` line of that chain. The table is deleted afterwards in every netns, whatever happened.
* **Routes.** Where a packet left a prerouting hook (or was sent locally), ``ip route get`` is
  asked with the packet's destination, source, input interface and mark as the trace reported
  them; the ip rule is the first one, in priority order (``goto`` followed), whose selectors
  match and whose table is the one the kernel answered from.
* **Order.** A capture of the connection's SYN (:mod:`netlab.observe.capture`) orders the netns
  by when the SYN first reached each; within a netns, events come in the kernel's order.

Only labs whose rules live in nf_tables can be traced: legacy x_tables rules (``--iptables-backend
python-iptables``, or a machine whose ``iptables`` is the legacy variant) never reach nftables
tracing, and their ``TRACE`` target logs only through the root netns's kernel log, which netlab
must not touch; such a lab is refused with that reason.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

from netlab import names
from netlab.apply.iptables import backend_variant, variant
from netlab.errors import LabError, PreflightError
from netlab.lab import lifecycle as lablib
from netlab.linux import nsenter
from netlab.observe import capture as cap
from netlab.observe import nftrace, pcapfiles
from netlab.observe.decode import decode
from netlab.observe.model import RouteDecision, RuleMatch, Trace
from netlab.protocols import iptables_save

TRACE_TABLE = "nl-trace"  # + "-<source port>": concurrent traces of one lab each have their own table


def trace_table(port: int) -> str:
    return f"{TRACE_TABLE}-{port}"
TCP_FLAGS = ((0x02, "SYN"), (0x10, "ACK"), (0x01, "FIN"), (0x04, "RST"), (0x08, "PSH"))


def _run(ns: str, argv: list[str], stdin: str | None = None, check: bool = True) -> str:
    p = subprocess.run(["nsenter", f"--net={nsenter.netns_path(ns)}", *argv], input=stdin, capture_output=True,
                       text=True)
    if check and p.returncode != 0:
        raise LabError(f"{ns}: {' '.join(argv)}: {p.stderr.strip()}")
    return p.stdout


def trace_rules(port: int) -> str:
    """The nft table that marks this connection's packets for tracing (and nothing else)."""
    return (f"table inet {trace_table(port)} {{\n"
            f"  chain pre {{ type filter hook prerouting priority -500; tcp sport {port} meta nftrace set 1; }}\n"
            f"  chain out {{ type filter hook output priority -500; tcp sport {port} meta nftrace set 1; }}\n"
            "}\n")


def _in_all(nss: list[str], argv: list[str], *, stdin: str | None = None, check: bool = True) -> None:
    """Run ``argv`` in every netns at once (one process each), waiting for all."""
    procs = [(ns, subprocess.Popen(["nsenter", f"--net={nsenter.netns_path(ns)}", *argv], stdin=subprocess.PIPE,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)) for ns in nss]
    failed = []
    for ns, p in procs:
        _, errtext = p.communicate(stdin)
        if p.returncode != 0:
            failed.append(f"{ns}: {errtext.strip()}")
    if check and failed:
        raise LabError(f"{' '.join(argv)} failed in {failed[0]}")


def check_backend(record_backend: str) -> None:
    if backend_variant(record_backend) == "legacy" or variant() == "legacy":
        raise PreflightError(
            "this lab's iptables rules are legacy x_tables, which nftables tracing cannot see "
            "(and the TRACE target logs only to the root netns's kernel log)",
            hint="bring the lab up with the default --iptables-backend restore on a machine whose iptables is "
                 "iptables-nft (update-alternatives --set iptables /usr/sbin/iptables-nft)")
    if not any(os.access(os.path.join(d, "nft"), os.X_OK) for d in os.environ.get("PATH", "").split(":")):
        raise PreflightError("nft is not installed", hint="apt-get install nftables")


def rule_texts(ns: str, family: str, table: str) -> dict[int, str]:
    """handle -> ``iptables-save`` line for every rule of an iptables-nft table.

    iptables-nft keeps each chain's rules in the order ``iptables-save`` prints them, so the
    n-th handle of a chain in ``nft -a list table`` is that chain's n-th ``-A`` line.
    """
    if family != "ip":
        return {}
    listing = _run(ns, ["nft", "-a", "list", "table", family, table], check=False)
    handles: dict[str, list[int]] = {}
    chain = None
    for ln in listing.splitlines():
        st = ln.strip()
        if st.startswith("chain "):
            chain = st.split()[1]
            handles[chain] = []
        elif chain and (m := re.search(r"# handle (\d+)$", st)):
            handles[chain].append(int(m.group(1)))
    saved = iptables_save.parse(_run(ns, ["iptables-save", "-t", table], check=False)).get(table)
    lines = {c.name: list(c.rules) for c in saved.chains.values()} if saved else {}
    out: dict[int, str] = {}
    for ch, hs in handles.items():
        if hs and len(hs) == len(lines.get(ch, [])):
            out.update(zip(hs, lines[ch], strict=True))
    return out


def _target(rule: str, verdict: str, target_chain: str | None) -> str:
    m = re.search(r" -j (\S+)", rule)
    if m:
        return m.group(1)
    return target_chain or verdict


@dataclass
class _Packet:
    flags: str = "?"
    events: list[nftrace.TraceEvent] = field(default_factory=list)


def _flags(th: bytes | None) -> str | None:
    if not th or len(th) < 14:
        return None
    return "-".join(name for bit, name in TCP_FLAGS if th[13] & bit) or "none"


def _ips(nh: bytes | None) -> tuple[str, str] | None:
    if not nh or len(nh) < 20:
        return None
    return socket.inet_ntoa(nh[12:16]), socket.inet_ntoa(nh[16:20])


def _ifname(ns_links: dict[int, str], idx: int | None) -> str | None:
    return ns_links.get(idx) if idx else None


def links(ns: str) -> dict[int, str]:
    with nsenter.netns(ns):
        return dict(socket.if_nameindex())


def route_decision(ns: str, dst: str, src: str, iif: str | None, mark: int, packet: str, member: str = "") -> RouteDecision:
    """The kernel's answer for this packet. A packet looped back through ``lo`` (after a REDIRECT
    of a locally sent packet) keeps the route its sender's output lookup gave it (the input path
    does no new lookup for it), so that lookup is what is asked for."""
    lookup_iif = None if iif == "lo" else iif
    argv = ["ip", "route", "get", dst, "from", src] + (["iif", lookup_iif] if lookup_iif else []) + \
        (["mark", hex(mark)] if mark else [])
    got = _run(ns, argv, check=False).strip().splitlines()
    resolved = got[0].strip() if got else "(no route)"
    m = re.search(r"\btable (\S+)", resolved)
    table = m.group(1) if m else ("local" if resolved.startswith("local ") else "main")
    # the table's own entry that matched (``fibmatch``), as ``ip route show table T`` prints it
    entry = _run(ns, argv[:3] + ["fibmatch"] + argv[3:], check=False).strip().splitlines()
    route = re.sub(r"\s+table \S+", "", entry[0]).strip() if entry else resolved
    prio = _rule_priority(ns, table, src=src, dst=dst, iif=lookup_iif, mark=mark)
    return RouteDecision(netns=ns, priority=prio, table=table, route=route, packet=packet, member=member, iif=iif,
                         mark=mark, resolved=resolved)


def _rule_priority(ns: str, table: str, *, src: str, dst: str, iif: str | None, mark: int) -> int:
    try:
        rules = json.loads(_run(ns, ["ip", "-j", "rule", "show"], check=False) or "[]")
    except ValueError:
        return -1
    return matching_rule(rules, table, src=src, dst=dst, iif=iif, mark=mark)


def matching_rule(rules: list[dict], table: str, *, src: str, dst: str, iif: str | None, mark: int) -> int:
    """The first ip rule (priority order, ``goto`` followed) that matches and looks up ``table``.

    ``rules`` as ``ip -j rule show`` prints them; -1 when none does.

    >>> rules = [{"priority": 0, "src": "all", "table": "local"},
    ...          {"priority": 100, "src": "all", "fwmark": "0x200", "fwmask": "0x200", "goto": 32766},
    ...          {"priority": 101, "src": "all", "fwmark": "0x100", "fwmask": "0x100", "table": "101"},
    ...          {"priority": 32766, "src": "all", "table": "main"}]
    >>> matching_rule(rules, "101", src="10.244.2.4", dst="10.96.0.10", iif="veth1", mark=0x100)
    101
    >>> matching_rule(rules, "main", src="10.244.2.4", dst="10.96.0.10", iif="veth1", mark=0x300)
    32766
    """
    skip_below = -1
    for r in sorted(rules, key=lambda r: r.get("priority", 0)):
        prio = r.get("priority", 0)
        if prio < skip_below or not _rule_matches(r, src=src, dst=dst, iif=iif, mark=mark):
            continue
        if "goto" in r:
            skip_below = int(r["goto"])
            continue
        if str(r.get("table")) == table:
            return prio
    return -1


def _in(addr: str, sel: str | None, length: int | None) -> bool:
    if not sel or sel == "all":
        return True
    return ipaddress.ip_address(addr) in ipaddress.ip_network(f"{sel}/{length if length is not None else 32}", strict=False)


def _rule_matches(r: dict, *, src: str, dst: str, iif: str | None, mark: int) -> bool:
    if "fwmark" in r:
        want, mask = int(r["fwmark"], 16), int(r.get("fwmask", "0xffffffff"), 16)
        if mark & mask != want:
            return False
    if r.get("iif") and r["iif"] != iif:
        return False
    return _in(src, r.get("src"), r.get("srclen")) and _in(dst, r.get("dst"), r.get("dstlen"))


BASE_CHAINS = {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"}
OUR_CHAINS = {"pre": "PREROUTING", "out": "OUTPUT"}
FAMILIES = {2: "ip", 10: "ip6", 1: "inet"}


def packets_of(events: list[nftrace.TraceEvent], table: str) -> list[_Packet]:
    """Split one netns's events into packet traversals: each starts at our own nftrace rule."""
    current: dict[int, _Packet] = {}
    out: list[_Packet] = []
    p: _Packet | None
    for e in events:
        if e.table.startswith(TRACE_TABLE):
            if e.table != table:
                continue  # another trace's table
            if e.kind == "rule" and e.handle is not None:
                p = current[e.trace_id] = _Packet(flags=_flags(e.transport_header) or "?")
                out.append(p)
            else:
                continue
        p = current.get(e.trace_id)
        if p is not None:
            p.events.append(e)
    return out


def steps_of(ns: str, member: str, pkt: _Packet, texts: dict[tuple, dict[int, str]]) -> list[RuleMatch | RouteDecision]:
    """One packet traversal's rule matches, with the routing decision where the kernel made it."""
    out: list[RuleMatch | RouteDecision] = []
    ifs = links(ns)
    mark = pkt.events[0].mark if pkt.events else 0
    hook = None
    pre_hdr = pre_iif = None
    ips: tuple[str, str] | None
    routed = False
    for e in pkt.events:
        ours = e.table.startswith(TRACE_TABLE)
        chain_hook = OUR_CHAINS.get(e.chain) if ours else (e.chain if e.chain in BASE_CHAINS else None)
        if chain_hook and chain_hook != hook:
            if hook == "PREROUTING" and not routed and pre_hdr:
                ips = _ips(e.network_header) or pre_hdr
                out.append(route_decision(ns, ips[1], ips[0], _ifname(ifs, pre_iif), mark, pkt.flags, member))
                routed = True
            hook = chain_hook
            if hook == "OUTPUT" and not routed and (ips := _ips(e.network_header)):
                out.append(route_decision(ns, ips[1], ips[0], None, mark, pkt.flags, member))
                routed = True
        if e.network_header and hook == "PREROUTING" and pre_hdr is None:
            pre_hdr, pre_iif = _ips(e.network_header), e.iif
        if not ours and e.kind == "rule" and e.handle is not None:
            fam = FAMILIES.get(e.family, str(e.family))
            key = (fam, e.table)
            if key not in texts:
                texts[key] = rule_texts(ns, fam, e.table)
            rule = texts[key].get(e.handle) or f"nft {fam} {e.table} {e.chain} handle {e.handle}"
            out.append(RuleMatch(netns=ns, table=e.table, chain=e.chain, rule=rule, mark_before=mark, mark_after=e.mark,
                                 verdict=_target(rule, e.verdict, e.target_chain), packet=pkt.flags, member=member))
        mark = e.mark
    if hook == "PREROUTING" and not routed and pre_hdr:
        out.append(route_decision(ns, pre_hdr[1], pre_hdr[0], _ifname(ifs, pre_iif), mark, pkt.flags, member))
    return out


def resolve(host: str, client_ns: str) -> str:
    """An IP, or a name from the lab's hosts file of the client's netns (what its apps resolve)."""
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(host))
    with contextlib.suppress(OSError), open(os.path.join(names.etc_netns_dir(client_ns), "hosts")) as f:
        for ln in f:
            parts = ln.split("#", 1)[0].split()
            if len(parts) >= 2 and host in parts[1:]:
                return parts[0]
    raise LabError(f"cannot resolve {host!r} in {client_ns}", hint="a service or pod name, or an IP")


def netns_order(sightings, port: int) -> list[str]:
    order: list[str] = []
    for s in sightings:
        p = decode(s.data)
        if p is not None and p.syn and p.sport == port and s.netns not in order:
            order.append(s.netns)
    return order


def trace(lab: str, *, source: str, destination: str, timeout: float = 3.0) -> Trace:
    """Open one TCP connection from pod ``source`` to ``destination`` (HOST:PORT) and trace it."""
    rec = lablib.record_of(lab)
    check_backend(rec.iptables_backend)
    if source not in rec.pods:
        raise LabError(f"lab {lab}: no pod named {source!r}", hint=", ".join(sorted(rec.pods)))
    host, _, port_s = destination.rpartition(":")
    if not host or not port_s.isdigit():
        raise LabError(f"--to {destination!r}: expected HOST:PORT")
    client_ns = rec.members[source]
    dst_ip = resolve(host, client_ns)
    members = {ns: m for m, ns in rec.members.items()}
    nss = sorted(members)
    with nsenter.netns(client_ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    installed: list[str] = []
    listeners: dict[str, socket.socket] = {}
    connected = False
    with tempfile.TemporaryDirectory(prefix="nl-trace-") as tmp:
        try:
            sock.bind(("0.0.0.0", 0))
            sport = sock.getsockname()[1]
            ifaces = cap.lab_interfaces(rec.members)
            capture = cap.Capture(ifaces, tmp, bpf_filter=f"tcp port {sport} or udp port 6081")
            for ns in nss:
                listeners[ns] = nftrace.open_listener(ns)
            installed.extend(nss)
            _in_all(nss, ["nft", "-f", "-"], stdin=trace_rules(sport))
            capture.start()
            try:
                sock.settimeout(timeout)
                connected = sock.connect_ex((dst_ip, int(port_s))) == 0
                sock.close()
            finally:
                capture.stop()
            time.sleep(0.05)
            events = {ns: nftrace.read_all(s, ns) for ns, s in listeners.items()}
        finally:
            sock.close()
            for s in listeners.values():
                s.close()
            _in_all(installed, ["nft", "delete", "table", "inet", trace_table(sport)], check=False)
        order = netns_order(pcapfiles.read_merged(capture.merged), sport)
    order += [ns for ns in nss if ns not in order and events.get(ns)]
    texts: dict[str, dict[tuple, dict[int, str]]] = {}
    groups: dict[str, list[RuleMatch | RouteDecision]] = {}
    for ns in order:
        seen: set[str] = set()
        for pkt in packets_of(events.get(ns, []), trace_table(sport)):
            first = pkt.flags not in seen
            if pkt.flags != "SYN" and not first:
                continue  # later packets of the same kind took the same way
            seen.add(pkt.flags)
            groups.setdefault(pkt.flags, []).extend(steps_of(ns, members[ns], pkt, texts.setdefault(ns, {})))
    steps = [s for flags in sorted(groups, key=lambda f: f != "SYN") for s in groups[flags]]
    return Trace(lab=lab, source=source, destination=f"{dst_ip}:{port_s}" if dst_ip != host else destination,
                 steps=tuple(steps), sport=sport, connected=connected, netns_order=tuple(order))
