"""docs/cli.md and docs/labs/*.md are generated (scripts/gen_docs.py): they must match the code."""

from __future__ import annotations

import difflib
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _generated() -> dict[str, str]:
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.generated()


GENERATED = _generated()


@pytest.mark.parametrize("rel", sorted(GENERATED))
def test_generated_doc_matches_the_code(rel: str) -> None:
    path = ROOT / rel
    have = path.read_text() if path.exists() else ""
    if have != GENERATED[rel]:
        diff = "".join(difflib.unified_diff(have.splitlines(True), GENERATED[rel].splitlines(True), rel, "generated"))
        pytest.fail(f"{rel} is out of date: run `python3 scripts/gen_docs.py`\n{diff[:4000]}")


def test_every_command_is_in_cli_md() -> None:
    import typer

    from netlab.cli.main import app

    text = (ROOT / "docs" / "cli.md").read_text()
    for name in typer.main.get_command(app).commands:  # type: ignore[attr-defined]
        assert f"## `netlab {name}`" in text, name
