"""`workbench plan`'s options, checked, turned into a plan and its record (the command parses and prints; this
plans): the law (a built-in one, or a fit file's), and for a fit of a sweep a plan that inherits the sweep
(workbench.plan.from_sweep); at --compute, or at what --gpus deliver in --days at the plan's own MFU and goodput.

Pure apart from reading the fit file, a `sweep tune` file and a data folder's manifest; writes nothing.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from workbench.core.errors import WorkbenchError
from workbench.core.units import parse_positive as positive
from workbench.data.prepare import default_corpus_dir
from workbench.fit.laws import Law
from workbench.plan import from_sweep, planner
from workbench.plan.data_constrained import epochs_note
from workbench.plan.efficiency import CALIBRATION, Calibration
from workbench.plan.efficiency_fit import calibration_without
from workbench.plan.goodput import Failures
from workbench.plan.hardware import MAX_GPUS, Gpu
from workbench.plan.hparams import anchors_left_out
from workbench.plan.law_choice import data_constrained, fit_of, resolve_law, tuned_laws
from workbench.plan.record import to_record
from workbench.sweep.spec import SweepSpec
from workbench.train.config import TrainConfig

MIN_MFU = 1e-3  # --mfu below 0.1% is a typo (a fraction, not a percent, is asked)
PUBLISHED = "published"  # --hparams published: the published-run rules (workbench.plan.hparams)


@dataclass(frozen=True)
class PlanRequest:
    """What `workbench plan` was asked (None: not given)."""

    compute: float | None
    gpus: int | None
    days: float | None
    gpu: Gpu
    mfu: float | None  # an override of the modelled MFU
    law: str | None  # a built-in law's name or a fit file (None: the only fit in fits/, else epoch)
    hparams: str | None  # a `sweep tune` file, or "published"
    inference_tokens: float | None
    unique_tokens: float | None
    seq_len: int | None
    vocab: int | None
    lr_floor: float
    anchors_left_out: tuple[str, ...]
    runs_left_out: tuple[str, ...]
    failures: Failures
    method: str | None = None  # a fit's parametric (default) or isoflop law


@dataclass(frozen=True)
class Planned:
    """The plan, its record (a dict, as `--json` prints it) and the sweep it inherits (None: a generic plan)."""

    plan: planner.Plan
    record: dict
    sweep: SweepSpec | None

    @property
    def name(self) -> str:
        """The plan's name in the plans table: flagship-LAW-BUDGET."""
        return f"flagship-{self.plan.law.name}-{self.plan.budget_flops:.3g}".replace("+", "").replace("/", "_")

    def config(self, data: str | None, run_dir: str | None) -> TrainConfig:
        """The flagship's train config: trained as the sweep's runs were, or the generic recipe on `data`."""
        run_dir = run_dir or f"runs/flagship/{self.name}"
        if self.sweep is not None:
            config = from_sweep.sweep_config(self.plan, self.sweep, run_dir, self.name)
            if data is None:
                return config
            return config.model_copy(update={"data": config.data.model_copy(update={"sources": [{"path": data}]})})
        return planner.flagship_config(self.plan, data or str(default_corpus_dir()), run_dir, self.name)


def whole_gpus(text: str | None) -> int | None:
    value = positive(text, "--gpus")
    if value is not None and value != math.floor(value):
        raise WorkbenchError(f"--gpus: {text} is not a whole number", "Give a GPU count such as 1024.")
    if value is not None and value > MAX_GPUS:
        raise WorkbenchError(f"--gpus: {text} is more than {MAX_GPUS:,} GPUs", "Give a GPU count such as 1024.")
    return int(value) if value is not None else None


def failures(per_gpu_day: float | None, write_gb_s: float | None, restart_min: float | None) -> Failures:
    """The failure and checkpoint settings (None: the default of workbench.plan.goodput)."""
    default = Failures()
    return Failures(
        default.failures_per_gpu_day if per_gpu_day is None else per_gpu_day,
        default.write_gb_s if write_gb_s is None else write_gb_s,
        default.restart_s if restart_min is None else restart_min * 60,
    )


