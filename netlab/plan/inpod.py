"""Istio's in-pod redirection (Istio 1.21+), rule for rule, per Istio version.

In this design nothing steers pod traffic on the node: the istio-cni node agent writes the
redirection into each ambient pod's own netns (``CreateInpodRules``: a ``local`` route in
table 100, ip rule 32764, then ``iptables-restore --noflush``), adds the pod IP to the
node's probe ipset, and hands the pod's netns fd to ztunnel over ZDS. Values and order
follow ``istio/istio@<tag>/cni/pkg/iptables/iptables.go`` and its ``testdata/*.golden``.

Rules are written the way ``iptables-save`` prints them (``169.254.7.127/32``,
``--on-ip 0.0.0.0``, ``--to-ports``, ``-m tcp`` before ``--dport``, ``-i`` before ``-p``),
so the text the agent restores is byte for byte what a student then reads with
``netlab show LAB <pod> iptables``. Istio writes the user chains with ``-N`` and appends
its jumps with ``-A``, in one ``--noflush`` transaction per family; so does netlab.

Versions: ``1.21``/``1.22`` capture inbound with mangle TPROXY (as 1.21.0-1.23.0 do);
``1.23`` means 1.23.1+ (nat REDIRECT inbound, probe set renamed ``istio-inpod-probes-v4``);
``1.24`` adds the raw-table DNS conntrack-zone rules. DNS capture is off by default in
netlab (``dns=True`` adds Istio's DNS rules of that version).

``up`` does not apply any of this: the CNI agent (``netlab.runtime.cniagent``) does, at
enrollment, with :func:`pod_objects` and :func:`host_objects`. The plan only *shows* it,
in each netns's "applied by the CNI agent" section.

>>> routes, rules, text = pod_objects("nl-demo.a", "1.22")
>>> routes[0].render(), rules[0].render()
('route add local 0.0.0.0/0 dev lo table 100', 'rule add pref 32764 fwmark 0x111/0xfff lookup 100')
>>> [ln for ln in text.splitlines() if "15006" in ln]  # doctest: +NORMALIZE_WHITESPACE
['-A ISTIO_PRERT ! -d 127.0.0.1/32 -p tcp -m mark ! --mark 0x539/0xfff -j TPROXY --on-port 15006
  --on-ip 0.0.0.0 --tproxy-mark 0x111/0xfff']
"""

from __future__ import annotations

from dataclasses import replace

from netlab import names
from netlab.plan.objects import IpsetEntry, IpsetSet, NetnsPlan, Process, Route, Rule
from netlab.plan.registry import pod_uid
from netlab.protocols import iptables_save
from netlab.topology.model import Topology

VERSIONS = ("1.21", "1.22", "1.23", "1.24")
INPOD_MARK = 0x539  # 1337: ztunnel's SO_MARK
INPOD_TPROXY_MARK = 0x111
INPOD_MASK = 0xFFF
RESTORE_MASK = 0xFFFFFFFF
ROUTE_TABLE_INBOUND = 100
RULE_PRIORITY = 32764
PROBE_SNAT_IP = "169.254.7.127"
PORT_OUTBOUND, PORT_INBOUND, PORT_HBONE, PORT_DNS = 15001, 15006, 15008, 15053
PRERT, OUTPUT, POSTRT = "ISTIO_PRERT", "ISTIO_OUTPUT", "ISTIO_POSTRT"
TABLE_ORDER = ("mangle", "nat", "raw")  # the order of the restore documents, as Istio lists them
BUILTIN_OF = {PRERT: "PREROUTING", OUTPUT: "OUTPUT", POSTRT: "POSTROUTING"}
ENROLLED_HEADER = "# applied by the istio-cni agent at enrollment (not by `netlab up`):"
HOST_HEADER = "# applied by the istio-cni agent at its start, removed at its stop (not by `netlab up`):"

