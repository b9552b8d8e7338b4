"""The path diagram of one request, laid out from the hop reconstruction (never drawn by hand).

Columns are nodes (and the underlay), in the order the request first reaches them; inside a
column, one box per netns the request crossed, in first-seen order, holding one pill per device
it was seen on. Arrow *k* goes from hop *k* to hop *k+1*, numbered, coloured by the
encapsulation of the leg it belongs to (plain TCP, Geneve with its VNI, HBONE). Netns that are a
ztunnel pod, or where a ztunnel leg starts or ends inside a pod (in-pod), carry a ztunnel badge.
:func:`layout` is pure geometry; :func:`render_svg` draws it through an autoescaping template,
so names from the lab cannot inject markup.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from netlab.observe.model import Hop, Path
from netlab.observe.report.render import environment

COL_W, COL_GAP, MARGIN = 290, 90, 20
BOX_HEAD, PILL_H, PILL_GAP, BOX_GAP, GROUP_HEAD = 40, 34, 6, 14, 30
COLORS = {"none": "#4a5568", "geneve": "#c05621", "hbone": "#2f855a"}


@dataclass(frozen=True)
class Where:
    """Where a hop's netns sits: its node column, the box label and what kind of netns it is."""

    group: str  # node name, or "underlay"
    label: str  # TARGET name (sleep, ztunnel-ambient-worker, ambient-worker)
    kind: str  # pod | node | ztunnel | underlay


@dataclass
class Pill:
    device: str
    x: float
    y: float
    w: float
    hops: list[int] = field(default_factory=list)
    tunnel: str = ""  # "Geneve VNI 1001" when the device carried Geneve frames


@dataclass
class Box:
    netns: str
    label: str
    kind: str
    x: float
    y: float
    w: float
    h: float = 0.0
    ztunnel: bool = False
    pills: dict[str, Pill] = field(default_factory=dict)


@dataclass
class Group:
    name: str
    x: float
    y: float
    w: float
    h: float = 0.0
    boxes: list[Box] = field(default_factory=list)


@dataclass(frozen=True)
class Arrow:
    number: int
    d: str  # SVG path data
    lx: float  # label position
    ly: float
    color: str
    dashed: bool


@dataclass(frozen=True)
class LegendLine:
    color: str
    text: str
    dashed: bool


@dataclass
class Diagram:
    title: str
    width: float
    height: float
    groups: list[Group]
    arrows: list[Arrow]
    legend: list[LegendLine]


def leg_text(i: int, src: str, sport: int, dst: str, dport: int, encap: str, vnis: list[int]) -> str:
    what = {"none": "plain TCP", "hbone": "HBONE: HTTP/2 CONNECT in mTLS to :15008", "geneve": "Geneve"}[encap]
    if vnis:
        what += " · Geneve VNI " + "/".join(str(v) for v in vnis) + " on the tunnel hops"
    return f"leg {i}: {src}:{sport} → {dst}:{dport} — {what}"


def _pill_key(h: Hop) -> str:
    return h.device


