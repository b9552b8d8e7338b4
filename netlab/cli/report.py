"""report: the same scenario through each design, side by side (Markdown, HTML, JSON, pcaps)."""

from __future__ import annotations

from typing import Annotated

import typer

from netlab.cli.common import boundary, err
from netlab.errors import LabError

app = typer.Typer()
PHASES = ("up", "scenario", "capture", "trace", "objects", "enroll", "down")


@app.command()
@boundary
def report(
    topology: Annotated[str | None, typer.Argument(help="Topology YAML file, or a shipped name (bookinfo, ...).")] = None,
    out: Annotated[str, typer.Option("-o", "--out", help="Directory to write report.md/.html/.json, pcaps/ and trace/.")] = "",
    designs: Annotated[str, typer.Option(help="Comma-separated designs, run in this order.")] = "none,node-routing,inpod",
    istio_version: Annotated[str | None, typer.Option("--istio-version", help="Rule set for the design that reproduces it (1.18-1.20 node-routing, 1.21-1.24 inpod); the other keeps its default.")] = None,
    requests: Annotated[int, typer.Option(help="Requests in the latency run (each a new connection), after 5 unmeasured ones.", min=1, max=10000)] = 50,
    bulk_mib: Annotated[int, typer.Option("--bulk-mib", help="MiB in the iperf3 transfer (0: none).", min=0, max=4096)] = 16,
    from_: Annotated[str, typer.Option("--from", help="Client pod of the scenario.")] = "sleep",
    to: Annotated[str, typer.Option("--to", help="URL the client requests.")] = "http://productpage:9080/",
    name: Annotated[str, typer.Option("--name", help="Lab name prefix (labs <name>-none, -nr, -ip).")] = "report",
    compare: Annotated[tuple[str, str] | None, typer.Option("--compare", help="Render two report.json side by side instead of running (A B).")] = None,
) -> None:
    """Run the same scenario in each design and write a side-by-side report from that run.

    For each design: up, the scenario (requests, an iperf3 bulk transfer, one captured and one
    traced connection), kernel objects of every netns, a live enrollment, down.
    """
    if not out:
        raise LabError("-o DIR is required (where the report goes)")
    if compare:
        from netlab.observe.report.compare import write_compare

        for path in write_compare(compare[0], compare[1], out):
            err.print(f"wrote {path}", markup=False)
        return
    if not topology:
        raise LabError("TOPOLOGY is required (or --compare A/report.json B/report.json)")
    from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    from netlab.observe.report import runner

    opts = runner.Options(topology=topology, out_dir=out, designs=runner.parse_designs(designs),
                          istio_version=istio_version, requests=requests, bulk_mib=bulk_mib, client=from_,
                          url=to, name=name)
    with Progress(TextColumn("{task.description:<28}"), BarColumn(), TextColumn("{task.fields[phase]:<10}"),
                  TimeElapsedColumn(), console=err, transient=False, disable=not err.is_terminal) as prog:
        tasks: dict[str, TaskID] = {}

        def progress(design: str, phase: str) -> None:
            for d, t in tasks.items():
                if d != design:
                    prog.update(t, completed=len(PHASES), phase="done")
            if design and design not in tasks:
                tasks[design] = prog.add_task(f"{design}", total=len(PHASES), phase="")
            if design:
                done = PHASES.index(phase) if phase in PHASES else 0
                prog.update(tasks[design], completed=done, phase=phase)
            if not err.is_terminal and design:
                err.print(f"{design}: {phase}", markup=False)

        rep = runner.run(opts, progress=progress)
    files = runner.write(rep, out)
    for r in rep.designs:
        figures = f"p50 {r.latency.p50_ms:.1f} ms" + (f", bulk {r.bulk.mbit_s:.0f} Mbit/s" if r.bulk else "")
        err.print(f"{r.design}: {figures}" + (f" ({'; '.join(r.notes)})" if r.notes else ""), markup=False)
    err.print(f"report of {len(rep.designs)} designs in {rep.seconds:.1f}s: {', '.join(files[:3])}", markup=False)
