"""docs/architecture.md is checked against the code, so the picture cannot drift from it."""

from __future__ import annotations

import importlib.util
import re
import typing
from pathlib import Path

from netlab import names
from netlab.plan.objects import Process
from tests.unit.test_layering import LAYERS

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "architecture.md").read_text()


def _table(marker: str) -> list[list[str]]:
    """Rows of the Markdown table right after ``<!-- marker: ... -->``, first cell of each row."""
    block = DOC.split(f"<!-- {marker}:", 1)[1].split("\n\n", 1)[0]
    rows = [ln for ln in block.splitlines() if ln.startswith("|")][2:]  # skip header + rule
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in rows]


def test_layer_table_is_the_enforced_order() -> None:
    assert [r[0].strip("`") for r in _table("layers")] == LAYERS


def test_process_table_names_every_process_kind() -> None:
    kinds = set(typing.get_args(typing.get_type_hints(Process)["kind"]))
    assert {r[0].strip("`") for r in _table("processes")} == kinds | {"supervisor"}


def test_named_modules_and_files_exist() -> None:
    for mod in set(re.findall(r"`(netlab(?:\.\w+)+)", DOC)):
        assert importlib.util.find_spec(mod) is not None, mod
    for path in set(re.findall(r"`((?:protocols|linux|runtime|cli)/[\w/.]+)`", DOC)):
        assert (ROOT / "netlab" / path).exists(), path


def test_socket_paths_are_built_by_names() -> None:
    for fn in {m for r in _table("sockets") for m in re.findall(r"names\.(\w+)", r[2])}:
        assert callable(getattr(names, fn, None)), fn
