"""`workbench fit`: scaling laws from a sweep in the store or from a CSV of runs."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from workbench.commands.fit_inputs import load_points, loss_curves, record_in_store
from workbench.commands.fit_tables import print_fit
from workbench.commands.options import ALL_VERSIONS, SWEEP_HELP, db_option, json_option, sweep_or_only
from workbench.core.errors import WorkbenchError
from workbench.core.files import output_file, safe_name
from workbench.core.units import parse_positive

METHOD_CHOICES = ("isoflop", "parametric", "all")


def fit(
    sweep: str = typer.Argument(
        None, metavar="SWEEP", help=SWEEP_HELP + " Default: the store's only sweep.", show_default=False
    ),
    from_csv: Path = typer.Option(None, "--from-csv", help="Fit a CSV: params, tokens, loss [, flops, budget, acc_*]."),
    db: Path = db_option(),
    method: str = typer.Option("all", "--method", help="isoflop, parametric or all."),
    n_bootstrap: int = typer.Option(1000, "--bootstrap", min=0, help="Bootstrap resamples (0: no intervals)."),
    holdout_largest: bool = typer.Option(False, "--holdout-largest", help="Also fit without the largest budget."),
    exclude_largest: bool = typer.Option(
        False, "--exclude-largest", help="Fit without the largest budget and check the fit's prediction of it."
    ),
    rollout: bool = typer.Option(
        True,
        "--rollout/--no-rollout",
        help="Fit budgets 1..k, predict k+1, for every k: the model error that widens extrapolation intervals.",
    ),
    overestimate_penalty: float = typer.Option(
        1.0, "--overestimate-penalty", min=1.0, help="Weight of residuals where the law predicts above the run."
    ),
    huber_delta: float = typer.Option(1e-3, "--huber-delta", min=1e-9, help="Huber delta on log loss."),
    starts: int = typer.Option(4, "--starts", min=2, max=8, help="Grid points per parameter (starts = this^5)."),
    at: list[str] = typer.Option([], "--at", help="Also report N*, D*, L* at this many FLOPs (repeatable)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the bootstrap."),
    bootstrap_mode: str = typer.Option(
        "auto", "--bootstrap-mode", help="auto, budget (resample within budgets) or runs (i.i.d. over runs)."
    ),
    name: str = typer.Option(None, "--name", help="Fit name (default: the sweep name or the CSV file stem)."),
    out: Path = typer.Option(None, "--out", help="Output JSON (default: fits/NAME.json); plots go next to it."),
    no_plots: bool = typer.Option(False, "--no-plots", help="Skip the PNG and SVG plots."),
    as_json: bool = json_option(),
    group_decades: float = typer.Option(
        0.0212,
        "--group-decades",
        min=1e-6,
        help="--from-csv without a budget column: runs whose FLOPs agree "
        "within this many decades are one budget (0.0212: 5%).",
    ),
    curves: Path = typer.Option(
        None, "--curves", help="--from-csv: the runs' loss curves (run_id, flops or tokens, loss): approach 1."
    ),
    metric: str = typer.Option(
        "val_loss", "--metric", help="The loss a sweep's fit uses: val_loss, or a named held-out set's val_loss_NAME."
    ),
    all_versions: bool = ALL_VERSIONS,
) -> None:
    """Fit isoFLOP minima and the parametric law, with bootstrap intervals; write fits/NAME.json."""
    from workbench.fit import fitfile
    from workbench.fit.pipeline import FitOptions
    from workbench.fit.points import check_losses_vary
    from workbench.fit.stage import fit_stage

    if sweep is not None and from_csv is not None:
        raise WorkbenchError("give a SWEEP or --from-csv PATH, not both", "See `workbench fit --help`.")
    if method not in METHOD_CHOICES:
        raise WorkbenchError(f"--method: unknown method {method!r}", f"Use one of {', '.join(METHOD_CHOICES)}.")
    db_path = Path(db or os.environ.get("WORKBENCH_DB") or "workbench.duckdb")
    if from_csv is None:
        sweep = sweep_or_only(sweep, db_path)
    if out is None or name is not None:  # a name becomes fits/NAME.json, the fits table's row, plans' names
        safe_name(name or sweep or from_csv.stem, "fit name", "--name")
    name = name or sweep or from_csv.stem
    if out is not None:
        output_file(out, "--out", (from_csv, curves, db_path))
    points, extra = load_points(sweep, from_csv, db_path, metric, group_decades, all_versions)
    check_losses_vary(points, str(from_csv) if from_csv else f"sweep {sweep}")
    options = FitOptions(
        method=method,
        bootstrap=n_bootstrap,
        huber_delta=huber_delta,
        overestimate_penalty=overestimate_penalty,
        starts_per_axis=starts,
        holdout_largest=holdout_largest,
        exclude_largest=exclude_largest,
        rollout=rollout,
        seed=seed,
        bootstrap_mode=bootstrap_mode,
        at_flops=tuple(parse_positive(c, "--at") for c in at),
    )
    source = f"sweep:{sweep}" if sweep else str(from_csv)
    out = out or Path("fits") / f"{name}.json"
    curves = loss_curves(points, sweep, db_path, curves)
    record = fit_stage(
        points, options, name=name, source=source, out=out, sweep=sweep, plots=not no_plots, curves=curves, extra=extra
    )
    record = record.as_dict()
    if sweep is not None or db is not None:
        record_in_store(db_path, record)
    if as_json:
        typer.echo(fitfile.dumps(record))
        return

    print_fit(record, out)
