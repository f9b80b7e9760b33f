"""`workbench report`: one self-contained HTML page per sweep (runs, fits, plan, provenance)."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer

# no_args_is_help is off: `workbench report` alone reports the database's only sweep
app = typer.Typer(no_args_is_help=False)


@app.callback(invoke_without_command=True)
def report(
    sweep: str = typer.Option(None, "--sweep", help="The sweep to report (default: the only sweep in the database)."),
    db: Path = typer.Option(None, "--db", help="DuckDB file (default: $WORKBENCH_DB or workbench.duckdb)."),
    fit: Path = typer.Option(None, "--fit", help="Fit JSON (default: the sweep's latest fit, else fits/SWEEP.json)."),
    plan: Path = typer.Option(
        None, "--plan", help="Plan JSON from `workbench plan --json` (default: latest plan row)."
    ),
    out: Path = typer.Option(None, "--out", help="Output HTML (default: reports/SWEEP.html)."),
) -> None:
    """Write a self-contained HTML report of a sweep: curves, fits, frontier, held-out check, plan, runs."""
    from workbench.report.html import write_report
    from workbench.store import default_db_path

    db_path = db or default_db_path()
    words = ["workbench", "report"]
    for flag, value in (("--sweep", sweep), ("--db", db_path), ("--fit", fit), ("--plan", plan), ("--out", out)):
        if value is not None:
            words += [flag, str(value)]
    path = write_report(sweep, db_path, fit, plan, out, command=shlex.join(words))
    typer.echo(str(path))