def check(request: PlanRequest) -> None:
    """One-line errors for options out of range."""
    check_budget(request.compute, request.gpus, request.days)
    if request.mfu is not None and not MIN_MFU <= request.mfu <= 1:
        raise WorkbenchError(
            f"--mfu {request.mfu:g} is outside [{MIN_MFU:g}, 1]", "Give a utilisation such as 0.4 (40%)."
        )
    for option, value, low in (("--seq-len", request.seq_len, 1), ("--vocab-size", request.vocab, 2)):
        if value is not None and value < low:
            raise WorkbenchError(f"{option} {value} is too small", f"Give {option} of at least {low}.")
    if not 0 <= request.lr_floor <= 1:
        raise WorkbenchError(
            f"--lr-floor {request.lr_floor:g} is outside [0, 1]", "Give a fraction of the peak, e.g. 0.01."
        )
    if request.inference_tokens is not None and request.inference_tokens < 0:
        raise WorkbenchError(f"--inference-tokens {request.inference_tokens:g} is negative", "Give 0 or more.")
    f = request.failures
    if not (0 <= f.failures_per_gpu_day < math.inf and 0 < f.write_gb_s < math.inf and 0 <= f.restart_s < math.inf):
        raise WorkbenchError(
            "--failures-per-gpu-day and --restart-min must be finite and >= 0, --checkpoint-gb-s finite and > 0",
            "Give e.g. --failures-per-gpu-day 5e-4 --checkpoint-gb-s 2000 --restart-min 10.",
        )


def budget_from_gpus(gpus: int, days: float, gpu: Gpu, mfu: float, goodput: float = 1.0) -> float:
    """FLOPs that `gpus` GPUs deliver in `days` wall days at model FLOPs utilisation `mfu` and `goodput`."""
    return gpus * gpu.peak_flops * mfu * goodput * days * 86400.0


def check_budget(budget_flops: float | None, gpus: int | None, days: float | None) -> None:
    """A budget with GPUs or days (the other follows), or GPUs and days (the budget follows)."""
    if budget_flops is None and (gpus is None or days is None):
        raise WorkbenchError("no compute budget", "Give --compute FLOPS, or both --gpus G and --days T.")
    if budget_flops is not None and gpus is not None and days is not None:
        raise WorkbenchError(
            "--compute, --gpus and --days all given",
            "With --compute give --gpus (days follow) or --days (GPUs follow).",
        )


def plan_for_gpus_days(plan_at: Callable[[float], planner.Plan], gpus: int, days: float, gpu: Gpu, mfu: float | None):
    """The plan whose budget is what `gpus` GPUs deliver in `days` wall days at its own MFU and goodput: the MFU
    depends on the shape, which depends on the budget, so the budget is iterated (from 40% MFU, or the --mfu
    override) until it moves by less than 0.5%. `plan_at(budget)` plans at a budget on those GPUs."""
    rate = mfu or 0.4
    plan = plan_at(budget_from_gpus(gpus, days, gpu, rate))
    for _ in range(8):  # the rate per GPU given: MFU x goodput x the share of the GPUs the layout uses
        new_rate = plan.cost.mfu * plan.cost.goodput.fraction * plan.layout.gpus / gpus
        if new_rate <= 0:
            raise WorkbenchError(
                f"failures on {gpus:,} GPUs leave no time to train (one every {plan.cost.goodput.mtbf_s / 60:.2g} min)",
                "Give fewer GPUs, a lower --failures-per-gpu-day or a shorter --restart-min.",
            )
        if abs(new_rate / rate - 1) < 0.005:
            break
        rate = new_rate
        plan = plan_at(budget_from_gpus(gpus, days, gpu, rate))
    return plan