_MARK = f"{INPOD_MARK:#x}/{INPOD_MASK:#x}"  # 0x539/0xfff
_TMARK = f"{INPOD_TPROXY_MARK:#x}/{INPOD_MASK:#x}"  # 0x111/0xfff
_LOCAL = "127.0.0.1/32"
_PROBE = f"{PROBE_SNAT_IP}/32"


def check_version(version: str) -> str:
    """``check_version("1.22") -> '1.22'``; anything else raises ``ValueError``."""
    if version not in VERSIONS:
        raise ValueError(f"in-pod mode reproduces Istio {', '.join(VERSIONS)}, not {version}")
    return version


def uses_tproxy(version: str) -> bool:
    """Inbound capture by mangle TPROXY (1.21-1.23.0) rather than nat REDIRECT (1.23.1+)."""
    return check_version(version) in ("1.21", "1.22")


def probe_ipset(version: str) -> str:
    """``probe_ipset("1.22") -> 'istio-inpod-probes'``; ``-v4`` from 1.23."""
    return "istio-inpod-probes" if check_version(version) in ("1.21", "1.22") else "istio-inpod-probes-v4"


def sends_workload_info(version: str) -> bool:
    """ZDS ``AddWorkload.workload_info`` exists from 1.22."""
    return check_version(version) != "1.21"


def sends_trust_domain(version: str) -> bool:
    """``WorkloadInfo.trust_domain`` (field 4) is 1.22 only; reserved from 1.23."""
    return check_version(version) == "1.22"


# -- per-pod rules (``CreateInpodRules``) --------------------------------------------------


def pod_chains(version: str, dns: bool = False) -> dict[str, tuple[str, ...]]:
    """User chains per table, in the order Istio creates them."""
    if uses_tproxy(version):
        return {"mangle": (PRERT, OUTPUT), "nat": (OUTPUT,)}
    chains: dict[str, tuple[str, ...]] = {"mangle": (PRERT, OUTPUT), "nat": (PRERT, OUTPUT)}
    if dns and version != "1.23":
        chains["raw"] = (PRERT, OUTPUT)
    return chains


def pod_jumps(version: str, dns: bool = False) -> dict[str, tuple[str, ...]]:
    """The ``-A <builtin> -j ISTIO_*`` jumps per table, in Istio's order."""
    if uses_tproxy(version):
        return {"mangle": ("-A PREROUTING -j ISTIO_PRERT", "-A OUTPUT -j ISTIO_OUTPUT"),
                "nat": ("-A OUTPUT -j ISTIO_OUTPUT",)}
    jumps: dict[str, tuple[str, ...]] = {"mangle": ("-A PREROUTING -j ISTIO_PRERT", "-A OUTPUT -j ISTIO_OUTPUT"),
             "nat": ("-A OUTPUT -j ISTIO_OUTPUT", "-A PREROUTING -j ISTIO_PRERT")}
    if "raw" in pod_chains(version, dns):
        jumps["raw"] = ("-A PREROUTING -j ISTIO_PRERT", "-A OUTPUT -j ISTIO_OUTPUT")
    return jumps


def _dns_nat(version: str) -> list[str]:
    if version in ("1.21", "1.22", "1.23"):
        return [f"-A ISTIO_OUTPUT ! -o lo -p udp -m udp --dport 53 -j REDIRECT --to-ports {PORT_DNS}"]
    return [f"-A ISTIO_OUTPUT ! -o lo -p udp -m mark ! --mark {_MARK} -m udp --dport 53 -j REDIRECT --to-ports {PORT_DNS}",
            f"-A ISTIO_OUTPUT ! -d {_LOCAL} -p tcp -m tcp --dport 53 -m mark ! --mark {_MARK} "
            f"-j REDIRECT --to-ports {PORT_DNS}"]


