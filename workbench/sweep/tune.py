"""Hyper-parameter search: an Optuna TPE study per scale over peak LR, batch and warmup; then LR and batch laws.

The only module that imports optuna. A scale is (budget FLOPs, model size) from the spec's `tune:` section
(workbench.sweep.spec.Tune). Each trial is a real training run built by the sweep's own expansion (one grid
point with the trial's lr_peak, batch_tokens and warmup), its config written by the launcher's
`write_configs` and run on the sweep executors (workbench.sweep.executors: in this process, in a pool of
`parallel` processes, or as Slurm jobs with `parallel` in flight); the study asks for the next trial as
results come back. Run directories: runs/SWEEP/tune/SCALE/RUN_ID (meta.sweep = SWEEP-tune, so
the runs never enter the sweep's own fits); every finished run is ingested into DuckDB.

Objective: the run's final validation loss. A diverged run (or a non-finite loss) is PRUNED with an
intermediate value of DIVERGED_LOSS, which TPE ranks below every completed trial; a failed run is FAIL.

Storage: optuna JournalStorage on a JournalFileBackend at runs/SWEEP/tune/optuna.log, which several processes
(or nodes on a shared file system) can use at once. One study per scale, named SWEEP/SCALE. A call tops each
study up to `trials` trials, so a rerun resumes it; a RUNNING trial whose tuner process died (same host) is
adopted: its run resumes from its checkpoint (or re-attaches to its live Slurm job).

Laws (pure, `fit_hparams`): lr_opt = c C^k and B_opt = c C^k by least squares in log space over the best
trial per scale; with a single budget there is no exponent (`exp` null: the planner uses the value as is).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from workbench.core.configfile import Where
from workbench.core.errors import WorkbenchError
from workbench.core.files import atomic_write_text, json_text
from workbench.fit.isoflop import fit_power_law
from workbench.model.shapes import shape_for_params
from workbench.sweep import executors
from workbench.sweep import status as st
from workbench.sweep.grid import expand, run_id_of
from workbench.sweep.launch import materialize, write_configs
from workbench.sweep.spec import Grid, PlannedRun, SweepSpec, Tune, load_spec
from workbench.train import rundir
from workbench.train.config import TrainConfig

DIVERGED_LOSS = 1e3  # the value a diverged trial reports: far above any real loss, so TPE ranks it last
BATCH_MULTIPLES = (1, 2, 4, 8)  # default batch choices, in units of seq_len x micro_batch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scale:
    """One study: a budget (FLOPs) and a model size target (parameters)."""

    label: str  # c3e9-n9.93k, the grid's run prefix
    budget_flops: float
    target_params: float
    study: str  # SWEEP/label


@dataclass(frozen=True)
class Space:
    """The search space of one spec: LR range (log-uniform), batch choices (tokens), warmup fraction range."""

    lr: tuple[float, float]
    batch_tokens: tuple[int, ...]
    warmup_fraction: tuple[float, float]


# ---------------------------------------------------------------- trials as sweep runs (pure)


def tune_section(spec: SweepSpec, source: str) -> Tune:
    if spec.tune is None:
        raise WorkbenchError(f"{source} has no `tune:` section", "Add tune: {budgets_flops: [...], trials: N}.")
    return spec.tune


def space(spec: SweepSpec, where: Where) -> Space:
    """The search space, with batch choices checked against seq_len x micro_batch."""
    tune = tune_section(spec, where.source)
    unit = spec.data.seq_len * spec.train.micro_batch
    choices = tuple(tune.batch_tokens) or tuple(m * unit for m in BATCH_MULTIPLES)
    for i, batch in enumerate(choices):
        if batch % unit:
            raise WorkbenchError(
                f"{where(('tune', 'batch_tokens', i))}: tune.batch_tokens {batch} is not a multiple of seq_len x "
                f"micro_batch = {spec.data.seq_len} x {spec.train.micro_batch} = {unit}",
                f"Use multiples of {unit}, e.g. {unit}, {2 * unit}, {4 * unit}.",
            )
    return Space((tune.lr.low, tune.lr.high), choices, (tune.warmup_fraction.low, tune.warmup_fraction.high))


def scales(spec: SweepSpec, where: Where) -> list[Scale]:
    """The (budget, size) scales of the tune section; sizes default to the grid prior's optimum N*(C)."""
    tune = tune_section(spec, where.source)
    prior = spec.grid.prior
    out = []
    for i, budget in enumerate(tune.budgets_flops):
        if tune.sizes:
            j = i if len(tune.sizes) > 1 else 0
            size, key = tune.sizes[j], ("tune", "sizes", j)
        else:
            size, key = budget / (6 * prior.coefficient * budget**prior.exponent), ("tune", "budgets_flops", i)
        try:
            shape_for_params(size, spec.model.vocab_size)
        except WorkbenchError as err:
            raise WorkbenchError(f"{where(key)}: tune scale {budget:.3g} FLOPs: {err.message}", err.hint) from None
        probe = _grid_run(spec, budget, size, 1e-3, None, 0.0, where.source)
        label = probe.run_id.rsplit("-", 1)[0]
        out.append(Scale(label, budget, size, f"{spec.name}/{label}"))
    return out


