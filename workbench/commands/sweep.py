"""`workbench sweep`: plan, launch, tune, status and cancel sweeps of training runs."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from workbench.commands.sweep_tables import print_plan, print_status
from workbench.core.errors import WorkbenchError

app = typer.Typer(no_args_is_help=True)

RUNS_ROOT = typer.Option(None, "--runs-root", help="Folder holding runs/SWEEP (default: the spec's, else runs).")
DB = typer.Option(None, "--db", help="DuckDB file to ingest into (default: WORKBENCH_DB or workbench.duckdb).")


@app.command()
def plan(
    file: Path = typer.Argument(..., help="Sweep YAML."),
    as_json: bool = typer.Option(False, "--json", help="Print the runs and totals as JSON."),
) -> None:
    """Show every run of a sweep (shape, tokens, batch, LR, cost) and the totals; changes nothing."""
    from workbench.sweep.grid import plan_file

    result = plan_file(file)
    if as_json:
        typer.echo(json.dumps({"totals": result.totals(), "runs": [r.row() for r in result.runs]}, indent=1))
        return
    print_plan(result)


@app.command()
def launch(
    file: Path = typer.Argument(..., help="Sweep YAML."),
    executor: str = typer.Option(None, "--executor", help="slurm or local (default: the spec's launch.executor)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be submitted; write nothing."),
    force: bool = typer.Option(False, "--force", help="Replace runs whose config changed."),
    db: Path = DB,
) -> None:
    """Write each run's config and submit the runs not done yet (Slurm job arrays, or this machine)."""
    from workbench.sweep.executors import check_kind
    from workbench.sweep.grid import plan_file
    from workbench.sweep.launch import launch as do_launch

    if executor is not None:
        check_kind(executor)
    result = plan_file(file)
    report = do_launch(result, executor=executor, dry_run=dry_run, force=force)
    verb = "would submit" if dry_run else "submitted" if report.executor == "slurm" else "ran"
    typer.echo(
        f"sweep {result.spec.name}: {verb} {len(report.submit)} of {len(result.runs)} runs "
        f"({report.executor}), skipped {len(report.skipped)}; run dirs in {report.sweep_dir}"
    )
    for rid in report.replaced:
        typer.echo(f"  replaced {rid} (moved to .replaced/)")
    for rid, job in report.jobs.items():
        typer.echo(f"  {rid}: job {job}")
    if not dry_run:
        _ingest(report.sweep_dir, db, result.spec.model_dump(mode="json"), str(file))
    for rid, status in report.locked_elsewhere().items():
        typer.echo(f"  {rid}: {status} (another launch is training it)")
    if failed := report.failed():
        raise WorkbenchError(
            f"{len(failed)} local runs did not complete, first {failed[0]}",
            "See `workbench sweep status` and the run's final.json; relaunch to retry.",
        )


@app.command()
def tune(
    file: Path = typer.Argument(..., help="Sweep YAML with a `tune:` section."),
    executor: str = typer.Option(None, "--executor", help="slurm or local (default: the spec's launch.executor)."),
    parallel: int = typer.Option(1, "--parallel", help="Trials in flight at once (local: worker processes)."),
    trials: int = typer.Option(None, "--trials", help="Trials per scale to reach (default: tune.trials)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result (best trials and laws) as JSON."),
    db: Path = DB,
) -> None:
    """Optuna search over LR, batch and warmup per tune scale; lr_opt(C) and B_opt(C) to fits/SWEEP-hparams.json."""
    from workbench.sweep.spec import load_spec
    from workbench.sweep.tune import tune as do_tune

    if executor is None:
        executor = load_spec(file)[0].launch.executor
    result = do_tune(file, executor=executor, db=db, parallel=parallel, trials=trials, progress=not as_json)
    if as_json:
        typer.echo(json.dumps(result, indent=1))
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
    name: str = typer.Argument(..., help="Sweep name (runs/NAME) or its YAML file."),
    as_json: bool = typer.Option(False, "--json", help="Print counts and runs as JSON."),
    runs_root: Path = RUNS_ROOT,
    db: Path = DB,
) -> None:
    """Counts of runs by state and a table (Slurm state for live jobs)."""
    from workbench.sweep.status import sweep_root, sweep_status

    root, run_ids = sweep_root(name, runs_root)
    result = sweep_status(root, run_ids)
    _ingest(root, db, None, None)
    if as_json:
        typer.echo(json.dumps(result.as_dict(), indent=1))
        return
    print_status(result)


@app.command()
def cancel(
    name: str = typer.Argument(..., help="Sweep name (runs/NAME) or its YAML file."),
    runs_root: Path = RUNS_ROOT,
) -> None:
    """Cancel the sweep's Slurm jobs and mark it cancelled (a relaunch resumes it)."""
    from workbench.sweep.status import cancel as do_cancel
    from workbench.sweep.status import sweep_root

    root, _ = sweep_root(name, runs_root)
    if not root.is_dir():
        raise WorkbenchError(f"no sweep folder {root}", "Give the sweep's name as in its YAML, or --runs-root.")
    ids = do_cancel(root)
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
