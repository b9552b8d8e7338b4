"""``netlab lab list | start N | check N | hint N | run N``: the teaching labs."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from netlab.cli.common import JsonOpt, boundary, emit_json, err, out

app = typer.Typer(name="lab", no_args_is_help=True,
                  help="Teaching labs: numbered exercises checked against the live lab (docs/labs/).")

NumArg = Annotated[int, typer.Argument(help="Teaching lab number (`netlab lab list`).")]
NameOpt = Annotated[str | None, typer.Option("--name", help="Lab name to use (default: labN).")]


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


@app.command("list")
@boundary
def list_(json_: JsonOpt = False) -> None:
    """The teaching labs: number, title, design, page."""
    from netlab.teach.catalog import LABS

    rows = [{"number": n, "title": t.title, "mode": t.mode + (f" + {t.companion_mode}" if t.companion_mode else ""),
             "steps": len(t.steps), "page": f"docs/labs/{n}-{t.slug}.md", "goal": t.goal} for n, t in sorted(LABS.items())]
    if json_:
        emit_json("lab list", rows)
        return
    t = Table(title="netlab teaching labs")
    for c in ("lab", "title", "design", "steps", "page"):
        t.add_column(c)
    for r in rows:
        t.add_row(str(r["number"]), str(r["title"]), str(r["mode"]), str(r["steps"]), str(r["page"]))
    out.print(t)


@app.command()
@boundary
def start(number: NumArg, name: NameOpt = None) -> None:
    """Stand the lab's topology up (reusing a running lab), reset enrollment, print the first step."""
    from netlab.teach import engine

    tl, ctx = engine.start(number, name, lambda s: err.print(s, markup=False))
    _say(f"\n{tl.title}: {tl.goal}\n")
    sys.stdout.write(engine.step_text(tl, ctx, 0))
    _say(f"\nthen: netlab lab check {number}" + (f" --name {name}" if name else ""))


@app.command()
@boundary
def check(number: NumArg, name: NameOpt = None, json_: JsonOpt = False) -> None:
    """Check every step against the live lab; say exactly what is missing. Exit 1 until all pass."""
    from netlab.teach import engine

    res = engine.check(number, name)
    findings = engine.findings(number, name)
    if json_:
        emit_json("lab check", {"lab": res.lab, "number": number, "done": res.done,
                                "broken": [f.__dict__ for f in findings],
                                "steps": [s.__dict__ for s in res.steps]}, status="ok" if res.done else "error")
    else:
        for f in findings:
            _say(f"BROKEN {f.key}: {f.symptom}\n  repair: {f.repair}")
        for s in res.steps:
            mark = "ok  " if s.ok else ("look" if s.kind == "look" else "TODO")
            _say(f"[{mark}] step {s.index}: {s.title}\n       {s.detail}")
        nxt = res.next_step
        _say(f"\nlab {number} on {res.lab}: " + ("every step done" if nxt is None
             else f"next is step {nxt.index}: {nxt.title}"))
    if not res.done:
        raise typer.Exit(1)


@app.command()
@boundary
def hint(number: NumArg, name: NameOpt = None) -> None:
    """The command and hint for the first step not done yet."""
    from netlab.teach import engine

    tl, ctx = engine.load_ctx(number, name)
    res = engine.check(number, name)
    nxt = res.next_step
    if nxt is None:
        _say(f"lab {number} is done on {res.lab}")
        return
    step = tl.steps[nxt.index - 1]
    sys.stdout.write(engine.step_text(tl, ctx, nxt.index - 1))
    _say(f"  missing: {nxt.detail}\n  hint: {engine.expand(step.hint, ctx)}")


@app.command()
@boundary
def run(number: NumArg, name: NameOpt = None) -> None:
    """Run every step's command and check its outcome (what CI does for each lab). Exit 1 on a miss."""
    from netlab.teach import engine

    res = engine.run(number, name, _say)
    if res.done and len(res.steps) == len(engine.get(number).steps):
        _say(f"\nlab {number}: all {len(res.steps)} steps passed on {res.lab}")
        return
    bad = res.next_step
    _say(f"\nlab {number}: step {bad.index if bad else '?'} failed on {res.lab}")
    raise typer.Exit(1)
