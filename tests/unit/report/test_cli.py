"""`netlab report` on the command line: --compare writes files; bad input is one line and a code."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from netlab.cli.main import app
from netlab.observe.report.runner import write
from tests.unit.report.helpers import report

runner = CliRunner()


def _err(r) -> str:  # noqa: ANN001
    return " ".join(r.stderr.split())


def test_compare_writes_both_pages(tmp_path: Path) -> None:
    for d in ("a", "b"):
        write(report(), str(tmp_path / d))
    r = runner.invoke(app, ["report", "--compare", str(tmp_path / "a" / "report.json"),
                            str(tmp_path / "b" / "report.json"), "-o", str(tmp_path / "c")])
    assert r.exit_code == 0, r.output
    assert {p.name for p in (tmp_path / "c").iterdir()} == {"report.md", "report.html", "compare.json"}


def test_refusals(tmp_path: Path) -> None:
    r = runner.invoke(app, ["report", "bookinfo"])
    assert r.exit_code == 6 and "-o DIR is required" in _err(r)
    r = runner.invoke(app, ["report", "-o", str(tmp_path)])
    assert r.exit_code == 6 and "TOPOLOGY is required" in _err(r)
    r = runner.invoke(app, ["report", "bookinfo", "-o", str(tmp_path), "--designs", "inpod,sidecar"])
    assert r.exit_code == 6 and "--designs takes" in _err(r)
    r = runner.invoke(app, ["report", "bookinfo", "-o", str(tmp_path), "--istio-version", "1.17"])
    assert r.exit_code == 6 and "--istio-version 1.17" in _err(r)
    (tmp_path / "x.json").write_text("not json")
    r = runner.invoke(app, ["report", "--compare", str(tmp_path / "x.json"), str(tmp_path / "x.json"), "-o", str(tmp_path)])
    assert r.exit_code == 6 and "not a readable report.json" in _err(r)
    assert not list(tmp_path.glob("report.*"))
