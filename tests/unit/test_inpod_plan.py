"""The in-pod design's plan: golden files per Istio version, and Istio's rule lines verbatim."""

from __future__ import annotations

import pytest

from netlab import names
from netlab.plan import build_plan, inpod
from netlab.plan.objects import Route, Rule
from netlab.topology import load_topology

VERSIONS = ["1.21", "1.22", "1.23", "1.24"]
CASES = [("bookinfo", v) for v in VERSIONS] + [("minimal", "1.22")]

# istio-cni's in-pod rules (cni/pkg/iptables/iptables.go) as iptables-save prints them: TPROXY
# gets --on-ip 0.0.0.0, addresses /32, --to-port becomes --to-ports; save also puts -m tcp
# before --dport and -i before -p
TPROXY_15006 = ("-A ISTIO_PRERT ! -d 127.0.0.1/32 -p tcp -m mark ! --mark 0x539/0xfff "
                "-j TPROXY --on-port 15006 --on-ip 0.0.0.0 --tproxy-mark 0x111/0xfff")
TPROXY_15008 = ("-A ISTIO_PRERT -p tcp -m tcp --dport 15008 -m mark ! --mark 0x539/0xfff "
                "-j TPROXY --on-port 15008 --on-ip 0.0.0.0 --tproxy-mark 0x111/0xfff")
REDIRECT_15006 = ("-A ISTIO_PRERT ! -d 127.0.0.1/32 -p tcp -m tcp ! --dport 15008 -m mark ! --mark 0x539/0xfff "
                  "-j REDIRECT --to-ports 15006")
REDIRECT_15001 = "-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -p tcp -m mark ! --mark 0x539/0xfff -j REDIRECT --to-ports 15001"
CONNMARK_SET = "-A ISTIO_PRERT -m mark --mark 0x539/0xfff -j CONNMARK --set-xmark 0x111/0xfff"
CONNMARK_RESTORE = ("-A ISTIO_OUTPUT -m connmark --mark 0x111/0xfff -j CONNMARK --restore-mark "
                    "--nfmask 0xffffffff --ctmask 0xffffffff")


def _version_dir(topo: str, v: str) -> str:
    return f"{topo}/inpod" + ("" if v == "1.22" else f"-{v}")


@pytest.mark.parametrize("topo,version", CASES, ids=[f"{t}-{v}" for t, v in CASES])
def test_inpod_plan_golden(golden, topo: str, version: str) -> None:
    plan = build_plan(load_topology(topo), mode="inpod", istio_version=version)
    d = _version_dir(topo, version)
    golden(f"{d}/plan.txt", plan.render())
    golden(f"{d}/pod-iptables.txt", inpod.pod_iptables_text(version))
    golden(f"{d}/pod-iptables-dns.txt", inpod.pod_iptables_text(version, dns=True))
    golden(f"{d}/pod-teardown.txt", inpod.pod_teardown_text(version))
    golden(f"{d}/host-iptables.txt", inpod.host_iptables_text(version))


def test_pod_objects_are_the_reference_route_and_rule() -> None:
    routes, rules, _ = inpod.pod_objects(names.netns("x", "sleep"), "1.22")
    assert routes == (Route(names.netns("x", "sleep"), "0.0.0.0/0", dev="lo", table=100, type="local"),)
    assert rules == (Rule(names.netns("x", "sleep"), 32764, fwmark=0x111, mask=0xFFF, table=100),)
    assert routes[0].render() == "route add local 0.0.0.0/0 dev lo table 100"
    assert rules[0].render() == "rule add pref 32764 fwmark 0x111/0xfff lookup 100"