def _grid_run(spec, budget_flops, size, lr, batch_tokens, warmup_fraction, source) -> PlannedRun:
    """The sweep's expansion of one isoFLOP point with these hyper-parameters (batch None: the spec's)."""
    t = spec.train
    schedule = t.schedule.model_copy(update={"warmup_steps": 10**12, "warmup_max_fraction": warmup_fraction})
    update = {"lr_peak": lr, "schedule": schedule, "seeds": [], "center_seeds": []}  # one run, at train.seed
    if batch_tokens:
        update["batch_tokens"] = batch_tokens
    train = t.model_copy(update=update)
    grid = Grid(kind="isoflop", budgets_flops=[budget_flops], sizes=[size], spread=None, min_sizes_per_budget=1)
    sub = spec.model_copy(update={"grid": grid, "train": train, "tune": None})
    return expand(sub, source).runs[0]


def trial_run(spec: SweepSpec, scale: Scale, params: dict, number: int, source: str = "sweep") -> PlannedRun:
    """Trial `number` of `scale` with params {lr, batch_tokens, warmup_fraction} as a resolved sweep run in
    runs/SWEEP/tune/SCALE/RUN_ID; RUN_ID = tNNN-SCALE-hash of the resolved config."""
    run = _grid_run(
        spec,
        scale.budget_flops,
        scale.target_params,
        params["lr"],
        params["batch_tokens"],
        params["warmup_fraction"],
        source,
    )
    body = run.config.model_dump(mode="json")
    body["meta"] = {
        **body["meta"],
        "sweep": f"{spec.name}-tune",
        "kind": "trial",
        "group": scale.label,
        "tune_study": scale.study,
        "tune_trial": number,
        "warmup_fraction": params["warmup_fraction"],
    }
    run_id = run_id_of(f"t{number:03d}-{scale.label}", body)
    body.update(name=run_id, run_dir=f"{spec.runs_root}/{spec.name}/tune/{scale.label}/{run_id}")
    return dataclasses.replace(run, run_id=run_id, config=TrainConfig.model_validate(body))


def preflight(spec: SweepSpec, found: list[Scale], sp: Space, where: Where) -> None:
    """Build every (scale, batch) combination once, so that a bad choice fails before any training."""
    for scale in found:
        for i, batch in enumerate(sp.batch_tokens):
            params = {"lr": sp.lr[0], "batch_tokens": batch, "warmup_fraction": sp.warmup_fraction[1]}
            try:
                trial_run(spec, scale, params, 0, where.source)
            except WorkbenchError as err:
                key = ("tune", "batch_tokens", i) if spec.tune.batch_tokens else ("tune",)
                raise err.at(where(key), f"tune batch {batch} at scale {scale.label}") from None


