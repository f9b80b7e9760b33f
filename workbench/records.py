"""The typed records between stages: FitRecord (fits/NAME.json, `workbench fit`) and PlanRecord
(`workbench plan`), with their one reader. Pure: pydantic and json, no torch, no duckdb.

    Store --fit--> FitRecord --plan--> PlanRecord --flagship--> RunDir --report--> HTML

Each record carries `schema_version`. A file without one is version 1 (the format before the records
were typed: the same fields), read as is; a file of a newer version than this workbench knows is a
one-line error. Validation errors name the file and the field (`fits/x.json: parametric.alpha must be a
positive number (got -0.3)`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from workbench.core.configfile import describe
from workbench.core.errors import WorkbenchError

PARAM_NAMES = ("E", "A", "B", "alpha", "beta")  # the parametric law L = E + A/N^alpha + B/D^beta
FIT_SCHEMA_VERSION = 3  # 3: L*(C) gains its floor E, the FLOPs per token, model-error intervals
PLAN_SCHEMA_VERSION = 2
FIT_HINT = "Refit with `workbench fit`."


class Record(BaseModel):
    """A JSON record: unknown keys are kept (a newer minor field stays readable), numbers stay floats."""

    model_config = ConfigDict(extra="allow")

    def as_dict(self) -> dict:
        """The record as the plain dict it was read from or built with (fields left at their default are
        left out); NaN and inf become null when written (workbench.core.files.json_clean)."""
        return self.model_dump(mode="python", exclude_unset=True)


def _positive(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"must be a positive number (got {value!r})")
    return float(value)


def _good(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) and x > 0


class ParametricBlock(Record):
    """L = E + A/N^alpha + B/D^beta: the estimate, its intervals (`ci`) and bootstrap draws."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    a: float | None = None
    objective: float | None = None
    ci: dict | None = None
    draws: dict[str, list[float | None]] | None = None

    @field_validator(*PARAM_NAMES, mode="before")
    @classmethod
    def _positive_number(cls, value: object) -> float:
        return _positive(value)

    @field_validator("draws", mode="after")
    @classmethod
    def _same_lengths(cls, draws: dict | None) -> dict | None:
        if draws is None:
            return None
        missing = [k for k in PARAM_NAMES if k not in draws]
        if missing:
            raise ValueError(f"must map each of {', '.join(PARAM_NAMES)} to a list (missing {', '.join(missing)})")
        lengths = {len(draws[k]) for k in PARAM_NAMES}
        if len(lengths) != 1:
            raise ValueError(f"lists differ in length ({sorted(lengths)})")
        return draws

    def good_draws(self) -> dict[str, np.ndarray]:
        """Draws {E, A, B, alpha, beta} without the failed resamples (a missing, non-finite or non-positive value)."""
        if not self.draws:
            return {k: np.empty(0) for k in PARAM_NAMES}
        rows = [r for r in zip(*(self.draws[k] for k in PARAM_NAMES), strict=True) if all(_good(x) for x in r)]
        table = np.array(rows, dtype=float).reshape(-1, len(PARAM_NAMES))
        return {k: table[:, i] for i, k in enumerate(PARAM_NAMES)}


class LossLaw(Record):
    """L*(C) = E + K C^-gamma on the isoFLOP minima, its draws and the run-to-run scatter (log residuals);
    a record of schema 2 has no E (the pure power law K C^-gamma) and reads as E = 0."""

    E: float = 0.0
    K: float
    gamma: float
    budgets: list[float] = Field(default_factory=list)
    draws: dict[str, list[float]] = Field(default_factory=dict)
    scatter_log: list[float] = Field(default_factory=list)
    at: list[dict] = Field(default_factory=list)  # loss_pred, law_interval, prediction_interval per budget


class IsoflopBlock(Record):
    """isoFLOP minima per budget, exclusions, N* = G C^a, D* = H C^b, intervals, draws and L*(C)."""

    budgets: list[float] = Field(default_factory=list)
    minima: list[dict] = Field(default_factory=list)
    excluded: list[dict] = Field(default_factory=list)
    G: float | None = None
    a: float | None = None
    H: float | None = None
    b: float | None = None
    ci: dict | None = None
    draws: dict[str, list[float | None]] | None = None
    loss_law: LossLaw | None = None

    @property
    def has_laws(self) -> bool:
        return None not in (self.G, self.a, self.H, self.b)


class PowerLawBlock(Record):
    """y = coef C^exp; exp null (a tune study at one budget) is a constant."""

    coef: float
    exp: float | None = None

    @field_validator("coef", mode="before")
    @classmethod
    def _positive_coef(cls, value: object) -> float:
        return _positive(value)

    @field_validator("exp", mode="before")
    @classmethod
    def _finite_exp(cls, value: object) -> float | None:
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
        ):
            raise ValueError(f"must be a number or null (got {value!r})")
        return value


class HparamsBlock(Record):
    """Batch (tokens) and peak LR as power laws of the compute budget (`workbench sweep tune`)."""

    batch: PowerLawBlock
    lr: PowerLawBlock


