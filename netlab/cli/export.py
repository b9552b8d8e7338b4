"""``netlab export kind`` / ``netlab export observe``: the same topology on a real cluster."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from netlab.cli.common import JsonOpt, boundary, emit_json, err, out

if TYPE_CHECKING:
    from netlab.export.bundle import ExportResult

app = typer.Typer(no_args_is_help=True, help="Export a topology to a real kind cluster with real Istio ambient.")


class IstioVersion(StrEnum):
    v1_20 = "1.20"
    v1_22 = "1.22"
    v1_24 = "1.24"


def _report(command: str, res: ExportResult, json_: bool, next_step: str) -> None:
    if json_:
        emit_json(command, res.__dict__)
        return
    for f in res.files:
        out.print(f, markup=False)
    err.print(f"cluster {res.cluster}: Istio {res.istio_version} ({res.design})", markup=False)
    for n in res.notes:
        err.print(f"note: {n}", markup=False)
    err.print(next_step, markup=False)


@app.command("kind")
@boundary
def kind_(
    topology: Annotated[str, typer.Argument(help="Topology YAML file, or a shipped name (bookinfo, minimal, scale).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Directory to write (created if missing).")],
    istio_version: Annotated[IstioVersion, typer.Option(
        "--istio-version", help="Istio release to install: 1.20 (node-routing), 1.22 or 1.24 (in-pod).")
    ] = IstioVersion.v1_20,
    force: Annotated[bool, typer.Option("--force", help="Write into a non-empty directory that holds no export.")
                     ] = False,
    json_: JsonOpt = False,
) -> None:
    """Write a kind config, manifests, Istio install commands and run.sh for TOPOLOGY (runs nothing)."""
    from netlab.export.bundle import export_kind

    res = export_kind(topology, out=output, istio_version=istio_version.value, force=force)
    _report("export kind", res, json_, f"next: bash {output}/run.sh   (needs docker, kind, kubectl, curl)")


@app.command("observe")
@boundary
def observe(
    directory: Annotated[Path, typer.Argument(help="A directory written by `netlab export kind`.")],
    json_: JsonOpt = False,
) -> None:
    """Write observe.sh: collects the real cluster's kernel views and ztunnel logs as report JSON."""
    from netlab.export.bundle import export_observe

    res = export_observe(directory)
    _report("export observe", res, json_, f"next: bash {directory}/observe.sh   (after run.sh; writes "
                                          f"{directory}/observed/report.json)")
