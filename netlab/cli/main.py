"""``netlab``: stand up Istio ambient labs from network namespaces, look inside, tear down.

The one place the command line is assembled: each command group is a module of its own with
its own ``typer.Typer()``, merged here into the root app in the order ``--help`` lists them.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from netlab.cli import common, doctor, inspect, lifecycle, teach

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Istio ambient mode's traffic redirection, both designs, built from network namespaces.")

GROUPS = (lifecycle.app, inspect.app, doctor.app, teach.app)
for _group in GROUPS:
    # a group with a name (``lab``) is a sub-command; the others' commands sit at the top
    app.add_typer(_group, name=_group.info.name)


@app.callback()
def _root(verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Debug logs and tracebacks.")] = False) -> None:
    common.state["verbose"] = verbose
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")


def main() -> None:
    app()
