"""The docs stand alone: every relative link resolves, nothing points outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
OUTSIDE = re.compile(r"\.\./shared|ambient-facts|seed[- ]?0{3}|DESIGN(\.md| hard rule)|§|STYLE §|\btable D\b")
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)]*)?\)")


def diagram_block(design: str) -> str:
    """The ```text block after ``<!-- diagram: DESIGN -->`` in docs/concepts.md."""
    text = (ROOT / "docs" / "concepts.md").read_text()
    m = re.search(rf"<!-- diagram: {re.escape(design)} -->\n```text\n(.*?)```", text, re.S)
    assert m, f"no {design} diagram in docs/concepts.md"
    return m.group(1)


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT)) for d in DOCS])
def test_no_pointer_outside_the_repository(doc: Path) -> None:
    bad = [ln for ln in doc.read_text().splitlines() if OUTSIDE.search(ln)]
    assert not bad, f"{doc.relative_to(ROOT)} points outside the repository: {bad[:3]}"


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT)) for d in DOCS])
def test_relative_links_resolve(doc: Path) -> None:
    for target, _ in LINK.findall(doc.read_text()):
        if "://" in target or target.startswith("mailto:"):
            continue
        assert (doc.parent / target).exists(), f"{doc.relative_to(ROOT)}: broken link {target}"


def test_both_diagrams_are_in_concepts() -> None:
    assert "ip rule 101: from all fwmark 0x100/0x100 lookup 101" in diagram_block("node-routing")
    assert "ip rule 32764: from all fwmark 0x111/0xfff lookup 100" in diagram_block("inpod")


def test_glossary_defines_the_words_a_learner_meets() -> None:
    text = (ROOT / "docs" / "glossary.md").read_text()
    for word in ("HBONE", "ZDS", "TPROXY", "SPIFFE", "kind", "ipset", "fwmark", "conntrack", "Geneve", "ztunnel"):
        assert re.search(rf"^\*\*{re.escape(word)}\*\*", text, re.M), word
