"""What a planned run costs, and the plan's guardrails. Pure.

GPU-hours and days come from the layout's modelled MFU (workbench.plan.layout_cost, its efficiency calibrated
on published runs by workbench.plan.efficiency_fit), or from an explicit `--mfu` override, which the output labels.
They are given without failures (step time only) and with them (divided by the goodput of workbench.plan.goodput),
each with a 5-95% interval: the modelled MFU is off by a factor whose 5th and 95th percentiles over the
leave-one-out predictions of the published runs are `Calibration.ratio_p5` and `ratio_p95` (predicted /
published), so the days lie within days x that range. An --mfu override has no interval.

Warnings (one list in the plan record and its text; `plan --strict` exits 1 on any): a missed days target, a run
longer than a year, a modelled MFU above the highest published MFU that calibrates the GPU type, a model
narrower than the narrowest calibration run, a GPU type no published run calibrates, failures that leave little
goodput, and the batch and LR rule's own warnings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from workbench.model.shapes import ModelShape
from workbench.plan.efficiency import BORROWS, Calibration
from workbench.plan.efficiency_fit import calibration_range
from workbench.plan.goodput import Goodput
from workbench.plan.hardware import Gpu

YEAR_DAYS = 365.0
TARGET_SLACK = 0.01  # a plan from --gpus x --days lands within this of its days (the shapes are discrete)
LOW_GOODPUT = 0.5


@dataclass(frozen=True)
class Cost:
    """GPU time of a run: at the modelled MFU (or the override), with and without failures."""

    train_flops: float
    peak_flops: float
    gpus: int
    modelled_mfu: float
    mfu_override: float | None
    goodput: Goodput
    calibration: Calibration

    @property
    def mfu(self) -> float:
        """The MFU the GPU time uses: the override when given, else the modelled one."""
        return self.mfu_override or self.modelled_mfu

    @property
    def gpu_hours(self) -> float:
        """GPU-hours of the step time alone (no failures, no checkpoints)."""
        return self.train_flops / (self.peak_flops * self.mfu) / 3600.0

    @property
    def days(self) -> float:
        return self.gpu_hours / self.gpus / 24.0

    @property
    def gpu_hours_with_failures(self) -> float:
        """GPU-hours of the wall time: the GPUs are held through checkpoints, failures and restarts."""
        return self.gpu_hours / self.goodput.fraction if self.goodput.fraction > 0 else math.inf

    @property
    def days_with_failures(self) -> float:
        return self.gpu_hours_with_failures / self.gpus / 24.0

    def interval(self, value: float) -> tuple[float, float] | None:
        """5-95% range of a time `value` from the leave-one-out error of the MFU (None with an override)."""
        if self.mfu_override:
            return None
        return value * self.calibration.ratio_p5, value * self.calibration.ratio_p95

    def as_dict(self) -> dict:
        def block(value: float) -> dict:
            low_high = self.interval(value)
            return {"value": value, "p5": low_high[0] if low_high else None, "p95": low_high[1] if low_high else None}

        return {
            "mfu": self.mfu,
            "mfu_source": "--mfu override" if self.mfu_override else "modelled",
            "modelled_mfu": self.modelled_mfu,
            "mfu_interval": None
            if self.mfu_override
            else {"p5": self.mfu / self.calibration.ratio_p95, "p95": self.mfu / self.calibration.ratio_p5},
            "gpu_hours": block(self.gpu_hours),
            "days": block(self.days),
            "gpu_hours_with_failures": block(self.gpu_hours_with_failures),
            "days_with_failures": block(self.days_with_failures),
            "goodput": self.goodput.as_dict(),
            "calibration": self.calibration.as_dict(),
        }


def _efficiency_warnings(cost: Cost, gpu: Gpu, shape: ModelShape) -> list[str]:
    if not gpu.calibrated:
        return [f"no published run calibrates {gpu.name}: its efficiency is the H100's, not measured"]
    kind = BORROWS.get(gpu.kind, gpu.kind)
    span = calibration_range()[kind]
    out = []
    if cost.modelled_mfu > span["mfu_max"]:
        out.append(
            f"modelled MFU {cost.modelled_mfu:.1%} is above the highest published {kind} MFU that calibrates the "
            f"model ({span['mfu_max']:.1%})"
        )
    if shape.d_model < span["d_min"]:
        out.append(
            f"d_model {shape.d_model} is narrower than every published {kind} run that calibrates the model "
            f"(from {span['d_min']:g}): its efficiency is extrapolated"
        )
    return out


def warnings(cost: Cost, gpu: Gpu, shape: ModelShape, target_days: float | None, extra: tuple[str, ...] = ()):
    """The plan's warnings, in one list (`extra`: warnings from elsewhere, e.g. the batch and LR rule)."""
    out = []
    days = cost.days_with_failures
    if target_days is not None and days > target_days * (1 + TARGET_SLACK):
        out.append(
            f"misses its {target_days:g}-day target: {days:,.1f} days with failures on {cost.gpus:,} GPUs, the "
            "shortest the layout search found (the batch caps data parallelism; failures grow with the GPUs)"
        )
    if days > YEAR_DAYS:
        out.append(f"runs {days:,.0f} days with failures on {cost.gpus:,} GPUs: more than a year")
    if cost.goodput.fraction < LOW_GOODPUT:
        out.append(
            f"failures leave {cost.goodput.fraction:.0%} goodput on {cost.gpus:,} GPUs "
            f"(one every {cost.goodput.mtbf_s / 3600:.2g} h)"
        )
    out += [] if cost.mfu_override else _efficiency_warnings(cost, gpu, shape)
    return tuple(out) + tuple(extra)
