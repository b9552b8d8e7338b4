"""``netlab``: stand up Istio ambient labs from network namespaces, look inside, tear down.

The one place the command line is assembled: each command group is a module of its own with
its own ``typer.Typer()``, merged here into the root app in the order ``--help`` lists them.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from netlab.cli import capture, common, doctor, inspect, lifecycle, report

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Istio ambient mode's traffic redirection, both designs, built from network namespaces.")

GROUPS = (lifecycle.app, inspect.app, capture.app, report.app, doctor.app)
for _group in GROUPS:
    app.add_typer(_group)


@app.callback()
def _root(verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Debug logs and tracebacks.")] = False) -> None:
    common.state["verbose"] = verbose
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")


def main() -> None:
    app()
