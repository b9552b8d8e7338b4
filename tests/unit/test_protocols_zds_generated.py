"""The ZDS protobuf module is exactly what ``scripts/gen_protos.py`` generates from the schema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_zds_pb2_is_generated_from_the_checked_in_schema() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
