"""capture / trace: watching packets cross a lab, and the rules and routes one connection meets."""

from __future__ import annotations

import dataclasses
import os
from typing import Annotated

import typer
from rich.table import Table

from netlab.cli.common import JsonOpt, boundary, emit_json, err, out
from netlab.errors import LabError

app = typer.Typer()


@app.command()
@boundary
def capture(
    lab: Annotated[str, typer.Argument(help="Lab name.")],
    cmd: Annotated[list[str] | None, typer.Argument(help="-- TARGET CMD...: run CMD in TARGET's netns while capturing.")] = None,
    output: Annotated[str, typer.Option("-o", "--output", help="Directory for the pcaps (created if missing).")] = "",
    bpf: Annotated[str | None, typer.Option("--filter", help="BPF filter, as tcpdump takes it (applied in the kernel).")] = None,
    only: Annotated[str | None, typer.Option("--only", help="Comma-separated TARGET or TARGET:DEVICE to capture (default: every interface of the lab).")] = None,
    seconds: Annotated[float | None, typer.Option("--seconds", help="Capture for N seconds instead of running a command.")] = None,
    json_: JsonOpt = False,
) -> None:
    """Capture every interface of every lab netns: one pcap per interface plus one merged pcapng.

    All sockets capture before the command starts and drain after it ends. Files:
    DIR/<netns>__<device>.pcap and DIR/merged.pcapng (Wireshark shows netns/device per packet).
    """
    from netlab.lab import lifecycle as lablib
    from netlab.observe import capture as cap

    if not output:
        raise LabError("-o DIR is required")
    rec = lablib.record_of(lab)
    command = None
    if cmd:
        if len(cmd) < 2:
            raise LabError("after --, give TARGET and a command (netlab capture LAB -o DIR -- TARGET CMD...)")
        command = (lablib.target_netns(lab, cmd[0]), cmd[1:])
    if (seconds is None) == (command is None):
        raise LabError("give either --seconds N or -- TARGET CMD...")
    selection = [x.strip() for x in only.split(",") if x.strip()] if only else []

    def started(n: int) -> None:
        err.print(f"capturing on {n} interfaces of {lab} into {output}", markup=False)

    res = cap.capture(lab, os.path.abspath(output), members=rec.members, only=selection, bpf_filter=bpf,
                      seconds=seconds, command=command, command_stdout=2 if json_ else None, on_started=started)
    if json_:
        emit_json("capture", dataclasses.asdict(res))
    else:
        _print_capture(res)
    if res.interrupted:
        err.print("netlab: interrupted; the files above are complete and closed", markup=False)
        raise typer.Exit(130)
    if res.command_rc:
        raise typer.Exit(res.command_rc)


def _print_capture(res) -> None:
    t = Table(title=f"capture of {res.lab}: {res.directory}")
    for c in ("member (netns nl-<lab>-<member>)", "device", "packets", "kernel drops"):
        t.add_column(c, justify="right" if c in ("packets", "kernel drops") else "left", no_wrap=True)
    for i in sorted(res.interfaces, key=lambda i: (i.member, i.device)):
        t.add_row(i.member, i.device, str(i.packets), str(i.kernel_drops))
    total = sum(i.packets for i in res.interfaces)
    drops = sum(i.kernel_drops for i in res.interfaces)
    t.add_row("all", f"{len(res.interfaces)} interfaces", str(total), str(drops))
    out.print(t)
    out.print(f"merged: {res.merged}", markup=False)
