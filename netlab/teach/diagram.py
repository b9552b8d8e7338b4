"""A text diagram of a live lab's redirection, read from its kernel: one per design.

``python3 -m netlab.teach.diagram LAB`` prints it; docs/concepts.md holds the diagrams of a
bookinfo lab in each design, and a kernel test checks they are what a live lab draws.
Only stable facts are drawn (addresses, rules, routes, ports, marks), never generated names.
"""

from __future__ import annotations

import sys

from netlab.lab import lifecycle as lablib
from netlab.teach import probe


def _addr(lab: str, target: str, dev: str) -> str:
    f = probe.run(lab, target, ["ip", "-o", "-4", "addr", "show", "dev", dev]).split()
    return f[f.index("inet") + 1] if "inet" in f else "(missing)"


def _veth(route: str) -> str:
    """A route with its generated veth name replaced (names are hashes of the lab's name)."""
    return " ".join("<ztunnel veth>" if w.startswith("veth") else w for w in route.split())


def _node_routing(lab: str, node: str, rec) -> list[str]:
    zt = f"ztunnel-{node}"
    rules = probe.ip_rules(lab, node)
    zrules = probe.ip_rules(lab, zt)
    members = probe.ipset_members(lab, node, "ztunnel-pods-ips")
    tproxy = [r for _, r in probe.iptables_rules(lab, zt, "mangle") if "TPROXY" in r]
    pods = sorted((v["ip"], p) for p, v in rec.pods.items() if v["node"] == node)
    out = [f"node {node}  (eth0 {_addr(lab, node, 'eth0')})"]
    out += [f"|  pod {p:<15} {ip:<12} {'in ipset ztunnel-pods-ips' if ip in members else 'not enrolled'}"
            for ip, p in pods]
    out += [f"|  ip rule {prio}: {rules[prio]}" for prio in (100, 101, 102, 103) if prio in rules]
    for t in ("101", "102", "100"):
        out += [f"|  table {t}: {_veth(r)}" for r in probe.routes(lab, node, t)]
    out += [f"|  istioin  {_addr(lab, node, 'istioin')} ==Geneve VNI 1000, UDP 6081==> pistioin  "
            f"{_addr(lab, zt, 'pistioin')}",
            f"|  istioout {_addr(lab, node, 'istioout')} ==Geneve VNI 1001, UDP 6081==> pistioout "
            f"{_addr(lab, zt, 'pistioout')}",
            f"+- pod {zt} (eth0 {_addr(lab, zt, 'eth0')})"]
    out += [f"   |  {r.replace('-A PREROUTING ', '')}" for r in tproxy]
    out += [f"   |  ip rule {p}: {zrules[p]}" for p in (20000, 20003) if p in zrules]
    out += [f"   |  table 100: {r}" for r in probe.routes(lab, zt, "100")]
    return out


def _inpod(lab: str, node: str, rec) -> list[str]:
    zt = f"ztunnel-{node}"
    procs = probe.processes(lab)
    pid = (procs.get(f"ztunnel/{node}") or {}).get("pid")
    held = probe.netns_fds(pid) if pid else set()
    probes = probe.ipset_members(lab, node, "istio-inpod-probes") or probe.ipset_members(lab, node,
                                                                                          "istio-inpod-probes-v4")
    snat = [r for _, r in probe.iptables_rules(lab, node, "nat") if "-A ISTIO_POSTRT" in r]
    out = [f"node {node}  (eth0 {_addr(lab, node, 'eth0')})",
           f"|  ipset istio-inpod-probes: {len(probes)} pod IPs"]
    out += [f"|  {r}" for r in snat]
    out += [f"|  cni-agent/{node} --ZDS (SOCK_SEQPACKET, AddWorkload + netns fd)--> ztunnel/{node}",
            f"+- pod {zt} (eth0 {_addr(lab, zt, 'eth0')}): the ztunnel process, listening inside each pod below"]
    for ip, p in sorted((v["ip"], p) for p, v in rec.pods.items() if v["node"] == node):
        ports = sorted(lst.port for lst in probe.listeners(lab, p) if lst.pid == pid and lst.fwmark == 0x539)
        rule = probe.ip_rules(lab, p).get(32764, "")
        chains = sorted({r.split()[1] for t in ("mangle", "nat") for _, r in probe.iptables_rules(lab, p, t)
                         if "ISTIO_" in r.split()[1]})
        fd = "netns fd held by ztunnel" if probe.netns_inode(lab, p) in held else "no fd in ztunnel"
        if ports:
            out.append(f"   +- pod {p:<15} {ip:<12} ztunnel listens on {','.join(map(str, ports))} (mark 0x539); "
                       f"{fd}")
            out.append(f"   |    {', '.join(chains)}; ip rule 32764: {rule}")
        else:
            out.append(f"   +- pod {p:<15} {ip:<12} not enrolled")
    return out


def render(lab: str) -> str:
    rec = lablib.record_of(lab)
    nodes = sorted(n for n, role in rec.roles.items() if role == "node")
    draw = _node_routing if rec.mode == "node-routing" else _inpod
    lines = [f"{rec.topology.rsplit('/', 1)[-1].removesuffix('.yaml')}, {rec.mode} (Istio {rec.istio_version})"]
    for node in nodes:
        lines += ["", *draw(lab, node, rec)]
    lines += ["", "nodes joined by the underlay bridge 172.18.0.0/16; pod CIDRs routed via the nodes"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render(sys.argv[1]))
