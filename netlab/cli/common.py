"""Shared CLI plumbing: consoles, the error boundary, JSON envelopes.

The failure contract every command keeps (README, "Commands"): stderr gets exactly one line
``netlab: error: <what went wrong>``, optionally followed by one line ``hint: <what to do>``,
and the process exits with the error's code (2 bad command line or topology, 3 plan, 4 kernel,
5 process, 6 lab state, 7 preflight, 130 interrupted). The lines are never wrapped, whatever
the terminal width or when stderr is a pipe, so a script can rely on ``head -n1``. With
``--json`` the same error also goes to stdout as an envelope with ``"status": "error"``.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from typer.core import TyperGroup

from netlab.errors import NetlabError

out = Console(highlight=False, emoji=False)
err = Console(stderr=True, highlight=False, emoji=False)
# rich wraps at 80 columns when it is not writing to a terminal: a one-line message must stay
# one line for scripts. On a terminal, wrapping is left to rich (the progress display needs it).
err.soft_wrap = not err.is_terminal
if not out.is_terminal:  # tables piped to grep or a file keep one row per line
    out.width = 400
F = TypeVar("F", bound=Callable[..., Any])
RESULT_VERSION = 1
state = {"verbose": False}

LabArg = Annotated[str | None, typer.Argument(metavar="LAB", help="Lab name (default: the only running lab).",
                                               show_default=False)]
LabName = Annotated[str, typer.Argument(metavar="LAB", help="Lab name.")]
TargetArg = Annotated[str, typer.Argument(metavar="TARGET", help="Node, pod, or ztunnel-<node>.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]

# recent typer releases vendor their own click; its exception classes are reachable through the public
# typer.BadParameter (a click UsageError) whichever click is underneath.
_MRO = {c.__name__: c for c in typer.BadParameter.__mro__}
ClickException: type[Exception] = _MRO["ClickException"]
UsageError: type[Exception] = _MRO["UsageError"]


def one_line(text: str) -> str:
    """Collapse a message onto one line (a kernel tool's stderr may carry several)."""
    return "; ".join(ln.strip() for ln in str(text).splitlines() if ln.strip())


def fail(message: str, hint: str | None = None) -> None:
    """Print the failure lines: ``netlab: error: …`` and, if any, ``hint: …``."""
    sys.stdout.flush()
    sys.stderr.write(f"netlab: error: {one_line(message)}\n")
    if hint:
        sys.stderr.write(f"hint: {one_line(hint)}\n")
    sys.stderr.flush()


def command_name() -> str:
    """``up``, ``exec``, ``lab list``: the running command's path without the program name."""
    # click's context stack, in whichever click typer runs on (its vendored copy or click itself)
    click_pkg = typer.Context.__mro__[1].__module__.rsplit(".", 1)[0]
    ctx = importlib.import_module(f"{click_pkg}.globals").get_current_context(silent=True)
    parts: list[str] = []
    while ctx is not None and ctx.parent is not None:
        parts.append(ctx.info_name or "")
        ctx = ctx.parent
    return " ".join(reversed(parts))


def boundary(fn: F) -> F:
    """Catch NetlabError: the failure lines on stderr, its exit code; tracebacks only with -v.

    A command called with ``--json`` (its ``json_`` parameter) also gets the error envelope on
    stdout, so a script reading JSON always gets JSON.
    """

    @functools.wraps(fn)
    def wrapper(*a: Any, **kw: Any) -> Any:
        try:
            return fn(*a, **kw)
        except NetlabError as e:
            if state["verbose"]:
                logging.getLogger("netlab").exception("error")
            if kw.get("json_"):
                emit_json(command_name(), None, status="error", errors=[one_line(e.message)])
            fail(e.message, e.hint)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM/SIGHUP (their signum is on the exception)
            sys.stderr.write("netlab: interrupted\n")
            raise typer.Exit(128 + getattr(e, "signum", 2)) from None

    return wrapper  # type: ignore[return-value]


def emit_json(command: str, data: Any, status: str = "ok", errors: list[str] | None = None) -> None:
    """The one ``--json`` envelope: ``{netlab_result_version, command, status, data, errors}``."""
    sys.stdout.write(json.dumps({"netlab_result_version": RESULT_VERSION, "command": command, "status": status,
                                 "data": data, "errors": errors or []}, sort_keys=True, indent=1) + "\n")
    sys.stdout.flush()


class OneLineErrors(TyperGroup):
    """The root command group: command-line mistakes (missing argument, unknown option, bad
    value) follow the same one-line contract as every other failure, instead of click's usage
    block, and exit 2 as click does."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,  # type: ignore[override]
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except UsageError as e:
            ctx = getattr(e, "ctx", None)
            if type(e).__name__ == "NoArgsIsHelpError":  # bare `netlab`: the help, as asked for
                sys.stdout.write(e.format_message() + "\n")  # type: ignore[attr-defined]
                sys.exit(0)
            fail(e.format_message(),  # type: ignore[attr-defined]
                 f"see `{ctx.command_path} --help`" if ctx is not None else None)
            sys.exit(getattr(e, "exit_code", 2))
        except ClickException as e:
            fail(e.format_message())  # type: ignore[attr-defined]
            sys.exit(getattr(e, "exit_code", 1))
        except typer.Abort:
            sys.stderr.write("netlab: interrupted\n")
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)
