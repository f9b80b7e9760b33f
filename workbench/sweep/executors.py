"""Where runs execute: in this process, in a pool of local processes, or as Slurm jobs through submitit.

A run is handed over as its config file (RUN_DIR/config.yaml, written by the launcher). `submit(config_path)`
returns a handle with `done()`, `result()` (the run's final record, as `workbench.train.trainer.main` returns it)
and `job_id` (Slurm's job id, else None). `sweep launch`, `sweep tune` and `flagship launch` all run
through `make(...)`; the launcher (workbench.sweep.launch) decides what to run, the executor only runs it.

On Slurm the submitted callable is `SweepJob`: Checkpointable, so submitit requeues it on USR2 (the trainer
checkpoints first) and the requeued copy resumes from RUN_DIR/ckpt. A multi-process job exports torchrun's
RANK/WORLD_SIZE/MASTER_ADDR from submitit's TorchDistributedEnvironment.

`sbatch_script` uses submitit's private `submitit.slurm.slurm._make_sbatch_string`: it is the only way to see
the exact sbatch file submitit would submit without submitting it (for `--dry-run` and the saved-copy test).
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path

import submitit
from submitit.slurm.slurm import _make_sbatch_string

from workbench.core.errors import WorkbenchError
from workbench.sweep.spec import Launch

KINDS = ("local", "slurm")
POLL_S = {"local": 0.2, "slurm": 5.0}  # how often as_finished looks at unfinished handles


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise WorkbenchError(f"--executor {kind!r} is not known", "Use --executor slurm or --executor local.")
    return kind


class SweepJob(submitit.helpers.Checkpointable):
    """The submitted callable: one training run from its config.yaml. Checkpointable so that submitit
    requeues it on USR2; the resumed copy calls main() again, which resumes from the run's ckpt/."""

    def __init__(self, tasks: int = 1):  # processes in the whole job (nodes x tasks per node)
        self.tasks = tasks

    def __call__(self, config_path: str) -> dict:
        if self.tasks > 1:  # one process per GPU: RANK, WORLD_SIZE, MASTER_ADDR... for torch.distributed
            submitit.helpers.TorchDistributedEnvironment().export()
        from workbench.train import trainer

        return trainer.main(config_path)

    def checkpoint(self, config_path: str) -> submitit.helpers.DelayedSubmission:
        return submitit.helpers.DelayedSubmission(self, config_path)


# ---------------------------------------------------------------- this machine


class Finished:
    """The handle of a run that has ended already (in-process runs)."""

    job_id = None

    def __init__(self, record: dict):
        self.record = record

    def done(self) -> bool:
        return True

    def result(self) -> dict:
        return self.record


class InProcess:
    """Runs each config in this process, at submit (one at a time; the trainer shows its own progress)."""

    kind, in_process = "local", True

    def __init__(self, what: str = "sweep"):
        self.what = what  # named in the error when a signal interrupts the run

    def submit(self, config_path: str | Path) -> Finished:
        from workbench.train import runlock, trainer

        try:
            return Finished(trainer.main(str(config_path)))
        except runlock.Locked as err:  # another launch trains it right now
            return Finished({"status": f"skipped: locked by {runlock.describe(err.holder)}"})
        except trainer.Interrupted as err:
            raise WorkbenchError(
                f"{self.what} interrupted during run {Path(config_path).parent.name} ({err})",
                "Rerun the same command to resume.",
                4,
            ) from None
        except WorkbenchError as err:
            return Finished({"status": f"failed: {err}"})

    def close(self) -> None:
        return None


def train_logged(config_path: str) -> dict:
    """One run in a worker process; the trainer's own output goes to RUN_DIR/trainer.log."""
    from workbench.train import rundir, runlock, trainer

    with open(Path(config_path).parent / rundir.LOG, "a") as f:
        os.dup2(f.fileno(), 2)  # not a TTY any more: the trainer prints plain lines
        os.dup2(f.fileno(), 1)
    try:
        return trainer.main(config_path)
    except runlock.Locked as err:  # another launch trains it right now
        return {"status": f"skipped: locked by {runlock.describe(err.holder)}"}
    except trainer.Interrupted as err:
        return {"status": f"interrupted ({err}); relaunch to resume"}
    except WorkbenchError as err:
        return {"status": f"failed: {err}"}


