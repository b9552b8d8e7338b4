"""The CI-sized soak (root): ``scripts/soak.py`` pieces at their smallest, so the long runs'
code is exercised on every change. The long runs are ``python3 scripts/soak.py ...``."""

from __future__ import annotations

import pytest

from scripts.soak import common, faults, lifecycle, load

pytestmark = pytest.mark.root


def test_short_soak_leaves_nothing_and_root_netns_identical() -> None:
    before = common.root_snapshot()
    rows = lifecycle.run(1, ["inpod"])
    rows.append(faults.gc_race(1))
    rows += load.run("inpod", 20, 100, False)["rows"]
    assert [r for r in rows if not r["ok"]] == []
    assert common.snapshot_diff(before, common.root_snapshot()) == []
