"""Markdown and HTML from a :class:`Report`, through jinja2 templates shipped with the package.

HTML autoescapes everything (every pod name, rule and address in a report came from a lab);
the one string marked safe is the diagram, which is itself rendered by an autoescaping
template. The page has inline CSS and SVG only: no script, no external URL, so it reads the
same offline, in a mail attachment or with JavaScript off. Markdown escapes table cells.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jinja2
from markupsafe import Markup

from netlab.observe.report.schema import DesignRun, NetnsObjects, Report

DEFAULT_RULES = ("0:", "32766:", "32767:")


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("netlab.observe.report", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "svg.j2", "html.j2"]),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["md"] = md_cell
    env.filters["num"] = num
    return env


def md_cell(value: object) -> str:
    """A Markdown table cell: pipes, backticks and newlines cannot break the table."""
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("`", "'").replace("\n", " ")


def num(value: float | int | None, digits: int = 1) -> str:
    """Figures for people: thousands separated, ``–`` for what was not measured."""
    if value is None:
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


@dataclass(frozen=True)
class Level:
    """Objects a design keeps at one level (node netns, or one pod's netns)."""

    ip_rules: int  # beyond the three default rules
    routes_other_tables: int  # routes outside main
    ipset_members: int
    iptables_rules: int
    listeners_1500x: int  # ztunnel ports 15001/15006/15008 listening there

    @property
    def total(self) -> int:
        return self.ip_rules + self.routes_other_tables + self.ipset_members + self.iptables_rules


def level(objs: list[NetnsObjects]) -> Level:
    return Level(
        ip_rules=sum(1 for o in objs for r in o.lines.get("rules", []) if not r.startswith(DEFAULT_RULES)),
        routes_other_tables=sum(n for o in objs for t, n in o.routes.items() if t != "main"),
        ipset_members=sum(o.ipset_count for o in objs),
        iptables_rules=sum(o.iptables_rules for o in objs),
        listeners_1500x=sum(1 for o in objs for x in o.listeners if x.port in (15001, 15006, 15008)))


@dataclass(frozen=True)
class Column:
    """One design run as a column of the side-by-side tables."""

    label: str
    run: DesignRun
    nodes: Level  # summed over nodes
    pods: Level  # summed over pods
    pod_count: int
    enroll_node: int  # objects the enrollment changed in the node netns (+ ztunnel pod)
    enroll_pod: int  # ... and in the pod's own netns

    @property
    def per_pod(self) -> float:
        return self.pods.total / self.pod_count if self.pod_count else 0.0


def column(label: str, run: DesignRun) -> Column:
    nodes = [o for o in run.objects if o.role == "node"]
    pods = [o for o in run.objects if o.role == "pod"]
    en_node = en_pod = 0
    if run.enrollment:
        changes = run.enrollment.added + run.enrollment.removed
        en_pod = sum(1 for c in changes if c.member == run.enrollment.pod)
        en_node = len(changes) - en_pod
    return Column(label, run, level(nodes), level(pods), len(pods), en_node, en_pod)


def columns(report: Report, prefix: str = "") -> list[Column]:
    return [column(prefix + r.design, r) for r in report.designs]


def render(report: Report, *, fmt: str) -> str:
    cols = columns(report)
    return _render(fmt, [report], cols)


def render_compare(a: Report, b: Report, *, fmt: str, labels: tuple[str, str] = ("A", "B")) -> str:
    cols = columns(a, f"{labels[0]}: ") + columns(b, f"{labels[1]}: ")
    return _render(fmt, [a, b], cols, labels=labels)


def _render(fmt: str, reports: list[Report], cols: list[Column], labels: tuple[str, ...] = ()) -> str:
    name = {"html": "report.html.j2", "md": "report.md.j2"}[fmt]
    why = [(labels[i] if labels else "", why_figures(r)) for i, r in enumerate(reports)]
    return environment().get_template(name).render(
        reports=reports, labels=labels, cols=cols, why=[(lbl, w) for lbl, w in why if w],
        svg=lambda s: Markup(s)) + ("\n" if fmt == "md" else "")


@dataclass(frozen=True)
class Why:
    """The in-pod argument in this run's numbers: what sits in the node's netns, what in the pod's."""

    nr: Column
    ip: Column
    base: Column | None  # the no-mesh run: what kube-proxy alone keeps in a node

    def added(self, c: Column) -> int:
        """Node-level objects the design adds over the baseline (all of them without one)."""
        return c.nodes.total - (self.base.nodes.total if self.base else 0)


def why_figures(report: Report) -> Why | None:
    runs = {r.design: r for r in report.designs}
    if "node-routing" not in runs or "inpod" not in runs:
        return None
    return Why(column("node-routing", runs["node-routing"]), column("inpod", runs["inpod"]),
               column("none", runs["none"]) if "none" in runs else None)
