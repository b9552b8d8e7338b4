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
    hops: Annotated[bool, typer.Option("--hops", help="Then list each TCP connection's hops, proxy legs joined into one path through ztunnel's access logs.")] = False,
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
    paths = None
    if hops:
        from netlab.observe import hops as hopslib

        paths = hopslib.paths_for_capture(res)
    if json_:
        data = dataclasses.asdict(res)
        if paths is not None:
            data["paths"] = [dataclasses.asdict(p) for p in paths]
        emit_json("capture", data)
    else:
        _print_capture(res)
        for n, p in enumerate(paths or [], 1):
            for line in format_path(n, p):
                out.print(line, markup=False, soft_wrap=True)
    if res.interrupted:
        err.print("netlab: interrupted; the files above are complete and closed", markup=False)
        raise typer.Exit(130)
    if res.command_rc:
        raise typer.Exit(res.command_rc)


def _print_capture(res) -> None:
    t = Table(title=f"capture of {res.lab}: {res.directory}")
    for c in ("member (netns nl-<lab>.<member>)", "device", "packets", "kernel drops"):
        t.add_column(c, justify="right" if c in ("packets", "kernel drops") else "left", no_wrap=True)
    for i in sorted(res.interfaces, key=lambda i: (i.member, i.device)):
        t.add_row(i.member, i.device, str(i.packets), str(i.kernel_drops))
    total = sum(i.packets for i in res.interfaces)
    drops = sum(i.kernel_drops for i in res.interfaces)
    t.add_row("all", f"{len(res.interfaces)} interfaces", str(total), str(drops))
    out.print(t)
    out.print(f"merged: {res.merged}", markup=False)


def format_path(n: int, p) -> list[str]:
    """A path as text: its legs, each with its forward hops in order (times from the path's start)."""
    from netlab.observe import hops as hopslib

    via = f"  via {' -> '.join(p.ztunnels)}" if p.ztunnels else ""
    lines = [f"path {n}: {p.client} -> {p.server}{via}"]
    t0 = p.legs[0].start if p.legs else 0.0
    for i, leg in enumerate(p.legs, 1):
        asked = f" (to {leg.dst}:{leg.dport})" if (leg.dst, leg.dport) != (leg.server_dst, leg.server_dport) else ""
        lines.append(f"  leg {i} {leg.role:<12} {leg.client} {leg.src}:{leg.sport} -> {leg.server} "
                     f"{leg.server_dst}:{leg.server_dport}{asked}  {leg.encap}  payload {leg.payload_up} B up, "
                     f"{leg.payload_down} B down")
        for h in leg.hops:
            enc = f"geneve vni {h.vni}" if h.encap == "geneve" else ("hbone (TLS 15008)" if h.encap == "hbone" else "none")
            lines.append(f"    {(h.time - t0) * 1000:+9.3f} ms  {h.member:<24} {h.device:<13} {h.direction:<3} "
                         f"{h.src}:{h.sport} -> {h.dst}:{h.dport}  {enc:<17} {h.packets:>4} pkts {h.bytes:>7} B"
                         f"{'  SYN' if h.syn else ''}")
    if p.app_bytes_up is not None:
        lines.append(f"  access log: app sent {p.app_bytes_up} B, received {p.app_bytes_down} B")
    over = hopslib.hbone_overhead(p)
    if over is not None:
        lines.append(f"  HBONE leg: +{over[0]} B up, +{over[1]} B down over the app bytes. {hopslib.OVERHEAD_NOTE}.")
    return lines


@app.command()
@boundary
def trace(
    lab: Annotated[str, typer.Argument(help="Lab name.")],
    source: Annotated[str, typer.Option("--from", help="Pod that opens the connection.")] = "",
    destination: Annotated[str, typer.Option("--to", help="HOST:PORT (a service, pod or IP).")] = "",
    json_: JsonOpt = False,
) -> None:
    """Open one new TCP connection and list, in path order, every netfilter rule and routing
    decision it met in each netns (from nftables tracing and ip route get; nothing left behind)."""
    from netlab.observe import trace as tracelib
    from netlab.observe.model import RuleMatch

    if not source or not destination:
        raise LabError("--from POD and --to HOST:PORT are required")
    tr = tracelib.trace(lab, source=source, destination=destination)
    if json_:
        data = dataclasses.asdict(tr)
        data["steps"] = [{"kind": "rule" if isinstance(s, RuleMatch) else "route", **dataclasses.asdict(s)}
                         for s in tr.steps]
        emit_json("trace", data)
        return
    out.print(f"trace {source} -> {tr.destination} (source port {tr.sport}, "
              f"{'connected' if tr.connected else 'not accepted'})", markup=False)
    packet = None
    for s in tr.steps:
        if s.packet != packet:
            packet = s.packet
            head = packet if packet == "SYN" else f"{packet} (later packets, first of each kind)"
            out.print(head, markup=False, style="bold")
        if isinstance(s, RuleMatch):
            marks = f"mark {s.mark_before:#x}" + (f" -> {s.mark_after:#x}" if s.mark_after != s.mark_before else "")
            out.print(f"  {s.member:<24} {s.table:<7} {s.chain:<20} {s.rule}  [{marks}] => {s.verdict}",
                      markup=False, soft_wrap=True)
        else:
            via = f"iif {s.iif}" if s.iif else "sent locally"
            out.print(f"  {s.member:<24} route   {via}, mark {s.mark:#x}: ip rule {s.priority} -> table {s.table}: "
                      f"{s.route}", markup=False, soft_wrap=True)
