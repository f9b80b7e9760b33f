"""What a sweep's runs are doing: run directories, plus Slurm's view of the jobs recorded in jobs.json.

Run states: completed | diverged (final.json), failed (final.json status failed, or its job ended
without one), pending | running (a live Slurm job), interrupted (a checkpoint but no live job: a
relaunch resumes it), cancelled (its job was cancelled), missing (nothing started).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from workbench.core.errors import WorkbenchError
from workbench.core.files import atomic_write_text, safe_name
from workbench.store.scope import Scope, scope_of
from workbench.sweep.grid import plan_file
from workbench.train import rundir

DONE = ("completed", "diverged")
LIVE = ("pending", "running")
STATES = ("completed", "diverged", "failed", "running", "pending", "interrupted", "cancelled", "missing")
_SLURM_LIVE = {
    "PENDING": "pending",
    "REQUEUED": "pending",
    "REQUEUE_HOLD": "pending",
    "REQUEUE_FED": "pending",
    "CONFIGURING": "running",
    "RUNNING": "running",
    "COMPLETING": "running",
    "SUSPENDED": "running",
    "RESIZING": "running",
    "SIGNALING": "running",
    "STAGE_OUT": "running",
}


@dataclass(frozen=True)
class RunStatus:
    run_id: str
    state: str
    job_id: str | None
    slurm_state: str | None
    tokens: int | None
    val_loss: float | None


@dataclass(frozen=True)
class SweepStatus:
    name: str
    state: str  # cancelled | running | completed | failed | incomplete
    counts: dict[str, int]
    runs: tuple[RunStatus, ...]
    scope: Scope | None = None  # the sweep version shown (workbench.sweep.versions), when it has versions

    def as_dict(self) -> dict:
        return {
            "sweep": self.name,
            "state": self.state,
            "counts": self.counts,
            "scope": self.scope.as_dict() if self.scope else None,
            "runs": [r.__dict__ for r in self.runs],
        }


def read_jobs(root: Path) -> dict:
    """runs/SWEEP/jobs.json, or an empty record."""
    path = rundir.jobs_path(root)
    if not path.is_file():
        return {"runs": {}, "submissions": [], "cancelled_at": None}
    return json.loads(path.read_text())


def write_jobs(root: Path, record: dict) -> None:
    """Atomic write of runs/SWEEP/jobs.json."""
    atomic_write_text(rundir.jobs_path(root), json.dumps(record, indent=1, sort_keys=True))


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def slurm_states(job_ids: list[str]) -> dict[str, str]:
    """Slurm state by job id ('123_4'): squeue for live jobs, then sacct for ended ones. {} without Slurm."""
    if not job_ids or not shutil.which("squeue"):
        return {}
    masters = sorted({j.split("_")[0] for j in job_ids})
    states: dict[str, str] = {}
    sacct = _lines(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(masters)])
    for line in sacct:  # one row per requeue: the last one is current
        job, _, state = line.partition("|")
        for one in _expand(job):
            states[one] = state.split()[0] if state else ""
    for line in _lines(["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(masters)]):
        job, _, state = line.partition("|")
        for one in _expand(job):
            states[one] = state
    return states


def _expand(job: str) -> list[str]:
    """'12_[0-2,5%4]' (array tasks that never started) -> ['12_0', '12_1', '12_2', '12_5']."""
    master, _, tasks = job.partition("_[")
    if not tasks:
        return [job]
    out = []
    for part in tasks.rstrip("]").split("%")[0].split(","):
        low, _, high = part.partition("-")
        if low.isdigit() and (high.isdigit() or not high):
            out += [f"{master}_{i}" for i in range(int(low), int(high or low) + 1)]
    return out


def _lines(command: list[str]) -> list[str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    # a job id Slurm has forgotten makes squeue fail: that is "no live job", not an error
    return result.stdout.splitlines() if result.returncode == 0 else []


def run_state(run_dir: Path, slurm_state: str | None) -> str:
    """One run's state from its directory and its job's Slurm state (None: no job known)."""
    status = rundir.final_status(run_dir)
    if status in DONE or status == "failed":
        return status
    if slurm_state in _SLURM_LIVE:
        return _SLURM_LIVE[slurm_state]
    if slurm_state and slurm_state.startswith("CANCELLED"):
        return "cancelled"
    if slurm_state and slurm_state not in ("COMPLETED", ""):
        return "failed"  # FAILED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, BOOT_FAIL, DEADLINE, PREEMPTED
    if rundir.has_checkpoint(run_dir):
        return "interrupted"
    return "missing"


def _last_metrics(run_dir: Path) -> tuple[int | None, float | None]:
    final = rundir.read_final(run_dir) or {}
    return final.get("tokens"), final.get("val_loss")


def sweep_status(
    root: Path, run_ids: list[str] | None = None, query_slurm: bool = True, all_versions: bool = False
) -> SweepStatus:
    """Status of the sweep in `root` (runs/SWEEP): the planned `run_ids`, else the current version's runs
    (runs/SWEEP/versions.json; every version's with `all_versions`), else every run dir and recorded job."""
    jobs = read_jobs(root)
    # run dirs hold a config.yaml; `tune/` (the Optuna trials) and hidden dirs are not runs of the sweep
    found = {p.name for p in root.iterdir() if (p / rundir.CONFIG).is_file()} if root.is_dir() else set()
    every = found | set(jobs["runs"])
    versions = (rundir.read_versions(root) or {}).get("versions") or []
    scope = scope_of(root.name, versions, every, all_versions) if versions else None
    if run_ids is None and scope is not None and scope.run_ids is not None:
        run_ids = sorted(scope.run_ids)
    ids = run_ids if run_ids is not None else sorted(every)
    job_of = {rid: (jobs["runs"].get(rid) or {}).get("job_id") for rid in ids}
    slurm = slurm_states([j for j in job_of.values() if j]) if query_slurm else {}
    rows = []
    for rid in ids:
        job = job_of[rid]
        slurm_state = slurm.get(job) if job else None
        if job and slurm_state is None and job.split("_")[0] in slurm:  # pending array shown as 123_[0-3]
            slurm_state = slurm[job.split("_")[0]]
        tokens, val_loss = _last_metrics(root / rid)
        rows.append(RunStatus(rid, run_state(root / rid, slurm_state), job, slurm_state, tokens, val_loss))
    counts = {s: sum(r.state == s for r in rows) for s in STATES if any(r.state == s for r in rows)}
    return SweepStatus(root.name, _sweep_state(rows, jobs), counts, tuple(rows), scope)


def _sweep_state(rows: list[RunStatus], jobs: dict) -> str:
    if jobs.get("cancelled_at"):
        return "cancelled"
    if any(r.state in LIVE for r in rows):
        return "running"
    if rows and all(r.state in DONE for r in rows):
        return "completed"
    if any(r.state == "failed" for r in rows):
        return "failed"
    return "incomplete"


def cancel(root: Path) -> list[str]:
    """scancel every job recorded for the sweep and mark it cancelled; returns the job ids cancelled."""
    jobs = read_jobs(root)
    masters = sorted({j["job_id"].split("_")[0] for j in jobs["runs"].values() if j.get("job_id")})
    live = slurm_states(masters)
    ids = sorted({j.split("_")[0] for j, state in live.items() if state in _SLURM_LIVE})
    if ids:
        subprocess.run(["scancel", *ids], check=True, capture_output=True, timeout=60)
    jobs["cancelled_at"] = now()
    write_jobs(root, jobs)
    return ids


def sweep_root(name: str, runs_root: Path | None) -> tuple[Path, list[str] | None]:
    """The folder of sweep NAME (runs/NAME) and None; for a sweep YAML, its runs folder and planned run ids."""
    if name.endswith((".yaml", ".yml")):
        result = plan_file(name)
        root = Path(runs_root or result.spec.runs_root) / result.spec.name
        return root.resolve(), [r.run_id for r in result.runs]

    root = (Path(runs_root or "runs") / safe_name(name, "sweep name")).resolve()
    if not root.is_dir():  # a name means a launched sweep; a YAML may name one not launched yet
        raise WorkbenchError(f"no sweep folder {root}", "Give the sweep's name, its YAML file, or --runs.")
    return root, None
