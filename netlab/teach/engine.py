"""``netlab lab start | check | hint | run``: a teaching lab against a live lab.

``start`` stands the lab up (``up`` is idempotent, so a running lab is reused), puts every pod
back to the enrollment its topology asks for, and records the start: the time (access-log lines
before it do not count) and the packet counters of the rules the checks watch. ``check`` runs
every step's check against the live lab; ``run`` types each step's command itself and waits for
its check, which is how CI proves a lab can be followed to the end.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from netlab import names
from netlab.errors import LabError
from netlab.lab import lifecycle as lablib
from netlab.lab.enroll import set_enrollment
from netlab.lab.state import load_record
from netlab.linux.files import write_atomic
from netlab.teach import probe
from netlab.teach.catalog import get
from netlab.teach.diagnose import diagnose
from netlab.teach.model import Ctx, Outcome, Step, TeachingLab, wait_for
from netlab.topology import load_topology

Say = Callable[[str], None]


@dataclass(frozen=True)
class StepResult:
    index: int  # 1-based
    title: str
    kind: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class CheckResult:
    lab: str
    number: int
    steps: tuple[StepResult, ...]

    @property
    def done(self) -> bool:
        return all(s.ok for s in self.steps)

    @property
    def next_step(self) -> StepResult | None:
        return next((s for s in self.steps if not s.ok), None)


def lab_name(tl: TeachingLab, name: str | None) -> str:
    return name or tl.default_name


def companion_name(tl: TeachingLab, lab: str) -> str:
    return f"{lab}-{'ip' if tl.companion_mode == 'inpod' else 'nr'}"


def _progress_path(lab: str, number: int) -> str:
    return os.path.join(names.state_dir(lab), "teach", f"lab{number}.json")


def _save(ctx: Ctx) -> None:
    path = _progress_path(ctx.lab, ctx.number)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = {"number": ctx.number, "started": ctx.started, "baseline": ctx.baseline, "journal": ctx.journal}
    write_atomic(path, json.dumps(data, indent=1, sort_keys=True))


def _ctx(tl: TeachingLab, lab: str, started: float, baseline: dict, journal: list[str]) -> Ctx:
    return Ctx(lab=lab, number=tl.number, started=started, workdir=os.path.join(names.state_dir(lab), "teach",
                                                                              f"lab{tl.number}"),
               baseline=baseline, journal=journal, counters={c.key: c for c in tl.counters})


def load_ctx(number: int, name: str | None) -> tuple[TeachingLab, Ctx]:
    tl = get(number)
    lab = lab_name(tl, name)
    again = f"`netlab lab start {number}" + (f" --name {lab}`" if name else "`")
    if load_record(lab) is None:
        raise LabError(f"lab {lab} is not running", hint=again)
    try:
        with open(_progress_path(lab, number)) as f:
            d = json.load(f)
    except FileNotFoundError:
        raise LabError(f"teaching lab {number} was not started on lab {lab}", hint=again) from None
    return tl, _ctx(tl, lab, d["started"], d["baseline"], d["journal"])


def start(number: int, name: str | None, say: Say) -> tuple[TeachingLab, Ctx]:
    tl = get(number)
    lab = lab_name(tl, name)
    say(f"lab {tl.number}: {tl.title}")
    r = lablib.up(tl.topology, name=lab, mode=tl.mode)
    say(f"lab {lab} {'is up' if r.changed else 'was already up'} ({r.mode}"
        + (f", istio {r.istio_version}" if r.istio_version else "") + (f", encap {r.encap}" if r.encap else "") + ")")
    labs = [lab]
    if tl.companion_mode:
        c = lablib.up(tl.topology, name=companion_name(tl, lab), mode=tl.companion_mode)
        say(f"lab {c.lab} {'is up' if c.changed else 'was already up'} ({c.mode})")
        labs.append(c.lab)
    if tl.reset:
        for x in labs:
            _reset_enrollment(x, say)
    ctx = _ctx(tl, lab, time.time(), {}, [])
    os.makedirs(ctx.workdir, exist_ok=True)
    ctx.baseline = {c.key: ctx.now(c.key) for c in tl.counters}
    ctx.baseline |= {f"restarts:{n}": p["restarts"] for n, p in probe.processes(lab).items()}
    _save(ctx)
    return tl, ctx


def _reset_enrollment(lab: str, say: Say) -> None:
    """Every pod back to the enrollment its topology asks for (an earlier lab may have changed it)."""
    rec = lablib.record_of(lab)
    topo = load_topology(rec.topology).resolved()
    for pod in topo.pods:
        want = topo.ambient(pod)
        if pod.name in rec.pods and bool(rec.pods[pod.name].get("ambient")) != want:
            set_enrollment(lab, pod.name, want)
            say(f"{lab}: {pod.name} {'enrolled again' if want else 'taken out of the mesh again'} "
                "(as its topology says)")


def check(number: int, name: str | None) -> CheckResult:
    tl, ctx = load_ctx(number, name)
    results = []
    for i, step in enumerate(tl.steps, 1):
        o = step.check(ctx)
        results.append(StepResult(i, step.title.format(lab=ctx.lab), step.kind, o.ok, o.detail))
    _save(ctx)  # checks may have journaled broken states
    return CheckResult(ctx.lab, number, tuple(results))


_PLACEHOLDER = re.compile(r"\{(lab|dir|pid|uid|veth)(?::([^}]+))?\}")


def expand(command: str, ctx: Ctx) -> str:
    """Fill a step's placeholders from the live lab (a pid, a pod's UID, a node-side veth)."""

    def one(m: re.Match) -> str:
        kind, arg = m.group(1), m.group(2) or ""
        if kind == "lab":
            return ctx.lab
        if kind == "dir":
            return ctx.workdir
        if kind == "pid":
            p = probe.processes(ctx.lab).get(arg)
            if not p or not p.get("pid"):
                raise LabError(f"lab {ctx.lab}: process {arg} is not running")
            return str(p["pid"])
        if kind == "uid":
            return str(lablib.record_of(ctx.lab).pods[arg]["uid"])
        node, ip = arg.split(":")
        return probe.host_veth(ctx.lab, node, ip) or "?"

    return _PLACEHOLDER.sub(one, command)


def run_command(command: str) -> subprocess.CompletedProcess:
    """Run a step's command as a learner would, with ``netlab`` meaning this interpreter's netlab."""
    script = 'netlab() { "$NETLAB_PYTHON" -m netlab "$@"; }\n' + command
    env = {**os.environ, "NETLAB_PYTHON": sys.executable}
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=180)


def run(number: int, name: str | None, say: Say) -> CheckResult:
    """Start the lab, then type every step's command and wait for its check; stop at the first miss."""
    tl, ctx = start(number, name, say)
    results = []
    for i, step in enumerate(tl.steps, 1):
        cmd = expand(step.command, ctx)
        say(f"\n== step {i}/{len(tl.steps)}: {step.title.format(lab=ctx.lab)}")
        for ln in cmd.splitlines():
            say(f"$ {ln}")
        p = run_command(cmd)
        shown = (p.stdout + p.stderr).splitlines()
        for ln in shown[:40]:
            say(f"  {ln}")
        if len(shown) > 40:
            say(f"  ... ({len(shown) - 40} more lines)")
        o: Outcome = wait_for(step.check, ctx, step.settle)
        results.append(StepResult(i, step.title.format(lab=ctx.lab), step.kind, o.ok, o.detail))
        say(("  ok: " if o.ok else "  FAILED: ") + o.detail)
        if not o.ok:
            break
    _save(ctx)
    return CheckResult(ctx.lab, number, tuple(results))


def first_step_text(tl: TeachingLab, ctx: Ctx) -> str:
    return step_text(tl, ctx, 0)


def step_text(tl: TeachingLab, ctx: Ctx, index: int) -> str:
    s: Step = tl.steps[index]
    return (f"step {index + 1}/{len(tl.steps)}: {s.title.format(lab=ctx.lab)}\n"
            + "".join(f"  $ {ln}\n" for ln in expand(s.command, ctx).splitlines())
            + f"  look: {s.look}\n")


def findings(number: int, name: str | None) -> list:
    """Named broken states, for labs that have a diagnosis (lab 6); journaled like a check."""
    tl, ctx = load_ctx(number, name)
    if tl.number != 6:
        return []

    found = diagnose(ctx)
    _save(ctx)
    return found


__all__ = ["CheckResult", "StepResult", "asdict", "check", "findings", "get", "load_ctx", "run", "start", "step_text"]
