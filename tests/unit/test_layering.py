"""Imports only point down the layers, and the pure layers stay pure.

The order, bottom to top: ``protocols`` (pure codecs) and ``linux`` (netns entering,
processes, locks, unix-socket IPC), then ``topology`` → ``plan`` → ``export`` (files for a real
cluster; reads the topology only) → ``apply`` → ``runtime``
(the lab's processes) → ``lab`` (the lifecycle) → ``observe`` → ``cli``. ``errors`` and
``names`` sit below everything. Function-local imports count like top-level ones.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "netlab"
LAYERS = ["protocols", "linux", "topology", "plan", "export", "apply", "runtime", "lab", "observe", "teach", "cli"]
PURE = ("protocols", "topology", "plan", "export")
IMPURE = {"pyroute2", "iptc", "subprocess", "socket", "scapy", "asyncio"}


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            assert node.module
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def test_pure_layers_import_nothing_that_acts() -> None:
    for layer in PURE:
        for f in (PKG / layer).rglob("*.py"):
            # scapy's layer definitions are declarative codecs: allowed in protocols/, not above
            impure = IMPURE - {"scapy"} if layer == "protocols" else IMPURE
            bad = {m for m in _imports(f) if m.split(".")[0] in impure}
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


def test_every_package_is_a_known_layer() -> None:
    packages = {p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == set(LAYERS), packages ^ set(LAYERS)
