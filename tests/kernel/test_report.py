"""``netlab report`` on bookinfo, once for the whole module: content from the run, then the page
in a real browser.

One report (none, node-routing, inpod) is run through the library with a hook that calls
``netlab show --json`` (the CLI, in a subprocess) while each lab is up, so the report's object
counts are checked against what ``netlab show`` prints, counted here independently.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
from pathlib import Path

import pytest

from netlab.observe.report import runner
from tests.kernel.helpers import lab_netns, netlab

pytestmark = pytest.mark.root
SHOWN = ("ambient-worker", "ambient-worker2", "sleep", "productpage-v1", "ztunnel-ambient-worker")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict]:
    out = tmp_path_factory.mktemp("report")
    shown: dict[tuple[str, str], dict[str, str]] = {}

    def inspect(lab: str, design: str) -> None:
        for target in SHOWN:
            if design == "none" and target.startswith("ztunnel-"):
                continue
            p = netlab("show", lab, target, "all", "--json")
            shown[(design, target)] = json.loads(p.stdout)["data"]["sections"]

    opts = runner.Options(topology="bookinfo", out_dir=str(out), name="rp-t", requests=5, bulk_mib=4)
    rep = runner.run(opts, inspect=inspect)
    runner.write(rep, str(out))
    data = json.loads((out / "report.json").read_text())
    return out, data, shown


def design(data: dict, name: str) -> dict:
    return next(d for d in data["designs"] if d["design"] == name)


def member(d: dict, name: str) -> dict:
    return next(o for o in d["objects"] if o["member"] == name)


def test_labs_are_gone_and_files_written(run) -> None:
    out, data, _ = run
    for short in ("none", "nr", "ip"):
        assert lab_netns(f"rp-t-{short}") == []
    assert {p.name for p in out.iterdir()} >= {"report.md", "report.html", "report.json"}
    assert [d["design"] for d in data["designs"]] == ["none", "node-routing", "inpod"]
    assert data["schema_version"] == 1
    for d in data["designs"]:
        assert [p["name"] for p in d["phases"]][0] == "up" and d["phases"][-1]["name"] == "down"


def _count_show(sections: dict[str, str]) -> dict:
    """Counted here, independently of the report's parsers, from what ``netlab show`` printed."""
    ipt = next(v for k, v in sections.items() if k.endswith("-save"))
    tables: dict[str, int] = {}
    table = ""
    for ln in ipt.splitlines():
        if ln.startswith("*"):
            table = ln[1:]
        elif ln.startswith("-A "):
            tables[table] = tables.get(table, 0) + 1
    members = 0
    inside = False
    for ln in sections["ipset list"].splitlines():
        if ln.startswith("Members:"):
            inside = True
        elif ln.startswith("Name:") or not ln.strip():
            inside = False
        elif inside:
            members += 1
    routes = [ln for ln in sections["ip route show table all"].splitlines() if ln.strip()]
    return {"rules": len([ln for ln in sections["ip rule show"].splitlines() if ln.strip()]),
            "iptables": tables, "ipset": members, "routes": len(routes),
            "table100": sum(1 for r in routes if " table 100" in r),
            "links": len(re.findall(r"^\d+: ", sections["ip -d link show"], re.M))}


def test_object_counts_equal_netlab_show(run) -> None:
    _, data, shown = run
    assert len(shown) == 3 * len(SHOWN) - 1
    for (dname, target), sections in shown.items():
        o = member(design(data, dname), target)
        want = _count_show(sections)
        got = {"rules": o["ip_rules"], "iptables": {t: sum(c.values()) for t, c in o["iptables"].items()},
               "ipset": sum(o["ipset_members"].values()), "routes": sum(o["routes"].values()),
               "table100": o["routes"].get("100", 0), "links": len(o["links"])}
        assert got == want, (dname, target)


def test_node_routing_objects_on_the_node_inpod_in_the_pod(run) -> None:
    _, data, _ = run
    nr, ip, none = design(data, "node-routing"), design(data, "inpod"), design(data, "none")
    node = member(nr, "ambient-worker")
    assert {"100", "101", "102"} <= set(node["routes"])
    assert node["ipset_members"]["ztunnel-pods-ips"] == 2  # sleep and notsleep
    assert "ztunnel-PREROUTING" in node["iptables"]["mangle"]
    assert "ISTIO_PRERT" in member(ip, "sleep")["iptables"]["mangle"]
    assert "mangle" not in member(none, "sleep")["iptables"]


