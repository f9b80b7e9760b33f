"""`workbench flagship launch`: submit a planned flagship run (`workbench plan --out`) through the sweep launcher.

The flagship is a one-run sweep: its folder is the parent of the config's run_dir (runs/flagship), with the
sweep's jobs.json, so `workbench sweep status flagship` follows it. On Slurm it is one submitit job of the
sweep launcher's SweepJob (Checkpointable: requeued on preemption and timeout, resumed from RUN_DIR/ckpt),
with the plan's nodes and one task per GPU (torchrun-style RANK/WORLD_SIZE from submitit's
TorchDistributedEnvironment). Nodes and GPUs per node come from the config's layout block (written by
the plan: workbench.config.LayoutConfig); options override them. Relaunching is
idempotent: a completed run or a live job is left alone, and a run whose config.yaml changed is refused
unless --force (the old run directory moves to .replaced/).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import typer

from workbench.errors import WorkbenchError

app = typer.Typer(no_args_is_help=True)
DONE_HINT = "Delete or move its run directory to train it again."


@app.callback()
def _group() -> None:
    """Launch a planned flagship run."""


def _load(file: Path):
    from workbench.config import TrainConfig, load

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


def resources(layout, nodes: int | None, gpus_per_node: int | None) -> tuple[int, int, int]:
    """(nodes, GPUs per node, GPUs) from the options, else the config's layout block (one GPU without one)."""
    gpus = layout.gpus if layout is not None else 1
    plan_per_node = layout.gpus_per_node if layout is not None else 1
    per_node = gpus_per_node if gpus_per_node is not None else plan_per_node
    return nodes or math.ceil(gpus / (per_node or plan_per_node)), per_node, gpus


def _layout(config, file: Path):
    """The config's layout block; a config from before the block (a "TP a x PP b x DP c" meta string) is refused."""
    if config.layout is None and "layout" in config.meta:
        raise WorkbenchError(
            f"{file}: the layout is a meta string of an older plan, not a layout block",
            "Rewrite the config with `workbench plan --out` (it writes the layout: block).",
        )
    return config.layout


def _launch_spec(executor: str, nodes: int, gpus_per_node: int, partition, account, qos, timeout_min: int):
    from workbench.config import parse_model
    from workbench.sweep.spec import Launch

    body = {
        "executor": executor, "partition": partition, "account": account, "qos": qos, "nodes": nodes,
        "gpus_per_node": gpus_per_node, "tasks_per_node": max(1, gpus_per_node), "timeout_min": timeout_min,
        "array_parallelism": 1,
    }  # fmt: skip
    return parse_model(Launch, body, "flagship launch options")


def _planned_run(config, run_id: str):
    """The flagship as a PlannedRun of the sweep launcher (kind run, cost = its training FLOPs)."""
    from workbench import flops
    from workbench.sweep.spec import PlannedRun

    shape = config.model.shape(config.name)
    tokens = config.stop.tokens or flops.tokens_for_budget(shape, config.stop.budget_flops, config.data.seq_len)
    run_flops = flops.training_flops(shape, tokens, config.data.seq_len, config.stop.flop_rule)
    meta = config.meta
    return PlannedRun(
        run_id=run_id,
        kind="run",
        budget_flops=float(meta.get("compute_flops") or run_flops),
        target_params=float(meta.get("params_opt") or shape.params),
        params=shape.params,
        params_total=shape.params_total,
        shape=shape.name,
        tokens=tokens,
        steps=tokens // config.batch.batch_tokens,
        batch_tokens=config.batch.batch_tokens,
        lr_peak=config.optim.lr_peak,
        flops=run_flops,
        cost_flops=run_flops,
        gpu_hours=0.0,
        branch_of=None,
        start_tokens=0,
        config=config,
    )


def _state(root: Path, run_id: str, executor: str) -> tuple[str, str | None]:
    """(run state as in `sweep status`, its recorded Slurm job id)."""
    from workbench.sweep import status as st

    job = (st.read_jobs(root)["runs"].get(run_id) or {}).get("job_id")
    slurm = st.slurm_states([job]).get(job) if job and executor == "slurm" else None
    return st.run_state(root / run_id, slurm), job


def _changed(run_dir: Path, config) -> bool:
    import yaml

    written = run_dir / "config.yaml"
    return written.is_file() and yaml.safe_load(written.read_text()) != config.model_dump(mode="json")


def _write(config, force: bool) -> Path:
    """Write RUN_DIR/config.yaml (atomic); a changed one moves to .replaced/ with --force, else refused."""
    import shutil

    from workbench.config import dump_yaml
    from workbench.sweep import status as st

    run_dir = Path(config.run_dir)
    if _changed(run_dir, config):
        if not force:
            raise WorkbenchError(
                f"flagship {run_dir.name} changed since it was launched ({run_dir / 'config.yaml'} differs)",
                "Relaunch with --force to start it again (the old run dir moves to .replaced/).",
            )
        replaced = run_dir.parent / ".replaced"
        replaced.mkdir(exist_ok=True)
        shutil.move(str(run_dir), str(replaced / f"{run_dir.name}-{st.now().replace(':', '')}"))
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / ".config.yaml.tmp"
    tmp.write_text(dump_yaml(config))
    tmp.replace(run_dir / "config.yaml")
    return run_dir / "config.yaml"