class FitRecord(Record):
    """fits/NAME.json: what `workbench fit` computed, for `plan`, `report` and the demo."""

    schema_version: int = FIT_SCHEMA_VERSION
    name: str | None = None
    sweep: str | None = None
    source: str | None = None
    method: str | None = None
    data_hash: str | None = None
    n_points: int | None = None
    created: str | None = None
    version: str | None = None
    settings: dict = Field(default_factory=dict)
    isoflop: IsoflopBlock | None = None
    parametric: ParametricBlock | None = None
    hparams: HparamsBlock | None = None
    holdout: dict | None = None
    rollout: list | None = None
    checks: dict | None = None  # the held-out budget's predicted vs observed, with a pass flag each
    accuracy: dict | None = None
    points: dict[str, list[float]] | None = None
    plots: list[str] = Field(default_factory=list)
    flops_per_token: dict | None = None  # {rho, kappa}: how the budgets were counted (workbench.fit.laws)

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, data: Any) -> Any:
        return _migrate(data, FIT_SCHEMA_VERSION, "fit")


class PlanRecord(Record):
    """What `workbench plan` computed (its --json output and the plans table row), read by the report."""

    schema_version: int = PLAN_SCHEMA_VERSION
    compute_flops: float
    spent_flops: float | None = None  # what the planned shape spends under the trainer's FLOP rule
    params: float
    tokens: float
    tokens_per_param: float
    shape: dict
    loss: float | None
    ci: dict | None
    batch_tokens: int
    lr_peak: float
    hparams: dict | None = None  # where batch and LR come from (workbench.plan.hparams), warnings
    schedule: dict
    gpu_hours: float | None  # step time alone at the MFU of `cost`; None for a CPU target
    days: float | None
    layout: dict | None
    law: dict
    inference: dict | None = None
    cost: dict | None = None  # MFU and its source, GPU-hours and days with and without failures, intervals, goodput
    warnings: list[str] = Field(default_factory=list)  # every warning of the plan (`plan --strict` exits 1 on any)
    target: str = "gpu"  # gpu | cpu
    predicted_loss: dict | None = None  # the plan's one predicted loss: {loss, interval, interval_kind, of}
    inherited: dict | None = None  # what a plan from a sweep's fit took from the sweep (workbench.plan.from_sweep)

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, data: Any) -> Any:
        return _migrate(data, PLAN_SCHEMA_VERSION, "plan")

    def public(self) -> dict:
        """The `plan --json` object: the plan's fields (no inference block when not asked for)."""
        data = self.as_dict()
        for key in ("inference", "inherited"):
            if data.get(key) is None:
                data.pop(key, None)
        return data


def _migrate(data: Any, current: int, what: str) -> Any:
    """Version 1 (no schema_version) has the same fields: read as is; a newer version is refused."""
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object at the top level (got {type(data).__name__})")
    version = data.get("schema_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"schema_version must be a positive whole number (got {version!r})")
    if version > current:
        raise ValueError(
            f"schema_version {version} is newer than this workbench reads ({current}): "
            f"update workbench to read this {what}"
        )
    return {**data, "schema_version": current}


def parse_fit(data: object, source: str) -> FitRecord:
    """A FitRecord from parsed JSON (`source` names the file in errors)."""
    try:
        return FitRecord.model_validate(data)
    except ValidationError as err:
        raise describe(err, FitRecord, source, hint=FIT_HINT) from None


def parse_plan(data: object, source: str) -> PlanRecord:
    """A PlanRecord from parsed JSON (the output of `workbench plan --json` or a plans-table row)."""
    try:
        return PlanRecord.model_validate(data)
    except ValidationError as err:
        raise describe(err, PlanRecord, source, hint="Use the output of `workbench plan --json`.") from None


def read_json(path: str | Path, what: str, hint: str) -> object:
    """Parsed JSON of `path`; a missing file or bad JSON is a one-line error naming it."""
    path = Path(path)
    if not path.is_file():
        raise WorkbenchError(f"no such {what}: {path} not found", hint)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        where = f" (line {err.lineno})" if isinstance(err, json.JSONDecodeError) else ""
        raise WorkbenchError(f"{what} file {path} is not valid JSON{where}", hint) from None


def read_fit(path: str | Path) -> FitRecord:
    """Read and validate fits/NAME.json."""
    data = read_json(path, "fit", "Run `workbench fit` first, or pass the path of a fit JSON.")
    return parse_fit(data, str(path))


def read_plan(path: str | Path) -> PlanRecord:
    """Read and validate a plan JSON (`workbench plan --json > plan.json`)."""
    data = read_json(path, "plan", "Pass the JSON that `workbench plan --json` printed.")
    return parse_plan(data, str(path))


def read_hparams(path: str | Path) -> tuple[HparamsBlock, str]:
    """The batch and LR laws of fits/SWEEP-hparams.json (`workbench sweep tune`), and the file's name."""
    hint = "Give the fits/SWEEP-hparams.json that `workbench sweep tune` wrote."
    data = read_json(path, "hparams", hint)
    if not isinstance(data, dict) or data.get("hparams") is None:
        raise WorkbenchError(
            f"{path} has no hparams laws", "Use the fits/SWEEP-hparams.json of `workbench sweep tune`."
        )
    try:
        return HparamsBlock.model_validate(data["hparams"]), str(path)
    except ValidationError as err:
        raise describe(err, HparamsBlock, str(path), context="hparams", hint="Refit the tune sweep.") from None