def make(request: PlanRequest) -> Planned:
    """The plan, its record (`plan --json`) and the sweep it inherits: at --compute, or at what --gpus deliver in
    --days."""
    check(request)
    if request.method is not None and request.method not in from_sweep.METHODS:
        raise WorkbenchError(
            f"--method: unknown method {request.method!r}", f"Use one of {', '.join(from_sweep.METHODS)}."
        )
    published = request.hparams is not None and request.hparams.strip().lower() == PUBLISHED
    tune_file = None if published or request.hparams is None else Path(request.hparams)
    fit = fit_of(request.law)
    if fit is None and request.method is not None:
        raise WorkbenchError("--method picks a fit file's law", "Give --law fits/NAME.json, or drop --method.")
    sweep = from_sweep.sweep_spec_of(fit[0], fit[1]) if fit else None
    calibration = calibration_without(request.runs_left_out) if request.runs_left_out else CALIBRATION

    def plan_at(budget: float) -> planner.Plan:
        if sweep is not None:
            return _from_sweep(request, budget, fit, sweep, tune_file, published, calibration)
        return _generic(request, budget, fit, tune_file, published, calibration)

    if request.compute is None:
        plan = plan_for_gpus_days(plan_at, request.gpus, request.days, request.gpu, request.mfu)
    else:
        plan = plan_at(request.compute)
    record = to_record(plan).public()
    if sweep is not None:
        spec_hash = ((fit[0].model_extra or {}).get("sweep_version") or {}).get("spec_hash")
        record["inherited"] = from_sweep.inherited(sweep, plan, spec_hash)
    if request.unique_tokens is not None:
        unique = request.unique_tokens
        text, warnings = epochs_note(plan.law.parametric, plan.shape.params, plan.shape_tokens)
        record["data_constrained"] = {
            "unique_tokens": unique,
            "epochs": plan.shape_tokens / unique,
            "warnings": warnings,
        }
        record["law"]["notes"] += [text, *(f"WARNING: {w}" for w in warnings)]
        record["warnings"] += warnings
    return Planned(plan, record, sweep)


def _from_sweep(
    req: PlanRequest, budget: float, fit, sweep: SweepSpec, tune_file, published: bool, calibration: Calibration
) -> planner.Plan:
    record, path, note = fit
    tune_default = Path("fits") / f"{sweep.name}-hparams.json"
    tune_file = tune_file or (tune_default if tune_default.is_file() else None)
    law = from_sweep.sweep_law(record, path, req.method or "parametric")
    if req.unique_tokens is not None:
        law = data_constrained(law, req.unique_tokens, req.inference_tokens)
    if note:
        law = dataclasses.replace(law, notes=(note, *law.notes))
    return from_sweep.plan_from_sweep(
        record,
        path,
        sweep,
        budget,
        law=law,
        tuned=tuned_laws(tune_file) if tune_file else None,
        published=published,
        gpu=req.gpu,
        mfu=req.mfu,
        gpus=req.gpus,
        days=req.days,
        seq_len=req.seq_len,
        vocab_size=req.vocab,
        inference_tokens=req.inference_tokens,
        leave_out=anchors_left_out(list(req.anchors_left_out)),
        calibration=calibration,
        failures=req.failures,
    )


def _generic(
    req: PlanRequest, budget: float, fit, tune_file, published: bool, calibration: Calibration
) -> planner.Plan:
    law: Law | None = None
    if fit is not None:  # a fit without a sweep (a CSV, an older fit): its law, refused when degenerate
        record, path, note = fit
        law = from_sweep.sweep_law(record, path, req.method or "parametric")
        law = dataclasses.replace(law, notes=(note, *law.notes)) if note else law
    law = resolve_law(req.law, budget, tune_file, law)
    if published:
        law = dataclasses.replace(law, hparams=None)
    if req.unique_tokens is not None:
        law = data_constrained(law, req.unique_tokens, req.inference_tokens)
    return planner.make_plan(
        law,
        budget,
        gpu=req.gpu,
        mfu=req.mfu,
        seq_len=req.seq_len or planner.default_seq_len(budget),
        vocab_size=req.vocab or planner.default_vocab(budget),
        gpus=req.gpus,
        days=req.days,
        inference_tokens=req.inference_tokens,
        floor=req.lr_floor,
        hparams_leave_out=anchors_left_out(list(req.anchors_left_out)),
        calibration=calibration,
        failures=req.failures,
    )
