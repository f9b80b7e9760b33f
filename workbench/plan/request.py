"""`workbench plan`'s options, checked, turned into a plan and its record (the command parses and prints; this
plans). Reads only the law or fit file it is given (workbench.plan.law_choice); the plan itself stays pure."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from workbench.core.errors import WorkbenchError
from workbench.core.units import parse_number
from workbench.plan import planner
from workbench.plan.data_constrained import epochs_note
from workbench.plan.efficiency import CALIBRATION
from workbench.plan.efficiency_fit import calibration_without
from workbench.plan.goodput import Failures
from workbench.plan.hardware import Gpu
from workbench.plan.hparams import anchors_left_out
from workbench.plan.law_choice import data_constrained, resolve_law
from workbench.plan.record import to_record


@dataclass(frozen=True)
class PlanRequest:
    """What `workbench plan` was asked (None: not given)."""

    compute: float | None
    gpus: int | None
    days: float | None
    gpu: Gpu
    mfu: float | None  # an override of the modelled MFU
    law: str | None
    hparams: Path | None
    inference_tokens: float | None
    unique_tokens: float | None
    seq_len: int | None
    vocab: int | None
    lr_floor: float
    anchors_left_out: tuple[str, ...]
    runs_left_out: tuple[str, ...]
    failures: Failures


def positive(text: str | None, option: str) -> float | None:
    """The number an option gives, which must be above 0 (None when not given)."""
    if text is None:
        return None
    value = parse_number(text, option)
    if value <= 0:
        raise WorkbenchError(f"{option}: {text} must be positive", f"Give {option} a number above 0, e.g. 1e21.")
    return value


def whole_gpus(text: str | None) -> int | None:
    value = positive(text, "--gpus")
    if value is not None and value != math.floor(value):
        raise WorkbenchError(f"--gpus: {text} is not a whole number", "Give a GPU count such as 1024.")
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
    if request.mfu is not None and not 0 < request.mfu <= 1:
        raise WorkbenchError(f"--mfu {request.mfu:g} is outside (0, 1]", "Give a utilisation such as 0.4 (40%).")
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
    if f.failures_per_gpu_day < 0 or f.write_gb_s <= 0 or f.restart_s < 0:
        raise WorkbenchError(
            "--failures-per-gpu-day and --restart-min must be 0 or more, --checkpoint-gb-s above 0",
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


def make(request: PlanRequest) -> tuple[planner.Plan, dict]:
    """The plan and its record (`plan --json`): at --compute, or at what --gpus deliver in --days."""
    check(request)
    calibration = calibration_without(request.runs_left_out) if request.runs_left_out else CALIBRATION

    def plan_at(budget: float) -> planner.Plan:
        law = resolve_law(request.law, budget, request.hparams)
        if request.unique_tokens is not None:
            law = data_constrained(law, request.unique_tokens, request.inference_tokens)
        return planner.make_plan(
            law,
            budget,
            gpu=request.gpu,
            mfu=request.mfu,
            seq_len=request.seq_len or planner.default_seq_len(budget),
            vocab_size=request.vocab or planner.default_vocab(budget),
            gpus=request.gpus,
            days=request.days,
            inference_tokens=request.inference_tokens,
            floor=request.lr_floor,
            hparams_leave_out=anchors_left_out(list(request.anchors_left_out)),
            calibration=calibration,
            failures=request.failures,
        )

    if request.compute is None:
        plan = plan_for_gpus_days(plan_at, request.gpus, request.days, request.gpu, request.mfu)
    else:
        plan = plan_at(request.compute)
    record = to_record(plan).public()
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
    return plan, record


def record_name(plan: planner.Plan) -> str:
    """The plan's name in the plans table: flagship-LAW-BUDGET."""
    return f"flagship-{plan.law.name}-{plan.budget_flops:.3g}".replace("+", "").replace("/", "_")
