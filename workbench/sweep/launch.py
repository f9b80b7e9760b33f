"""Launch runs: write their configs, skip what is done or live, submit the rest through an executor.

Every run gets runs/SWEEP/RUN_ID/config.yaml before anything is submitted; the executor
(workbench.sweep.executors: this process, a local pool, or Slurm) runs the config. `launch` takes a sweep's
plan; `launch_runs` takes any runs of one folder: the flagship is a one-run sweep (`single_run`).
Relaunching is idempotent: completed and diverged runs and runs with a live job are skipped, failed,
interrupted and missing ones (re)submitted, and a run whose config changed (same grid point, new hash, or an
edited config.yaml) is refused unless `force`, which moves the old run directory to runs/SWEEP/.replaced/.
WSD branches wait for their trunk: on Slurm one array per trunk with `--dependency=afterok:TRUNK_JOB`,
locally after the trunks. Every submission is recorded in runs/SWEEP/jobs.json (workbench.sweep.status).
Preemption: Slurm's USR2 reaches the trainer, which checkpoints and calls submitit's handler
(checkpoint() + requeue); a SIGTERM requeue (scontrol requeue) is served by the trainer's checkpoint.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from workbench.core.configfile import dump_yaml, parse_model
from workbench.core.errors import WorkbenchError
from workbench.data.batches import check_tokenizers
from workbench.data.prepare import default_corpus_dir, ensure_default_corpus
from workbench.model import flops
from workbench.sweep import executors, preflight, versions
from workbench.sweep import status as st
from workbench.sweep.preflight import DEFAULT_CORPUS
from workbench.sweep.spec import HASH_KEY, Launch, Plan, PlannedRun
from workbench.train import rundir, runlock
from workbench.train.config import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class LaunchReport:
    """What a launch did (or, with dry_run, would do): run ids by action, and job ids by run."""

    sweep_dir: Path
    executor: str
    submit: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # run id -> state that made it skip
    replaced: list[str] = field(default_factory=list)
    jobs: dict[str, str | None] = field(default_factory=dict)  # submitted now: run id -> Slurm job id
    live_jobs: dict[str, str | None] = field(default_factory=dict)  # skipped as pending/running: their job id
    results: dict[str, str] = field(default_factory=dict)  # local runs: run id -> final status
    dry_run: bool = False
    version: versions.Decision | None = None  # the sweep version these runs belong to (sweeps only)
    notes: tuple[str, ...] = ()  # the checks' warnings (workbench.sweep.preflight)

    def as_dict(self) -> dict:
        """The report as JSON-ready values (`workbench sweep launch --json`)."""
        return {
            "sweep_dir": str(self.sweep_dir),
            "executor": self.executor,
            "dry_run": self.dry_run,
            "submitted": self.submit,
            "skipped": self.skipped,
            "replaced": self.replaced,
            "jobs": self.jobs,
            "results": self.results,
            "failed": self.failed(),
            "locked_elsewhere": self.locked_elsewhere(),
            "counts": self.counts(),
            "version": None if self.version is None else self.version.version,
            "spec_hash": None if self.version is None else self.version.spec_hash,
            "version_action": None if self.version is None else self.version.action,
            "changed_keys": [] if self.version is None else list(self.version.changed),
            "notes": list(self.notes),
        }

    def raise_if_failed(self) -> None:
        """A one-line error when a run of this launch failed (the command exits 1 after its summary)."""
        if failed := self.failed():
            why = self.results[failed[0]].removeprefix("failed: ")
            raise WorkbenchError(
                f"{len(failed)} of {len(self.submit)} runs failed, first {failed[0]}: {why}",
                "See `workbench sweep status` and the run's final.json; relaunch to retry.",
            )

    def counts(self) -> dict[str, int]:
        """Runs of this launch by outcome: completed, diverged, failed (local runs), submitted (Slurm, or a dry
        run's would-be), skipped (done or live before, or trained by another launch meanwhile)."""
        elsewhere = self.locked_elsewhere()
        ran = {rid: s for rid, s in self.results.items() if rid not in elsewhere and not s.startswith("skipped")}
        skipped_now = [rid for rid, s in self.results.items() if s.startswith("skipped") and rid not in self.skipped]
        counts = {
            "completed": sum(s == "completed" for s in ran.values()),
            "diverged": sum(s == "diverged" for s in ran.values()),
            "failed": len(self.failed()),
            "skipped": len(self.skipped) + len(skipped_now),
        }
        if self.dry_run or self.executor == "slurm":
            counts["submitted"] = len(self.submit)
        return counts

    def locked_elsewhere(self) -> dict[str, str]:
        """Runs another launch is training: run id -> its state (skipped before or while running)."""
        during = {rid: s for rid, s in self.results.items() if s.startswith("skipped: locked")}
        before = {rid: s for rid, s in self.skipped.items() if s.startswith("locked")}
        return {rid: s.removeprefix("skipped: ") for rid, s in {**before, **during}.items()}

    def failed(self) -> list[str]:
        """Local runs of this launch that ended neither completed nor diverged (a branch whose trunk did not
        complete is skipped, not failed)."""
        elsewhere = self.locked_elsewhere()
        return [
            r
            for r, s in self.results.items()
            if s not in ("completed", "diverged") and r not in elsewhere and not s.startswith("skipped")
        ]


def sweep_dir(plan: Plan, base: Path) -> Path:
    return (base / plan.spec.runs_root / plan.spec.name).resolve()


def materialize(config: TrainConfig, base: Path) -> TrainConfig:
    """The config as written to disk: absolute run_dir, init_from and data paths (jobs may start in
    another directory), `@default` replaced by the embedded corpus folder."""

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
    plan: Plan,
    base: Path | None = None,
    executor: str | None = None,
    dry_run: bool = False,
    force: bool = False,
    new_version: bool = False,
) -> LaunchReport:
    """Check the sweep (workbench.sweep.preflight) and its version (workbench.sweep.versions), then write the plan's
    run configs and submit every run that is not done or live (see the module docstring). Nothing is written
    before the checks pass; a dry run writes nothing at all."""
    base = Path(base or Path.cwd()).resolve()
    kind = executors.check_kind(executor or plan.spec.launch.executor)
    found = preflight.require(plan, base, kind)
    root = sweep_dir(plan, base)
    ids = [run.run_id for run in plan.runs]
    decision = versions.decide(root, plan.spec, ids, plan.source, new_version, force, st.now())
    configs = {run.run_id: materialize(run.config, base) for run in plan.runs}
    report = launch_runs(
        root,
        plan.runs,
        configs,
        plan.spec.launch,
        kind,
        dry_run,
        force,
        earlier_versions=decision.action == "new",
        before_writes=lambda: versions.write(root, decision),
    )
    report.version, report.notes = decision, found.notes
    return report


