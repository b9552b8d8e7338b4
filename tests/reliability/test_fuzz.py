"""Fuzzed topology files and ``up --dry-run`` arguments: each gives a valid plan or one clear
error line with its exit code, never a traceback. CI runs 100 examples per test;
``scripts/soak.py fuzz --examples 2000`` runs the long version."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from netlab.errors import NetlabError
from netlab.lab.lifecycle import make_plan
from netlab.topology.load import load_topology_text
from tests.reliability import fuzz

EXAMPLES = int(os.environ.get("NETLAB_FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=os.environ.get("NETLAB_FUZZ_RANDOM") is None,
                suppress_health_check=list(HealthCheck), database=None)
STATS = {"plans": 0, "errors": 0}


def one_line(e: NetlabError) -> None:
    assert e.message and "\n" not in e.message, repr(e.message)
    assert "Traceback" not in e.message
    assert 2 <= e.exit_code <= 7


@FUZZ
@given(fuzz.topology_text(), fuzz.MODES, fuzz.VERSIONS, fuzz.LAB_NAMES)
def test_fuzzed_topology_gives_a_plan_or_one_clear_line(tmp_path_factory, text, mode, version, name) -> None:
    path = tmp_path_factory.mktemp("fz") / "t.yaml"
    path.write_text(text)
    try:
        plan = make_plan(str(path), name=name, mode=mode, istio_version=version, encap="geneve-user", probe=False)
    except NetlabError as e:
        one_line(e)
        STATS["errors"] += 1
        return
    assert plan.render()  # a plan that renders
    STATS["plans"] += 1


@FUZZ
@given(fuzz.topology_text())
def test_fuzzed_text_parses_or_raises_topology_error(text) -> None:
    try:
        load_topology_text(text, "<fuzz>")
    except NetlabError as e:
        one_line(e)
        assert e.exit_code == 2


@settings(max_examples=max(50, EXAMPLES // 3), deadline=None, database=None,
          derandomize=os.environ.get("NETLAB_FUZZ_RANDOM") is None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.one_of(st.sampled_from(["--mode", "--name", "--encap", "--istio-version", "--retain", "--json",
                                           "--iptables-backend", "minimal", "bookinfo", "-v", "--", "--bogus"]),
                          fuzz.NAMES, fuzz.MODES, fuzz.ENCAPS), max_size=6))
def test_fuzzed_up_arguments_give_one_line(args) -> None:
    from netlab.cli.main import app

    r = CliRunner().invoke(app, ["up", "--dry-run", *args])
    assert r.exception is None or isinstance(r.exception, SystemExit), (args, r.exception)
    assert "Traceback" not in r.output
    assert r.exit_code in (0, 2, 3, 4, 5, 6, 7), (args, r.exit_code, r.output)


def test_zz_the_fuzzer_reaches_both_outcomes() -> None:
    """The generated files are not all rejected (nor all accepted): both paths were exercised."""
    if STATS["plans"] + STATS["errors"] >= 50:
        assert STATS["plans"] > 0 and STATS["errors"] > 0, STATS
