"""`workbench report`: one self-contained HTML page per sweep, a comparison of sweeps, or a live page."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer

from workbench.core.errors import WorkbenchError

# no_args_is_help is off: `workbench report` alone reports the database's only sweep
app = typer.Typer(no_args_is_help=False)


def _command(pairs: list[tuple[str, object]], flags: list[str]) -> str:
    words = ["workbench", "report"]
    for flag, value in pairs:
        for item in value if isinstance(value, list) else [value]:
            if item is not None:
                words += [flag, str(item)]
    return shlex.join(words + flags)


@app.callback(invoke_without_command=True)
def report(
    sweep: list[str] = typer.Option(
        None, "--sweep", help="The sweep to report (default: the only one); give it 2+ times to compare sweeps."
    ),
    db: Path = typer.Option(None, "--db", help="DuckDB file (default: $WORKBENCH_DB or workbench.duckdb)."),
    fit: Path = typer.Option(None, "--fit", help="Fit JSON (default: the sweep's latest fit, else fits/SWEEP.json)."),
    plan: Path = typer.Option(
        None, "--plan", help="Plan JSON from `workbench plan --json` (default: latest plan row)."
    ),
    out: Path = typer.Option(None, "--out", help="Output HTML (default: reports/SWEEP.html)."),
    at: list[float] = typer.Option(
        None, "--at", help="Comparison: target budget in FLOPs (first --at), more --at add table rows."
    ),
    bootstrap: int = typer.Option(200, "--bootstrap", min=10, help="Comparison: bootstrap resamples per sweep."),
    watch: bool = typer.Option(False, "--watch", help="Regenerate the page as runs finish until the sweep ends."),
    interval: float = typer.Option(10.0, "--interval", min=0.5, help="--watch: seconds between regenerations."),
    runs_dir: Path = typer.Option(None, "--runs", help="--watch: the sweep's run directories (default: runs/SWEEP)."),
) -> None:
    """Write a self-contained HTML report of a sweep (curves, fits, frontier, plan, runs) or compare sweeps."""
    from workbench.report.watch import watch_report
    from workbench.store.database import default_db_path

    db_path = db or default_db_path()
    names = list(sweep or [])
    if len(names) > 1:
        if watch or fit or plan:
            raise WorkbenchError("--watch, --fit and --plan report one sweep", "Drop them to compare sweeps.")
        from workbench.report.compare_page import write_comparison

        targets = list(at or [])
        command = _command([("--sweep", names), ("--db", db_path), ("--at", targets), ("--out", out)], [])
        path = write_comparison(db_path, names, targets[0] if targets else None, targets[1:], out, bootstrap, command)
        typer.echo(str(path))
        return
    name = names[0] if names else None
    command = _command(
        [("--sweep", name), ("--db", db_path), ("--fit", fit), ("--plan", plan), ("--out", out)],
        ["--watch"] if watch else [],
    )
    if watch:
        for path, line in watch_report(name, db_path, out, runs_dir, interval, command=command):
            typer.echo(f"{path}: {line}")
        return
    from workbench.report.page import write_report

    path = write_report(name, db_path, fit, plan, out, command=command)
    typer.echo(str(path))