@pytest.mark.parametrize("version", ["1.21", "1.22"])
def test_tproxy_versions(version: str) -> None:
    text = inpod.pod_iptables_text(version).splitlines()
    assert text[:5] == ["*mangle", "-N ISTIO_PRERT", "-N ISTIO_OUTPUT", "-A PREROUTING -j ISTIO_PRERT",
                        "-A OUTPUT -j ISTIO_OUTPUT"]
    rules = inpod.pod_chain_rules(version)
    assert rules["mangle"] == (
        CONNMARK_SET,
        "-A ISTIO_PRERT -s 169.254.7.127/32 -p tcp -m tcp -j ACCEPT",
        "-A ISTIO_PRERT ! -d 127.0.0.1/32 -i lo -p tcp -j ACCEPT",
        TPROXY_15008,
        "-A ISTIO_PRERT -p tcp -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        TPROXY_15006,
        CONNMARK_RESTORE,
    )
    assert rules["nat"] == (
        "-A ISTIO_OUTPUT -d 169.254.7.127/32 -p tcp -m tcp -j ACCEPT",
        "-A ISTIO_OUTPUT -p tcp -m mark --mark 0x111/0xfff -j ACCEPT",
        "-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -j ACCEPT",
        REDIRECT_15001,
    )
    assert "raw" not in inpod.pod_chains(version, dns=True)
    assert "REDIRECT --to-ports 15006" not in "\n".join(text)
    dns = inpod.pod_chain_rules(version, dns=True)["nat"]
    assert dns[1] == "-A ISTIO_OUTPUT ! -o lo -p udp -m udp --dport 53 -j REDIRECT --to-ports 15053"
    assert inpod.probe_ipset(version) == "istio-inpod-probes"


@pytest.mark.parametrize("version", ["1.23", "1.24"])
def test_redirect_versions(version: str) -> None:
    rules = inpod.pod_chain_rules(version)
    assert rules["mangle"] == (CONNMARK_SET, CONNMARK_RESTORE)
    assert rules["nat"] == (
        "-A ISTIO_PRERT -s 169.254.7.127/32 -p tcp -m tcp -j ACCEPT",
        REDIRECT_15006,
        "-A ISTIO_OUTPUT -d 169.254.7.127/32 -p tcp -m tcp -j ACCEPT",
        "-A ISTIO_OUTPUT -p tcp -m mark --mark 0x111/0xfff -j ACCEPT",
        "-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -j ACCEPT",
        REDIRECT_15001,
    )
    assert inpod.pod_jumps(version)["nat"] == ("-A OUTPUT -j ISTIO_OUTPUT", "-A PREROUTING -j ISTIO_PRERT")
    assert "TPROXY" not in inpod.pod_iptables_text(version, dns=True)
    assert inpod.probe_ipset(version) == "istio-inpod-probes-v4"


def test_dns_variants_1_23_and_1_24() -> None:
    n23 = inpod.pod_chain_rules("1.23", dns=True)["nat"]
    assert n23[3] == "-A ISTIO_OUTPUT ! -o lo -p udp -m udp --dport 53 -j REDIRECT --to-ports 15053"
    assert "raw" not in inpod.pod_chains("1.23", dns=True)
    r24 = inpod.pod_chain_rules("1.24", dns=True)
    assert r24["nat"][3:5] == (
        "-A ISTIO_OUTPUT ! -o lo -p udp -m mark ! --mark 0x539/0xfff -m udp --dport 53 -j REDIRECT --to-ports 15053",
        "-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -p tcp -m tcp --dport 53 -m mark ! --mark 0x539/0xfff "
        "-j REDIRECT --to-ports 15053",
    )
    assert r24["raw"] == (
        "-A ISTIO_OUTPUT -p udp -m mark --mark 0x539/0xfff -m udp --dport 53 -j CT --zone 1",
        "-A ISTIO_PRERT -p udp -m mark ! --mark 0x539/0xfff -m udp --sport 53 -j CT --zone 1",
    )
    assert "raw" not in inpod.pod_chains("1.24")  # no DNS capture by default: no raw table


@pytest.mark.parametrize("version,setname", [("1.21", "istio-inpod-probes"), ("1.22", "istio-inpod-probes"),
                                             ("1.23", "istio-inpod-probes-v4"), ("1.24", "istio-inpod-probes-v4")])