class PoolRun:
    """A run in the local pool: a future with a job_id (None)."""

    job_id = None

    def __init__(self, future):
        self.future = future

    def done(self) -> bool:
        return self.future.done()

    def result(self) -> dict:

        try:
            return self.future.result()
        except BrokenProcessPool:
            raise WorkbenchError(
                "a training process of the local pool died (killed, or out of memory)",
                "Relaunch the sweep: runs resume from their last checkpoint.",
            ) from None


class LocalPool:
    """`workers` spawned processes (no forked torch state), each running one config at a time."""

    kind, in_process = "local", False

    def __init__(self, workers: int):

        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))

    def submit(self, config_path: str | Path) -> PoolRun:
        return PoolRun(self.pool.submit(train_logged, str(config_path)))

    def close(self) -> None:
        self.pool.shutdown()


# ---------------------------------------------------------------- Slurm


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


def sbatch_script(
    launch_spec: Launch,
    folder: str | Path,
    python: str = "python",
    array_size: int | None = 4,
    dependency: str | None = None,
    job_name: str = "workbench",
) -> str:
    """The sbatch file submitit writes for an array of `array_size` runs (None: one job), for review and tests."""

    params = slurm_parameters(launch_spec, dependency, job_name)
    command = f"{python} -u -m submitit.core._submit {folder}"
    return _make_sbatch_string(command=command, folder=str(folder), map_count=array_size, **params)


class Slurm:
    """submitit jobs with the spec's launch settings: one job per submit, one array per submit_array."""

    kind, in_process = "slurm", False

    def __init__(self, launch_spec: Launch, folder: Path, job_name: str):
        self.spec, self.folder, self.job_name = launch_spec, Path(folder) / ".submitit" / "%j", job_name[:64]
        self.job = SweepJob(launch_spec.nodes * launch_spec.tasks)  # the world size: multi-node jobs too

    def _executor(self, dependency: str | None) -> submitit.SlurmExecutor:
        executor = submitit.SlurmExecutor(folder=self.folder, max_num_timeout=self.spec.max_num_timeout)
        executor.update_parameters(**slurm_parameters(self.spec, dependency, self.job_name))
        return executor

    def submit(self, config_path: str | Path, dependency: str | None = None) -> submitit.Job:
        with _one_line("sbatch"):
            return self._executor(dependency).submit(self.job, str(config_path))

    def submit_array(self, config_paths: list[str], dependency: str | None = None) -> list[submitit.Job]:
        with _one_line("sbatch (a job array)"):
            return self._executor(dependency).map_array(self.job, [str(p) for p in config_paths])

    def attach(self, job_id: str) -> submitit.Job:
        """The handle of a job submitted earlier (by another process)."""
        return submitit.SlurmJob(folder=self.folder, job_id=job_id)

    def close(self) -> None:
        return None


@contextmanager
def _one_line(what: str) -> Iterator[None]:
    """submitit's and sbatch's failures (no srun, a refused partition, ...) as one-line errors."""
    try:
        yield
    except (RuntimeError, OSError, subprocess.SubprocessError) as err:
        detail = getattr(err, "stderr", None) or getattr(err, "output", None) or str(err) or type(err).__name__
        detail = detail.decode() if isinstance(detail, bytes) else str(detail)
        first = next((line.strip() for line in detail.splitlines() if line.strip()), type(err).__name__)
        raise WorkbenchError(
            f"{what} failed: {first}",
            "Check launch.partition, account and qos with `sinfo`; earlier submissions are in jobs.json.",
        ) from None


# ---------------------------------------------------------------- choosing and waiting


def make(kind: str, launch_spec: Launch, folder: Path, job_name: str, workers: int = 1, what: str = "sweep"):
    """The executor for `kind`: Slurm jobs (logs in FOLDER/.submitit), else this process (workers 1) or a
    pool of `workers` processes."""
    if check_kind(kind) == "slurm":
        return Slurm(launch_spec, folder, job_name)
    return InProcess(what) if workers == 1 else LocalPool(workers)


def as_finished(handles: dict[str, object], poll_s: float) -> Iterator[tuple[str, dict]]:
    """(key, final record) for each handle as it finishes; an exception of the run is raised here."""
    pending = dict(handles)
    while pending:
        ready = [key for key, handle in pending.items() if handle.done()]
        if not ready:
            time.sleep(poll_s)
        for key in ready:
            yield key, pending.pop(key).result()