def launch_runs(
    root: Path,
    runs: list[PlannedRun],
    configs: dict[str, TrainConfig],
    launch_spec: Launch,
    kind: str,
    dry_run: bool = False,
    force: bool = False,
    job_name: str | None = None,
    earlier_versions: bool = False,
    before_writes=None,
) -> LaunchReport:
    """Launch `runs` (materialized `configs` by run id) of the sweep folder `root` with executor `kind`.
    `earlier_versions`: runs of other grid points' hashes belong to an older version of the sweep and stay;
    `before_writes` is called once the launch is decided, before the first file is written."""
    executors.check_kind(kind)
    if kind == "slurm" and not dry_run and (problem := preflight.slurm_problem(f"launching {root.name}")):
        raise problem.error()
    report = LaunchReport(root, kind, dry_run=dry_run)
    stale = changed_runs(root, configs, edited_only=earlier_versions)
    if stale and not force:
        rid, reason = stale[0]
        raise WorkbenchError(
            f"run {rid} of sweep {root.name} changed since it was launched ({reason})",
            "Relaunch with --force to start it again (the old run dir moves to .replaced/), or rename the sweep.",
        )
    report.replaced = [rid for rid, _ in stale]
    now = st.sweep_status(root, [r.run_id for r in runs], query_slurm=kind == "slurm")
    state = {r.run_id: r for r in now.runs}
    for run in runs:
        current = state[run.run_id]
        holder = runlock.read_holder(root / run.run_id)
        if current.state in st.DONE or current.state in st.LIVE:
            report.skipped[run.run_id] = current.state
            if current.state in st.LIVE:
                report.live_jobs[run.run_id] = current.job_id
        elif holder is not None and runlock.holder_alive(holder):  # trained right now by another launch
            report.skipped[run.run_id] = f"locked by {runlock.describe(holder)}"
        else:
            report.submit.append(run.run_id)
    if dry_run:
        return report
    if before_writes is not None:
        before_writes()
    _replace(root, report.replaced)
    todo_configs = [configs[rid] for rid in report.submit]
    write_configs(todo_configs)  # also prepares the embedded corpus where a config trains on it
    if todo_configs:
        check_tokenizers(todo_configs[0].data)  # one line naming both folders, before any job starts
    jobs = st.read_jobs(root)
    jobs["cancelled_at"] = None
    st.write_jobs(root, jobs)
    todo = [r for r in runs if r.run_id in report.submit]
    if kind == "local":
        report.results = run_local(todo, configs, launch_spec, root)
    else:
        name = job_name or f"wb-{root.name}"
        report.jobs = submit_slurm(todo, configs, executors.Slurm(launch_spec, root, name), root, state)
    return report


