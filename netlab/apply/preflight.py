"""``netlab doctor``: is this machine able to run labs, and what is missing?

Kernel features are probed for real inside a throw-away netns no lab owns (``nl-_probe-<pid>``),
never in the root netns: a link is created, an ipset made, an iptables rule loaded.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from netlab import names
from netlab.apply import netns as netns_mod
from netlab.apply.ipset import open_ipset
from netlab.linux.nsenter import netns_path

TOOLS = {
    "ip": "iproute2", "iptables": "iptables", "iptables-restore": "iptables", "ipset": "ipset",
    "tcpdump": "tcpdump", "tshark": "tshark", "curl": "curl", "nsenter": "util-linux",
    "nft": "nftables",  # netlab trace
    "conntrack": "conntrack",  # the teaching labs' connection views
}


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True

    @property
    def instead(self) -> str:
        """What netlab does when this is missing (empty: it cannot run without it)."""
        return FALLBACKS.get(self.name, ("", ""))[0]

    @property
    def loses(self) -> str:
        """What a learner loses when this is missing and netlab works around it."""
        return FALLBACKS.get(self.name, ("", ""))[1]


# check name -> (what netlab does instead, what the learner loses); required checks have none
FALLBACKS: dict[str, tuple[str, str]] = {
    "link geneve": (
        "the userspace Geneve forwarder (--encap auto picks it): TAP devices named istioin/istioout and "
        "pistioin/pistioout with the same addresses and MTU, and one process per node that carries every "
        "frame in a real Geneve packet (UDP 6081, VNI 1000/1001, protocol 0x6558) over the node-ztunnel veth",
        "`ip -d link show istioin` says tun, not geneve; a process sits on the tunnel path (its CPU shows in "
        "latency); kernel geneve's own counters and offloads. The Geneve packets on the veth are the same.",
    ),
    "link vxlan": ("--encap vxlan is refused; auto never needs it", "nothing: vxlan is only an alternative encap"),
    "tool tshark": ("captures are still written (tcpdump/AF_PACKET); decode them on another machine",
                    "on-box Geneve and HTTP/2 decoding of captures (labs 2 and 3, docs/geneve.md)"),
    "tool tcpdump": ("netlab's own captures need no tcpdump", "tcpdump one-liners in the docs"),
    "tool conntrack": ("nothing: the kernel still tracks connections, only the tool is missing",
                       "the conntrack views of labs 2, 3 and 6 (the VIP kept, the client's IP, connection marks)"),
}


def _rules(ns: str, text: str) -> tuple[bool, str]:
    p = subprocess.run(["nsenter", f"--net={netns_path(ns)}", "iptables-restore", "-w", "5", "--noflush"],
                       input=text, capture_output=True, text=True)
    return p.returncode == 0, (p.stderr.strip().splitlines() or [""])[-1]


FDS_PER_NETNS = 4  # an IPRoute per lab netns while `up` applies the plan (netlab.lab.limits)
MIN_NETNS = 256  # bookinfo is 13; a 100-pod lab about 110


def _nofile_check() -> Check:
    """Open-file limit: ``up`` raises the soft limit to the hard one, so the hard one counts."""

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = soft if hard == resource.RLIM_INFINITY else hard
    if limit == resource.RLIM_INFINITY:
        return Check("open files", True, "unlimited")
    fit = max(0, (limit - 64) // FDS_PER_NETNS)
    return Check("open files", fit >= MIN_NETNS, f"soft {soft}, hard {hard}: labs up to about {fit} netns (pods + nodes)",
                 "raise the hard limit: `ulimit -Hn 65536` as root, or LimitNOFILE= for a service")


def run_checks() -> list[Check]:
    checks: list[Check] = []
    root = os.geteuid() == 0
    checks.append(Check("root", root, "running as root" if root else "not root",
                        "run netlab with sudo or as root"))
    checks.append(_nofile_check())
    for tool, pkg in TOOLS.items():
        path = shutil.which(tool)
        checks.append(Check(f"tool {tool}", bool(path), path or "not found", f"apt-get install {pkg}",
                            required=tool not in ("tshark", "tcpdump", "nft", "conntrack")))
    if not root:
        return checks
    probe = names.probe_netns()
    try:
        netns_mod.create(probe)
        checks.append(Check("netns", True, "network namespaces work"))
    except Exception as e:  # noqa: BLE001 - report, don't crash
        checks.append(Check("netns", False, str(e), "a kernel with CONFIG_NET_NS"))
        return checks
    try:
        with IPRoute(netns=probe) as ipr:
            for kind, kw, fix, required in (
                ("veth", {"peer": {"ifname": "probe1"}}, "CONFIG_VETH", True),
                ("bridge", {}, "CONFIG_BRIDGE", True),
                ("geneve", {"geneve_id": 1000, "geneve_remote": "127.0.0.2"},
                 "CONFIG_GENEVE; without it netlab uses the userspace Geneve forwarder (--encap geneve-user)", False),
                ("vxlan", {"vxlan_id": 1000, "vxlan_group": "127.0.0.2", "vxlan_port": 4789}, "CONFIG_VXLAN", False),
            ):
                try:
                    ipr.link("add", ifname=f"p-{kind}", kind=kind, **kw)
                    checks.append(Check(f"link {kind}", True, "supported", required=required))
                except NetlinkError as e:
                    checks.append(Check(f"link {kind}", False, f"not supported ({e.args[1] if len(e.args) > 1 else e})",
                                        fix, required=required))
            ok = os.path.exists("/dev/net/tun")
            checks.append(Check("tun/tap", ok, "/dev/net/tun" if ok else "missing", "CONFIG_TUN (modprobe tun)"))
            try:
                ipr.rule("add", priority=100, fwmark=0x200, fwmask=0x200, table=100)
                checks.append(Check("policy routing", True, "fwmark ip rules"))
            except NetlinkError as e:
                checks.append(Check("policy routing", False, str(e), "CONFIG_IP_MULTIPLE_TABLES"))
        try:
            ips = open_ipset(probe)
            ips.create("probe", stype="hash:ip", comment=True)
            ips.close()
            checks.append(Check("ipset hash:ip", True, "supported"))
        except Exception as e:  # noqa: BLE001
            checks.append(Check("ipset hash:ip", False, str(e), "CONFIG_IP_SET_HASH_IP, apt-get install ipset"))
        for name, text, fix in (
            ("iptables mangle/TPROXY", "*mangle\n-A PREROUTING -p tcp -j TPROXY --on-port 15001 --on-ip 127.0.0.1 "
             "--tproxy-mark 0x400/0xfff\nCOMMIT\n", "CONFIG_NETFILTER_XT_TARGET_TPROXY"),
            ("iptables mark/connmark", "*mangle\n-A PREROUTING -m connmark --mark 0x220/0x220 -j MARK --set-xmark "
             "0x200/0x200\n-A FORWARD -j CONNMARK --save-mark --nfmask 0x220 --ctmask 0x220\nCOMMIT\n",
             "CONFIG_NETFILTER_XT_MATCH_CONNMARK, CONFIG_NETFILTER_XT_TARGET_MARK"),
            ("iptables set match", "*mangle\n-A PREROUTING -m set --match-set probe src -j RETURN\nCOMMIT\n",
             "CONFIG_NETFILTER_XT_SET"),
            ("iptables socket/owner", "*mangle\n-A OUTPUT -m owner --socket-exists -j RETURN\n"
             "-A PREROUTING -m socket --transparent -j RETURN\nCOMMIT\n", "CONFIG_NETFILTER_XT_MATCH_SOCKET/OWNER"),
            ("iptables nat REDIRECT/DNAT", "*nat\n-A OUTPUT -p tcp -j REDIRECT --to-ports 15001\n"
             "-A PREROUTING -p tcp -j DNAT --to-destination 10.0.0.1:80\nCOMMIT\n", "CONFIG_NF_NAT, CONFIG_IP_NF_NAT"),
        ):
            if shutil.which("iptables-restore"):
                ok, msg = _rules(probe, text)
                checks.append(Check(name, ok, "supported" if ok else msg, fix))
    finally:
        netns_mod.remove(probe)
    return checks
