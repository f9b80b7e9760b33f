"""The efficiency model (workbench.plan.efficiency) against published runs: fit, leave-one-out, the table.

Every published row (workbench.plan.published) is costed by workbench.plan.layout_cost at its own shape,
sequence length, batch, layout and GPU. A GPT row becomes the Llama-style shape with the same block parameters
(a SwiGLU of 2/3 the MLP width, as many KV heads as heads). What the source does not state is chosen as the plan
chooses it: the fastest variant that fits memory over micro-batches (up to 8), recompute policies and chunks per
GPU; sharding not stated is DDP (Megatron-LM's default). The three numbers of `Efficiency` minimise the squared
log error of the MFU over the calibration rows; each calibration row is then predicted by a fit on all the
others (leave-one-out), and every excluded row by the fit on all calibration rows. Pure (scipy inside `fit`).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, replace
from functools import cache

import numpy as np

from workbench.core.errors import WorkbenchError
from workbench.model.shapes import ModelShape
from workbench.plan import published
from workbench.plan.efficiency import CALIBRATED_KINDS, EFFICIENCY, Calibration, Efficiency
from workbench.plan.hardware import GB, GPUS
from workbench.plan.layout_cost import choose_layout, options
from workbench.plan.published import PublishedRun
from workbench.plan.step_time import StepParts, timeline

TOLERANCE = 0.15  # the relative error every calibration row's leave-one-out prediction must stay within


def run_shape(run: PublishedRun) -> ModelShape:
    """The Llama-style shape of a published model (a GPT MLP of width f becomes a SwiGLU of width 2f/3)."""
    ffn = round(2 * run.ffn_dim / 3) if run.arch == "gpt" else run.ffn_dim
    return ModelShape(run.id, run.n_layers, run.d_model, run.n_heads, run.n_kv_heads, ffn, run.vocab_size)


def _chunks(run: PublishedRun) -> int | None:
    if run.virtual_stages:
        return run.virtual_stages
    return 1 if run.schedule in ("1f1b", "none") or run.pp == 1 else None


def run_options(run: PublishedRun, efficiency: Efficiency = EFFICIENCY):
    """The costed variants of a published run over what its source does not state (those that fit memory,
    or all when none does: the run did train)."""
    gpu = replace(GPUS[run.gpu_kind], memory_bytes=80 * GB, efficiency=efficiency)
    shape = run_shape(run)
    if None in (run.tp, run.pp, run.dp):  # no layout stated: the plan's choice on that many GPUs
        layout = choose_layout(shape, run.seq_len, 1, run.global_batch_seqs, gpu, run.n_gpus, True, published=True)
        return [layout.chosen]
    found = options(
        shape,
        run.seq_len,
        run.global_batch_seqs,
        gpu,
        run.tp,
        run.pp,
        run.dp,
        micro_batch=run.micro_batch,
        recompute=published.recompute_policy(run) or None,
        virtual=_chunks(run),
        cp=run.cp,
        sharding=run.sharding or "none",
        published=True,
    )
    if run.schedule == "interleaved" and not run.virtual_stages and any(c.virtual_stages > 1 for c in found):
        found = [c for c in found if c.virtual_stages > 1]
    fitting = [c for c in found if c.fits]
    return fitting or found


@dataclass(frozen=True)
class _Stack:
    """The variants of many runs as arrays (one entry per variant), for a fast vectorised fit."""

    row: np.ndarray  # which run each variant belongs to
    kind: np.ndarray
    parts: StepParts
    model_flops: np.ndarray
    gpus: np.ndarray
    peak: np.ndarray
    n_runs: int


@cache
def _variants(run: PublishedRun) -> tuple:
    return tuple(run_options(run))


def _stack(runs: tuple[PublishedRun, ...]) -> _Stack:
    rows, kinds, found = [], [], []
    for i, run in enumerate(runs):
        for c in _variants(run):
            rows.append(i)
            kinds.append(run.gpu_kind)
            found.append((c, run))
    names = StepParts.__dataclass_fields__
    parts = StepParts(**{k: np.array([getattr(c.parts, k) for c, _ in found]) for k in names})
    return _Stack(
        np.array(rows),
        np.array(kinds),
        parts,
        np.array([c.model_flops for c, _ in found]),
        np.array([c.gpus for c, _ in found], dtype=float),
        np.array([r.peak_flops for _, r in found]),
        len(runs),
    )


def _predict(stack: _Stack, efficiency: Efficiency) -> np.ndarray:
    """Modelled MFU of each run: its fastest variant at `efficiency`."""
    achievable = stack.peak * efficiency.fraction(stack.kind, stack.parts.d_model)
    step = timeline(stack.parts, achievable)["step"]
    mfu = stack.model_flops / (step * stack.gpus * stack.peak)
    best = np.zeros(stack.n_runs)
    np.maximum.at(best, stack.row, mfu)
    return best


def predict(runs: tuple[PublishedRun, ...], efficiency: Efficiency = EFFICIENCY) -> np.ndarray:
    """Modelled MFU of each published run (the fastest variant of what its source leaves open)."""
    return _predict(_stack(tuple(runs)), efficiency)


def fit(runs: tuple[PublishedRun, ...]) -> Efficiency:
    """The efficiency that minimises the squared log error of the modelled MFU over `runs`."""
    from scipy.optimize import least_squares

    stack = _stack(tuple(runs))
    observed = np.log([published.mfu(r) for r in runs])
    kinds = {r.gpu_kind for r in runs}

    def residuals(x: np.ndarray) -> np.ndarray:
        return np.log(_predict(stack, Efficiency(*x))) - observed

    start = np.array([EFFICIENCY.a100, EFFICIENCY.h100, EFFICIENCY.width])
    result = least_squares(residuals, start, bounds=([0.05, 0.05, 0.0], [1.0, 1.0, 20000.0]), x_scale=[0.1, 0.1, 300])
    a100, h100, width = (float(x) for x in result.x)  # a kind without rows keeps its starting value
    return Efficiency(a100 if "a100" in kinds else EFFICIENCY.a100, h100 if "h100" in kinds else EFFICIENCY.h100, width)


def calibration_runs(leave_out: tuple[str, ...] = ()) -> tuple[PublishedRun, ...]:
    """The calibration rows, without those whose id starts with any of `leave_out`."""
    return tuple(r for r in published.calibration_runs() if not r.id.startswith(tuple(leave_out) or ("\0",)))


@cache
def calibration_without(leave_out: tuple[str, ...] = ()) -> Calibration:
    """The efficiency fitted on the calibration rows without those whose id starts with any of `leave_out`, and
    its leave-one-out ratios over the rows it keeps."""
    runs = calibration_runs(leave_out)
    kinds = {r.gpu_kind for r in runs}
    if len(runs) < 4 or kinds != set(CALIBRATED_KINDS):
        raise WorkbenchError(
            f"--leave-out-run {' '.join(leave_out)} leaves {len(runs)} published runs to calibrate on, on "
            f"{', '.join(sorted(kinds)) or 'no GPU'} (the efficiency needs {' and '.join(CALIBRATED_KINDS)})",
            "Leave out fewer (ids or prefixes from docs/throughput.md, e.g. llama3).",
        )
    checks = leave_one_out(runs)
    low, high = error_quantiles(checks)
    return Calibration(fit(runs), low, high, len(runs), tuple(leave_out))


@dataclass(frozen=True)
class Check:
    """One published row: its MFU, the model's prediction (leave-one-out for a calibration row) and the error."""

    run: PublishedRun
    published_mfu: float
    predicted_mfu: float
    excluded: str  # why the row does not calibrate ("" when it does)

    @property
    def error(self) -> float:
        """Relative error of the prediction: predicted / published - 1."""
        return self.predicted_mfu / self.published_mfu - 1