def test_host_rules(version: str, setname: str) -> None:
    ipset, text = inpod.host_objects(names.netns("x", "n1"), version)
    assert ipset.name == setname and ipset.type == "hash:ip" and ipset.comment
    assert text.splitlines() == [
        "*nat", "-N ISTIO_POSTRT", "-A POSTROUTING -j ISTIO_POSTRT",
        f"-A ISTIO_POSTRT -p tcp -m owner --socket-exists -m set --match-set {setname} dst "
        "-j SNAT --to-source 169.254.7.127",
        "COMMIT"]


def test_plan_shows_but_does_not_apply_agent_objects() -> None:
    """Agent-made objects live only in the ``agent`` section; apply's fields stay the base cluster's."""
    t = load_topology("bookinfo")
    base = build_plan(t, mode="none")
    plan = build_plan(t, mode="inpod")
    sleep, base_sleep = plan.by_member("sleep"), base.by_member("sleep")
    assert (sleep.routes, sleep.rules, sleep.iptables) == (base_sleep.routes, base_sleep.rules, base_sleep.iptables)
    assert sleep.agent[0] == inpod.ENROLLED_HEADER
    assert TPROXY_15006 in "\n".join(sleep.agent).splitlines()
    node = plan.by_member("ambient-worker")
    assert node.ipsets == () and node.rules == ()
    assert "ipset add istio-inpod-probes 10.244.2.4 comment" in "\n".join(node.agent)
    procs = {p.name: p for p in plan.processes}
    assert procs["cni-agent/ambient-worker"].ns == names.netns("bookinfo", "ambient-worker")
    assert procs["cni-agent/ambient-worker"].args == (("node", "ambient-worker"),)
    assert procs["ztunnel/ambient-worker2"].ns == names.netns("bookinfo", "ztunnel-ambient-worker2")
    assert procs["ztunnel/ambient-worker2"].args == (("mode", "inpod"), ("node", "ambient-worker2"))


def test_idempotence_helpers_read_back_a_save() -> None:
    """A save holding exactly the rules compares equal; the teardown deletes what is there."""
    chains = inpod.wanted_chains("1.22")
    lines = ["*mangle", ":PREROUTING ACCEPT [0:0]", ":ISTIO_OUTPUT - [0:0]", ":ISTIO_PRERT - [0:0]"]
    lines += [ln for c in ("PREROUTING", "OUTPUT", "ISTIO_OUTPUT", "ISTIO_PRERT") for ln in chains["mangle"][c]]
    lines += ["COMMIT", "*nat", ":OUTPUT ACCEPT [0:0]", ":ISTIO_OUTPUT - [0:0]",
              "-A OUTPUT -m comment --comment x -j KUBE-SERVICES",
              *chains["nat"]["OUTPUT"], *chains["nat"]["ISTIO_OUTPUT"], "COMMIT"]
    saved = "\n".join(lines) + "\n"
    assert inpod.saved_chains(saved, (inpod.PRERT, inpod.OUTPUT)) == chains
    assert inpod.saved_chains(saved, (inpod.PRERT, inpod.OUTPUT)) != inpod.wanted_chains("1.24")
    td = inpod.teardown_text_for(saved).splitlines()
    assert td[:3] == ["*mangle", "-D PREROUTING -j ISTIO_PRERT", "-D OUTPUT -j ISTIO_OUTPUT"]
    assert "-X ISTIO_OUTPUT" in td and "-D OUTPUT -j ISTIO_OUTPUT" in td[td.index("*nat"):]
    assert not any("KUBE" in ln for ln in td)
    assert inpod.teardown_text_for("*nat\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n") == ""


def test_unknown_version_is_refused() -> None:
    with pytest.raises(ValueError, match="1.21, 1.22, 1.23, 1.24"):
        inpod.pod_objects(names.netns("x", "a"), "1.20")
