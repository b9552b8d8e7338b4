"""Every module imports alone, in a fresh interpreter, and the assembled app has every command.

Alone matters: a module that only works when something else was imported first (an import
cycle resolved by luck, a command registered as a side effect) passes when many modules share
one interpreter, and fails for the user who imports just that module. Hence one new
interpreter per module, never one interpreter looping over them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.cli.test_help import COMMANDS

REPO = Path(__file__).resolve().parents[2]
PKG = REPO / "netlab"
# `python -m` entry points run when imported; with --help they print their usage and exit 0
PROLOGUE = "import sys; sys.argv = ['netlab', '--help']; import importlib; importlib.import_module({!r})"


def modules() -> list[str]:
    out = []
    for f in sorted(PKG.rglob("*.py")):
        parts = f.relative_to(REPO).with_suffix("").parts
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _import_alone(module: str) -> tuple[str, int, str]:
    p = subprocess.run([sys.executable, "-c", PROLOGUE.format(module)], capture_output=True, text=True,
                       timeout=120, cwd="/", env=_env())
    return module, p.returncode, p.stderr


def test_the_module_list_is_complete() -> None:
    mods = modules()
    assert {"netlab", "netlab.cli.main", "netlab.lab.lifecycle", "netlab.runtime.ztunnel.__main__"} <= set(mods)
    assert len(mods) == len(set(mods)) > 50


def test_every_module_imports_alone() -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(_import_alone, modules()))
    bad = [f"{m} (exit {rc}):\n{err.strip().splitlines()[-1] if err.strip() else ''}" for m, rc, err in results if rc]
    assert not bad, "modules that do not import alone:\n" + "\n".join(bad)


def test_the_app_alone_has_every_command() -> None:
    code = ("import json, typer; from netlab.cli.main import app; "
            "print(json.dumps(sorted(typer.main.get_command(app).commands)))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/", env=_env())
    assert p.returncode == 0, p.stderr
    assert set(COMMANDS) <= set(json.loads(p.stdout))