def leave_one_out(runs: tuple[PublishedRun, ...] | None = None) -> list[Check]:
    """Every published row: calibration rows predicted by a fit on all other calibration rows, excluded rows by
    the fit on all calibration rows."""
    runs = runs or published.load_runs()
    calibrating = tuple(r for r in runs if not published.exclusion(r))
    everything = fit(calibrating)
    out = []
    for run in runs:
        reason = published.exclusion(run)
        if reason:
            predicted = predict((run,), everything)[0]
        else:
            others = tuple(r for r in calibrating if r is not run)
            predicted = predict((run,), fit(others))[0]
        out.append(Check(run, published.mfu(run), float(predicted), reason))
    return out


def error_quantiles(checks: list[Check], quantiles=(0.05, 0.95)) -> tuple[float, ...]:
    """Quantiles of predicted / published MFU over the calibration rows' leave-one-out predictions."""
    ratios = [c.predicted_mfu / c.published_mfu for c in checks if not c.excluded]
    return tuple(float(np.quantile(ratios, q)) for q in quantiles)


def calibration_range(runs: tuple[PublishedRun, ...] | None = None) -> dict[str, dict[str, float]]:
    """Per GPU kind, the calibration rows' lowest and highest MFU and d_model."""
    out: dict[str, dict[str, float]] = {}
    for run in runs or published.calibration_runs():
        r = out.setdefault(run.gpu_kind, {"mfu_min": math.inf, "mfu_max": 0.0, "d_min": math.inf, "d_max": 0.0})
        value = published.mfu(run)
        r["mfu_min"], r["mfu_max"] = min(r["mfu_min"], value), max(r["mfu_max"], value)
        r["d_min"], r["d_max"] = min(r["d_min"], run.d_model), max(r["d_max"], run.d_model)
    return out