# ---------------------------------------------------------------- laws (pure)


def fit_hparams(best: list[dict]) -> dict:
    """{"lr": {coef, exp}, "batch": {coef, exp}} from the best trial per scale (keys budget_flops, lr,
    batch_tokens): power laws in the budget C (FLOPs). One budget: the (geometric mean) value and exp None."""
    if not best:
        raise WorkbenchError("no scale has a completed trial to fit", "Check the trials' final.json, then rerun tune.")
    budgets = [b["budget_flops"] for b in best]
    out = {}
    for key, column in (("lr", "lr"), ("batch", "batch_tokens")):
        values = [b[column] for b in best]
        if len(set(budgets)) < 2:
            out[key] = {"coef": float(math.exp(np.mean(np.log(values)))), "exp": None}
        else:
            coef, exp = fit_power_law(budgets, values)  # workbench.fit.isoflop: the one power-law fit
            out[key] = {"coef": coef, "exp": exp}
    return out


# ---------------------------------------------------------------- running trials


@dataclass
class _InFlight:
    scale: Scale
    number: int
    run: PlannedRun | None
    run_dir: Path
    handle: object


def _owner(job_id: str | None = None) -> str:
    return json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "job_id": job_id})


def _orphaned(owner: str | None) -> bool:
    """A RUNNING trial whose tuner process on this host is gone (other hosts' trials are left to them)."""
    try:
        record = json.loads(owner or "")
    except json.JSONDecodeError:
        return False
    if record.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(record["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


# ---------------------------------------------------------------- the study


class _Study:
    """All scales' studies on one storage, with `parallel` trials in flight across them."""

    def __init__(
        self,
        spec: SweepSpec,
        found: list[Scale],
        sp: Space,
        runner,
        parallel: int,
        base: Path,
        target: int,
        storage,
        store,
        progress: bool,
        source: str,
    ):
        self.spec, self.scales, self.space, self.runner, self.base = spec, found, sp, runner, base
        self.parallel = parallel
        self.target, self.storage, self.store, self.progress, self.source = target, storage, store, progress, source
        self.studies = {s.label: self._study(i, s) for i, s in enumerate(found)}
        self.in_flight: list[_InFlight] = []

    def _study(self, index: int, scale: Scale) -> optuna.Study:
        tune = self.spec.tune
        study = optuna.create_study(
            study_name=scale.study, storage=self.storage, direction="minimize", load_if_exists=True
        )
        # seeded by scale and by how far the study got, so a resumed study does not redraw its first trials
        seed = tune.seed * 1_000_003 + index * 10_007 + len(study.trials)
        study.sampler = optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=tune.startup_trials, constant_liar=self.parallel > 1
        )
        return study

    def run(self) -> None:
        for scale in self.scales:
            self._adopt(scale)
        while True:
            for scale in self.scales:
                while len(self.in_flight) < self.parallel and self._started(scale) < self.target:
                    self._ask(scale)
            if not self.in_flight:
                return
            self._collect()

    def _started(self, scale: Scale) -> int:
        states = (optuna.trial.TrialState.WAITING,)
        return sum(t.state not in states for t in self.studies[scale.label].get_trials(deepcopy=False))

    def _ask(self, scale: Scale) -> None:
        study = self.studies[scale.label]
        trial = study.ask()
        lo, hi = self.space.lr
        params = {
            "lr": trial.suggest_float("lr", lo, hi, log=True),
            "batch_tokens": trial.suggest_categorical("batch_tokens", list(self.space.batch_tokens)),
            "warmup_fraction": trial.suggest_float("warmup_fraction", *self.space.warmup_fraction),
        }

        run = trial_run(self.spec, scale, params, trial.number, self.source)
        path = write_configs([materialize(run.config, self.base)])[0]
        for key, value in (
            ("run_id", run.run_id),
            ("run_dir", str(path.parent)),
            ("params", run.params),
            ("owner", _owner()),
        ):
            trial.set_user_attr(key, value)
        handle = self.runner.submit(path)
        if handle.job_id:
            trial.set_user_attr("owner", _owner(handle.job_id))
        self.in_flight.append(_InFlight(scale, trial.number, run, path.parent, handle))

    def _adopt(self, scale: Scale) -> None:
        """Take over the RUNNING trials of a dead tuner: re-attach to a live Slurm job, else rerun the config
        (the trainer resumes from the run's checkpoint, or returns its final.json if it had finished)."""

        study = self.studies[scale.label]
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if not _orphaned(t.user_attrs.get("owner")) or "run_dir" not in t.user_attrs:
                continue
            run_dir = Path(t.user_attrs["run_dir"])
            job_id = json.loads(t.user_attrs["owner"]).get("job_id")
            live = job_id and st.run_state(run_dir, st.slurm_states([job_id]).get(job_id)) in st.LIVE
            if live and self.runner.kind == "slurm":
                handle = self.runner.attach(job_id)
            else:
                handle = self.runner.submit(run_dir / rundir.CONFIG)
                job_id = handle.job_id
            trial_id = self._trial_id(study, t.number)
            self.storage.set_trial_user_attr(trial_id, "owner", _owner(job_id))
            self._say(f"{scale.label} trial {t.number}: adopted from a stopped tuner ({run_dir.name})")
            self.in_flight.append(_InFlight(scale, t.number, None, run_dir, handle))

    def _trial_id(self, study: optuna.Study, number: int) -> int:
        study_id = self.storage.get_study_id_from_name(study.study_name)
        return self.storage.get_trial_id_from_study_id_trial_number(study_id, number)

    def _collect(self) -> None:
        """Wait for at least one trial to finish; tell the study and ingest its run."""
        while not any(f.handle.done() for f in self.in_flight):
            time.sleep(executors.POLL_S[self.runner.kind])
        for flight in [f for f in self.in_flight if f.handle.done()]:
            self.in_flight.remove(flight)
            try:
                record, error = flight.handle.result(), None
            except WorkbenchError:
                raise
            except Exception as err:  # a job that died (submitit's FailedJobError, a crashed worker): FAIL
                record, error = (
                    {"status": "failed"},
                    f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
                )
            self._tell(flight, record, error)
            if self.store is not None:
                self.store.ingest(flight.run_dir)

    def _tell(self, flight: _InFlight, record: dict, error: str | None) -> None:
        study = self.studies[flight.scale.label]
        trial_id = self._trial_id(study, flight.number)
        status, loss = str(record.get("status")), record.get("val_loss")
        finite = isinstance(loss, int | float) and math.isfinite(loss)
        for key, value in (
            ("status", status),
            ("val_loss", loss if finite else None),
            ("error", error or record.get("error")),
        ):
            self.storage.set_trial_user_attr(trial_id, key, value)
        if status == "completed" and finite:
            study.tell(flight.number, float(loss))
            outcome = f"val_loss {loss:.4f}"
        elif status in ("completed", "diverged"):
            self.storage.set_trial_intermediate_value(trial_id, int(record.get("steps") or 0), DIVERGED_LOSS)
            study.tell(flight.number, state=optuna.trial.TrialState.PRUNED)
            outcome = "diverged (pruned)"
        else:
            study.tell(flight.number, state=optuna.trial.TrialState.FAIL)
            outcome = f"failed ({error or status})"
        p = study.get_trials(deepcopy=False)[flight.number].params
        lr, batch, warmup = p.get("lr", 0.0), p.get("batch_tokens"), p.get("warmup_fraction", 0.0)
        self._say(
            f"{flight.scale.label} trial {flight.number}: lr {lr:.3g}, batch {batch}, warmup {warmup:.3f} -> {outcome}"
        )

    def _say(self, line: str) -> None:
        if self.progress:
            log.info("[tune] %s", line)

    def best(self) -> list[dict]:
        """The completed trial of lowest val_loss per scale (scales with none are left out)."""
        out = []
        for scale in self.scales:
            trials = self.studies[scale.label].get_trials(deepcopy=False)
            done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
            if not done:
                continue
            top = min(done, key=lambda t: t.value)
            count = {s.name.lower(): sum(t.state == s for t in trials) for s in optuna.trial.TrialState}
            out.append(
                {
                    "scale": scale.label,
                    "study": scale.study,
                    "budget_flops": scale.budget_flops,
                    "target_params": scale.target_params,
                    "params": top.user_attrs.get("params"),
                    "lr": top.params["lr"],
                    "batch_tokens": top.params["batch_tokens"],
                    "warmup_fraction": top.params["warmup_fraction"],
                    "val_loss": top.value,
                    "trial": top.number,
                    "run_id": top.user_attrs.get("run_id"),
                    "run_dir": top.user_attrs.get("run_dir"),
                    "trials": {k: v for k, v in count.items() if v},
                }
            )
        return out


def storage_path(spec: SweepSpec, base: Path) -> Path:
    """runs/SWEEP/tune/optuna.log: the journal every tuner of this sweep shares."""
    return (base / spec.runs_root / spec.name / "tune" / "optuna.log").resolve()


def open_storage(path: Path):
    """optuna JournalStorage on a journal file (safe for several processes; the file is created on use)."""

    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def tune(
    spec_path: str | Path,
    executor: str = "local",
    db: str | Path | None = None,
    parallel: int = 1,
    progress: bool = True,
    trials: int | None = None,
    base: str | Path | None = None,
) -> dict:
    """Run (or resume) the spec's tune studies, ingest every trial, write and return fits/SWEEP-hparams.json.

    `trials` (default: tune.trials) is the count per scale each study is topped up to; `base` (default: the
    working directory) holds runs/ and fits/; `db` None is the store's default file."""
    executors.check_kind(executor)
    if parallel < 1:
        raise WorkbenchError(f"--parallel {parallel} must be at least 1", "Give the number of trials in flight.")
    spec, lines = load_spec(spec_path)
    where = Where(str(spec_path), lines)
    tune_spec = tune_section(spec, str(spec_path))
    target = trials if trials is not None else tune_spec.trials
    if target < 1:
        raise WorkbenchError(f"--trials {target} must be at least 1", "Give the trials per scale to reach.")
    sp = space(spec, where)
    found = scales(spec, where)
    preflight(spec, found, sp, where)
    base = Path(base or Path.cwd()).resolve()
    journal = storage_path(spec, base)
    store = _store(db, spec, spec_path)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    runner = executors.make(executor, spec.launch, journal.parent, f"wb-tune-{spec.name}", parallel, "tune")
    study = _Study(
        spec, found, sp, runner, parallel, base, target, open_storage(journal), store, progress, str(spec_path)
    )
    try:
        study.run()
    finally:
        runner.close()
    return _write_result(spec, study.best(), journal, base, str(spec_path), target)


def _store(db, spec: SweepSpec, spec_path) -> object:
    from workbench.store.database import Store

    store = Store(db)
    store.upsert_sweep(f"{spec.name}-tune", spec.model_dump(mode="json"), str(spec_path))
    return store


def _write_result(spec: SweepSpec, best: list[dict], journal: Path, base: Path, source: str, target: int) -> dict:
    laws = fit_hparams(best)
    how = (
        "least squares in log space over the best trial per scale"
        if laws["lr"]["exp"] is not None
        else "one budget: the best values, no exponent"
    )
    result = {
        "name": f"{spec.name}-hparams",
        "sweep": spec.name,
        "hparams": laws,
        "best": best,
        "source": f"optuna TPE studies of {source} ({len(best)} scales, {target} trials each, {journal}): "
        f"lr_opt = c C^k and B_opt = c C^k tokens by {how}",
        "storage": str(journal),
    }
    out = atomic_write_text(base / "fits" / f"{spec.name}-hparams.json", json_text(result, indent=1))
    return {**result, "path": str(out)}
