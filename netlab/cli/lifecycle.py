"""up / down / gc: standing labs up and tearing them down."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from netlab.cli.common import JsonOpt, LabArg, boundary, emit_json, err, out
from netlab.errors import LabError

app = typer.Typer()


@app.command()
@boundary
def up(
    topology: Annotated[str, typer.Argument(
        metavar="TOPOLOGY", help="Topology YAML file, or a shipped name (bookinfo, minimal, scale).")],
    mode: Annotated[str, typer.Option(
        metavar="MODE", help="node-routing (Istio 1.18-1.20), inpod (1.21+) or none (no mesh).")] = "node-routing",
    name: Annotated[str | None, typer.Option(
        "--name", metavar="LAB", help="Lab name (default: the topology's name); 1-24 of a-z, 0-9, '-'.")] = None,
    encap: Annotated[str, typer.Option(
        metavar="ENCAP", help="auto | geneve | geneve-user | vxlan (node-routing tunnels).")] = "auto",
    istio_version: Annotated[str | None, typer.Option(
        "--istio-version", metavar="VERSION",
        help="Rule set to reproduce (node-routing 1.18-1.20, default 1.20; inpod 1.21-1.24, default 1.22).")] = None,
    iptables_backend: Annotated[str, typer.Option(
        "--iptables-backend", metavar="BACKEND",
        help="restore (iptables-restore, nft or legacy as Istio picks) or python-iptables (libiptc, legacy).")
    ] = "restore",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; change nothing (no root needed).")] = False,
    retain: Annotated[bool, typer.Option("--retain", help="Keep a half-built lab on failure (for debugging).")] = False,
    json_: JsonOpt = False,
) -> None:
    """Stand a lab up (idempotent: the same lab again is a no-op)."""
    from netlab.lab import lifecycle as lablib
    from netlab.plan.build import check_options

    # every choice is checked before anything runs: no kernel probe with a bad --name
    check_options(lab=name, mode=mode, istio_version=istio_version, encap=encap)
    lablib.check_iptables_backend(iptables_backend)
    if dry_run:
        plan = lablib.make_plan(topology, name=name, mode=mode, istio_version=istio_version, encap=encap,
                                probe=os.geteuid() == 0)
        if json_:
            emit_json("up", {"lab": plan.lab, "mode": plan.mode, "plan": plan.render()})
        else:
            sys.stdout.write(plan.render())
        return
    from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=err, transient=True, disable=not err.is_terminal) as prog:
        tasks: dict[str, TaskID] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = prog.add_task(stage, total=total)
            prog.update(tasks[stage], completed=done, total=total)

        res = lablib.up(topology, name=name, mode=mode, istio_version=istio_version, encap=encap, retain=retain,
                        iptables_backend=iptables_backend, progress=progress)
    if json_:
        emit_json("up", res.__dict__)
        return
    what = f"mode {res.mode}" + (f", istio {res.istio_version}" if res.istio_version else "") + \
        (f", encap {res.encap}" if res.encap else "")
    if res.changed:
        err.print(f"lab {res.lab} is up ({what}): {res.netns} netns, {res.processes} processes in {res.seconds:.1f}s",
                  markup=False)
    else:
        err.print(f"lab {res.lab} is already up ({what}); nothing changed", markup=False)


@app.command()
@boundary
def down(
    lab: LabArg = None,
    all_: Annotated[bool, typer.Option("--all", help="Tear down every lab.")] = False,
    design_only: Annotated[bool, typer.Option(
        "--design-only", help="Only take the node-routing design off (istio-cni cleanupNode, in its order); "
                              "pods keep running, unmeshed.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Tear a lab down: processes, namespaces, files. Nothing of it remains."""
    from netlab.lab import lifecycle as lablib

    if design_only:
        from netlab.lab.design import remove_design

        if all_:
            raise LabError("--design-only takes one lab, not --all")
        d = remove_design(lablib.default_lab(lab))
        if json_:
            emit_json("down", d.__dict__)
            return
        for node, steps in d.removed.items():
            out.print(f"# {node}: cleanupNode", markup=False, style="bold")
            sys.stdout.write("".join(s + "\n" for s in steps))
        err.print(f"lab {d.lab}: node-routing design removed ({sum(map(len, d.removed.values()))} objects, "
                  f"{len(d.processes_removed)} processes, {len(d.netns_removed)} ztunnel pods); "
                  "pods run unmeshed", markup=False)
        return
    labs = lablib.known_labs() if all_ else [lablib.default_lab(lab)]
    results = [lablib.down(x) for x in labs]
    if json_:
        emit_json("down", [r.__dict__ for r in results])
        return
    for r in results:
        err.print(f"lab {r.lab} removed: {len(r.netns_removed)} netns, {len(r.processes_stopped)} processes "
                  f"in {r.seconds:.1f}s", markup=False)


@app.command()
@boundary
def gc(json_: JsonOpt = False) -> None:
    """Remove leftovers of crashed labs, found by their nl- markers."""
    from netlab.lab import lifecycle as lablib

    results = lablib.gc()
    if json_:
        emit_json("gc", [r.__dict__ for r in results])
        return
    if not results:
        err.print("nothing to clean", markup=False)
    for r in results:
        err.print(f"removed {r.lab}: {len(r.netns_removed)} netns, {len(r.processes_stopped)} processes, "
                  f"{len(r.files_removed)} files", markup=False)