def _layout_text(run: PublishedRun) -> str:
    if None in (run.tp, run.pp, run.dp):
        return "not stated"
    parts = [f"TP {run.tp} x PP {run.pp}" + (f" x v {run.virtual_stages}" if run.virtual_stages else "")]
    parts.append(f"DP {run.dp}" + (f" ({run.sharding})" if run.sharding else ""))
    if run.cp > 1:
        parts.append(f"CP {run.cp}")
    text = " x ".join(parts) + f", seq {run.seq_len:,}, batch {run.global_batch_seqs:,}"
    if run.micro_batch:
        text += f", micro {run.micro_batch}"
    return text + (f", {published.recompute_policy(run)} recompute" if run.recompute else "")


def _author(run: PublishedRun) -> str:
    return re.match(r"^.*?\b(?:19|20)\d\d\b", run.source).group(0)


def errors_by_source(checks: list[Check]) -> str:
    """Every published row's error in one line per source, for the README: the row's id less the prefix its
    source's ids share, and the error of its predicted MFU; ° marks a row that does not calibrate."""
    lines = ["| source | each row: its id (less the shared prefix) and the error of its predicted MFU |", "|---|---|"]
    groups: dict[str, list[Check]] = {}
    for c in checks:
        groups.setdefault(_author(c.run), []).append(c)
    for author, group in groups.items():
        ids = [c.run.id for c in group]
        shared = os.path.commonprefix(ids) if len(ids) > 1 else ids[0]
        prefix = shared[: shared.rfind("_") + 1] if len(ids) > 1 else shared[: shared.find("_") + 1]
        cells = ", ".join(f"{c.run.id[len(prefix) :]} {c.error:+.1%}{'°' if c.excluded else ''}" for c in group)
        lines.append(f"| {author} | {cells} |")
    return "\n".join(lines)


def table_markdown(checks: list[Check]) -> str:
    """Every published row with its source, layout, published and predicted MFU and error, as a Markdown table:
    leave-one-out for the calibration rows, the fit on all of them for the rows that do not calibrate (why not)."""
    lines = [
        "| row | source | GPU | model, layout | MFU | predicted | error | calibrates |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in checks:
        r = c.run
        author = _author(r)
        used = "yes" if not c.excluded else f"no: {c.excluded}"
        lines.append(
            f"| {r.id} | {author}, {r.locator} | {r.n_gpus:,} {r.gpu}{' ' + r.precision if r.precision else ''} | "
            f"{r.model}: {_layout_text(r)} | {c.published_mfu:.1%} | {c.predicted_mfu:.1%} | {c.error:+.1%} | {used} |"
        )
    return "\n".join(lines)


def summary(checks: list[Check]) -> dict:
    """Largest and root-mean-square leave-one-out error over the calibration rows, and their count."""
    errors = np.array([c.error for c in checks if not c.excluded])
    return {"rows": len(errors), "max_abs": float(np.abs(errors).max()), "rms": float(np.sqrt(np.mean(errors**2)))}
