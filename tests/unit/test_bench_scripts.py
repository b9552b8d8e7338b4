"""Every benchmark writes JSON (``--json-out``), and the documented commands run as written.

docs/benchmarks.md promises both; a learner copies its commands literally, and the documented
machine has no ``sudo`` (it runs as root), so ``sudo python3 …`` would fail there.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "scripts" / "bench"
HELPERS = {"loadtools.py", "tlsrelay_pair.py"}  # used by datapath.py and tlsrelay.py, not run on their own
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if p.name not in HELPERS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_benchmark_writes_json(script: str) -> None:
    r = subprocess.run([sys.executable, str(BENCH / script), "--help"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "--json-out" in r.stdout


def test_documented_bench_commands_need_no_sudo() -> None:
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    assert not re.search(r"`sudo python3 ", text)
    for script in set(re.findall(r"scripts/bench/(\w+\.py)", text)):
        assert (BENCH / script).exists(), script
