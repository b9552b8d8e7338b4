"""A non-editable install works away from the repository: shipped topologies are package data.

Builds a fresh virtualenv that sees this machine's installed dependencies
(``--system-site-packages``, no network), installs a copy of this tree into it with
``pip install --no-deps --no-build-isolation --no-index``, and runs the installed ``netlab``
script from a directory outside the repository, with no PYTHONPATH pointing back at it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_non_editable_install_runs_a_shipped_topology(tmp_path: Path) -> None:
    src = tmp_path / "src"  # pip builds in the source tree: build a copy, never the checkout
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache", ".benchmarks"))
    venv = tmp_path / "venv"
    # --without-pip: Debian's python3 has no ensurepip; the system pip installs into the venv
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)], check=True)
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    p = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                        str(src)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([str(py), "-c", "import netlab; print(netlab.__file__)"], capture_output=True, text=True,
                           env=env, cwd=elsewhere, check=True).stdout.strip()
    assert where.startswith(str(venv)), f"netlab imported from {where}, not from the install"

    netlab = venv / "bin" / "netlab"
    assert netlab.exists(), "console script not installed"
    # --encap geneve-user: no kernel probe (as root, auto would make a probe netns)
    r = subprocess.run([str(netlab), "up", "bookinfo", "--dry-run", "--name", "clpkg", "--encap", "geneve-user"],
                       capture_output=True, text=True, env=env, cwd=elsewhere, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("# lab clpkg: mode node-routing, istio 1.20, encap geneve-user")

    from netlab.lab.lifecycle import make_plan

    here = make_plan("bookinfo", name="clpkg", mode="node-routing", istio_version=None, encap="geneve-user")
    assert r.stdout == here.render()
    for name in ("minimal", "scale"):
        r = subprocess.run([str(netlab), "up", name, "--dry-run", "--json", "--encap", "geneve-user"],
                           capture_output=True, text=True, env=env, cwd=elsewhere, timeout=120)
        assert r.returncode == 0 and '"status": "ok"' in r.stdout, r.stderr
