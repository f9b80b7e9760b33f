"""`workbench demo`: the embedded default end to end (sweep, fit, plan, flagship, report) on this machine."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(
    sweep: str = typer.Option("sweeps/cpu.yaml", "--sweep", help="The sweep YAML to run end to end."),
    db: str = typer.Option(None, "--db", help="DuckDB file (default: WORKBENCH_DB or workbench.duckdb)."),
    out: str = typer.Option(None, "--out", help="Report path (default: reports/SWEEP.html)."),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=0, help="Bootstrap resamples of the fit."),
    lr_check: bool = typer.Option(True, "--lr-check/--no-lr-check", help="Check the LR rule at the smallest budget."),
) -> None:
    """The whole loop on this machine: sweep, fit without the largest budget, plan it, train it, compare, report."""

    from workbench.demo.run import run_demo
    from workbench.demo.summary import summary

    outcome = run_demo(sweep, Path(db) if db else None, Path(out) if out else None, bootstrap, lr_check)
    typer.echo(summary(outcome))
    if not outcome["passed"]:  # the end-to-end checks; the experiment's acceptance is reported, not enforced
        typer.echo("Error: an end-to-end check FAILED (above, and in the report's held-out section).", err=True)
        raise typer.Exit(1)