def pod_chain_rules(version: str, dns: bool = False) -> dict[str, tuple[str, ...]]:
    """The rules of the user chains per table, in order, as ``iptables-save`` prints them."""
    connmark_set = f"-A ISTIO_PRERT -m mark --mark {_MARK} -j CONNMARK --set-xmark {_TMARK}"
    restore = (f"-A ISTIO_OUTPUT -m connmark --mark {_TMARK} -j CONNMARK --restore-mark "
               f"--nfmask {RESTORE_MASK:#x} --ctmask {RESTORE_MASK:#x}")
    nat_out = [f"-A ISTIO_OUTPUT -d {_PROBE} -p tcp -m tcp -j ACCEPT"]
    if dns:
        nat_out += _dns_nat(version)
    nat_out += [f"-A ISTIO_OUTPUT -p tcp -m mark --mark {_TMARK} -j ACCEPT",
                f"-A ISTIO_OUTPUT ! -d {_LOCAL} -o lo -j ACCEPT",
                f"-A ISTIO_OUTPUT ! -d {_LOCAL} -p tcp -m mark ! --mark {_MARK} -j REDIRECT --to-ports {PORT_OUTBOUND}"]
    if uses_tproxy(version):
        tproxy = f"--on-ip 0.0.0.0 --tproxy-mark {_TMARK}"
        mangle = [
            connmark_set,
            f"-A ISTIO_PRERT -s {_PROBE} -p tcp -m tcp -j ACCEPT",
            f"-A ISTIO_PRERT ! -d {_LOCAL} -i lo -p tcp -j ACCEPT",
            f"-A ISTIO_PRERT -p tcp -m tcp --dport {PORT_HBONE} -m mark ! --mark {_MARK} "
            f"-j TPROXY --on-port {PORT_HBONE} {tproxy}",
            "-A ISTIO_PRERT -p tcp -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            f"-A ISTIO_PRERT ! -d {_LOCAL} -p tcp -m mark ! --mark {_MARK} -j TPROXY --on-port {PORT_INBOUND} {tproxy}",
            restore,
        ]
        return {"mangle": tuple(mangle), "nat": tuple(nat_out)}
    out = {
        "mangle": (connmark_set, restore),
        "nat": (f"-A ISTIO_PRERT -s {_PROBE} -p tcp -m tcp -j ACCEPT",
                f"-A ISTIO_PRERT ! -d {_LOCAL} -p tcp -m tcp ! --dport {PORT_HBONE} -m mark ! --mark {_MARK} "
                f"-j REDIRECT --to-ports {PORT_INBOUND}",
                *nat_out),
    }
    if "raw" in pod_chains(version, dns):
        out["raw"] = (f"-A ISTIO_OUTPUT -p udp -m mark --mark {_MARK} -m udp --dport 53 -j CT --zone 1",
                      f"-A ISTIO_PRERT -p udp -m mark ! --mark {_MARK} -m udp --sport 53 -j CT --zone 1")
    return out


def pod_iptables_text(version: str, dns: bool = False) -> str:
    """The pod's ``iptables-restore --noflush`` document (v4), Istio's ``-N`` + ``-A`` form."""
    chains, jumps, rules = pod_chains(version, dns), pod_jumps(version, dns), pod_chain_rules(version, dns)
    out: list[str] = []
    for t in TABLE_ORDER:
        if t not in chains:
            continue
        out.append(f"*{t}")
        out += [f"-N {c}" for c in chains[t]]
        out += [*jumps[t], *rules[t], "COMMIT"]
    return "\n".join(out) + "\n"


def pod_routes(ns: str) -> tuple[Route, ...]:
    return (Route(ns, "0.0.0.0/0", dev="lo", table=ROUTE_TABLE_INBOUND, type="local"),)


def pod_rules(ns: str) -> tuple[Rule, ...]:
    return (Rule(ns, RULE_PRIORITY, fwmark=INPOD_TPROXY_MARK, mask=INPOD_MASK, table=ROUTE_TABLE_INBOUND),)


def pod_objects(ns: str, version: str, *, dns: bool = False) -> tuple[tuple[Route, ...], tuple[Rule, ...], str]:
    """What ``CreateInpodRules`` makes in pod netns ``ns``, in its order: route, rule, iptables text.

    >>> r, ru, t = pod_objects("nl-x.a", "1.24")
    >>> "-A ISTIO_PRERT ! -d 127.0.0.1/32 -p tcp -m tcp ! --dport 15008 -m mark ! --mark 0x539/0xfff " \\
    ...     "-j REDIRECT --to-ports 15006" in t.splitlines()
    True
    """
    return pod_routes(ns), pod_rules(ns), pod_iptables_text(version, dns)


