"""status / exec / show / logs / restart: looking into a running lab."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from rich.table import Table

from netlab.cli.common import JsonOpt, LabArg, LabName, TargetArg, boundary, emit_json, err, out
from netlab.errors import LabError, ProcessError

app = typer.Typer()


@app.command()
@boundary
def status(lab: LabArg = None, json_: JsonOpt = False) -> None:
    """Labs, their design, Istio version, encapsulation and process health."""
    from netlab.lab import lifecycle as lablib
    from netlab.observe import status as st

    if lab and lab not in lablib.known_labs():
        raise LabError(f"no lab named {lab!r}")
    data = [st.lab_status(lab)] if lab else st.all_status()
    if json_:
        emit_json("status", [d.as_json() for d in data])
        return
    if not data:
        err.print("no labs", markup=False)
        return
    t = Table(title="netlab labs")
    for c in ("lab", "state", "mode", "istio", "encap", "netns", "pods", "processes ready", "supervisor"):
        t.add_column(c)
    for d in data:
        t.add_row(d.lab, d.state, d.mode or "-", d.istio_version or "-", d.encap or "-",
                  str(d.netns), str(d.pods), f"{d.ready}/{len(d.processes)}", d.supervisor)
    out.print(t)
    for d in data:
        for problem in d.problems:
            err.print(f"{d.lab}: {problem}", markup=False)
    if lab:
        acked = set(data[0].mesh.ready) if data[0].mesh else None
        pt = Table(title=f"processes of {lab}")
        for c in ("name", "pid", "netns", "ready", "restarts") + (("mesh",) if acked is not None else ()):
            pt.add_column(c)
        for p in data[0].processes:
            row = [p.name, str(p.pid or "-"), p.ns, "yes" if p.ready else "no", str(p.restarts)]
            if acked is not None:
                pod = p.name.split("/", 1)[1] if p.name.startswith("pod/") else None
                row.append("-" if pod is None or pod not in (data[0].enrolled or ()) else ("acked" if pod in acked else "waiting"))
            pt.add_row(*row)
        out.print(pt)


@app.command(name="exec", context_settings={"allow_interspersed_args": False})
@boundary
def exec_(
    lab: LabName,
    target: TargetArg,
    cmd: Annotated[list[str], typer.Argument(
        metavar="CMD", help="Command to run inside the target's netns (after --).")],
) -> None:
    """Run a command inside a node's or pod's netns, with the lab's /etc/hosts."""
    from netlab.lab import lifecycle as lablib

    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise typer.BadParameter("no command given (netlab exec LAB TARGET -- CMD...)", param_hint="CMD")
    ns = lablib.target_netns(lab, target)
    sys.stdout.flush()
    os.execvp("ip", ["ip", "netns", "exec", ns, *cmd])


@app.command()
@boundary
def show(
    lab: LabName,
    target: TargetArg,
    what: Annotated[str, typer.Argument(
        metavar="SECTION", help="rules | routes | ipset | iptables | links | all (the default).", show_default=False)] = "all",
    json_: JsonOpt = False,
) -> None:
    """Print a target's kernel state: ip rule, routes of every table, ipsets, iptables-save, links."""
    from netlab.lab import lifecycle as lablib
    from netlab.observe.show import ORDER
    from netlab.observe.show import show as show_

    if what != "all" and what not in ORDER:
        raise typer.BadParameter(f"unknown section {what!r} (choose from {', '.join(ORDER)}, all)",
                                 param_hint="SECTION")
    from netlab.observe.show import iptables_save_tool

    ns = lablib.target_netns(lab, target)
    res = show_(ns, what, iptables_save=iptables_save_tool(lablib.record_of(lab).iptables_backend))
    if json_:
        emit_json("show", {"lab": lab, "target": target, "netns": ns, "sections": dict(res)})
        return
    for cmd, text in res:
        out.print(f"# {target}$ {cmd}", markup=False, style="bold")
        sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")
        sys.stdout.flush()


@app.command()
@boundary
def logs(
    lab: LabName,
    target: Annotated[str, typer.Argument(
        metavar="TARGET", help="Pod, ztunnel-<node>, node (its agents), or 'supervisor'.")],
    tail: Annotated[int, typer.Option("--tail", "-n", metavar="N", help="Last N lines of each log (0: all).")] = 0,
) -> None:
    """Print a lab process's log (for ztunnel: its access log, then its other logs)."""
    from netlab.observe.logs import log_files

    paths = log_files(lab, target)
    for path in paths:
        with open(path, errors="replace") as f:
            lines = f.readlines()
        if tail:
            lines = lines[-tail:]
        if len(paths) > 1:
            err.print(f"==> {os.path.basename(path)} <==", markup=False)
        sys.stdout.writelines(lines)


@app.command()
@boundary
def restart(
    lab: LabName,
    target: Annotated[str, typer.Argument(
        metavar="TARGET", help="Pod name, ztunnel-<node>, geneve-<node> or cni-<node>.")],
) -> None:
    """Restart one lab process (kill and start again under the supervisor)."""
    from netlab.observe.logs import process_name
    from netlab.runtime import supervisor

    name = process_name(lab, target)
    try:
        r = supervisor.request(lab, {"op": "restart", "name": name})
    except OSError as e:
        # not `netlab gc`: it would tear the whole lab down
        raise ProcessError(f"lab {lab}: supervisor not reachable ({e.strerror or e})",
                           hint=f"`netlab up` of the same topology restarts the supervisor in place; "
                                f"`netlab down {lab}` removes the lab") from None
    if not r.get("ok"):
        raise LabError(r.get("error", "restart failed"))
    err.print(f"{name} restarted (pid {r['pid']})", markup=False)


def _enroll(lab: str, pod: str, on: bool) -> None:
    from netlab.lab.enroll import set_enrollment

    r = set_enrollment(lab, pod, on)
    word = "enrolled in" if on else "removed from"
    if not r.changed:
        err.print(f"{pod} is already {'in' if on else 'out of'} the mesh; nothing changed", markup=False)
        return
    for a in r.actions:
        err.print(f"  {a}", markup=False)
    err.print(f"{pod} {word} the mesh (label istio.io/dataplane-mode={'ambient' if on else 'none'})", markup=False)


@app.command()
@boundary
def enroll(lab: LabName,
           pod: Annotated[str, typer.Argument(metavar="POD", help="Pod to put in the mesh.")]) -> None:
    """Put a pod in the ambient mesh at run time (istio.io/dataplane-mode=ambient)."""
    _enroll(lab, pod, True)


@app.command()
@boundary
def unenroll(lab: LabName,
             pod: Annotated[str, typer.Argument(metavar="POD", help="Pod to take out of the mesh.")]) -> None:
    """Take a pod out of the ambient mesh at run time."""
    _enroll(lab, pod, False)