def single_run(config: TrainConfig) -> PlannedRun:
    """One config as a run of the launcher (the flagship): kind run, its run dir's name as run id, cost = its
    training FLOPs, budget and size target from the plan's meta where recorded."""
    from workbench.train.trainer import total_tokens

    shape = config.model.shape(config.name)
    tokens = total_tokens(config)
    run_flops = flops.training_flops(shape, tokens, config.data.seq_len, config.stop.flop_rule)
    meta = config.meta
    return PlannedRun(
        run_id=Path(config.run_dir).name,
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


def write_configs(configs: list[TrainConfig]) -> list[Path]:
    """Each run's config.yaml in its run dir, written atomically (the trainer checks it on start), after
    preparing the embedded corpus if a config trains on it."""

    corpus = str(default_corpus_dir().resolve())
    if any(s.path == corpus for c in configs for s in c.data.sources + c.data.anneal_sources):
        ensure_default_corpus()
    return [rundir.write_config(c.run_dir, dump_yaml(c)) for c in configs]


def changed_runs(root: Path, configs: dict[str, TrainConfig], edited_only: bool = False) -> list[tuple[str, str]]:
    """(old run id, reason) for run dirs in `root` that these configs replace: an edited config.yaml, or (unless
    `edited_only`) another run of the same grid point (RUN_ID = POINT-HASH from grid.run_id_of: same POINT,
    another HASH). The spec hash in a config's meta is not compared: a run two versions plan alike is one run."""
    if not root.is_dir():
        return []
    planned = {_point(rid): rid for rid in configs if _point(rid)}
    changed = []
    for path in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if path.name in configs:
            written = rundir.read_config(path)
            if written and _unhashed(written) != _unhashed(configs[path.name].model_dump(mode="json")):
                changed.append((path.name, f"{path / rundir.CONFIG} differs from the spec"))
        elif not edited_only and _point(path.name) in planned:
            changed.append((path.name, f"the spec now gives {planned[_point(path.name)]}"))
    return changed


def _unhashed(config: dict) -> dict:
    """A config without its meta's spec hash."""
    meta = {k: v for k, v in (config.get("meta") or {}).items() if k != HASH_KEY}
    return {**config, "meta": meta}


def _point(run_id: str) -> str | None:
    """POINT of a POINT-HASH run id (8 hex digits of hash), else None (a flagship's own name)."""
    point, _, digest = run_id.rpartition("-")
    return point if point and re.fullmatch(r"[0-9a-f]{8}", digest) else None


def _replace(root: Path, run_ids: list[str]) -> None:
    if not run_ids:
        return
    stamp = st.now().replace(":", "")
    (root / ".replaced").mkdir(exist_ok=True)
    for rid in run_ids:
        shutil.move(str(root / rid), str(root / ".replaced" / f"{rid}-{stamp}"))


# ---------------------------------------------------------------- Slurm


def submit_slurm(
    runs: list[PlannedRun], configs: dict[str, TrainConfig], slurm: executors.Slurm, root: Path, state: dict
) -> dict[str, str]:
    """One array for the trunks and plain runs (a single run: one job), then one array of branches per
    trunk (afterok); each submission is recorded in jobs.json as soon as it is made."""
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
        after = f"afterok:{dependency}" if dependency else None
        paths = [str(Path(configs[r.run_id].run_dir) / rundir.CONFIG) for r in batch]
        submitted = slurm.submit_array(paths, after) if len(batch) > 1 else [slurm.submit(paths[0], after)]
        for r, j in zip(batch, submitted, strict=True):
            job_ids[r.run_id] = j.job_id
            jobs["runs"][r.run_id] = {"job_id": j.job_id, "executor": "slurm", "submitted_at": st.now()}
        array = submitted[0].job_id.split("_")[0] if len(batch) > 1 else None
        jobs["submissions"].append(
            {
                "at": st.now(),
                "array": array,
                "job": None if array else submitted[0].job_id,
                "runs": len(batch),
                "dependency": dependency,
            }
        )
        st.write_jobs(root, jobs)  # after each submission: a failure later still leaves the earlier ids
    return job_ids


# ---------------------------------------------------------------- this machine


def run_local(runs: list[PlannedRun], configs: dict[str, TrainConfig], launch_spec: Launch, root: Path) -> dict:
    """Run on this machine, trunks before branches and the costliest first within each (so that the last
    to finish is a short one and no worker idles long at the end); returns run id -> final status."""
    results: dict[str, str] = {}
    waves = [[r for r in runs if r.kind != "branch"], [r for r in runs if r.kind == "branch"]]
    waves = [sorted(wave, key=lambda r: -r.cost_flops) for wave in waves]  # stable: equal costs keep their order
    jobs = st.read_jobs(root)
    for r in runs:
        jobs["runs"][r.run_id] = {"job_id": None, "executor": "local", "submitted_at": st.now()}
    st.write_jobs(root, jobs)
    executor = executors.make("local", launch_spec, root, "", launch_spec.local_workers, f"sweep {root.name}")
    try:
        with _RunsProgress(len(runs)) as progress:
            for wave in waves:
                ready = [r for r in wave if r.kind != "branch" or _trunk_done(r, root)]
                for r in wave:
                    if r not in ready:
                        results[r.run_id] = "skipped: trunk not completed"
                pending = {}
                for r in ready:
                    pending[r.run_id] = _submit(executor, Path(configs[r.run_id].run_dir) / rundir.CONFIG, progress)
                    if executor.in_process:  # ended already: say so before the next run starts
                        _collect(pending, results, progress)
                _collect(pending, results, progress)
    finally:
        executor.close()
    return results


def _collect(pending: dict, results: dict[str, str], progress: _RunsProgress) -> None:
    for rid, record in executors.as_finished(pending, executors.POLL_S["local"]):
        results[rid] = str(record.get("status"))
        progress.done(rid, record)
    pending.clear()


def _submit(executor, config_path: Path, progress: _RunsProgress):
    """Submit one run; the bar is paused while an in-process run shows the trainer's own progress."""
    if not executor.in_process:
        return executor.submit(config_path)
    progress.pause()
    try:
        return executor.submit(config_path)
    finally:
        progress.resume()


def _trunk_done(run: PlannedRun, root: Path) -> bool:
    return st.run_state(root / run.branch_of, None) == "completed"


class _RunsProgress:
    """A rich bar of runs on a terminal (paused while the trainer shows its own), a line per run."""

    def __init__(self, total: int):

        self.console = Console(stderr=True)
        self.bar = Progress(
            TextColumn("sweep runs"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
            disable=not self.console.is_terminal,
        )
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
        log.info("[sweep] %s: %s%s", run_id, record.get("status"), loss_text)  # above the bar: rich redirects stderr
        self.bar.advance(self.task)


# --- a flagship run: one job of the plan's nodes x GPUs (`workbench flagship launch`) -------------------------


def resources(layout, nodes: int | None, gpus_per_node: int | None) -> tuple[int, int, int]:
    """(nodes, GPUs per node, GPUs) from the options, else the config's layout block (one GPU without one)."""
    gpus = layout.gpus if layout is not None else 1
    plan_per_node = layout.gpus_per_node if layout is not None else 1
    per_node = gpus_per_node if gpus_per_node is not None else plan_per_node
    return nodes or math.ceil(gpus / (per_node or plan_per_node)), per_node, gpus


def flagship_layout(config, file: Path):
    """The config's layout block; a config from before the block (a "TP a x PP b x DP c" meta string) is refused."""
    if config.layout is None and "layout" in config.meta:
        raise WorkbenchError(
            f"{file}: the layout is a meta string of an older plan, not a layout block",
            "Rewrite the config with `workbench plan --out` (it writes the layout: block).",
        )
    return config.layout


def tasks_per_node(layout, gpus_per_node: int) -> int:
    """Processes a node: one per GPU asked for; without GPUs (0: a CPU partition), the layout's per node."""
    if gpus_per_node:
        return gpus_per_node
    return min(layout.gpus, layout.gpus_per_node) if layout is not None else 1


def flagship_launch_spec(
    executor: str, nodes: int, gpus_per_node: int, tasks: int, partition, account, qos, timeout_min
):
    """The launch options of a flagship run (one job of nodes x GPUs per node), validated like a sweep's."""

    body = {
        "executor": executor,
        "partition": partition,
        "account": account,
        "qos": qos,
        "nodes": nodes,
        "gpus_per_node": gpus_per_node,
        "tasks_per_node": tasks,
        "timeout_min": timeout_min,
        "array_parallelism": 1,
    }
    return parse_model(Launch, body, "flagship launch options")
