"""Function-local imports are the exception, and each one says why it is there.

An import inside a function hides a dependency from the reader and from the layering test's
first glance, and an import error surfaces only when the function runs (possibly in a
long-running process that has already reported ready). One stays only where it breaks a real
import cycle or delays a heavy or optional dependency, with a ``#`` comment right above it
saying which. ``cli/`` is exempt: it imports command implementations lazily to keep
``netlab --help`` fast; ``lab/`` is reviewed with the lifecycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "netlab"
EXEMPT = {"cli", "lab"}


def _local_imports(path: Path) -> list[int]:
    out = []
    for fn in ast.walk(ast.parse(path.read_text())):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            out += [n.lineno for n in ast.walk(fn) if isinstance(n, ast.Import | ast.ImportFrom)]
    return sorted(set(out))


def test_every_function_local_import_says_why() -> None:
    bare = []
    for f in sorted(PKG.rglob("*.py")):
        rel = f.relative_to(PKG)
        if rel.parts[0] in EXEMPT:
            continue
        lines = f.read_text().splitlines()
        for lineno in _local_imports(f):
            above = lines[max(0, lineno - 4):lineno - 1]
            if not any(ln.strip().startswith("#") for ln in above):
                bare.append(f"{rel}:{lineno}: {lines[lineno - 1].strip()}")
    assert not bare, "function-local imports without a comment saying why:\n" + "\n".join(bare)
