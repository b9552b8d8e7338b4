"""Shared CLI plumbing: consoles, the error boundary, JSON envelopes."""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from netlab.errors import NetlabError

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)
F = TypeVar("F", bound=Callable[..., Any])
RESULT_VERSION = 1
state = {"verbose": False}

LabArg = Annotated[str | None, typer.Argument(help="Lab name (default: the only running lab).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]


def boundary(fn: F) -> F:
    """Catch NetlabError: one line (+hint) on stderr, its exit code; tracebacks only with -v."""

    @functools.wraps(fn)
    def wrapper(*a: Any, **kw: Any) -> Any:
        try:
            return fn(*a, **kw)
        except NetlabError as e:
            if state["verbose"]:
                logging.getLogger("netlab").exception("error")
            err.print(f"netlab: error: {e.message}", markup=False)
            if e.hint:
                err.print(f"hint: {e.hint}", markup=False)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM/SIGHUP (their signum is on the exception)
            err.print("netlab: interrupted", markup=False)
            raise typer.Exit(128 + getattr(e, "signum", 2)) from None

    return wrapper  # type: ignore[return-value]


def emit_json(command: str, data: Any, status: str = "ok", errors: list[str] | None = None) -> None:
    sys.stdout.write(json.dumps({"netlab_result_version": RESULT_VERSION, "command": command, "status": status,
                                 "data": data, "errors": errors or []}, sort_keys=True, indent=1) + "\n")
