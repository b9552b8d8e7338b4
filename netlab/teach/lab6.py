"""Lab 6, break and fix: four ways a node-routing node goes wrong, each detected, named and repaired."""

from __future__ import annotations

from netlab.teach.common import CLIENT_NODE, SERVER_NODE, requested
from netlab.teach.diagnose import diagnose
from netlab.teach.model import Check, Ctx, Outcome, Step, TeachingLab, missing, ok


def broken(key: str) -> Check:
    def check(ctx: Ctx) -> Outcome:
        now = {f.key: f for f in diagnose(ctx)}
        if key in now:
            return ok("detected: " + now[key].symptom)
        if key in ctx.journal:
            return ok(f"was detected earlier ({key})")
        return missing(f"not broken yet: `netlab lab check 6` has not seen {key}")
    return check


def repaired(key: str) -> Check:
    def check(ctx: Ctx) -> Outcome:
        now = {f.key: f for f in diagnose(ctx)}
        if key not in ctx.journal:
            return missing(f"{key} was never seen broken: do the step before this one first")
        if key in now:
            return missing(f"still broken: {now[key].symptom}; repair: {now[key].repair}")
        return ok(f"{key} was broken and is repaired")
    return check


def ztunnel_back(ctx: Ctx) -> Outcome:
    now = {f.key for f in diagnose(ctx)}
    if f"ztunnel-down:{SERVER_NODE}" in now:
        return missing(f"ztunnel-{SERVER_NODE} is not back yet")
    if f"ztunnel-restarted:{SERVER_NODE}" not in ctx.journal and f"ztunnel-down:{SERVER_NODE}" not in ctx.journal:
        return missing(f"ztunnel-{SERVER_NODE} was never seen killed: do the step before this one first")

    return requested(ctx, "sleep", "productpage-v1")


LAB = TeachingLab(
    number=6, slug="break-and-fix", title="Break and fix", topology="bookinfo", mode="node-routing",
    goal="Break a node-routing node four ways (a pod missing from the ipset, a deleted ip rule, a killed "
         "ztunnel, a pod unenrolled at run time). After each, `netlab lab check 6` names what is broken and "
         "what you will see; then repair it.",
    notes="""Each broken state has a distinct symptom: a pod missing from the ipset still works, but
bypasses ztunnel (kube-proxy DNATs the VIP, no access-log line, no mTLS); a deleted rule 101
breaks every service call from that node's meshed pods (curl exit 28), because nat already let
the VIP through untranslated; a killed ztunnel resets the connections it held and is started
again by the supervisor; an unenrolled destination is reached in plaintext. `netlab lab check 6`
lists every broken state it finds, with its repair command.""",
    steps=(
        Step("Break: remove sleep from the ipset",
             f"netlab exec {{lab}} {CLIENT_NODE} -- ipset del ztunnel-pods-ips 10.244.2.4\n"
             "netlab exec {lab} sleep -- curl -s http://productpage:9080/ | head -n1\n"
             f"netlab exec {{lab}} {CLIENT_NODE} -- conntrack -L -p tcp --orig-src 10.244.2.4 --orig-dst 10.96.0.10",
             "the page still loads, but not through the mesh: conntrack's reply tuple now comes from 10.244.1.7 "
             "(kube-proxy DNATed the VIP), and ztunnel-ambient-worker logs nothing new",
             broken("ipset-missing:sleep"), "delete 10.244.2.4 from ztunnel-pods-ips on ambient-worker"),
        Step("Fix: put sleep back in the ipset",
             f"netlab exec {{lab}} {CLIENT_NODE} -- ipset add ztunnel-pods-ips 10.244.2.4 comment {{uid:sleep}}",
             "`netlab lab check 6` no longer names it; the next request is logged by ztunnel again",
             repaired("ipset-missing:sleep"), "the comment is the pod's UID, as istio-cni writes it"),
        Step("Break: delete ip rule 101",
             f"netlab exec {{lab}} {CLIENT_NODE} -- ip rule del priority 101\n"
             "netlab exec {lab} sleep -- curl -s -m 3 http://productpage:9080/; echo \"curl exit $?\"",
             "curl exit 28 (timeout): the SYN is still marked 0x100 and nat still skips kube-proxy, but no rule "
             "sends 0x100 to table 101, so the VIP goes out eth0 untranslated and nothing answers",
             broken(f"rule-missing:{CLIENT_NODE}:101"), "`ip rule del priority 101` in ambient-worker"),
        Step("Fix: add rule 101 back",
             f"netlab exec {{lab}} {CLIENT_NODE} -- ip rule add priority 101 fwmark 0x100/0x100 lookup 101",
             "`ip rule` shows 101 again between 100 and 102; curl works",
             repaired(f"rule-missing:{CLIENT_NODE}:101"), "priority 101, fwmark 0x100/0x100, lookup 101"),
        Step("Break: kill productpage's ztunnel",
             f"kill -9 {{pid:ztunnel/{SERVER_NODE}}}\nnetlab status {{lab}}",
             "the supervisor starts ztunnel again (a new pid, restarts 1): a real node's kubelet does the same; "
             "connections it carried were reset",
             broken(f"ztunnel-restarted:{SERVER_NODE}"), f"kill the pid of ztunnel/{SERVER_NODE} in `netlab status`"),
        Step("Fix: nothing to do but wait; check traffic flows again",
             "netlab exec {lab} sleep -- curl -s -m 5 --retry 5 --retry-all-errors --retry-delay 1 "
             "http://productpage:9080/ | head -n1",
             "the page loads (a request in flight while ztunnel was down fails; curl retries it): the new "
             "ztunnel re-read its certificates and workloads; the node's rules were never touched",
             ztunnel_back, "wait until `netlab status {lab}` shows it ready, then curl", settle=8.0),
        Step("Break: unenroll productpage at run time",
             "netlab unenroll {lab} productpage-v1\n"
             "netlab exec {lab} sleep -- curl -s http://productpage:9080/ | head -n1\n"
             f"netlab logs {{lab}} ztunnel-{CLIENT_NODE} -n 1",
             "the page loads, and sleep's ztunnel logs dst.addr=10.244.1.7:9080 (plaintext, no dst.identity): "
             "the destination left the mesh",
             broken("unenrolled:productpage-v1"), "`netlab unenroll {lab} productpage-v1`"),
        Step("Fix: enroll it again",
             "netlab enroll {lab} productpage-v1",
             "ipset entry and table-100 route back on ambient-worker2; requests are HBONE again",
             repaired("unenrolled:productpage-v1"), "`netlab enroll {lab} productpage-v1`"),
    ),
)