def test_who_owns_15001_15006_15008_and_where(run) -> None:
    _, data, _ = run

    def owners(d: dict, m: str) -> dict[int, str]:
        return {x["port"]: x["owner"] for x in member(d, m)["listeners"] if x["port"] in (15001, 15006, 15008)}

    zt = "ztunnel/ambient-worker"
    nr, ip, none = design(data, "node-routing"), design(data, "inpod"), design(data, "none")
    assert owners(nr, "ztunnel-ambient-worker") == {15001: zt, 15006: zt, 15008: zt}
    assert owners(nr, "sleep") == {}
    assert owners(ip, "sleep") == {15001: zt, 15006: zt, 15008: zt}  # in the pod's own netns
    assert owners(ip, "ztunnel-ambient-worker") == {}
    assert all(not owners(none, o["member"]) for o in none["objects"])


def test_enrollment_diff_per_design(run) -> None:
    _, data, _ = run
    nr, ip = design(data, "node-routing")["enrollment"], design(data, "inpod")["enrollment"]
    assert design(data, "none")["enrollment"] is None
    pod = nr["pod"]
    kinds = {(c["member"] == pod, c["kind"]) for c in nr["added"]}
    assert kinds == {(False, "ipset"), (False, "routes")}  # node-routing: the node's ipset + table 100
    assert any(c["kind"] == "routes" and "table 100" in c["line"] for c in nr["added"])
    in_pod = [c for c in ip["added"] if c["member"] == ip["pod"]]
    assert {c["kind"] for c in in_pod} >= {"iptables", "listeners", "rules"}
    assert any("REDIRECT --to-ports 15001" in c["line"] or "TPROXY --on-port 15006" in c["line"] for c in in_pod)
    assert nr["seconds"] > 0 and ip["ready_seconds"] is not None and ip["ready_seconds"] >= ip["seconds"] * 0.5


def test_datapath_against_the_baseline_of_the_same_run(run) -> None:
    _, data, _ = run
    base = design(data, "none")
    assert base["ratios"] is None
    for name in ("node-routing", "inpod"):
        d = design(data, name)
        figures = (name, d["latency"], d["bulk"], d["ratios"], base["latency"], base["bulk"])
        assert d["latency"]["ok"] == d["latency"]["requests"] == 5, figures
        assert d["ratios"]["p50"] == pytest.approx(d["latency"]["p50_ms"] / base["latency"]["p50_ms"], rel=1e-2), figures
        assert d["bulk"]["bytes"] == 4 << 20 and d["bulk"]["mbit_s"] > 0, figures
        assert d["ratios"]["bulk_mbit_s"] == pytest.approx(d["bulk"]["mbit_s"] / base["bulk"]["mbit_s"], rel=1e-2), \
            figures


def _vnis(pcap: Path) -> set[int]:
    """Geneve VNIs in a capture, as tshark (the independent decoder) reads them."""
    p = subprocess.run(["tshark", "-r", str(pcap), "-Y", "geneve", "-T", "fields", "-e", "geneve.vni"],
                       capture_output=True, text=True, timeout=120)
    return {int(v, 0) for v in p.stdout.split()}


def test_node_routing_pcaps_carry_geneve_vni_1001_and_1000_inpod_none(run) -> None:
    out, data, _ = run
    for name in ("none", "node-routing", "inpod"):
        d = design(data, name)
        assert d["pcaps"] and all((out / p).exists() for p in d["pcaps"])
        assert any(p.endswith("merged.pcapng") for p in d["pcaps"])
    assert _vnis(out / "pcaps" / "node-routing" / "merged.pcapng") == {1000, 1001}
    assert _vnis(out / "pcaps" / "inpod" / "merged.pcapng") == set()
    assert _vnis(out / "pcaps" / "none" / "merged.pcapng") == set()


def test_path_diagrams_from_the_hops(run) -> None:
    _, data, _ = run
    nr, ip, none = (design(data, n)["path"] for n in ("node-routing", "inpod", "none"))
    assert "istioout" in nr["svg"] and "istioin" in nr["svg"] and "Geneve VNI 1001" in nr["svg"]
    assert not re.search(r"istioin|istioout|Geneve", ip["svg"])
    assert nr["ztunnel_traversals"] == ip["ztunnel_traversals"] == 2 and none["ztunnel_traversals"] == 0
    devices = [h["device"] for leg in nr["path"]["legs"] for h in leg["hops"]]
    assert devices.index("istioout") < devices.index("istioin")
    for p in (nr, ip, none):  # the counts are the hops' own
        hops = [h for leg in p["path"]["legs"] for h in leg["hops"]]
        assert p["hops"] == len(hops)
        assert p["netns_crossings"] == sum(1 for a, b in zip(hops, hops[1:], strict=False) if a["netns"] != b["netns"])
    assert [leg["role"] for leg in ip["path"]["legs"]] == ["to-ztunnel", "hbone", "from-ztunnel"]


