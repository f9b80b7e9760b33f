"""`workbench sweep`: plan, launch, tune, status and cancel sweeps of training runs."""

from __future__ import annotations

from pathlib import Path

import typer

from workbench.commands.options import (
    ALL_VERSIONS,
    OVERRIDES_HELP,
    SWEEP_HELP,
    db_option,
    echo_json,
    json_option,
    runs_option,
)
from workbench.commands.sweep_tables import launch_lines, print_checks, print_plan, print_status
from workbench.core.errors import WorkbenchError

app = typer.Typer(no_args_is_help=True)
SWEEP = typer.Argument(..., metavar="SWEEP", help=SWEEP_HELP)
OVERRIDES = typer.Argument(None, metavar="KEY=VALUE", help=OVERRIDES_HELP, show_default=False)


@app.command()
def plan(sweep: str = SWEEP, overrides: list[str] = OVERRIDES, as_json: bool = json_option()) -> None:
    """Show every run of a sweep (shape, tokens, batch, LR, cost), the totals and the launch checks; writes nothing."""
    from workbench.sweep.grid import plan_file
    from workbench.sweep.preflight import review
    from workbench.sweep.spec import spec_path_of

    result = plan_file(spec_path_of(sweep), overrides or ())
    checks = review(result, Path.cwd())
    if as_json:
        echo_json({"totals": result.totals(), "checks": checks.as_dict(), "runs": [r.row() for r in result.runs]})
        return
    print_plan(result)
    print_checks(checks)


@app.command()
def launch(
    sweep: str = SWEEP,
    overrides: list[str] = OVERRIDES,
    executor: str = typer.Option(None, "--executor", help="slurm or local (default: the spec's launch.executor)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check and say what would be submitted; write nothing."),
    force: bool = typer.Option(False, "--force", help="Replace runs (and the sweep version) whose config changed."),
    new_version: bool = typer.Option(False, "--new-version", help="A changed spec starts a new sweep version."),
    db: Path = db_option(),
    as_json: bool = json_option(),
) -> None:
    """Check the sweep, write each run's config and run or submit those not done yet (Slurm arrays, or here)."""
    from workbench.sweep.grid import plan_file
    from workbench.sweep.launch import launch as do_launch
    from workbench.sweep.spec import spec_path_of

    spec_path = spec_path_of(sweep)
    result = plan_file(spec_path, overrides or ())
    report = do_launch(result, executor=executor, dry_run=dry_run, force=force, new_version=new_version)
    for line in launch_lines(report, result):
        typer.echo(line, err=as_json)
    if not dry_run:
        _ingest(report.sweep_dir, db, result.spec.model_dump(mode="json"), str(spec_path))
    if as_json:
        echo_json(report.as_dict())
    report.raise_if_failed()


@app.command()
def tune(
    sweep: str = typer.Argument(..., metavar="SWEEP", help=SWEEP_HELP + " Its YAML needs a `tune:` section."),
    executor: str = typer.Option(None, "--executor", help="slurm or local (default: the spec's launch.executor)."),
    parallel: int = typer.Option(1, "--parallel", help="Trials in flight at once (local: worker processes)."),
    trials: int = typer.Option(None, "--trials", help="Trials per scale to reach (default: tune.trials)."),
    as_json: bool = json_option(),
    db: Path = db_option(),
) -> None:
    """Optuna search over LR, batch and warmup per tune scale; lr_opt(C) and B_opt(C) to fits/SWEEP-hparams.json."""
    from workbench.sweep.spec import load_spec, spec_path_of
    from workbench.sweep.tune import tune as do_tune

    file = spec_path_of(sweep)
    if executor is None:
        executor = load_spec(file)[0].launch.executor
    result = do_tune(file, executor=executor, db=db, parallel=parallel, trials=trials, progress=not as_json)
    if as_json:
        echo_json(result)
        return
    for b in result["best"]:
        counts = ", ".join(f"{n} {state}" for state, n in b["trials"].items())
        typer.echo(
            f"{b['scale']}: best trial {b['trial']} val_loss {b['val_loss']:.4f} at lr {b['lr']:.3g}, "
            f"batch {b['batch_tokens']} tokens, warmup {b['warmup_fraction']:.3f} ({counts})"
        )
    for key, unit in (("lr", ""), ("batch", " tokens")):
        law = result["hparams"][key]
        shape = f"{law['coef']:.4g} C^{law['exp']:.4g}" if law["exp"] is not None else f"{law['coef']:.4g} (one budget)"
        typer.echo(f"{key}_opt = {shape}{unit}")
    typer.echo(f"wrote {result['path']}: plan with `workbench plan --compute C --hparams {result['path']}`")


@app.command()
def status(
    sweep: str = SWEEP, runs: Path = runs_option(), all_versions: bool = ALL_VERSIONS, as_json: bool = json_option()
) -> None:
    """Counts of runs by state and a table (Slurm state for live jobs); reads only, writes nothing."""
    from workbench.sweep.status import sweep_root, sweep_status

    root, run_ids = sweep_root(sweep, runs)
    result = sweep_status(root, run_ids, all_versions=all_versions)
    if as_json:
        echo_json(result.as_dict())
        return
    print_status(result)


@app.command()
def cancel(sweep: str = SWEEP, runs: Path = runs_option(), as_json: bool = json_option()) -> None:
    """Cancel the sweep's Slurm jobs and mark it cancelled (a relaunch resumes it)."""
    from workbench.sweep.status import cancel as do_cancel
    from workbench.sweep.status import sweep_root

    root, _ = sweep_root(sweep, runs)
    if not root.is_dir():
        raise WorkbenchError(f"no sweep folder {root}", "Give the sweep's name as in its YAML, or --runs.")
    ids = do_cancel(root)
    if as_json:
        echo_json({"sweep": root.name, "cancelled_jobs": ids})
        return
    typer.echo(f"sweep {root.name}: cancelled" + (f" (scancel {' '.join(ids)})" if ids else " (no live jobs)"))


def _ingest(root: Path, db: Path | None, spec: dict | None, spec_path: str | None) -> None:
    """Ingest the sweep's run dirs into the store (and record its spec, when given)."""
    from workbench.store.database import Store

    if not root.is_dir():
        return
    store = Store(db)
    if spec is not None:
        store.upsert_sweep(root.name, spec, spec_path)
    stats = store.ingest(root)
    # on stderr: stdout stays JSON with --json
    typer.echo(f"ingested into {store.path}: {stats.runs} runs, {stats.metric_rows} metric rows", err=True)
