"""Every command answers ``--help`` with its purpose, its usage and help for each parameter."""

from __future__ import annotations

import pytest
import typer

from netlab.cli.main import app

# the commands of the contract this suite covers (others may be added; none may go missing)
COMMANDS = {
    "up": ("Stand a lab up", "TOPOLOGY"),
    "down": ("Tear a lab down", "[LAB]"),
    "gc": ("Remove leftovers of crashed labs", ""),
    "status": ("Labs, their design", "[LAB]"),
    "exec": ("Run a command inside a node's or pod's netns", "{LAB} {TARGET} {CMD}..."),
    "show": ("Print a target's kernel state", "{LAB} {TARGET} [SECTION]"),
    "logs": ("Print a lab process's log", "{LAB} {TARGET}"),
    "restart": ("Restart one lab process", "{LAB} {TARGET}"),
    "enroll": ("Put a pod in the ambient mesh", "{LAB} {POD}"),
    "unenroll": ("Take a pod out of the ambient mesh", "{LAB} {POD}"),
    "doctor": ("Preflight", ""),
}


def test_root_help_lists_every_command(run) -> None:
    r = run("--help")
    assert r.exit_code == 0
    assert r.stdout.startswith("Usage: netlab [OPTIONS] COMMAND")
    listed = {ln.split()[0] for ln in r.stdout.split("Commands:")[1].splitlines() if ln.strip()}
    assert set(COMMANDS) <= listed


def test_bare_netlab_prints_the_help(run) -> None:
    r = run()
    assert r.exit_code == 0 and "Commands:" in r.stdout


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_command_help(run, command: str) -> None:
    purpose, usage = COMMANDS[command]
    r = run(command, "--help")
    assert r.exit_code == 0, r.stderr
    first = r.stdout.splitlines()[0]
    assert first.startswith(f"Usage: netlab {command} [OPTIONS]")
    assert first.replace("{", "").replace("}", "").endswith(
        usage.replace("{", "").replace("}", "")), first  # recent typer braces required arguments
    assert purpose in " ".join(r.stdout.split())
    assert r.stderr == ""


def test_every_parameter_of_every_command_has_help() -> None:
    group = typer.main.get_command(app)
    for name, cmd in group.commands.items():  # type: ignore[attr-defined]
        assert cmd.help, f"netlab {name} has no help text"
        for p in cmd.params:
            assert getattr(p, "help", None), f"netlab {name}: parameter {p.name} has no help"


def test_up_help_names_the_choices(run) -> None:
    text = " ".join(run("up", "--help").stdout.split())
    for choice in ("node-routing", "inpod", "none", "geneve-user", "vxlan", "python-iptables", "--dry-run"):
        assert choice in text
