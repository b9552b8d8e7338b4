"""Teaching labs 4 and 5 on one in-pod bookinfo (lab 5 adds its node-routing twin)."""

from __future__ import annotations

import pytest

from tests.kernel.helpers import netlab

pytestmark = pytest.mark.root
LAB = "lbti"


@pytest.fixture(scope="module")
def lab():
    netlab("lab", "start", "4", "--name", LAB, timeout=180)
    try:
        yield LAB
    finally:
        if netlab("down", LAB, check=False, timeout=300).returncode:
            netlab("down", LAB, check=False, timeout=300)  # once more: a busy host can time the first out
        netlab("down", f"{LAB}-nr", check=False)


@pytest.mark.parametrize("number", [4, 5])
def test_lab_run_passes(lab, number: int) -> None:
    p = netlab("lab", "run", str(number), "--name", lab, timeout=300, check=False)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    assert f"lab {number}: all" in p.stdout


def test_check_names_the_undone_in_pod_step(lab) -> None:
    netlab("lab", "start", "4", "--name", lab)
    netlab("unenroll", lab, "sleep")
    p = netlab("lab", "check", "4", "--name", lab, check=False)
    assert p.returncode == 1
    assert "sleep's netns lacks chain(s) ISTIO_OUTPUT, ISTIO_PRERT: sleep is not enrolled" in p.stdout
    netlab("enroll", lab, "sleep")


def test_concepts_diagram_is_what_a_live_lab_draws(lab) -> None:
    from netlab.teach.diagram import render
    from tests.unit.test_docs_links import diagram_block

    netlab("lab", "start", "4", "--name", lab)
    assert render(lab) == diagram_block("inpod")


def test_inpod_walk_commands_print_what_the_doc_shows(lab) -> None:
    from tests.kernel.doc_snippets import check_doc

    netlab("lab", "start", "4", "--name", lab)
    netlab("exec", lab, "sleep", "--", "curl", "-s", "-o", "/dev/null", "http://productpage:9080/")
    problems = check_doc("docs/walk-inpod.md", lab)
    assert not problems, "\n".join(problems)
