"""A sweep YAML -> resolved run configs (isoFLOP or explicit grids, cosine or WSD). Pure: no torch, no submitit.

The `auto` rules (every constant is a key of the spec's `rules:` section, so a sweep can override it):
- LR by size: lr_peak = min(lr_max, lr_ref * (N / lr_ref_params) ** -lr_exponent). The defaults put
  Llama 3's isoFLOP range on a line: 4e-4 at 40M parameters, 2e-4 at 16B (exponent 0.116).
- Batch by budget: batch_tokens = batch_ref_tokens * (C / batch_ref_flops) ** batch_exponent, clipped to
  [one sequence, batch_max_tokens], rounded to a power-of-two number of sequences, then halved while the
  run would take fewer than min_steps steps. Defaults follow Llama 3 (250K tokens at 6e18 FLOPs, 4M at 1e22).
- Tokens: D = C / FLOPs-per-token (workbench.model.flops), rounded to whole steps of the batch.
- Warmup: min(warmup_steps x batch, warmup_max_fraction x D) in whole steps.

WSD grids (Hagele et al. 2024): the runs of one model size share a trunk. The trunk is the longest run
of its size: schedule wsd (warmup, stable LR, then a linear decay over its last decay_fraction to
floor x peak). Each shorter run of that size (D tokens) is a branch: it starts from the trunk's checkpoint
at S = D - cooldown tokens (cooldown = decay_fraction x D in whole steps) and runs its own wsd schedule
over D tokens whose decay begins exactly at S. Contract with the trainer (workbench.config
CheckpointConfig): the trunk lists every S in `checkpoint.save_at_tokens` (kept for good); a branch's
`checkpoint.init_from` is "TRUNK_RUN_DIR@S"; the branch keeps the checkpoint's step and token count
(it trains D - S tokens itself and stops at stop.tokens = D). All runs of a size share one batch and
warmup (warmup ends before the earliest branch point), so a branch's LR at S equals the trunk's.
A branch costs only its cooldown; `Plan.cosine_flops` is what separate cosine runs would cost.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, create_model, field_validator, model_validator

from workbench.core.configfile import Count, Number, Strict, apply_overrides, count, load_yaml, number, parse_model
from workbench.core.errors import WorkbenchError
from workbench.core.files import safe_name
from workbench.data.config import DataConfig
from workbench.model.shapes import SHAPE_NAME
from workbench.train.config import (
    CheckpointConfig,
    EvalConfig,
    FaultConfig,
    LoggingConfig,
    OptimConfig,
    RuntimeConfig,
    TrainConfig,
)

MAX_RUNS = 100_000  # a guard against typos like sizes_per_decade: 1e6


def _auto_number(value: Any) -> float | str:
    return "auto" if value == "auto" else number(value)


def _auto_count(value: Any) -> int | str:
    return "auto" if value == "auto" else count(value)


AutoNumber = Annotated[float | Literal["auto"], BeforeValidator(_auto_number)]
AutoCount = Annotated[int | Literal["auto"], BeforeValidator(_auto_count)]
Flops = Annotated[Number, Field(gt=0, le=1e32)]
Params = Annotated[Number, Field(gt=0, le=1e14)]


def _size(value: Any) -> float | str:
    """A grid size: an explicit shape (L3-d20, the size rule's step 2 gives heads and FFN) or a number of
    parameters (the size rule's nearest rung)."""
    if isinstance(value, str) and SHAPE_NAME.fullmatch(value.strip()):
        return value.strip()
    try:
        params = number(value)
    except ValueError:
        raise ValueError(f"{value!r} is neither a number of parameters (350M, 2e4) nor a shape like L3-d20") from None
    if not 0 < params <= 1e14:
        raise ValueError(f"size {params:g} must be above 0 and at most 1e14 parameters")
    return params


Size = Annotated[float | str, BeforeValidator(_size)]


class SweepModel(Strict):
    """The model family: shapes come from the size rule (workbench.model.shapes) at this vocabulary."""

    family: Literal["llama3"] = "llama3"
    vocab_size: Count = Field(default=128256, gt=1, le=10_000_000)
    rope_theta: Number = Field(default=500000.0, gt=0)
    norm_eps: Number = Field(default=1e-5, gt=0)
    # a number, or `auto`: d_model ** -0.5 per run (fan-in init; 0.016 at d 4096, near the usual 0.02, and
    # 0.2 at d 24, where 0.02 leaves tiny models on a plateau whose length varies from seed to seed)
    init_std: AutoNumber = 0.02
    flop_rule: Literal["6N+attn", "6N"] = "6N+attn"

    @model_validator(mode="after")
    def _init(self) -> SweepModel:
        if self.init_std != "auto" and not self.init_std > 0:
            raise ValueError(f"init_std must be `auto` or a positive number (got {self.init_std})")
        return self


class Point(Strict):
    params: Params
    tokens: Params


class Prior(Strict):
    """Prior compute-optimal tokens D*(C) = coefficient x C ** exponent; N*(C) = C / (6 D*).
    The default (1.826, 0.5) is Chinchilla's 20 tokens per parameter; Llama 3 fitted (0.29, 0.53)."""

    coefficient: Number = Field(default=math.sqrt(20 / 6), gt=0, le=1e6)
    exponent: Number = Field(default=0.5, gt=0, le=1)


class Grid(Strict):
    """isoflop: per budget, the candidate sizes within [N*/spread, N* x spread] (N* from the prior);
    candidates are `sizes` or a log grid of sizes_per_decade from min_params to max_params.
    points: an explicit list of (params, tokens). schedule wsd: see the module docstring."""

    kind: Literal["isoflop", "points"] = "isoflop"
    schedule: Literal["cosine", "wsd"] = "cosine"
    budgets_flops: list[Flops] = Field(default_factory=list, max_length=1000)
    min_params: Params | None = None
    max_params: Params | None = None
    sizes_per_decade: Number = Field(default=4, gt=0, le=64)
    sizes: list[Size] = Field(default_factory=list, max_length=10000)
    spread: Number | None = Field(default=4.0, ge=1, le=1e6)
    min_sizes_per_budget: Count = Field(default=3, ge=1)
    prior: Prior = Prior()
    points: list[Point] = Field(default_factory=list, max_length=MAX_RUNS)

    @model_validator(mode="after")
    def _complete(self) -> Grid:
        if self.kind == "points":
            if not self.points:
                raise ValueError("kind points needs a list `points` of {params, tokens}")
            return self
        if not self.budgets_flops:
            raise ValueError("kind isoflop needs `budgets_flops`, a list of budgets like [1e18, 6e18]")
        if not self.sizes and (self.min_params is None or self.max_params is None):
            raise ValueError("kind isoflop needs min_params and max_params, or a list `sizes`")
        if self.min_params and self.max_params and self.min_params > self.max_params:
            raise ValueError(f"min_params {self.min_params:g} is above max_params {self.max_params:g}")
        return self


def _part_of(model: type[Strict], name: str, doc: str, fields) -> type[Strict]:
    """A model with some of `model`'s fields (same types, defaults and bounds), defined there once."""
    return create_model(
        name,
        __base__=Strict,
        __doc__=doc,
        **{f: (model.model_fields[f].annotation, model.model_fields[f]) for f in fields},
    )


SweepOptim = _part_of(
    OptimConfig,
    "SweepOptim",
    "OptimConfig without lr_peak (that is train.lr_peak).",
    [f for f in OptimConfig.model_fields if f != "lr_peak"],
)


class SweepSchedule(Strict):
    """Warmup in steps (capped at a fraction of the run), cosine floor or WSD decay fraction, final anneal."""

    warmup_steps: Count = Field(default=2000, ge=0)
    warmup_max_fraction: Number = Field(default=0.25, ge=0, le=1)
    floor: Number = Field(default=0.1, ge=0, le=1)
    decay_fraction: Number = Field(default=0.2, gt=0, lt=1)
    anneal_tokens: Count = Field(default=0, ge=0)


SweepCheckpoint = _part_of(
    CheckpointConfig,
    "SweepCheckpoint",
    "CheckpointConfig's every_tokens and keep (the grid sets the rest).",
    ["every_tokens", "keep"],
)


class SweepTrain(Strict):
    """Settings shared by every run; lr_peak and batch_tokens may be `auto` (the rules above)."""

    seed: Count = Field(default=0, ge=0, lt=2**32)  # torch and numpy take seeds in [0, 2^32)
    # several seeds: every grid point is trained once per seed (tiny models scatter by a few percent
    # from seed to seed; the fits see every run)
    seeds: list[Annotated[Count, Field(ge=0, lt=2**32)]] = Field(default_factory=list, max_length=16)
    # extra seeds trained only at each budget's centre size (the candidate nearest the prior optimum in log
    # size): the seed scatter at every budget for a fraction of the cost of seeding the whole grid
    center_seeds: list[Annotated[Count, Field(ge=0, lt=2**32)]] = Field(default_factory=list, max_length=16)
    lr_peak: AutoNumber = "auto"
    batch_tokens: AutoCount = "auto"
    micro_batch: Count = Field(default=16, gt=0)
    optim: SweepOptim = SweepOptim()
    schedule: SweepSchedule = SweepSchedule()
    eval: EvalConfig = EvalConfig()
    checkpoint: SweepCheckpoint = SweepCheckpoint()
    faults: FaultConfig = FaultConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    logging: LoggingConfig = LoggingConfig()  # trackers; not part of a run's identity (run id)

    @model_validator(mode="after")
    def _positive(self) -> SweepTrain:
        if set(self.center_seeds) & set(self.seeds or [self.seed]):
            raise ValueError("center_seeds must differ from seeds (those train every size already)")
        for key in ("lr_peak", "batch_tokens"):
            value = getattr(self, key)
            if value != "auto" and not value > 0:
                raise ValueError(f"{key} must be `auto` or a positive number (got {value})")
        return self


class Rules(Strict):
    """Constants of the `auto` LR and batch rules (module docstring)."""

    lr_ref: Number = Field(default=4e-4, gt=0, le=10)
    lr_ref_params: Params = 40e6
    lr_exponent: Number = Field(default=0.116, ge=0, le=2)
    lr_max: Number = Field(default=4e-4, gt=0, le=10)
    batch_ref_tokens: Params = 250e3
    batch_ref_flops: Flops = 6e18
    batch_exponent: Number = Field(default=0.374, ge=0, le=2)
    batch_max_tokens: Params = 4e6
    min_steps: Count = Field(default=100, ge=1, le=1_000_000)


# Slurm's names of partitions, accounts and QOSs: letters, digits, '_', '.', '-' (a partition may be a comma list);
# nothing of the shell or of an sbatch line (no space, quote, '#', '=', newline) can appear in one
SLURM_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,128}")


def slurm_name(value: Any, field: str) -> Any:
    """A Slurm partition, account or QOS as typed, if made of Slurm's name characters (else a ValueError
    that the config error places at the field)."""
    if value is None:
        return None
    parts = str(value).split(",") if field == "partition" else [str(value)]
    if not isinstance(value, str) or not all(SLURM_NAME.fullmatch(p) for p in parts):
        raise ValueError(
            f"{str(value)[:60]!r} is not a Slurm {field} name (letters, digits, '_', '.', '-'"
            + (", several separated by ','" if field == "partition" else "")
            + ")"
        )
    return value


class Launch(Strict):
    """Where runs go: Slurm (one job array per stage) or this machine; and the cost model of the plan."""

    executor: Literal["slurm", "local"] = "slurm"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    nodes: Count = Field(default=1, gt=0, le=100_000)
    gpus_per_node: Count = Field(default=0, ge=0, le=64)
    tasks_per_node: Count | None = Field(default=None, gt=0, le=64)
    cpus_per_task: Count | None = Field(default=None, gt=0)
    mem_gb: Number | None = Field(default=None, gt=0)
    timeout_min: Count = Field(default=60, gt=0)
    array_parallelism: Count = Field(default=64, gt=0)
    slurm_signal_delay_s: Count = Field(default=90, ge=0)
    max_num_timeout: Count = Field(default=3, ge=0)
    setup: list[str] = Field(default_factory=list)
    local_workers: Count = Field(default=1, gt=0, le=64)
    mfu: Number = Field(default=0.4, ge=1e-3, le=1)  # as plan --mfu
    gpu_peak_flops: Number = Field(default=989e12, ge=1e9, le=1e17)  # as plan --gpu: 1 GFLOPS to 100 PFLOPS

    @field_validator("partition", "account", "qos", mode="before")
    @classmethod
    def _slurm_name(cls, value: Any, info) -> Any:
        return slurm_name(value, info.field_name)

    @model_validator(mode="after")
    def _signal_in_time(self) -> Launch:
        # Slurm checks signal times every ~30 s: a USR2 due within 35 s of the start can arrive
        # before submitit's handler exists and kill the job.
        if self.timeout_min * 60 - self.slurm_signal_delay_s < 35:
            raise ValueError(
                f"timeout_min x 60 - slurm_signal_delay_s must be at least 35 s "
                f"(got {self.timeout_min} min and {self.slurm_signal_delay_s} s)"
            )
        return self

    @property
    def tasks(self) -> int:
        """Processes per node: one per GPU unless set."""
        return self.tasks_per_node or max(1, self.gpus_per_node)


class Range(Strict):
    """An interval [low, high] to search."""

    low: Number
    high: Number

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not self.low < self.high:
            raise ValueError(f"low {self.low:g} must be below high {self.high:g}")
        return self


class Tune(Strict):
    """`workbench sweep tune` (workbench.sweep.tune): an Optuna TPE study per scale over lr_peak (log-uniform
    in `lr`), batch_tokens (one of `batch_tokens`, multiples of seq_len x micro_batch; empty: 1, 2, 4 and 8
    times that) and the warmup as a fraction of the run (uniform in `warmup_fraction`). A scale is a budget
    with a model size: `sizes` holds one size for every budget, one per budget, or nothing (the grid's prior
    optimum N*(C)). `trials` is the count per scale that a call tops the study up to (a rerun resumes it)."""

    budgets_flops: list[Flops] = Field(min_length=1, max_length=100)
    sizes: list[Params] = Field(default_factory=list, max_length=100)
    trials: Count = Field(default=20, gt=0, le=10_000)
    startup_trials: Count = Field(default=5, ge=0, le=10_000)
    seed: Count = Field(default=0, ge=0)
    lr: Range = Range(low=1e-4, high=1e-2)
    batch_tokens: list[Count] = Field(default_factory=list, max_length=64)
    warmup_fraction: Range = Range(low=0.0, high=0.2)

    @model_validator(mode="after")
    def _consistent(self) -> Tune:
        if self.lr.low <= 0 or self.lr.high > 10:
            raise ValueError(f"lr range [{self.lr.low:g}, {self.lr.high:g}] must lie in (0, 10]")
        if self.warmup_fraction.low < 0 or self.warmup_fraction.high > 1:
            raise ValueError("warmup_fraction must lie in [0, 1]")
        if len(self.sizes) not in (0, 1, len(self.budgets_flops)):
            budgets = len(self.budgets_flops)
            raise ValueError(f"sizes must hold 1 size or one per budget ({budgets}), not {len(self.sizes)}")
        if any(b <= 0 for b in self.batch_tokens) or len(set(self.batch_tokens)) != len(self.batch_tokens):
            raise ValueError("batch_tokens must be distinct positive numbers of tokens")
        return self


class SweepSpec(Strict):
    """A sweep file: name, model family, data, grid, shared train settings, auto rules, launch, and an
    optional hyper-parameter search (`tune`)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    runs_root: str = "runs"
    model: SweepModel = SweepModel()
    data: DataConfig
    grid: Grid
    train: SweepTrain = SweepTrain()
    rules: Rules = Rules()
    launch: Launch = Launch()
    tune: Tune | None = None


@dataclass(frozen=True)
class PlannedRun:
    """One run of a plan. flops: FLOPs-per-token x tokens; cost_flops: what this run spends (a branch
    only its cooldown); gpu_hours: cost_flops at the spec's MFU."""

    run_id: str
    kind: Literal["run", "trunk", "branch"]
    budget_flops: float
    target_params: float
    params: int
    params_total: int
    shape: str
    tokens: int
    steps: int
    batch_tokens: int
    lr_peak: float
    flops: float
    cost_flops: float
    gpu_hours: float
    branch_of: str | None
    start_tokens: int
    config: TrainConfig = field(repr=False)

    def row(self) -> dict:
        """The plan table's columns, JSON-ready."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "config"}


@dataclass(frozen=True)
class Plan:
    """Every run of a sweep; cost_flops is what the sweep spends, cosine_flops what separate cosine runs
    of the same (N, D) points would."""

    spec: SweepSpec
    source: str
    runs: tuple[PlannedRun, ...]

    @property
    def cost_flops(self) -> float:
        return sum(r.cost_flops for r in self.runs)

    @property
    def cosine_flops(self) -> float:
        return sum(r.flops for r in self.runs)

    @property
    def gpu_hours(self) -> float:
        return sum(r.gpu_hours for r in self.runs)

    @property
    def saved_fraction(self) -> float:
        return 1 - self.cost_flops / self.cosine_flops if self.cosine_flops else 0.0

    def totals(self) -> dict:
        return {
            "sweep": self.spec.name,
            "runs": len(self.runs),
            "cost_flops": self.cost_flops,
            "cosine_flops": self.cosine_flops,
            "saved_fraction": self.saved_fraction,
            "gpu_hours": self.gpu_hours,
            "mfu": self.spec.launch.mfu,
            "gpu_peak_flops": self.spec.launch.gpu_peak_flops,
        }


UNTRAINED = ("name", "runs_root", "launch", "tune")  # spec sections that do not change what a run trains
HASH_KEY = "sweep_hash"  # the key of a run config's meta that holds the hash of the spec that wrote it


def trained_spec(spec: SweepSpec) -> dict:
    """The spec as JSON without the parts that do not change what is trained (workbench.sweep.versions): the
    name, runs_root, launch, tune and train.logging."""
    body = spec.model_dump(mode="json", exclude=set(UNTRAINED))
    body["train"].pop("logging", None)
    return body


def spec_hash(spec: SweepSpec) -> str:
    """The sweep version's identity: 12 hex digits of SHA-256 over `trained_spec` (sorted keys)."""
    return hashlib.sha256(json.dumps(trained_spec(spec), sort_keys=True).encode()).hexdigest()[:12]


def load_spec(path: str | Path, overrides: Sequence[str] = ()) -> tuple[SweepSpec, dict[tuple, int]]:
    """Read and validate a sweep YAML, with `key.sub=value` overrides applied first: (spec, key line numbers).
    Problems are one-line WorkbenchErrors."""
    data, lines = load_yaml(path)
    data, overridden = apply_overrides(data, overrides, str(path))
    return parse_model(SweepSpec, data, str(path), lines, overridden), lines


def spec_path_of(sweep: str) -> Path:
    """The YAML file of a sweep given by its file or by its name (sweeps/NAME.yaml)."""
    path = Path(sweep)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        return path
    candidate = Path("sweeps") / f"{safe_name(sweep, 'sweep name')}.yaml"
    if not candidate.is_file():
        raise WorkbenchError(
            f"no sweep YAML for {sweep!r} (looked for {candidate})",
            "Give the sweep's YAML file, e.g. sweeps/NAME.yaml.",
        )
    return candidate


def sweep_name_of(sweep: str) -> str:
    """A sweep's name, given its name or its YAML file (the file's `name:`)."""
    if sweep.endswith((".yaml", ".yml")):
        return load_spec(sweep)[0].name
    return safe_name(sweep, "sweep name")
