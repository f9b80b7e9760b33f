"""The `workbench` command: one typer group per module, one error handler.

Heavy modules (torch, duckdb, scipy, matplotlib) are imported inside the commands, so that
`workbench --help` stays fast and imports neither torch nor duckdb. Library modules log through
`logging` (workbench.core.logs); the commands print.
"""

from __future__ import annotations

import sys

import click
import typer
from typer.core import TyperGroup

from workbench.commands import data, db, demo, fit, flagship, model, plan, report, sweep, train
from workbench.core import logs
from workbench.core.errors import WorkbenchError


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

    app.add_typer(model.app, name="model", help="Model shapes, parameter counts and FLOPs.")
    app.add_typer(data.app, name="data", help="Prepare token shards from text.")
    app.add_typer(train.app, name="train", help="Train one model from a config (the same trainer for every run).")
    app.add_typer(sweep.app, name="sweep", help="Expand, launch and follow sweeps of training runs.")
    app.add_typer(db.app, name="db", help="The DuckDB store of runs, metrics, fits and plans.")
    app.add_typer(fit.app, name="fit", help="Fit scaling laws (isoFLOP and parametric) to runs.")
    app.add_typer(plan.app, name="plan", help="Plan a flagship run from a law and a compute budget.")
    app.add_typer(flagship.app, name="flagship", help="Launch a planned flagship run through the sweep launcher.")
    app.add_typer(report.app, name="report", help="Write a self-contained HTML report.")
    app.command("demo")(demo.demo)


_register()


def main() -> None:
    """Console-script entry point."""
    app(prog_name="workbench")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
