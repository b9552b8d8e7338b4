"""The path diagram is generated from the hops: what it names, in what order, and escaping."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from netlab.observe.model import Path
from netlab.observe.report.diagram import layout, render_svg
from tests.unit.report.helpers import inpod_path, node_routing_path, where

SVG = "{http://www.w3.org/2000/svg}"


def texts(svg: str) -> list[str]:
    return ["".join(t.itertext()) for t in ET.fromstring(svg).iter(f"{SVG}text")]


def test_node_routing_names_both_tunnels_with_their_vni() -> None:
    svg = render_svg(layout(node_routing_path(), where))
    tx = texts(svg)
    t = " ".join(tx)
    assert tx[tx.index("istioout") + 1] == "hop 3 · Geneve VNI 1001"  # the device, then its hops and tunnel
    assert tx[tx.index("istioin") + 1].endswith("Geneve VNI 1000")
    assert "pistioout" in t and "pistioin" in t
    assert "node ambient-worker" in t and "node ambient-worker2" in t


def test_inpod_names_no_tunnel() -> None:
    svg = render_svg(layout(inpod_path(), where))
    t = " ".join(texts(svg))
    assert not re.search(r"istioin|istioout|Geneve", t)
    assert "ztunnel" in t  # the badge on the pod netns where the HBONE leg starts and ends


def test_arrows_numbered_in_hop_order_and_coloured_by_leg() -> None:
    d = layout(node_routing_path(), where)
    assert [a.number for a in d.arrows] == sorted(a.number for a in d.arrows)
    n = len(node_routing_path().hops)
    assert d.arrows[-1].number == n - 1  # every step from hop k to hop k+1 (none stays on one device)
    geneve = {a.number for a in d.arrows if a.dashed}
    assert {2, 3} <= geneve  # veth -> istioout -> pistioout carry Geneve


def test_groups_are_nodes_in_first_seen_order_with_netns_boxes() -> None:
    d = layout(node_routing_path(), where)
    assert [g.name for g in d.groups] == ["ambient-worker", "ambient-worker2"]
    assert [b.label for b in d.groups[0].boxes] == ["sleep", "ambient-worker", "ztunnel-ambient-worker"]
    zt = {b.label for g in d.groups for b in g.boxes if b.ztunnel}
    assert zt == {"ztunnel-ambient-worker", "ztunnel-ambient-worker2"}


def test_lab_names_are_escaped() -> None:
    p = node_routing_path(client='<script>alert("x")</script>')
    p = Path(p.client, p.server, p.legs, p.ztunnels)
    svg = render_svg(layout(p, where, title=p.client))
    assert "<script>" not in svg
    ET.fromstring(svg)  # still well-formed XML
    assert '<script>alert("x")</script>' in texts(svg)[0]