def _ensure_corpus(config) -> None:
    from workbench.data import default_corpus_dir, ensure_default_corpus

    corpus = str(default_corpus_dir().resolve())
    if any(s.path == corpus for s in config.data.sources + config.data.anneal_sources):
        ensure_default_corpus()


def _job_name(run_id: str) -> str:
    return f"wb-{run_id}"[:64]


def _submit_slurm(config_path: Path, launch_spec, root: Path, run_id: str) -> str:
    from workbench.sweep import status as st
    from workbench.sweep.launch import SweepJob, slurm_executor

    executor = slurm_executor(launch_spec, root / ".submitit" / "%j")
    executor.update_parameters(job_name=_job_name(run_id))
    # every process of every node runs the job: the distributed environment spans nodes x tasks
    job = executor.submit(SweepJob(launch_spec.nodes * launch_spec.tasks), str(config_path))
    jobs = st.read_jobs(root)
    jobs["cancelled_at"] = None
    jobs["runs"][run_id] = {"job_id": job.job_id, "executor": "slurm", "submitted_at": st.now()}
    jobs["submissions"].append({"at": st.now(), "array": None, "job": job.job_id, "runs": 1, "dependency": None})
    st.write_jobs(root, jobs)
    return job.job_id


@app.command()
def launch(
    file: Path = typer.Argument(..., help="Flagship train config written by `workbench plan --out`."),
    executor: str = typer.Option("slurm", "--executor", help="slurm or local (this machine, one process)."),
    nodes: int = typer.Option(None, "--nodes", min=1, help="Nodes (default: the plan's layout)."),
    gpus_per_node: int = typer.Option(
        None, "--gpus-per-node", min=0, help="GPUs per node (default: the plan's, <= 8)."
    ),
    partition: str = typer.Option(None, "--partition", help="Slurm partition."),
    account: str = typer.Option(None, "--account", help="Slurm account."),
    qos: str = typer.Option(None, "--qos", help="Slurm QOS."),
    timeout_min: int = typer.Option(1440, "--timeout-min", help="Wall time per job in minutes (requeued after)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resources and the sbatch script; submit nothing."),
    force: bool = typer.Option(False, "--force", help="Replace a run whose config changed."),
    db: Path = typer.Option(None, "--db", help="DuckDB file to ingest the local run into (default: WORKBENCH_DB)."),
) -> None:
    """Submit the planned flagship run: one Slurm job of the plan's nodes x GPUs, or a run on this machine."""
    from workbench.sweep.launch import materialize, run_local, sbatch_script

    if executor not in ("slurm", "local"):
        raise WorkbenchError(f"--executor {executor!r} is not known", "Use --executor slurm or --executor local.")
    config = materialize(_load(file), Path.cwd())
    layout = _layout(config, file)
    count, per_node, gpus = resources(layout, nodes, gpus_per_node)
    spec = _launch_spec(executor, count, per_node, partition, account, qos, timeout_min)
    run_dir = Path(config.run_dir)
    root, run_id = run_dir.parent, run_dir.name
    where = f"{count} nodes x {per_node} GPUs ({spec.tasks} tasks per node, {gpus} GPUs in the layout)"
    where += f", {timeout_min} min per job" + (f", partition {partition}" if partition else "")
    described = layout.describe() if layout is not None else "none (one process)"
    typer.echo(f"flagship {run_id}: {where}; layout {described}; run dir {run_dir}")
    state, job = _state(root, run_id, executor)
    if state in ("completed", "diverged"):
        typer.echo(f"flagship {run_id} already {state}: nothing to launch. {DONE_HINT}")
        return
    if state in ("pending", "running"):
        typer.echo(f"flagship {run_id} is {state} as Slurm job {job}: nothing to launch")
        return
    if dry_run:
        if executor == "slurm":
            script = sbatch_script(spec, root / ".submitit" / "%j", python=sys.executable, array_size=None)
            typer.echo(script.replace("--job-name=workbench\n", f"--job-name={_job_name(run_id)}\n"))
        else:
            typer.echo(f"would run {run_id} on this machine (one process)")
        return
    path = _write(config, force)
    _ensure_corpus(config)
    if executor == "slurm":
        job_id = _submit_slurm(path, spec, root, run_id)
        typer.echo(
            f"submitted flagship {run_id} as Slurm job {job_id}; follow it with `workbench sweep status {root.name}`"
        )
        return
    results = run_local([_planned_run(config, run_id)], {run_id: config}, spec, root)
    _ingest(run_dir, db)
    if results[run_id] not in ("completed", "diverged"):
        raise WorkbenchError(
            f"flagship {run_id} did not complete ({results[run_id]})", f"See {run_dir / 'final.json'}."
        )
    typer.echo(f"flagship {run_id}: {results[run_id]}; run dir {run_dir}")


def _ingest(run_dir: Path, db: Path | None) -> None:
    from workbench.store import Store

    stats = Store(db).ingest(run_dir)
    typer.echo(f"ingested into {Store(db).path}: {stats}", err=True)
