"""Run the `$ netlab ...` lines of a doc's shell blocks against a live lab and check the shape of
what they print: every rule, ip rule and route line the doc shows must be there (counters,
generated veth names and conntrack/ss/log lines, which change run to run, are not compared)."""

from __future__ import annotations

import re
from pathlib import Path

from netlab.teach.engine import run_command

ROOT = Path(__file__).resolve().parents[2]
SHAPE = re.compile(r"^(\[\d+:\d+\] )?-A |^\d+:\s+from |^(default|local|10\.|192\.168\.)")


def commands(doc: str) -> list[tuple[str, list[str]]]:
    out: list[tuple[str, list[str]]] = []
    for block in re.findall(r"```(?:sh|text)?\n(.*?)```", (ROOT / doc).read_text(), re.S):
        cur = None
        for ln in block.splitlines():
            if ln.startswith("$ "):
                cur = (ln[2:], []) if ln.startswith("$ netlab ") else None
                if cur:
                    out.append(cur)
            elif cur is not None and not ln.startswith("    "):
                cur[1].append(ln)
    return out


def norm(line: str) -> str:
    line = re.sub(r"^\[\d+:\d+\] ", "", line)
    line = re.sub(r"veth[0-9a-f]{8}", "VETH", line)
    return " ".join(line.split())


def check_doc(doc: str, lab: str, docs_lab: str = "bookinfo") -> list[str]:
    """Problems found running ``doc``'s netlab commands with ``docs_lab`` replaced by ``lab``."""
    problems = []
    for cmd, expected in commands(doc):
        if re.search(r"veth[0-9a-f]{8}", cmd):
            continue  # names generated per lab: the labs' own checks run this command
        run = re.sub(rf"\b{docs_lab}\b", lab, cmd)
        p = run_command(run)
        if p.returncode != 0:
            problems.append(f"{doc}: `{cmd}` exited {p.returncode}: {p.stderr.strip()[-300:]}")
            continue
        got = {norm(x) for x in p.stdout.splitlines()}
        for want in expected:
            if SHAPE.search(want) and norm(want) not in got:
                problems.append(f"{doc}: `{cmd}` does not print {want!r}")
    return problems