def pod_teardown_text(version: str, *, dns: bool = False) -> str:
    """``DeleteInpodRules`` as one ``iptables-restore --noflush`` document: -D jumps, -F, -X.

    Istio runs these one by one and ignores errors on optional chains; a single transaction
    fails as a whole if anything is missing, so the agent uses :func:`teardown_text_for` on
    what ``iptables-save`` shows (same lines, minus the absent ones).
    """
    chains, jumps = pod_chains(version, dns), pod_jumps(version, dns)
    out: list[str] = []
    for t in TABLE_ORDER:
        if t not in chains:
            continue
        out.append(f"*{t}")
        out += ["-D" + j[2:] for j in jumps[t]]
        out += [f"-F {c}" for c in chains[t]]
        out += [f"-X {c}" for c in chains[t]]
        out.append("COMMIT")
    return "\n".join(out) + "\n"


# -- reading iptables-save back (pure parsing, used by the agent for idempotence) -----------


def saved_chains(saved: str, chains: tuple[str, ...] = (PRERT, OUTPUT, POSTRT)) -> dict[str, dict[str, list[str]]]:
    """``{table: {chain: [rules]}}`` for the ``chains`` (and the builtin jumps to them) in a save.

    Keys exist for every declared user chain in ``chains`` even when empty; jumps are listed
    under their builtin chain. Rules keep their order.
    """
    out: dict[str, dict[str, list[str]]] = {}
    jumps = tuple(f"-j {c}" for c in chains)
    for t in iptables_save.parse(saved).values():
        have: dict[str, list[str]] = {}
        for c in t.chains.values():
            rules = list(c.rules) if c.name in chains else [r for r in c.rules if r.endswith(jumps)]
            if c.name in chains or rules:
                have[c.name] = rules
        if have:
            out[t.name] = have
    return out


def wanted_chains(version: str, dns: bool = False) -> dict[str, dict[str, list[str]]]:
    """The pod's rules in :func:`saved_chains` shape, for comparing with a live save."""
    out: dict[str, dict[str, list[str]]] = {}
    chains, jumps, rules = pod_chains(version, dns), pod_jumps(version, dns), pod_chain_rules(version, dns)
    for t in chains:
        d: dict[str, list[str]] = {c: [] for c in chains[t]}
        for ln in (*jumps[t], *rules[t]):
            d.setdefault(ln.split()[1], []).append(ln)
        out[t] = d
    return out


def teardown_text_for(saved: str, chains: tuple[str, ...] = (PRERT, OUTPUT)) -> str:
    """Delete what a save shows of ``chains`` (jumps, then -F, then -X); ``""`` if none.

    >>> s = "*nat\\n:OUTPUT ACCEPT [0:0]\\n:ISTIO_OUTPUT - [0:0]\\n-A OUTPUT -j ISTIO_OUTPUT\\nCOMMIT\\n"
    >>> print(teardown_text_for(s), end="")
    *nat
    -D OUTPUT -j ISTIO_OUTPUT
    -F ISTIO_OUTPUT
    -X ISTIO_OUTPUT
    COMMIT
    """
    have = saved_chains(saved, chains)
    out: list[str] = []
    for t in sorted(have, key=lambda x: TABLE_ORDER.index(x) if x in TABLE_ORDER else 9):
        body = ["-D" + ln[2:] for c, lns in have[t].items() if c not in chains for ln in lns]
        user = [c for c in have[t] if c in chains]
        body += [f"-F {c}" for c in user] + [f"-X {c}" for c in user]
        if body:
            out += [f"*{t}", *body, "COMMIT"]
    return "\n".join(out) + ("\n" if out else "")