def layout(path: Path, where: Callable[[str], Where], title: str = "") -> Diagram:
    hops = path.hops
    groups: dict[str, Group] = {}
    boxes: dict[str, Box] = {}
    for h in hops:
        w = where(h.netns)
        if w.group not in groups:
            groups[w.group] = Group(w.group, MARGIN + len(groups) * (COL_W + COL_GAP), MARGIN + 24, COL_W)
        if h.netns not in boxes:
            b = Box(h.netns, w.label, w.kind, 0, 0, COL_W - 20, ztunnel=w.kind == "ztunnel")
            boxes[h.netns] = b
            groups[w.group].boxes.append(b)
        b = boxes[h.netns]
        if h.device not in b.pills:
            b.pills[h.device] = Pill(h.device, 0, 0, b.w - 24)
    # ztunnel badges where a proxy leg starts or ends inside a pod (in-pod: ztunnel's sockets there)
    for prev, nxt in zip(path.legs, path.legs[1:], strict=False):
        for h in (prev.hops[-1:] + nxt.hops[:1]):
            boxes[h.netns].ztunnel = True
    for n, h in enumerate(hops, 1):
        p = boxes[h.netns].pills[h.device]
        p.hops.append(n)
        if h.encap == "geneve" and h.vni is not None and f"VNI {h.vni}" not in p.tunnel:
            p.tunnel = (p.tunnel + "/" if p.tunnel else "Geneve VNI ") + str(h.vni)
    bottom = 0.0
    for g in groups.values():
        y = g.y + GROUP_HEAD
        for b in g.boxes:
            b.x, b.y = g.x + 10, y
            py = y + BOX_HEAD
            for p in b.pills.values():
                p.x, p.y = b.x + 12, py
                py += PILL_H + PILL_GAP
            b.h = py - y + 4
            y += b.h + BOX_GAP
        g.h = y - g.y
        bottom = max(bottom, g.y + g.h)
    leg_of = [i for i, leg in enumerate(path.legs) for _ in leg.hops]
    arrows = []
    for k in range(1, len(hops)):
        ha, hb = hops[k - 1], hops[k]
        pa, pb = boxes[ha.netns].pills[ha.device], boxes[hb.netns].pills[hb.device]
        if pa is pb:
            continue
        leg = path.legs[leg_of[k]]
        enc = "geneve" if hb.encap == "geneve" or ha.encap == "geneve" else leg.encap
        arrows.append(_arrow(k, pa, pb, COLORS.get(enc, COLORS["none"]), enc == "geneve"))
    legend = []
    for i, leg in enumerate(path.legs, 1):
        vnis = sorted({h.vni for h in leg.hops if h.encap == "geneve" and h.vni is not None})
        legend.append(LegendLine(COLORS.get(leg.encap, COLORS["none"]),
                                 leg_text(i, leg.src, leg.sport, leg.dst, leg.dport, leg.encap, vnis), False))
    if any(h.encap == "geneve" for h in hops):
        legend.append(LegendLine(COLORS["geneve"], "dashed: Geneve frames (UDP 6081) between node and ztunnel pod",
                                 True))
    if path.ztunnels:
        legend.append(LegendLine("#1a202c", "ztunnels traversed: " + ", ".join(path.ztunnels), False))
    width = MARGIN * 2 + max(1, len(groups)) * (COL_W + COL_GAP)  # the last gap holds same-column loops
    height = bottom + 20 + 18 * len(legend) + MARGIN
    return Diagram(title or f"{path.client} → {path.server}", width, height, list(groups.values()), arrows, legend)


def _arrow(k: int, a: Pill, b: Pill, color: str, dashed: bool) -> Arrow:
    ay, by = a.y + PILL_H / 2, b.y + PILL_H / 2
    bend = (k % 3 - 1) * 14
    if abs(a.x - b.x) < 1:  # same column: loop out to the right
        x1, x2 = a.x + a.w, b.x + b.w
        cx = x1 + 28 + 13 * (k % 5)
        d = f"M{x1:.0f},{ay:.0f} C{cx:.0f},{ay:.0f} {cx:.0f},{by:.0f} {x2 + 4:.0f},{by:.0f}"
        return Arrow(k, d, cx - 6, (ay + by) / 2, color, dashed)
    if b.x > a.x:
        x1, x2 = a.x + a.w, b.x - 4
    else:
        x1, x2 = a.x, b.x + b.w + 4
    mx, my = (x1 + x2) / 2, (ay + by) / 2 + bend
    d = f"M{x1:.0f},{ay:.0f} Q{mx:.0f},{my + bend:.0f} {x2:.0f},{by:.0f}"
    return Arrow(k, d, mx, my + bend / 2, color, dashed)


def render_svg(diagram: Diagram) -> str:
    return environment().get_template("diagram.svg.j2").render(d=diagram, colors=COLORS).strip()
