"""``netlab doctor``."""

from __future__ import annotations

import typer
from rich.table import Table

from netlab.cli.common import JsonOpt, boundary, emit_json, fail, out

app = typer.Typer()


@app.command()
@boundary
def doctor(json_: JsonOpt = False) -> None:
    """Preflight: privileges, kernel features, tools; says what to install or which fallback is used."""
    from netlab.apply.preflight import run_checks

    checks = run_checks()
    bad = [c for c in checks if not c.ok and c.required]
    if json_:
        emit_json("doctor", [{**c.__dict__, "instead": c.instead, "loses": c.loses} for c in checks],
                  status="ok" if not bad else "error", errors=[f"{c.name}: {c.detail}" for c in bad])
    else:
        t = Table(title="netlab doctor")
        for col in ("check", "result", "detail", "fix"):
            t.add_column(col)
        for c in checks:
            res = "ok" if c.ok else ("MISSING" if c.required else "fallback")
            t.add_row(c.name, res, c.detail, "" if c.ok else c.fix)
        out.print(t)
        for c in checks:
            if not c.ok and c.instead:
                out.print(f"\n{c.name} is missing.\n  netlab instead: {c.instead}\n  you lose: {c.loses}",
                          markup=False)
            elif not c.ok and c.required:
                out.print(f"\n{c.name} is missing: netlab cannot run labs without it ({c.fix}).", markup=False)
    if bad:
        fail(f"{len(bad)} required check{'s' if len(bad) > 1 else ''} failed: {', '.join(c.name for c in bad)}",
             bad[0].fix or None)
        raise typer.Exit(7)
