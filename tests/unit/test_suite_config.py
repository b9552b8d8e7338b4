"""The suite runs what it has: every module's doctests are collected by scripts/test.sh."""

from __future__ import annotations

import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_module_with_examples_has_its_doctests_collected() -> None:
    script = (REPO / "scripts" / "test.sh").read_text()
    line = next(ln for ln in script.splitlines() if "--doctest-modules" in ln and not ln.lstrip().startswith("#"))
    args = shlex.split(line)
    targets = [REPO / a for a in args[args.index("--doctest-modules") + 1:] if not a.startswith(("-", "$"))]
    with_examples = [p for p in (REPO / "netlab").rglob("*.py") if ">>> " in p.read_text()]
    assert with_examples
    missed = [str(p.relative_to(REPO)) for p in with_examples
              if not any(p == t or t in p.parents for t in targets)]
    assert not missed, f"doctests never run by scripts/test.sh: {missed}"