def test_byte_counts_agree_with_the_access_logs(run) -> None:
    _, data, _ = run
    for name in ("node-routing", "inpod"):
        p = design(data, name)["path"]
        up, down = p["path"]["app_bytes_up"], p["path"]["app_bytes_down"]
        assert up > 0 and down > 0
        rows = p["bytes"]
        roles = [leg["role"] for leg in p["path"]["legs"]]
        first = next(r for r in rows if roles[r["leg"] - 1] == "to-ztunnel")  # the app's own connection
        last = [r for r in rows if roles[r["leg"] - 1] == "from-ztunnel"][-1]  # delivered to the server pod
        for r in (first, last):  # plain legs carry exactly what ztunnel logged, read back from the pcaps
            assert (r["payload_fwd"], r["payload_rev"]) == (up, down), (name, r)
        # the HBONE stream (hops that saw only its SYN, like node-routing's istioin, carry no payload)
        hb = [r for r in rows if roles[r["leg"] - 1] == "hbone" and r["encap"] == "hbone" and r["payload_fwd"]]
        assert any(r["member"] == "net" for r in hb)  # across the underlay
        assert all(r["payload_fwd"] > up and r["payload_rev"] > down for r in hb)
        leg = next(g for g in p["path"]["legs"] if g["role"] == "hbone")
        assert p["hbone_framing_bytes"] == leg["payload_up"] + leg["payload_down"] - up - down > 0
        # read back from each hop's pcap: every sequence byte at least once (a retransmission twice)
        assert all(r["payload_fwd"] >= leg["payload_up"] and r["payload_rev"] >= leg["payload_down"] for r in hb)
        geneve = [r for r in rows if r["encap"] == "geneve"]
        if name == "node-routing":  # outer Ethernet + IPv4 + UDP + Geneve: 50 bytes a frame
            assert geneve and all(r["overhead_bytes"] == 50 * r["packets"] for r in geneve)
        else:
            assert geneve == []


def test_rules_the_traced_connection_matched(run) -> None:
    out, data, _ = run

    def steps(name: str) -> list[dict]:
        on_disk = json.loads((out / "trace" / f"{name}.json").read_text())["steps"]
        assert len(on_disk) == len(design(data, name)["trace"])
        return design(data, name)["trace"]

    def first(seq: list[dict], pred) -> int:
        return next(i for i, s in enumerate(seq) if pred(s))

    nr = steps("node-routing")
    order = [
        first(nr, lambda s: s.get("chain") == "ztunnel-PREROUTING" and "--match-set ztunnel-pods-ips src" in s["rule"]
              and s["mark_after"] & 0x100),
        first(nr, lambda s: s.get("priority") == 101 and s["table"] == "101"
              and "default via 192.168.127.2 dev istioout" in s["route"]),
        first(nr, lambda s: "TPROXY" in s.get("rule", "") and "--on-port 15001" in s["rule"]
              and s["member"] == "ztunnel-ambient-worker"),
    ]
    assert order == sorted(order)
    ip = steps("inpod")
    assert any(s.get("chain") == "ISTIO_OUTPUT" and "--to-ports 15001" in s["rule"] and s["member"] == "sleep"
               for s in ip)
    # kube-proxy's DNAT on the client's node
    assert any("-j DNAT --to-destination 10.244.1.7:9080" in s.get("rule", "") and s["member"] == "ambient-worker"
               for s in steps("none"))


def test_html_in_headless_chromium(run) -> None:
    from tests.browser import check_page, chromium

    if not chromium():
        pytest.skip("chromium not installed (scripts/install.sh installs it)")
    out, _, _ = run
    shot = out / "screenshot.png"
    r = check_page(str(out / "report.html"), str(shot))
    assert r.console_errors == []
    assert r.blocked == [] and all(u.startswith("file://") for u in r.requests)
    assert r.scroll_width <= r.viewport_width  # no sideways scrolling of the page at laptop width
    assert r.body_font_px >= 13 and r.title == "netlab report: bookinfo" and r.text_chars > 2000
    head = shot.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">I", head[16:20])[0] == 1366
    assert os.path.getsize(shot) > 20000  # a page of text, not a blank screen
