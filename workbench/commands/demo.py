"""`workbench demo [SWEEP] [KEY=VALUE ...]`: the embedded default end to end (sweep, fit, plan, flagship,
report) on this machine."""

from __future__ import annotations

from pathlib import Path

import typer

from workbench.commands.options import OVERRIDES_HELP, SWEEP_HELP, db_option, echo_json, json_option, split_overrides
from workbench.core.errors import WorkbenchError
from workbench.core.files import output_file


def demo(
    args: list[str] = typer.Argument(
        None,
        metavar="[SWEEP] [KEY=VALUE]",
        help=f"{SWEEP_HELP} Default: sweeps/cpu.yaml. Then {OVERRIDES_HELP}",
        show_default=False,
    ),
    db: Path = db_option(),
    out: Path = typer.Option(None, "--out", help="Report path (default: reports/SWEEP.html)."),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=0, help="Bootstrap resamples of the fit."),
    lr_check: bool = typer.Option(True, "--lr-check/--no-lr-check", help="Check the LR rule at the smallest budget."),
    as_json: bool = json_option(),
) -> None:
    """The whole loop on this machine: sweep, fit without the largest budget, plan it, train it, compare, report."""
    from workbench.demo.run import run_demo  # pandas, torch, duckdb: imported when the demo runs
    from workbench.demo.summary import summary
    from workbench.sweep.spec import spec_path_of

    sweeps, overrides = split_overrides(args)
    if out is not None:
        output_file(out, "--out", (db,))
    if len(sweeps) > 1:
        raise WorkbenchError(f"one sweep at a time (got {', '.join(sweeps)})", "Give one SWEEP, then KEY=VALUE.")
    spec_path = spec_path_of(sweeps[0]) if sweeps else Path("sweeps/cpu.yaml")
    outcome = run_demo(spec_path, db, out, bootstrap, lr_check, overrides)
    if as_json:
        echo_json(outcome)
    else:
        typer.echo(summary(outcome))
    if not outcome["passed"]:  # the end-to-end checks; the experiment's acceptance is reported, not enforced
        typer.echo("Error: an end-to-end check FAILED (above, and in the report's held-out section).", err=True)
        raise typer.Exit(1)
