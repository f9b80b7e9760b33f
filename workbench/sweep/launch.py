"""Run a sweep's planned runs: Slurm job arrays through submitit, or this machine (in-process or a pool).

Every run gets runs/SWEEP/RUN_ID/config.yaml before anything is submitted; the job is
`SweepJob(config.yaml)`, which calls `workbench.train.main`. Relaunching is idempotent: completed and
diverged runs and runs with a live job are skipped, failed, interrupted and missing ones (re)submitted,
and a run whose config changed (same grid point, new hash, or an edited config.yaml) is refused unless
`force`, which moves the old run directory to runs/SWEEP/.replaced/. WSD branches wait for their trunk:
on Slurm one array per trunk with `--dependency=afterok:TRUNK_JOB`, locally after the trunks.
Preemption: Slurm's USR2 reaches the trainer, which checkpoints and calls submitit's handler
(checkpoint() + requeue); a SIGTERM requeue (scontrol requeue) is served by the trainer's checkpoint.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import submitit
import yaml

from workbench import runlock
from workbench.config import TrainConfig, dump_yaml
from workbench.errors import WorkbenchError
from workbench.sweep import status as st
from workbench.sweep.spec import Launch, Plan, PlannedRun

DEFAULT_CORPUS = "@default"  # a data source path meaning workbench.data's embedded corpus


class SweepJob(submitit.helpers.Checkpointable):
    """The submitted callable: one training run from its config.yaml. Checkpointable so that submitit
    requeues it on USR2; the resumed copy calls main() again, which resumes from the run's ckpt/."""

    def __init__(self, tasks: int = 1):  # processes in the whole job (nodes x tasks per node)
        self.tasks = tasks

    def __call__(self, config_path: str) -> dict:
        if self.tasks > 1:  # one process per GPU: RANK, WORLD_SIZE, MASTER_ADDR... for torch.distributed
            submitit.helpers.TorchDistributedEnvironment().export()
        from workbench import train

        return train.main(config_path)

    def checkpoint(self, config_path: str) -> submitit.helpers.DelayedSubmission:
        return submitit.helpers.DelayedSubmission(self, config_path)


@dataclass
class LaunchReport:
    """What a launch did (or, with dry_run, would do): run ids by action, and job ids by run."""

    sweep_dir: Path
    executor: str
    submit: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # run id -> state that made it skip
    replaced: list[str] = field(default_factory=list)
    jobs: dict[str, str | None] = field(default_factory=dict)
    results: dict[str, str] = field(default_factory=dict)  # local runs: run id -> final status
    dry_run: bool = False


def sweep_dir(plan: Plan, base: Path) -> Path:
    return (base / plan.spec.runs_root / plan.spec.name).resolve()


def materialize(config: TrainConfig, base: Path) -> TrainConfig:
    """The config as written to disk: absolute run_dir, init_from and data paths (jobs may start in
    another directory), `@default` replaced by the embedded corpus folder."""
    from workbench.data import default_corpus_dir

    def absolute(path: str) -> str:
        if path == DEFAULT_CORPUS:
            return str(default_corpus_dir().resolve())
        return str((base / path).resolve())

    body = config.model_dump(mode="json")
    body["run_dir"] = absolute(body["run_dir"])
    data = body["data"]
    for key in ("sources", "anneal_sources"):
        data[key] = [{**s, "path": absolute(s["path"])} for s in data[key]]
    init_from = body["checkpoint"]["init_from"]
    if init_from:
        path, at, tokens = init_from.rpartition("@") if "@" in init_from else (init_from, "", "")
        body["checkpoint"]["init_from"] = absolute(path) + at + tokens
    return TrainConfig.model_validate(body)


def launch(
    plan: Plan, base: Path | None = None, executor: str | None = None, dry_run: bool = False, force: bool = False
) -> LaunchReport:
    """Write run configs and submit every run that is not done or live (see the module docstring)."""
    base = Path(base or Path.cwd()).resolve()
    root = sweep_dir(plan, base)
    kind = executor or plan.spec.launch.executor
    configs = {run.run_id: materialize(run.config, base) for run in plan.runs}
    report = LaunchReport(root, kind, dry_run=dry_run)
    stale = _changed_runs(root, plan, configs)
    if stale and not force:
        rid, reason = stale[0]
        raise WorkbenchError(
            f"run {rid} of sweep {plan.spec.name} changed since it was launched ({reason})",
            "Relaunch with --force to start it again (the old run dir moves to .replaced/), or rename the sweep.",
        )
    report.replaced = [rid for rid, _ in stale]
    now = st.sweep_status(root, [r.run_id for r in plan.runs], query_slurm=kind == "slurm")
    state = {r.run_id: r for r in now.runs}
    for run in plan.runs:
        current = state[run.run_id].state
        holder = runlock.read_holder(root / run.run_id)
        if current in st.DONE or current in st.LIVE:
            report.skipped[run.run_id] = current
        elif holder is not None and runlock.holder_alive(holder):  # trained right now by another launch
            report.skipped[run.run_id] = f"locked by {runlock.describe(holder)}"
        else:
            report.submit.append(run.run_id)
    if dry_run:
        return report
    _replace(root, report.replaced)
    if any(_uses_default_corpus(c) for c in configs.values()):
        from workbench.data import ensure_default_corpus

        ensure_default_corpus()
    for rid in report.submit:
        write_config(configs[rid])
    jobs = st.read_jobs(root)
    jobs["cancelled_at"] = None
    st.write_jobs(root, jobs)
    todo = [r for r in plan.runs if r.run_id in report.submit]
    if kind == "local":
        report.results = run_local(todo, configs, plan.spec.launch, root)
    else:
        report.jobs = submit_slurm(todo, configs, plan.spec.launch, root, state)
    return report


