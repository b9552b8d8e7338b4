"""`netlab export kind|observe` on the command line: files written, refusals with one line and a code."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from click.testing import Result
from typer.testing import CliRunner

from netlab.cli.main import app

runner = CliRunner()


def _err(r: Result) -> str:
    """stderr with rich's console wrapping undone (the test terminal is narrow)."""
    return " ".join(r.stderr.split())


def test_export_kind_then_observe(tmp_path: Path) -> None:
    out = tmp_path / "bk"
    r = runner.invoke(app, ["export", "kind", "bookinfo", "-o", str(out), "--istio-version", "1.24", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)["data"]
    assert (data["cluster"], data["istio_version"], data["design"]) == ("ambient", "1.24.6", "inpod")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "export.json", "kind.yaml", "manifests/default.yaml", "run.sh"]
    assert os.stat(out / "run.sh").st_mode & stat.S_IXUSR
    r = runner.invoke(app, ["export", "observe", str(out)])
    assert r.exit_code == 0, r.output
    assert (out / "observe.sh").exists() and (out / "netlab_snapshot.py").exists()
    assert "--design inpod" in (out / "observe.sh").read_text()


def test_default_release_is_the_default_design_of_up(tmp_path: Path) -> None:
    """`netlab up` defaults to node-routing (Istio 1.20); so does the export."""
    r = runner.invoke(app, ["export", "kind", "minimal", "-o", str(tmp_path / "m"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["data"]["design"] == "node-routing"


def test_unknown_istio_version_is_refused(tmp_path: Path) -> None:
    r = runner.invoke(app, ["export", "kind", "minimal", "-o", str(tmp_path / "m"), "--istio-version", "1.21"])
    assert r.exit_code == 2
    assert not (tmp_path / "m").exists()


def test_bad_topology_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("nodes: [{name: n1}]\npods: [{name: a, node: nope}]\n")
    r = runner.invoke(app, ["export", "kind", str(bad), "-o", str(tmp_path / "out")])
    assert r.exit_code == 2
    assert "unknown node 'nope'" in _err(r)
    assert not (tmp_path / "out").exists()


def test_refuses_a_foreign_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    r = runner.invoke(app, ["export", "kind", "minimal", "-o", str(tmp_path)])
    assert r.exit_code == 1
    assert "holds no earlier export" in _err(r) and "--force" in _err(r)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    assert runner.invoke(app, ["export", "kind", "minimal", "-o", str(tmp_path), "--force"]).exit_code == 0


def test_observe_needs_an_export(tmp_path: Path) -> None:
    r = runner.invoke(app, ["export", "observe", str(tmp_path)])
    assert r.exit_code == 2
    assert "no export here" in _err(r) and "netlab export kind" in _err(r)
