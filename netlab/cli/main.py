"""``netlab``: stand up Istio ambient labs from network namespaces, look inside, tear down.

The one place the command line is assembled: each command group is a module of its own with
its own ``typer.Typer()``, merged here into the root app in the order ``--help`` lists them.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from netlab.cli import capture, common, doctor, export, inspect, lifecycle, report, teach

app = typer.Typer(name="netlab", cls=common.OneLineErrors, add_completion=False, no_args_is_help=True,
                  rich_markup_mode=None, pretty_exceptions_show_locals=False,
                  help="Istio ambient mode's traffic redirection, both designs, built from network namespaces.")

# (group, name), one line each, in the order --help lists them: a name makes the group a
# sub-command (`netlab export kind`); None merges its commands into the root
GROUPS: tuple[tuple[typer.Typer, str | None], ...] = (
    (lifecycle.app, None),
    (inspect.app, None),
    (capture.app, None),
    (report.app, None),
    (doctor.app, None),
    (export.app, "export"),
    (teach.app, "lab"),
)
for _group, _name in GROUPS:
    app.add_typer(_group, name=_name)


@app.callback()
def _root(verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Debug logs and tracebacks.")] = False) -> None:
    common.state["verbose"] = verbose
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")


def main() -> None:
    app(prog_name="netlab")
