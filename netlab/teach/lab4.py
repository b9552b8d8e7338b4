"""Lab 4, in-pod: the rules inside the pod, the netns fd passed over ZDS, ztunnel listening in the pod."""

from __future__ import annotations

from netlab.lab import lifecycle as lablib
from netlab.teach import probe
from netlab.teach.common import CLIENT_NODE, SERVER_NODE, counted, lab_ready
from netlab.teach.model import Counter, Ctx, Outcome, Step, TeachingLab, missing, ok

PORTS = (15001, 15006, 15008)
INPOD_MARK = 0x539


def _pod_rules(ctx: Ctx) -> Outcome:
    chains = {r.split()[1] for _, r in probe.iptables_rules(ctx.lab, "sleep", "mangle")}
    chains |= {r.split()[1] for _, r in probe.iptables_rules(ctx.lab, "sleep", "nat")}
    need = {"ISTIO_PRERT", "ISTIO_OUTPUT"}
    if not need <= chains:
        return missing(f"sleep's netns lacks chain(s) {', '.join(sorted(need - chains))}: sleep is not enrolled")
    rule = probe.ip_rules(ctx.lab, "sleep").get(32764, "")
    if "fwmark 0x111/0xfff lookup 100" not in rule:
        return missing("sleep's netns has no ip rule 32764 (fwmark 0x111/0xfff lookup 100)")
    route = probe.routes(ctx.lab, "sleep", "100")
    if not any(r.startswith("local default dev lo") for r in route):
        return missing("sleep's table 100 has no `local default dev lo`")
    n = len(probe.iptables_rules(ctx.lab, "sleep", "mangle")) + len(probe.iptables_rules(ctx.lab, "sleep", "nat"))
    return ok(f"in sleep's own netns: {n} iptables rules (ISTIO_PRERT, ISTIO_OUTPUT), rule 32764: {rule}, "
              "table 100: local default dev lo")


def _ztunnel_pid(ctx: Ctx, node: str) -> int | None:
    p = probe.processes(ctx.lab).get(f"ztunnel/{node}")
    return p.get("pid") if p else None


def _fd_passed(ctx: Ctx) -> Outcome:
    pid = _ztunnel_pid(ctx, CLIENT_NODE)
    if not pid:
        return missing(f"ztunnel/{CLIENT_NODE} is not running")
    ino = probe.netns_inode(ctx.lab, "sleep")
    held = probe.netns_fds(pid)
    if ino not in held:
        return missing(f"ztunnel/{CLIENT_NODE} (pid {pid}) holds no fd of sleep's netns (inode {ino}): "
                       "the agent has not sent AddWorkload with it")
    log = probe.log_text(ctx.lab, f"ztunnel.{CLIENT_NODE}.log")
    said = f"netns inode {ino}" in log
    return ok(f"ztunnel/{CLIENT_NODE} pid {pid} holds an fd of sleep's netns, inode {ino}"
              + (" (its log: `added (netns inode …)`)" if said else ""))


def _listeners(ctx: Ctx) -> Outcome:
    pid = _ztunnel_pid(ctx, CLIENT_NODE)
    ls = {lst.port: lst for lst in probe.listeners(ctx.lab, "sleep")}
    gone = [p for p in PORTS if p not in ls]
    if gone:
        return missing(f"no listener on {', '.join(map(str, gone))} in sleep's netns")
    wrong = [f"{p} (pid {ls[p].pid}, fwmark {ls[p].fwmark:#x})" for p in PORTS
             if ls[p].pid != pid or ls[p].fwmark != INPOD_MARK]
    if wrong:
        return missing(f"listeners not ztunnel's (pid {pid}, fwmark 0x539): {', '.join(wrong)}")
    return ok(f"15001/15006/15008 listen in sleep's netns, owned by ztunnel pid {pid} (which lives in another "
              "netns), each with fwmark 0x539")


def _many_netns(ctx: Ctx) -> Outcome:
    pid = _ztunnel_pid(ctx, SERVER_NODE)
    if not pid:
        return missing(f"ztunnel/{SERVER_NODE} is not running")
    held = probe.netns_fds(pid)

    rec = lablib.record_of(ctx.lab)
    pods = sorted(p for p, v in rec.pods.items() if v["node"] == SERVER_NODE and v.get("ambient"))
    with_fd = [p for p in pods if probe.netns_inode(ctx.lab, p) in held]
    listening = [p for p in pods if any(lst.pid == pid and lst.port == 15008 for lst in probe.listeners(ctx.lab, p))]
    if len(with_fd) != len(pods) or len(listening) != len(pods):
        return missing(f"ztunnel/{SERVER_NODE} holds {len(with_fd)}/{len(pods)} pod netns fds and listens in "
                       f"{len(listening)}/{len(pods)} pods")
    own = probe.netns_inode(ctx.lab, f"ztunnel-{SERVER_NODE}")
    return ok(f"one process (pid {pid}, itself in netns {own}) holds {len(with_fd)} pod netns fds and a 15008 "
              f"listener in each: {', '.join(listening)}")


def _redirected(ctx: Ctx) -> Outcome:
    return counted(ctx, "redirect15001", "nat ISTIO_OUTPUT in sleep's netns REDIRECTed its connection to 15001")