def _uses_default_corpus(config: TrainConfig) -> bool:
    from workbench.data import default_corpus_dir

    corpus = str(default_corpus_dir().resolve())
    return any(s.path == corpus for s in config.data.sources + config.data.anneal_sources)


def write_config(config: TrainConfig) -> Path:
    """The run's config.yaml in its run dir, written atomically (the trainer checks it on start)."""
    from workbench.files import atomic_write_text

    return atomic_write_text(Path(config.run_dir) / "config.yaml", dump_yaml(config))


def _changed_runs(root: Path, plan: Plan, configs: dict[str, TrainConfig]) -> list[tuple[str, str]]:
    """(old run id, reason) for run dirs that a changed spec or an edited config.yaml replaces."""
    if not root.is_dir():
        return []
    planned = {rid.rsplit("-", 1)[0]: rid for rid in configs}
    changed = []
    for path in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        prefix = path.name.rsplit("-", 1)[0]
        if path.name in configs:
            written = path / "config.yaml"
            if written.is_file() and yaml.safe_load(written.read_text()) != configs[path.name].model_dump(mode="json"):
                changed.append((path.name, f"{written} differs from the spec"))
        elif prefix in planned:
            changed.append((path.name, f"the spec now gives {planned[prefix]}"))
    return changed


def _replace(root: Path, run_ids: list[str]) -> None:
    if not run_ids:
        return
    stamp = st.now().replace(":", "")
    (root / ".replaced").mkdir(exist_ok=True)
    for rid in run_ids:
        shutil.move(str(root / rid), str(root / ".replaced" / f"{rid}-{stamp}"))


# ---------------------------------------------------------------- Slurm


def slurm_executor(launch_spec: Launch, folder: Path, dependency: str | None = None):
    """A submitit SlurmExecutor with the spec's launch settings (one array per map_array call)."""
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=launch_spec.max_num_timeout)
    executor.update_parameters(**slurm_parameters(launch_spec, dependency))
    return executor


def slurm_parameters(launch_spec: Launch, dependency: str | None = None, name: str = "workbench") -> dict:
    """sbatch settings (submitit's SlurmExecutor names) from a spec's launch section."""
    spec = launch_spec
    params = {
        "job_name": name,
        "time": spec.timeout_min,
        "nodes": spec.nodes,
        "ntasks_per_node": spec.tasks,
        "array_parallelism": spec.array_parallelism,
        "signal_delay_s": spec.slurm_signal_delay_s,
        "setup": list(spec.setup),
    }
    optional = {
        "gpus_per_node": spec.gpus_per_node or None,
        "cpus_per_task": spec.cpus_per_task,
        "mem": f"{int(spec.mem_gb * 1024)}MB" if spec.mem_gb else None,
        "partition": spec.partition,
        "account": spec.account,
        "qos": spec.qos,
    }
    params.update({k: v for k, v in optional.items() if v is not None})
    if dependency:
        params["additional_parameters"] = {"dependency": dependency, "kill_on_invalid_dep": "yes"}
    return params


def submit_slurm(
    runs: list[PlannedRun], configs: dict[str, TrainConfig], launch_spec: Launch, root: Path, state: dict
) -> dict[str, str]:
    """One array for the trunks and plain runs, then one array of branches per trunk (afterok)."""
    folder = root / ".submitit" / "%j"
    job = SweepJob(launch_spec.nodes * launch_spec.tasks)  # the world size: multi-node jobs too
    jobs = st.read_jobs(root)
    job_ids: dict[str, str] = {}
    first = [r for r in runs if r.kind != "branch"]
    groups: dict[str | None, list[PlannedRun]] = {}
    for r in runs:
        if r.kind == "branch":
            trunk = r.branch_of
            dep_job = job_ids.get(trunk) or (state[trunk].job_id if state[trunk].state in st.LIVE else None)
            groups.setdefault(dep_job, []).append(r)
    for dependency, batch in [(None, first)] + [(d, g) for d, g in groups.items()]:
        if not batch:
            continue
        executor = slurm_executor(launch_spec, folder, f"afterok:{dependency}" if dependency else None)
        executor.update_parameters(job_name=f"wb-{root.name}")
        paths = [str(Path(configs[r.run_id].run_dir) / "config.yaml") for r in batch]
        submitted = executor.map_array(job, paths)
        for r, j in zip(batch, submitted, strict=True):
            job_ids[r.run_id] = j.job_id
            jobs["runs"][r.run_id] = {"job_id": j.job_id, "executor": "slurm", "submitted_at": st.now()}
        jobs["submissions"].append({"at": st.now(), "array": submitted[0].job_id.split("_")[0], "runs": len(batch),
                                    "dependency": dependency})  # fmt: skip
        st.write_jobs(root, jobs)  # after each array: a failure later still leaves the earlier ids
    return job_ids


