"""Imports only point down the layers, and the pure layers stay pure (STYLE.md §1)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "netlab"
LAYERS = ["topology", "plan", "apply", "runtime", "observe", "cli"]
IMPURE = {"pyroute2", "iptc", "subprocess", "socket", "scapy", "asyncio"}


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def test_pure_layers_import_nothing_that_acts() -> None:
    for layer in ("topology", "plan"):
        for f in (PKG / layer).rglob("*.py"):
            bad = {m for m in _imports(f) if m.split(".")[0] in IMPURE}
            assert not bad, f"{f.relative_to(PKG)} imports {bad}"


def test_no_layer_imports_a_layer_above_it() -> None:
    for i, layer in enumerate(LAYERS):
        above = LAYERS[i + 1:]
        for f in (PKG / layer).rglob("*.py"):
            for m in _imports(f):
                parts = m.split(".")
                if parts[0] == "netlab" and len(parts) > 1 and parts[1] in above:
                    raise AssertionError(f"{f.relative_to(PKG)} ({layer}) imports {m} (a layer above)")


def test_nothing_below_cli_imports_typer() -> None:
    for f in PKG.rglob("*.py"):
        if "cli" not in f.relative_to(PKG).parts:
            assert "typer" not in {m.split(".")[0] for m in _imports(f)}, f
