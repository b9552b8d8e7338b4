"""Shared test plumbing: the ``root`` mark, golden files, and the root-netns guard.

Kernel tests (``@pytest.mark.root``) are skipped without root; the mark is the only root
check in the suite (no test module checks ``geteuid`` itself). Whenever any ran, the session
checks that the root network namespace (links, addresses, routes of all tables, rules,
iptables-save, ipset names) is exactly as it was before: netlab works only inside its own
namespaces and must never change the host's.
"""

from __future__ import annotations

import difflib
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = os.geteuid() == 0
GOLDEN = Path(__file__).parent / "golden"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", help="rewrite golden files from current output")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if ROOT:
        return
    skip = pytest.mark.skip(reason="needs root (creates real network namespaces)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


def _run(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"<{argv[0]}: {e}>"


def root_netns_snapshot() -> dict[str, str]:
    ipt = re.sub(r"\[\d+:\d+\]", "[0:0]", "\n".join(
        ln for ln in _run(["iptables-save"]).splitlines() if not ln.startswith("#")))
    return {
        "links": re.sub(r"\d+: ", "", _run(["ip", "-o", "link", "show"])),
        "addrs": _run(["ip", "-o", "addr", "show"]),
        "routes": _run(["ip", "route", "show", "table", "all"]),
        "rules": _run(["ip", "rule", "show"]),
        "iptables": ipt,
        "ipsets": _run(["ipset", "list", "-n"]),
    }


@pytest.fixture(scope="session", autouse=True)
def root_netns_unchanged(request: pytest.FixtureRequest):
    kernel = any("root" in i.keywords for i in request.session.items)
    if not (ROOT and kernel):
        yield
        return
    before = root_netns_snapshot()
    yield
    after = root_netns_snapshot()
    diffs = []
    for k in before:
        if before[k] != after[k]:
            diffs.append(f"root netns {k} changed:\n" + "".join(difflib.unified_diff(
                before[k].splitlines(True), after[k].splitlines(True), "before", "after")))
    assert not diffs, "\n".join(diffs)


@pytest.fixture
def golden(request: pytest.FixtureRequest):
    """``golden("bookinfo/node-routing/plan.txt", text)``: byte-for-byte, diff on failure."""
    update = request.config.getoption("--update-golden")

    def check(rel: str, text: str) -> None:
        path = GOLDEN / rel
        if update or not path.exists():
            if not update and os.environ.get("CI"):
                pytest.fail(f"golden file {rel} is missing (run pytest --update-golden)")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            return
        want = path.read_text()
        if want != text:
            diff = "".join(difflib.unified_diff(want.splitlines(True), text.splitlines(True), f"golden/{rel}", "now"))
            pytest.fail(f"{rel} differs from its golden file (pytest --update-golden rewrites it):\n{diff}")

    return check