def sbatch_script(
    launch_spec: Launch, folder: str | Path, python: str = "python", array_size: int = 4, dependency: str | None = None
) -> str:
    """The sbatch file submitit writes for an array of `array_size` runs (for review and tests)."""
    from submitit.slurm.slurm import _make_sbatch_string

    params = slurm_parameters(launch_spec, dependency)
    command = f"{python} -u -m submitit.core._submit {folder}"
    return _make_sbatch_string(command=command, folder=str(folder), map_count=array_size, **params)


# ---------------------------------------------------------------- this machine


def run_local(runs: list[PlannedRun], configs: dict[str, TrainConfig], launch_spec: Launch, root: Path) -> dict:
    """Run in order on this machine (trunks before branches); returns run id -> final status."""
    results: dict[str, str] = {}
    waves = [[r for r in runs if r.kind != "branch"], [r for r in runs if r.kind == "branch"]]
    jobs = st.read_jobs(root)
    for r in runs:
        jobs["runs"][r.run_id] = {"job_id": None, "executor": "local", "submitted_at": st.now()}
    st.write_jobs(root, jobs)
    with _RunsProgress(len(runs)) as progress:
        for wave in waves:
            ready = [r for r in wave if r.kind != "branch" or _trunk_done(r, root)]
            for r in wave:
                if r not in ready:
                    results[r.run_id] = "skipped: trunk not completed"
            paths = {r.run_id: str(Path(configs[r.run_id].run_dir) / "config.yaml") for r in ready}
            if launch_spec.local_workers == 1:
                for r in ready:
                    results[r.run_id] = _run_one(paths[r.run_id], progress, r.run_id)
            else:
                results.update(_run_pool(paths, launch_spec.local_workers, progress))
    return results


def _trunk_done(run: PlannedRun, root: Path) -> bool:
    return st.run_state(root / run.branch_of, None) == "completed"


def _run_one(config_path: str, progress: _RunsProgress, run_id: str) -> str:
    from workbench import train

    progress.pause()
    try:
        record = train.main(config_path)
    except train.Interrupted as err:
        raise WorkbenchError(f"sweep interrupted during run {run_id} ({err})", "Relaunch to resume.", 4) from None
    except runlock.Locked as err:
        record = {"status": f"skipped: locked by {runlock.describe(err.holder)}"}
    except WorkbenchError as err:
        record = {"status": f"failed: {err}"}
    finally:
        progress.resume()
    progress.done(run_id, record)
    return str(record.get("status"))


def _pool_worker(config_path: str) -> dict:
    """One run in a worker process; the trainer's own output goes to RUN_DIR/train.log."""
    from workbench import train

    log = Path(config_path).parent / "train.log"
    with open(log, "a") as f:
        os.dup2(f.fileno(), 2)  # not a TTY any more: the trainer prints plain lines
        os.dup2(f.fileno(), 1)
    try:
        return train.main(config_path)
    except runlock.Locked as err:
        return {"status": f"skipped: locked by {runlock.describe(err.holder)}"}
    except train.Interrupted as err:
        return {"status": f"interrupted ({err}); relaunch to resume"}
    except WorkbenchError as err:
        return {"status": f"failed: {err}"}


def _run_pool(paths: dict[str, str], workers: int, progress: _RunsProgress) -> dict[str, str]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    results = {}
    context = multiprocessing.get_context("spawn")  # no forked torch state
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(_pool_worker, path): rid for rid, path in paths.items()}
        for future in as_completed(futures):
            try:
                record = future.result()
            except BrokenProcessPool:
                raise WorkbenchError(
                    f"a training process of run {futures[future]} died (killed, or out of memory)",
                    "Relaunch the sweep: runs resume from their last checkpoint.",
                ) from None
            results[futures[future]] = str(record.get("status"))
            progress.done(futures[future], record)
    return results


class _RunsProgress:
    """A rich bar of runs on a terminal (paused while the trainer shows its own), a line per run."""

    def __init__(self, total: int):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(stderr=True)
        self.bar = Progress(
            TextColumn("sweep runs"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=self.console, transient=True, disable=not self.console.is_terminal,
        )  # fmt: skip
        self.task = self.bar.add_task("runs", total=total)

    def __enter__(self) -> _RunsProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def pause(self) -> None:
        self.bar.stop()

    def resume(self) -> None:
        self.bar.start()

    def done(self, run_id: str, record: dict) -> None:
        loss = record.get("val_loss")
        loss_text = f" val_loss {loss:.4f}" if isinstance(loss, float) else ""
        self.console.print(f"[sweep] {run_id}: {record.get('status')}{loss_text}", highlight=False, markup=False)
        self.bar.advance(self.task)
