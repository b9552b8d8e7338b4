"""report.md / report.html / report.json from a Report, and --compare of two of them."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest

from netlab.errors import LabError
from netlab.observe.report.compare import write_compare
from netlab.observe.report.render import render
from netlab.observe.report.runner import load, write
from netlab.observe.report.scenario import parse_curl, percentile
from netlab.observe.report.schema import SCHEMA_VERSION, Report
from tests.unit.report.helpers import report

EVIL = '<img src="http://evil.example/x.png" onerror="alert(1)">'


class Fetches(HTMLParser):
    """Every element and attribute a browser would fetch or run."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "img", "iframe", "link", "object", "embed", "image", "use"):
            self.found.append(tag)
        for k, v in attrs:
            if k in ("src", "href", "xlink:href", "srcset", "action") or k.startswith("on"):
                self.found.append(f"{tag} {k}={v}")


def test_html_is_self_contained_and_escapes_lab_strings() -> None:
    html = render(report(pod_name=EVIL), fmt="html")
    p = Fetches()
    p.feed(html)
    assert p.found == []
    assert "&lt;img src=&#34;http://evil.example/x.png&#34;" in html
    assert "url(" not in html.replace("url(#ah-", "")  # CSS/SVG references stay inside the page
    assert "<style>" in html and "<svg" in html


def test_html_names_tunnels_for_node_routing_only() -> None:
    html = render(report(), fmt="html")
    nr, ip = html.split("<h3>node-routing</h3>")[1].split("<h3>inpod</h3>")[:2]
    assert "istioout" in nr and "istioin" in nr
    assert "istioout" not in ip.split("</svg>")[0]


def test_markdown_tables_survive_pipes_and_carry_ratios() -> None:
    md = render(report(pod_name="a|b"), fmt="md")
    assert "a\\|b" in md and "| a|b |" not in md
    assert "2.50 (×2.50)" in md  # p50 2.5 ms over a 1 ms baseline
    assert "## Why Istio moved to in-pod" in md


def test_json_round_trips_with_schema_version(tmp_path) -> None:
    r = report()
    write(r, str(tmp_path))
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["schema_version"] == SCHEMA_VERSION
    assert load(str(tmp_path / "report.json")) == r
    assert json.loads((tmp_path / "trace" / "node-routing.json").read_text())["steps"][1]["priority"] == 101
    assert {"report.md", "report.html", "report.json"} <= {p.name for p in tmp_path.iterdir()}


def test_compare_labels_both_runs(tmp_path) -> None:
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        write(report(), str(tmp_path / d))
    write_compare(str(tmp_path / "a" / "report.json"), str(tmp_path / "b" / "report.json"), str(tmp_path / "c"))
    md = (tmp_path / "c" / "report.md").read_text()
    assert "| A: none | A: node-routing | A: inpod | B: none | B: node-routing | B: inpod |" in md
    assert md.count("## Why Istio moved to in-pod") == 2
    assert "<th>B: inpod</th>" in (tmp_path / "c" / "report.html").read_text()


def test_compare_refuses_another_schema(tmp_path) -> None:
    data = json.loads(report().model_dump_json())
    data["schema_version"] = SCHEMA_VERSION + 1
    (tmp_path / "r.json").write_text(json.dumps(data))
    with pytest.raises(LabError, match="schema"):
        load(str(tmp_path / "r.json"))
    (tmp_path / "bad.json").write_text(json.dumps({"schema_version": SCHEMA_VERSION, "designs": 3}))
    with pytest.raises(LabError, match="not a valid report"):
        load(str(tmp_path / "bad.json"))


def test_curl_figures() -> None:
    lat = parse_curl("200 0.010 800\n200 0.020 800\n200 0.030 810\n000 0.000 0\n", "u")
    assert (lat.requests, lat.ok, lat.p50_ms, lat.p99_ms, lat.response_bytes) == (4, 3, 20.0, 30.0, 0)
    assert lat.requests_per_s == pytest.approx(50.0)
    assert percentile([5.0], 99) == 5.0
    assert re.match(r"^\d", str(lat.mean_ms))


def test_report_model_refuses_unknown_fields() -> None:
    data = json.loads(report().model_dump_json())
    data["surprise"] = 1
    with pytest.raises(ValueError):
        Report.model_validate(data)