# -- host (node) rules (``CreateHostRulesForHealthChecks``) ---------------------------------


def host_rules(version: str) -> tuple[str, ...]:
    """nat rules on the node: the POSTROUTING jump and the probe SNAT, as iptables-save prints them."""
    return ("-A POSTROUTING -j ISTIO_POSTRT",
            f"-A ISTIO_POSTRT -p tcp -m owner --socket-exists -m set --match-set {probe_ipset(version)} dst "
            f"-j SNAT --to-source {PROBE_SNAT_IP}")


def host_iptables_text(version: str) -> str:
    """``CreateHostRulesForHealthChecks`` as an ``iptables-restore --noflush`` document."""
    return "\n".join(["*nat", f"-N {POSTRT}", *host_rules(version), "COMMIT"]) + "\n"


def host_teardown_text() -> str:
    """``DeleteHostRules``: delete the jump, flush and delete the chain."""
    return "*nat\n-D POSTROUTING -j ISTIO_POSTRT\n-F ISTIO_POSTRT\n-X ISTIO_POSTRT\nCOMMIT\n"


def wanted_host_chains(version: str) -> dict[str, dict[str, list[str]]]:
    j, snat = host_rules(version)
    return {"nat": {"POSTROUTING": [j], POSTRT: [snat]}}


def host_objects(node_ns: str, version: str, entries: tuple[IpsetEntry, ...] = ()) -> tuple[IpsetSet, str]:
    """The node's probe ipset (with ``entries``: pod IP, comment = pod UID) and nat rules text.

    >>> s, t = host_objects("nl-x.n1", "1.23")
    >>> s.name, t.splitlines()[1]
    ('istio-inpod-probes-v4', '-N ISTIO_POSTRT')
    """
    return IpsetSet(node_ns, probe_ipset(version), entries=entries), host_iptables_text(version)


# -- the plan ------------------------------------------------------------------------------


def _heredoc(ns: str, text: str) -> list[str]:
    return [f"ip netns exec {ns} iptables-restore --noflush <<EOF", text.rstrip("\n"), "EOF"]


def pod_enrollment_lines(ns: str, version: str, *, dns: bool = False) -> tuple[str, ...]:
    routes, rules, text = pod_objects(ns, version, dns=dns)
    objs: list[Route | Rule] = [*routes, *rules]
    return (ENROLLED_HEADER, *(f"ip -n {ns} {o.render()}" for o in objs), *_heredoc(ns, text))


def host_lines(node_ns: str, version: str, entries: tuple[IpsetEntry, ...]) -> tuple[str, ...]:
    ipset, text = host_objects(node_ns, version, entries)
    return (HOST_HEADER, *ipset.render().splitlines(), *_heredoc(node_ns, text))


def add(ns: dict[str, NetnsPlan], processes: list[Process], topo: Topology, *, lab: str, version: str,
        dns: bool = False) -> None:
    """Add the in-pod design to ``ns`` (in place): agent-applied sections, agent and ztunnel processes.

    Nothing here is applied by ``up``: the kernel objects only appear in the ``agent`` field
    of each :class:`NetnsPlan`, which ``render()`` shows and apply ignores.
    """
    check_version(version)
    for node in topo.nodes:
        nname = names.netns(lab, node.name)
        zns = names.netns(lab, names.ztunnel_pod(node.name))
        pods = [p for p in topo.pods if p.node == node.name and topo.ambient(p)]
        for p in pods:
            pns = names.netns(lab, p.name)
            ns[pns] = replace(ns[pns], agent=pod_enrollment_lines(pns, version, dns=dns))
        entries = tuple(IpsetEntry(str(p.ip), pod_uid(p)) for p in pods)
        ns[nname] = replace(ns[nname], agent=host_lines(nname, version, entries))
        processes.append(Process(f"cni-agent/{node.name}", "cni-agent", nname, args=(("node", node.name),)))
        processes.append(Process(f"ztunnel/{node.name}", "ztunnel", zns,
                                 args=(("mode", "inpod"), ("node", node.name))))
