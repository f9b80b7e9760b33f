"""`workbench flagship launch`: submit a planned flagship run (`workbench plan --out`) as a one-run sweep.

The launcher (workbench.sweep.launch.launch_runs) does the work: the sweep folder is the parent of the
config's run_dir (runs/flagship), with its jobs.json, so `workbench sweep status flagship` follows it; a
completed run or a live job is left alone, and a changed config.yaml is refused unless --force. On Slurm it
is one job of the plan's nodes x GPUs per node (one task per GPU). Nodes and GPUs per node come from the
config's layout block (written by the plan: workbench.config.LayoutConfig); options override them. With
`--gpus-per-node 0` (a CPU partition) no GPUs are asked for and a node still runs the layout's processes
per node, one task each.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from workbench.commands.options import db_option, echo_json, json_option
from workbench.core.errors import WorkbenchError

app = typer.Typer(no_args_is_help=True)
DONE_HINT = "Delete or move its run directory to train it again."


@app.callback()
def _group() -> None:
    """Launch a planned flagship run."""


def _load(file: Path):

    from workbench.core.configfile import load
    from workbench.train.config import TrainConfig

    if not file.is_file():
        raise WorkbenchError(
            f"flagship config {file} not found", "Write one with `workbench plan --compute C --out flagship.yaml`."
        )
    try:
        return load(TrainConfig, file)
    except WorkbenchError as err:
        raise WorkbenchError(
            f"{file} is not a train config ({err.message})",
            "Give the flagship YAML that `workbench plan --out` wrote (a TrainConfig).",
        ) from None


@app.command()
def launch(
    file: Path = typer.Argument(..., help="Flagship train config written by `workbench plan --out`."),
    executor: str = typer.Option("slurm", "--executor", help="slurm or local (this machine, one process)."),
    nodes: int = typer.Option(None, "--nodes", min=1, help="Nodes (default: the plan's layout)."),
    gpus_per_node: int = typer.Option(
        None, "--gpus-per-node", min=0, help="GPUs per node (default: the plan's, <= 8); 0: CPU nodes, same tasks."
    ),
    partition: str = typer.Option(None, "--partition", help="Slurm partition."),
    account: str = typer.Option(None, "--account", help="Slurm account."),
    qos: str = typer.Option(None, "--qos", help="Slurm QOS."),
    timeout_min: int = typer.Option(1440, "--timeout-min", help="Wall time per job in minutes (requeued after)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resources and the sbatch script; submit nothing."),
    force: bool = typer.Option(False, "--force", help="Replace a run whose config changed."),
    db: Path = db_option(),
    as_json: bool = json_option(),
) -> None:
    """Submit the planned flagship run: one Slurm job of the plan's nodes x GPUs, or a run on this machine."""
    from workbench.sweep.executors import check_kind, sbatch_script
    from workbench.sweep.launch import (
        flagship_launch_spec,
        flagship_layout,
        launch_runs,
        materialize,
        resources,
        single_run,
        tasks_per_node,
    )

    check_kind(executor)
    config = materialize(_load(file), Path.cwd())
    layout = flagship_layout(config, file)
    count, per_node, gpus = resources(layout, nodes, gpus_per_node)
    tasks = tasks_per_node(layout, per_node)
    spec = flagship_launch_spec(executor, count, per_node, tasks, partition, account, qos, timeout_min)
    run = single_run(config)
    run_dir, run_id = Path(config.run_dir), run.run_id
    where = f"{count} nodes x {per_node} GPUs ({spec.tasks} tasks per node, {gpus} GPUs in the layout)"
    where += f", {timeout_min} min per job" + (f", partition {partition}" if partition else "")
    described = layout.describe() if layout is not None else "none (one process)"
    say = (lambda text: typer.echo(text, err=True)) if as_json else typer.echo
    script = None
    say(f"flagship {run_id}: {where}; layout {described}; run dir {run_dir}")
    job_name = f"wb-{run_id}"[:64]
    report = launch_runs(run_dir.parent, [run], {run_id: config}, spec, executor, dry_run, force, job_name)
    state = report.skipped.get(run_id)
    if state in ("completed", "diverged"):
        say(f"flagship {run_id} already {state}: nothing to launch. {DONE_HINT}")
    elif state:
        say(f"flagship {run_id} is {state} as Slurm job {report.live_jobs[run_id]}: nothing to launch")
    elif dry_run and executor == "slurm":
        folder = run_dir.parent / ".submitit" / "%j"
        script = sbatch_script(spec, folder, python=sys.executable, array_size=None, job_name=job_name)
        say(script)
    elif dry_run:
        say(f"would run {run_id} on this machine (one process)")
    elif executor == "slurm":
        say(
            f"submitted flagship {run_id} as Slurm job {report.jobs[run_id]}; "
            f"follow it with `workbench sweep status {run_dir.parent.name}`"
        )
    else:
        from workbench.train import rundir

        _ingest(run_dir, db)
        if report.results[run_id] not in ("completed", "diverged"):
            raise WorkbenchError(
                f"flagship {run_id} did not complete ({report.results[run_id]})", f"See {rundir.final_path(run_dir)}."
            )
        say(f"flagship {run_id}: {report.results[run_id]}; run dir {run_dir}")
    if as_json:
        resources_ = {"nodes": count, "gpus_per_node": per_node, "gpus": gpus, "layout": described}
        echo_json({"run_id": run_id, "run_dir": str(run_dir), **resources_, "sbatch": script, **report.as_dict()})


def _ingest(run_dir: Path, db: Path | None) -> None:
    from workbench.store.database import Store

    store = Store(db)
    stats = store.ingest(run_dir)
    typer.echo(f"ingested into {store.path}: {stats}", err=True)
