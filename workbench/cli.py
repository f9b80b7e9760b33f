"""The `workbench` command: one typer group per module, one error handler.

Heavy modules (torch, duckdb, scipy, matplotlib) are imported inside the commands, so that
`workbench --help` stays fast and imports neither torch nor duckdb. Library modules log through
`logging` (workbench.logs); the commands print.
"""

from __future__ import annotations

import sys

import click
import typer
from typer.core import TyperGroup

from workbench import logs
from workbench.errors import WorkbenchError


class _Group(TyperGroup):
    """The root group: turns a WorkbenchError anywhere below it into `Error: ...` and its exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except WorkbenchError as err:
            if (ctx.obj or {}).get("debug"):
                raise
            click.echo(f"Error: {err}", err=True)
            ctx.exit(err.exit_code)


app = typer.Typer(
    cls=_Group,
    help="Scaling-law experiments and compute planning for LLM pretraining.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback of an error and debug log lines."),
) -> None:
    ctx.obj = {"debug": debug}
    logs.setup(debug)


def _register() -> None:
    from workbench.commands import data, db, fit, flagship, model, plan, report, sweep, train

    app.add_typer(model.app, name="model", help="Model shapes, parameter counts and FLOPs.")
    app.add_typer(data.app, name="data", help="Prepare token shards from text.")
    app.add_typer(train.app, name="train", help="Train one model from a config (the same trainer for every run).")
    app.add_typer(sweep.app, name="sweep", help="Expand, launch and follow sweeps of training runs.")
    app.add_typer(db.app, name="db", help="The DuckDB store of runs, metrics, fits and plans.")
    app.add_typer(fit.app, name="fit", help="Fit scaling laws (isoFLOP and parametric) to runs.")
    app.add_typer(plan.app, name="plan", help="Plan a flagship run from a law and a compute budget.")
    app.add_typer(flagship.app, name="flagship", help="Launch a planned flagship run through the sweep launcher.")
    app.add_typer(report.app, name="report", help="Write a self-contained HTML report.")


_register()


@app.command("demo")
def demo(
    sweep: str = typer.Option("sweeps/cpu.yaml", "--sweep", help="The sweep YAML to run end to end."),
    db: str = typer.Option(None, "--db", help="DuckDB file (default: WORKBENCH_DB or workbench.duckdb)."),
    out: str = typer.Option(None, "--out", help="Report path (default: reports/SWEEP.html)."),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=0, help="Bootstrap resamples of the fit."),
    lr_check: bool = typer.Option(True, "--lr-check/--no-lr-check", help="Check the LR rule at the smallest budget."),
) -> None:
    """The whole loop on this machine: sweep, fit without the largest budget, plan it, train it, compare, report."""
    from pathlib import Path

    from workbench.demo import run_demo, summary

    outcome = run_demo(sweep, Path(db) if db else None, Path(out) if out else None, bootstrap, lr_check)
    typer.echo(summary(outcome))
    if not outcome["passed"]:  # the end-to-end checks; the experiment's acceptance is reported, not enforced
        typer.echo("Error: an end-to-end check FAILED (above, and in the report's held-out section).", err=True)
        raise typer.Exit(1)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="workbench")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