def _removed(ctx: Ctx) -> Outcome:
    chains = {r.split()[1] for _, r in probe.iptables_rules(ctx.lab, "notsleep", "mangle")}
    left = []
    if "ISTIO_PRERT" in chains or "ISTIO_OUTPUT" in chains:
        left.append("its ISTIO_PRERT/ISTIO_OUTPUT chains")
    if 32764 in probe.ip_rules(ctx.lab, "notsleep"):
        left.append("ip rule 32764")
    if any(lst.port in PORTS for lst in probe.listeners(ctx.lab, "notsleep")):
        left.append("ztunnel's listeners")
    pid = _ztunnel_pid(ctx, CLIENT_NODE)
    if pid and probe.netns_inode(ctx.lab, "notsleep") in probe.netns_fds(pid):
        left.append("ztunnel's fd of its netns")
    if left:
        return missing("notsleep is still in the mesh: its netns still has " + ", ".join(left))
    return ok("notsleep's netns has no ISTIO chains, no rule 32764, no 15001/15006/15008 listener, and ztunnel "
              "closed its netns fd (DelWorkload)")


LAB = TeachingLab(
    number=4, slug="inpod", title="In-pod redirection", topology="bookinfo", mode="inpod",
    goal="See Istio 1.21+'s design: the redirection rules live inside each pod's netns, the CNI agent passes "
         "the pod's netns fd to ztunnel over ZDS, and ztunnel, from its own netns, listens inside every pod.",
    counters=(Counter("redirect15001", "sleep", "nat", ("-A ISTIO_OUTPUT", "--to-ports 15001")),),
    notes="""A socket belongs to the network namespace it was created in, and `setns(2)` moves only the
calling thread: ztunnel enters a pod's netns (through the fd the agent sent over ZDS), opens its
three listeners, and returns. One process then holds listeners in six pods of `ambient-worker2`
while its own `/proc/<pid>/ns/net` is its pod's. Each pod carries 14 iptables rules, one ip rule
and one route; ztunnel's own packets carry `SO_MARK` 0x539 and skip them all. Step by step:
[walk](../walk-inpod.md).""",
    steps=(
        Step("The lab: bookinfo in-pod, one CNI agent and one ztunnel per node",
             "netlab status {lab}",
             "mode inpod, istio 1.22; cni-agent/<node> next to ztunnel/<node>; no geneve forwarders",
             lambda ctx: lab_ready(ctx, "inpod"), "`netlab lab start 4`", kind="look"),
        Step("The rules are inside the pod",
             "netlab show {lab} sleep iptables\nnetlab show {lab} sleep rules\n"
             "netlab exec {lab} sleep -- ip route show table 100\n"
             f"netlab show {{lab}} {CLIENT_NODE} iptables",
             "ISTIO_PRERT (TPROXY to 15008/15006, connmark 0x111 for 0x539 packets) and ISTIO_OUTPUT (REDIRECT "
             "to 15001) in sleep's own netns; rule 32764 fwmark 0x111/0xfff lookup 100; the node keeps only "
             "ISTIO_POSTRT (the kubelet-probe SNAT)",
             _pod_rules, "the CNI agent writes them at enrollment", kind="look"),
        Step("The ZDS exchange: the agent sent sleep's netns fd to ztunnel",
             f"netlab logs {{lab}} {CLIENT_NODE} -n 12\n"
             f"netlab logs {{lab}} ztunnel-{CLIENT_NODE} | grep -i 'added\\|snapshot'\n"
             f"ls -l /proc/{{pid:ztunnel/{CLIENT_NODE}}}/fd | grep netns",
             "the agent: `Adding pod 'sleep/default' (<uid>) to ipset`, `in-pod rules created`, the snapshot "
             "sent and acked; ztunnel: `pod <uid> added (netns inode N)`; its fd table: /run/netns/<sleep's "
             "netns>, the fd that came as SCM_RIGHTS",
             _fd_passed, "AddWorkload carries the fd; `netlab enroll {lab} sleep` sends one", kind="look"),
        Step("ztunnel listens inside the pod",
             "netlab exec {lab} sleep -- ss -tlnep",
             "15001, 15006, 15008 in sleep's netns, users:((\"python3\",pid=<ztunnel's pid>)), fwmark:0x539",
             _listeners, "ss -e prints the socket mark, ss -p the owning process", kind="look"),
        Step("One process, sockets in many network namespaces",
             f"ls -l /proc/{{pid:ztunnel/{SERVER_NODE}}}/fd | grep netns\n"
             f"readlink /proc/{{pid:ztunnel/{SERVER_NODE}}}/ns/net\n"
             "netlab exec {lab} productpage-v1 -- ss -tlnp",
             "ztunnel-ambient-worker2 holds six pod netns fds while its own /proc/<pid>/ns/net is its pod's; a "
             "socket belongs to the netns it was created in, and setns(2) moves only the calling thread",
             _many_netns, "compare the inodes", kind="look"),
        Step("Send a request: nat REDIRECT to 15001 inside sleep",
             "netlab exec {lab} sleep -- curl -s http://productpage:9080/ | head -n1\n"
             "netlab exec {lab} sleep -- iptables-save -c -t nat",
             "`-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -p tcp -m mark ! --mark 0x539/0xfff -j REDIRECT --to-ports "
             "15001` counted sleep's SYN; ztunnel's own HBONE SYN carried 0x539 and skipped it",
             _redirected, "curl from sleep"),
        Step("Unenroll notsleep: its rules and listeners leave its netns",
             "netlab unenroll {lab} notsleep\nnetlab exec {lab} notsleep -- ss -tlnp\n"
             "netlab show {lab} notsleep iptables",
             "the agent deleted the chains, rule 32764 and the table-100 route in notsleep's netns and sent "
             "DelWorkload; ztunnel closed the listeners and the fd",
             _removed, "`netlab unenroll {lab} notsleep`"),
    ),
)
