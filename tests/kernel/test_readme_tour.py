"""The README's two-minute tour, run command by command as a learner types it (with this test's
own lab name instead of `lab1`), each output checked against the README's lines."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from netlab.teach.engine import run_command
from tests.kernel.helpers import netlab

pytestmark = pytest.mark.root
ROOT = Path(__file__).resolve().parents[2]
LAB = "lbreadme"


def tour() -> list[tuple[str, list[str]]]:
    """[(command, expected lines)] from the README's ``<!-- tour -->`` block ('...' lines skipped)."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- tour -->\n```sh\n(.*?)```", text, re.S)
    assert block, "README has no tour block"
    steps: list[tuple[str, list[str]]] = []
    for ln in block.group(1).splitlines():
        if ln.startswith("$ "):
            steps.append((ln[2:], []))
        elif ln.strip() != "..." and steps:
            steps[-1][1].append(ln)
    return steps


def norm(line: str) -> str:
    """What may differ between runs: times, ports, durations, the encap this kernel picks, the lab."""
    line = re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+Z", "TIME", line)
    line = re.sub(r"(src\.addr=[\d.]+):\d+", r"\1:PORT", line)
    line = re.sub(r'duration="\d+ms"', 'duration="N"', line)
    line = re.sub(r"encap [\w-]+", "encap E", line)
    return line.replace(LAB, "lab1").rstrip()


def as_run(cmd: str) -> str:
    cmd = re.sub(r"\blab1\b", LAB, cmd)
    if re.match(r"netlab lab (start|check) 1$", cmd):
        cmd += f" --name {LAB}"
    return cmd


def test_readme_tour_runs_as_written() -> None:
    steps = tour()
    assert [c.split()[1] for c, _ in steps] == ["lab", "exec", "logs", "exec", "lab", "down"]
    try:
        for cmd, expected in steps:
            p = run_command(as_run(cmd))
            got = [norm(x) for x in (p.stdout + p.stderr).splitlines()]
            for want in expected:
                w = norm(want)
                if w.endswith("; ..."):  # a line the README cut short
                    assert any(g.startswith(w[:-5]) for g in got), f"`{cmd}`: no line like {want!r}:\n{got}"
                else:
                    assert w in got, f"`{cmd}`: missing {want!r} in:\n" + "\n".join(got)
            if not cmd.startswith("netlab lab check"):
                assert p.returncode == 0, f"`{cmd}` exited {p.returncode}: {p.stderr}"
    finally:
        netlab("down", LAB, check=False)
