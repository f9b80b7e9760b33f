"""Plan a flagship run: law + compute budget -> N*, D*, shape, batch, LR, schedule, GPU time, layout.

Pure: no torch, no I/O (scipy is imported inside `inference_optimal`). Rules and their sources:
- N*, D*: the law's compute-optimal allocation (workbench.fit.laws); 5/50/95% intervals from bootstrap draws.
- Shape: solved with the FLOPs per token the trainer spends (workbench.model.flops: 6N + 12 L T d), not 6N: a
  loss law picks the rung near N* with the lowest predicted loss on the tokens that fill the budget; a token
  law (Llama 3) or an isoFLOP law the rung whose tokens at the budget come nearest D*. The plan reports the
  nominal budget (--compute) and the spent one (FLOPs per token x tokens); an inference-aware plan spends more.
- Batch and peak LR: workbench.plan.hparams at the spent budget: the user's tune sweep, else a law whose fitted
  range covers it, else a rule anchored to published runs (batch capped at the largest they used); each
  number names its source, with a warning when extrapolated.
- Layout, GPU-hours and days: workbench.plan.layout_cost's costed model (modelled step time and MFU, its
  efficiency calibrated on published runs), with and without failures and checkpoints (workbench.plan.goodput),
  with 5-95% intervals and the plan's warnings (workbench.plan.cost). `--mfu` overrides the modelled MFU, labelled
  so. --gpus x --days gives the budget those GPUs deliver in those wall days at the modelled MFU and goodput.
- Schedule, scaled from the Llama 3 405B recipe (16.55T tokens, ~1.2M steps): linear warmup over 0.67%
  of the steps (8,000 of 1.2M) but at least min(100 steps, 5% of the run); cosine to 1% of the peak
  (8e-5 -> 8e-7; the isoFLOP runs used 10%, `floor` changes it); batch ramp 1/4 -> 1/2 -> 1 of the final
  batch after 252M/16.55T and 2.87T/16.55T of the tokens; a final linear anneal to 0 over the last
  40M/16.55T of the tokens but at least 4 steps.
- Defaults by budget: below 1e15 FLOPs (a CPU-sized run) seq_len 256 and vocabulary 256 (bytes);
  from 1e15 up seq_len 8192 and Llama 3's vocabulary 128256.
- Inference-aware sizing (Sardana et al. 2023, Beyond Chinchilla-Optimal): minimise 6 N D + 2 N I over
  N with D set by L(N, D) = L(N*, D*), the loss of the compute-optimal model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from workbench.core.errors import WorkbenchError
from workbench.data.config import DataConfig, SourceConfig
from workbench.fit.laws import SIX_N, FlopsPerToken, Law, ParametricLaw
from workbench.fit.stats import percentiles
from workbench.model import flops
from workbench.model.config import ModelConfig
from workbench.model.shapes import BIN_WIDTH, ModelShape, ladder, shape_for_params
from workbench.plan import cost as plan_cost
from workbench.plan import hparams
from workbench.plan.efficiency import CALIBRATION, Calibration
from workbench.plan.goodput import Failures
from workbench.plan.hardware import GPUS_PER_NODE, Gpu
from workbench.plan.layout_cost import Layout, choose_layout
from workbench.train import config as cfg
from workbench.train.config import LayoutConfig

CPU_BUDGET_FLOPS = 1e15  # below this a plan is sized for the CPU: seq_len 256, bytes vocabulary
INFERENCE_OVERSPEND = 10.0  # an inference-aware plan spending more than this x the budget on training: warned
DEFAULT_DAYS = 30.0  # wall time a --compute plan aims for when neither --gpus nor --days is given
LLAMA3_TOKENS = 16.55e12
WARMUP_STEP_FRACTION = 8000 / 1.2e6
MIN_WARMUP_STEPS, MIN_WARMUP_FRACTION = 100, 0.05
RAMP = ((0.0, 0.25), (252e6 / LLAMA3_TOKENS, 0.5), (2.87e12 / LLAMA3_TOKENS, 1.0))
ANNEAL_FRACTION, MIN_ANNEAL_STEPS = 40e6 / LLAMA3_TOKENS, 4
FLOOR = 0.01


def default_seq_len(budget_flops: float) -> int:
    """256 for CPU-sized budgets (< 1e15 FLOPs), else 8192 (Llama 3's pre-training length)."""
    return 256 if budget_flops < CPU_BUDGET_FLOPS else 8192


def default_vocab(budget_flops: float) -> int:
    """256 (bytes) for CPU-sized budgets, else Llama 3's 128256."""
    return 256 if budget_flops < CPU_BUDGET_FLOPS else 128256


@dataclass(frozen=True)
class Interval:
    """5th, 50th and 95th percentiles over bootstrap draws."""

    p5: float
    p50: float
    p95: float


def _interval(values: np.ndarray) -> Interval:
    p5, p50, p95 = percentiles(values, [5.0, 50.0, 95.0])
    return Interval(float(p5), float(p50), float(p95))


def intervals(
    draws: ParametricLaw | None,
    budget_flops: float,
    shape_params: float,
    shape_tokens: float,
    flops: FlopsPerToken = SIX_N,
):
    """5-95% intervals of N*, D*, D*/N*, L* and the shape's loss over the draws (None without draws), the
    budget counted by `flops` (the law's convention)."""
    if draws is None or draws.size == 0:
        return None
    params, tokens = draws.optimum(budget_flops, flops)
    return {
        "params": _interval(params),
        "tokens": _interval(tokens),
        "tokens_per_param": _interval(tokens / params),
        "loss": _interval(draws.loss(params, tokens)),
        "shape_loss": _interval(draws.loss(shape_params, shape_tokens)),
        "draws": draws.size,
    }


@dataclass(frozen=True)
class Inference:
    """Inference-aware sizing for `inference_tokens` tokens served (Sardana et al. 2023)."""

    inference_tokens: float
    params: float
    tokens: float
    loss: float
    train_flops: float  # 6 N D of the inference-aware model
    compute_optimal_train_flops: float  # 6 N* D* = C
    total_flops: float  # 6 N D + 2 N I
    compute_optimal_total_flops: float  # 6 N* D* + 2 N* I

    @property
    def extra_train_flops(self) -> float:
        return self.train_flops - self.compute_optimal_train_flops


def inference_optimal(law: ParametricLaw, budget_flops: float, inference_tokens: float) -> Inference:
    """Minimise 6 N D + 2 N I subject to L(N, D) = L(N*, D*); I = 0 gives the compute-optimal model."""
    from scipy.optimize import brentq

    params_opt, tokens_opt = law.optimum(budget_flops)
    target = law.loss(params_opt, tokens_opt)
    params = params_opt
    if inference_tokens > 0:
        # d(6 N D + 2 N I)/d ln N / (6 N D) = 1 - alpha A N^-alpha / (beta (L - E - A N^-alpha)) + I / (3 D): it
        # tends to -inf at the smallest N that can reach the loss at all and is I / (3 D*) > 0 at N*, so the
        # root lies between; D stays in log space so that a small beta cannot overflow it
        floor_params = (law.A / (target - law.E)) ** (1.0 / law.alpha)

        def slope(log_n: float) -> float:
            model_term = law.A * math.exp(-law.alpha * log_n)
            room = target - law.E - model_term
            log_tokens = (math.log(law.B) - math.log(room)) / law.beta
            return 1 - law.alpha * model_term / (law.beta * room) + inference_tokens / 3 * math.exp(-log_tokens)

        low, high = math.log(floor_params) + 1e-9, math.log(params_opt)  # low: just above the pole
        if slope(high) > 0:  # else I is too small to move N* at float precision
            params = math.exp(brentq(slope, low, high, xtol=1e-13, rtol=1e-14, maxiter=500))
    tokens = law.tokens_for_loss(params, target) if params != params_opt else tokens_opt
    return Inference(
        inference_tokens,
        params,
        tokens,
        target,
        6 * params * tokens,
        6 * params_opt * tokens_opt,
        6 * params * tokens + 2 * params * inference_tokens,
        6 * params_opt * tokens_opt + 2 * params_opt * inference_tokens,
    )


def batch_and_lr(law: Law, budget_flops: float, seq_len: int) -> tuple[int, float, str]:
    """(batch tokens in whole sequences, peak LR, their sources) at `budget_flops` (workbench.plan.hparams)."""
    choice = hparams.choose(budget_flops, seq_len, law.hparams)
    return choice.batch_tokens, choice.lr_peak, choice.source


def micro_batch_for(batch_seqs: int, seq_len: int) -> int:
    """Sequences per process and micro-step: 1 at long context, else the largest divisor <= 16."""
    if seq_len >= 2048:
        return 1
    return max(m for m in range(1, min(16, batch_seqs) + 1) if batch_seqs % m == 0)


LLAMA3_SCHEDULE = "Llama 3 405B recipe scaled to the run (workbench.plan.planner)"


@dataclass(frozen=True)
class Schedule:
    """LR and batch schedule over tokens (see the module docstring for the Llama 3 scaling; a sweep's own
    cosine or WSD schedule in a plan that inherits it, workbench.plan.from_sweep)."""

    warmup_tokens: int
    warmup_steps: int
    floor: float
    anneal_tokens: int
    ramp: tuple[tuple[int, int], ...]  # (after_tokens, batch_tokens), first at 0
    steps: int
    kind: str = "cosine"  # cosine | wsd
    decay_fraction: float | None = None  # wsd: the linear decay's share of the run
    source: str = LLAMA3_SCHEDULE


def _ramp(tokens: int, batch_tokens: int, unit: int) -> tuple[tuple[int, int], ...]:
    """The Llama 3 ramp scaled to `tokens`; batches in multiples of `unit` tokens; repeats merged."""
    ramp: list[tuple[int, int]] = []
    for fraction, share in RAMP:
        batch = max(unit, round(batch_tokens * share / unit) * unit)
        after = int(fraction * tokens)
        if ramp and batch == ramp[-1][1]:
            continue
        if ramp and after == ramp[-1][0]:
            ramp.pop()
        ramp.append((after, batch))
    return tuple(ramp)


def _segments(ramp: tuple[tuple[int, int], ...], tokens: int) -> list[tuple[int, int]]:
    """(batch tokens, steps) of each segment of the ramp over a run of `tokens` tokens (a step per list entry
    would hold 10^9 entries for a run planned far past its optimum, e.g. with --inference-tokens)."""
    segments: list[tuple[int, int]] = []
    bounds = [after for after, _ in ramp[1:]] + [tokens]
    seen = 0
    for (_, batch), end in zip(ramp, bounds, strict=True):
        count = max(0, math.ceil((min(end, tokens) - seen) / batch))
        segments.append((batch, count))
        seen += count * batch
    return segments


def _first_steps_tokens(segments: list[tuple[int, int]], steps: int) -> int:
    """Tokens of the first `steps` steps."""
    total = 0
    for batch, count in segments:
        take = min(count, steps)
        total, steps = total + take * batch, steps - take
    return total


def schedule_for(tokens: int, batch_tokens: int, unit: int, floor: float = FLOOR) -> Schedule:
    """The Llama 3 405B schedule scaled to a run of `tokens` tokens with final batch `batch_tokens`."""
    ramp = _ramp(tokens, batch_tokens, unit)
    segments = _segments(ramp, tokens)
    steps = sum(count for _, count in segments)
    warmup_steps = max(math.ceil(WARMUP_STEP_FRACTION * steps), min(MIN_WARMUP_STEPS, math.ceil(0.05 * steps)))
    warmup_steps = min(warmup_steps, steps)
    anneal_tokens = max(round(ANNEAL_FRACTION * tokens), MIN_ANNEAL_STEPS * batch_tokens)
    warmup_tokens = _first_steps_tokens(segments, warmup_steps)
    return Schedule(warmup_tokens, warmup_steps, floor, min(anneal_tokens, tokens), ramp, steps)


def shape_for_plan(params: float, vocab_size: int) -> ModelShape:
    """The size rule's shape for `params`, with an error that names plan's options."""
    counts, _ = ladder(vocab_size)
    try:
        return shape_for_params(params, vocab_size)
    except WorkbenchError:
        raise WorkbenchError(
            f"the planned size {params:.3g} is outside the size rule's {counts[0]:.3g} to {counts[-1]:.3g} "
            f"parameters at vocabulary {vocab_size}",
            "Change --compute, or --vocab-size (256 suits CPU-sized budgets).",
        ) from None


def shape_for_tokens(
    budget_flops: float, tokens: float, seq_len: int, vocab_size: int, shapes: Sequence[ModelShape] | None = None
) -> ModelShape:
    """The rung (of `shapes`, else of the size rule's ladder) whose tokens at `budget_flops` (under the
    trainer's FLOP rule) come nearest `tokens` (in log)."""
    shapes = shapes or ladder(vocab_size)[1]
    per_token = budget_flops / tokens
    return min(shapes, key=lambda s: abs(math.log(flops.flops_per_token(s, seq_len) / per_token)))


def best_shape(law: ParametricLaw, budget_flops: float, seq_len: int, nearest: ModelShape) -> ModelShape:
    """The rung of the size rule's ladder, within a factor 3 of `nearest`, with the lowest predicted loss
    when it trains on the tokens that fill the budget under the trainer's FLOP rule (6N + attention).

    The closed form allocates C = 6ND; where attention is a large share of the FLOPs per token (small
    models, long sequences) the budget buys fewer tokens than 6ND says, and the best shape is smaller.
    For large models the two agree and this returns `nearest` or a neighbour.
    """
    counts, shapes = ladder(nearest.vocab_size)
    best, best_loss = nearest, law.loss(nearest.params, flops.tokens_for_budget(nearest, budget_flops, seq_len))
    for n, shape in zip(counts, shapes, strict=True):
        if nearest.params / 3 <= n <= nearest.params * 3:
            tokens = flops.tokens_for_budget(shape, budget_flops, seq_len)
            loss = law.loss(shape.params, tokens) if tokens > 0 else math.inf
            if loss < best_loss:
                best, best_loss = shape, loss
    return best


@dataclass(frozen=True)
class Plan:
    """Everything `workbench plan` reports; `shape`/`shape_tokens` is the model the flagship trains."""

    law: Law
    budget_flops: float  # nominal: the budget asked for (--compute, or what GPUs x days deliver)
    params: float
    tokens: float
    loss: float | None
    ci: dict | None
    shape: ModelShape
    shape_tokens: int
    shape_loss: float | None
    seq_len: int
    train_flops: float  # spent: the trainer's FLOPs per token x shape_tokens
    batch_tokens: int
    lr_peak: float
    hparams_source: str
    schedule: Schedule
    gpu: Gpu
    cost: plan_cost.Cost  # GPU time at the modelled MFU (or the --mfu override), with and without failures
    layout: Layout
    inference: Inference | None
    hparams: hparams.HparamChoice | None = None
    warnings: tuple[str, ...] = ()
    target_days: float | None = None  # --days, or the default 30 when neither --gpus nor --days is given
    target: str = "gpu"  # gpu | cpu: a CPU plan (a sweep trained on CPU) has no GPU-hours, days or layout
    predicted: dict | None = None  # the one predicted loss: {loss, interval: [lo, hi], interval_kind, of}

    @property
    def spent_flops(self) -> float:
        return self.train_flops

    @property
    def modelled_mfu(self) -> float:
        return self.layout.mfu

    @property
    def gpu_hours(self) -> float:
        """GPU-hours of the used GPUs' step time (no failures) at the modelled MFU or the override."""
        return self.cost.gpu_hours

    @property
    def days(self) -> float:
        return self.cost.days


def _shape_and_tokens(
    law: Law,
    budget_flops: float,
    seq_len: int,
    vocab_size: int,
    inference: Inference | None,
    shapes: Sequence[ModelShape] | None = None,
) -> tuple[ModelShape, int]:
    """The flagship's shape and tokens, solved with the trainer's FLOPs per token (6N + 12 L T d). `shapes`:
    a sweep's own ladder of named shapes, used for an isoFLOP law when the planned N lies within it."""
    params, tokens = law.optimum(budget_flops)
    if shapes and law.parametric is None and not inference:
        counts = [s.params for s in shapes]
        if min(counts) / BIN_WIDTH <= params <= max(counts) * BIN_WIDTH:
            shape = shape_for_tokens(budget_flops, tokens, seq_len, vocab_size, shapes)
            return shape, flops.tokens_for_budget(shape, budget_flops, seq_len)
    if inference:  # the flagship reaches the compute-optimal loss, however many FLOPs that takes
        shape = shape_for_plan(inference.params, vocab_size)
        return shape, int(math.ceil(law.parametric.tokens_for_loss(shape.params, inference.loss)))
    shape = shape_for_plan(params, vocab_size)
    if law.parametric is not None:
        shape = best_shape(law.parametric, budget_flops, seq_len, shape)
    else:  # a token law or an isoFLOP law: the tokens D* are the prediction; the shape spends C over them
        shape = shape_for_tokens(budget_flops, tokens, seq_len, vocab_size)
    return shape, flops.tokens_for_budget(shape, budget_flops, seq_len)


def _layout(
    shape: ModelShape,
    seq_len: int,
    schedule: Schedule,
    batch_tokens: int,
    micro: int,
    gpu: Gpu,
    gpus: int | None,
    days: float | None,
    train_flops: float,
    mfu_override: float | None,
    failures: Failures,
) -> Layout:
    """The costed layout: on `gpus` GPUs, or on enough GPUs to finish in `days` (default 30) wall days at its
    modelled MFU (or the override) and goodput."""
    ramp_seqs = tuple(b // seq_len for _, b in schedule.ramp)
    batch_seqs = batch_tokens // seq_len
    if gpus is not None:
        return choose_layout(shape, seq_len, micro, batch_seqs, gpu, gpus, fixed_gpus=True, ramp_seqs=ramp_seqs)
    target_days = days or DEFAULT_DAYS
    wanted = max(1, math.ceil(train_flops / (gpu.peak_flops * (mfu_override or 0.4) * target_days * 86400.0)))
    # the fastest layout on at most `wanted` GPUs; then more GPUs while the modelled days exceed the target
    for _ in range(40):
        try:
            layout = choose_layout(shape, seq_len, micro, batch_seqs, gpu, wanted, fixed_gpus=True, ramp_seqs=ramp_seqs)
            break
        except WorkbenchError:  # too few GPUs to hold the model
            if wanted > 2**24:
                raise
            wanted *= 2

    def days_of(lay: Layout) -> float:
        fraction = failures.of(lay.gpus, shape.params_total).fraction
        return train_flops / (gpu.peak_flops * (mfu_override or lay.mfu) * lay.gpus) / 86400.0 / max(fraction, 1e-9)

    for _ in range(8):  # the batch caps DP: past some count more GPUs no longer shorten the run
        if days_of(layout) <= target_days * (1 + 1e-9):
            break
        wanted = math.ceil(wanted * days_of(layout) / target_days) + 1
        bigger = choose_layout(shape, seq_len, micro, batch_seqs, gpu, wanted, fixed_gpus=True, ramp_seqs=ramp_seqs)
        layout = bigger if days_of(bigger) < days_of(layout) else layout
    return replace(layout, idle_gpus=0)


def make_plan(
    law: Law,
    budget_flops: float,
    *,
    gpu: Gpu,
    seq_len: int,
    vocab_size: int,
    mfu: float | None = None,
    gpus: int | None = None,
    days: float | None = None,
    inference_tokens: float | None = None,
    floor: float = FLOOR,
    hparams_leave_out: tuple[str, ...] = (),
    shapes: Sequence[ModelShape] | None = None,
    calibration: Calibration = CALIBRATION,
    failures: Failures = Failures(),
) -> Plan:
    """The plan for `budget_flops` FLOPs: give `gpus` (days follow) or `days` (GPUs follow), or neither (30 days);
    both: `gpus` GPUs, and `days` only the target the plan warns about missing. `mfu` overrides the modelled MFU
    of the GPU time; `calibration` is the efficiency (workbench.plan.efficiency_fit.calibration_without)."""
    params, tokens = law.optimum(budget_flops)
    loss = law.parametric.loss(params, tokens) if law.parametric else None
    inference = None
    if inference_tokens is not None:
        if law.parametric is None:
            raise WorkbenchError(
                f"--inference-tokens needs a loss law, and {law.name} gives tokens only",
                "Use --law chinchilla, epoch or a fit file.",
            )
        inference = inference_optimal(law.parametric, budget_flops, inference_tokens)
    shape, shape_tokens = _shape_and_tokens(law, budget_flops, seq_len, vocab_size, inference, shapes)
    train_flops = flops.training_flops(shape, shape_tokens, seq_len)
    shape_loss = law.parametric.loss(shape.params, shape_tokens) if law.parametric else None
    choice = hparams.choose(train_flops, seq_len, law.hparams, hparams_leave_out)  # at the spent budget
    micro = micro_batch_for(choice.batch_tokens // seq_len, seq_len)
    schedule = schedule_for(shape_tokens, choice.batch_tokens, micro * seq_len, floor)
    gpu = replace(gpu, efficiency=calibration.efficiency)
    layout = _layout(shape, seq_len, schedule, choice.batch_tokens, micro, gpu, gpus, days, train_flops, mfu, failures)
    goodput = failures.of(layout.gpus, shape.params_total)
    if goodput.fraction <= 0:
        raise WorkbenchError(
            f"--failures-per-gpu-day {failures.failures_per_gpu_day:g} on {layout.gpus:,} GPUs: a failure every "
            f"{goodput.mtbf_s:.3g} s, sooner than a restart and a checkpoint, so the run would never progress",
            "Give a failure rate such as 5e-4 per GPU-day (Llama 3's), or fewer GPUs.",
        )
    cost = plan_cost.Cost(train_flops, gpu.peak_flops, layout.gpus, layout.mfu, mfu, goodput, calibration)
    target = days if days is not None else (DEFAULT_DAYS if gpus is None else None)
    extra = tuple(f"batch/LR {w}" for w in choice.warnings)
    if inference is not None and train_flops > INFERENCE_OVERSPEND * budget_flops:
        extra += (
            f"serving {inference.inference_tokens:.3g} tokens makes the loss-matched model train on "
            f"{shape_tokens / shape.params:,.0f} tokens per parameter, {train_flops / budget_flops:,.0f}x the budget's "
            "FLOPs: far past the law's data (a larger --compute, or fewer --inference-tokens)",
        )
    ci = intervals(law.draws, budget_flops, shape.params, shape_tokens, law.flops)
    return Plan(
        law,
        budget_flops,
        params,
        tokens,
        loss,
        ci,
        shape,
        shape_tokens,
        shape_loss,
        seq_len,
        train_flops,
        choice.batch_tokens,
        choice.lr_peak,
        choice.source,
        schedule,
        gpu,
        cost,
        layout,
        inference,
        choice,
        plan_cost.warnings(cost, gpu, shape, target, extra),
        target,
        predicted=_predicted(shape_loss, ci),
    )


def _predicted(shape_loss: float | None, ci: dict | None) -> dict | None:
    """The plan's one predicted loss: the loss law's at the planned shape and tokens, with its 5-95% interval."""
    if shape_loss is None:
        return None
    interval = [ci["shape_loss"].p5, ci["shape_loss"].p95] if ci else None
    kind = f"5-95% over {ci['draws']} bootstrap draws of the law" if ci else "none (the law has no bootstrap draws)"
    return {"loss": shape_loss, "interval": interval, "interval_kind": kind, "of": "the planned shape on its tokens"}


def flagship_config(plan: Plan, data_dir: str, run_dir: str, name: str):
    """The workbench.config.TrainConfig that trains the planned shape (the trainer's one config)."""

    cpu = plan.budget_flops < CPU_BUDGET_FLOPS
    batch_seqs = plan.batch_tokens // plan.seq_len
    tokens = plan.shape_tokens
    layout = layout_config(plan.layout) if not cpu or plan.layout.tp * plan.layout.pp > 1 else None
    meta = {
        "law": plan.law.name,
        "compute_flops": plan.budget_flops,
        "predicted_loss": (plan.predicted or {}).get("loss"),
        "params_opt": plan.params,
        "tokens_opt": plan.tokens,
        "hparams_source": plan.hparams_source,
        "gpu": plan.gpu.name,
    }
    if plan.inference:
        meta["inference_tokens"] = plan.inference.inference_tokens
    return cfg.TrainConfig(
        name=name,
        run_dir=run_dir,
        meta=meta,
        model=ModelConfig(**{k: v for k, v in plan.shape.as_dict().items() if k != "name"}),
        data=DataConfig(sources=[SourceConfig(path=data_dir)], seq_len=plan.seq_len),
        optim=cfg.OptimConfig(lr_peak=plan.lr_peak, weight_decay=0.1, weight_decay_mode="lr_scaled"),
        schedule=cfg.ScheduleConfig(
            kind="cosine",
            warmup_tokens=plan.schedule.warmup_tokens,
            floor=plan.schedule.floor,
            anneal_tokens=plan.schedule.anneal_tokens,
        ),
        batch=cfg.BatchConfig(
            batch_tokens=plan.batch_tokens,
            micro_batch=plan.layout.micro_batch,
            ramp=[cfg.RampStep(after_tokens=a, batch_tokens=b) for a, b in plan.schedule.ramp],
        ),
        stop=cfg.StopConfig(tokens=tokens),
        # about 20 evaluations over the run; checkpoints only at the end and on signals on the CPU
        eval=cfg.EvalConfig(
            every_tokens=max(plan.batch_tokens, tokens // 20), batch_seqs=_eval_seqs(batch_seqs, layout)
        ),
        checkpoint=cfg.CheckpointConfig(every_tokens=0 if cpu else max(plan.batch_tokens, tokens // 100)),
        runtime=cfg.RuntimeConfig() if cpu else cfg.RuntimeConfig(device="cuda", dtype="bf16", parallel="fsdp"),
        layout=layout,
    )


def _eval_seqs(batch_seqs: int, layout: LayoutConfig | None) -> int:
    """Sequences of an evaluation batch: up to 16, and under PP enough to cut into the micro-batches the
    schedule needs (cfg.eval_pipeline_microbatches), so the run's evaluations cannot fail after training."""
    seqs = min(16, batch_seqs)
    while layout is not None and cfg.eval_pipeline_microbatches(seqs, layout.micro_batch or 1, layout) is None:
        seqs += 1
    return seqs


def layout_config(layout: Layout):
    """The config's layout block (workbench.config.LayoutConfig) of the layout search's result: DP is
    sharded with FSDP2 (the memory model's sharding of the optimizer state); a node holds at most
    GPUS_PER_NODE GPUs. A CPU plan of one process per replica keeps none (the caller), so the demo's
    flagship trains exactly as a sweep run does."""

    interleaved = layout.schedule == "interleaved"
    return LayoutConfig(
        tp=layout.tp,
        pp=layout.pp,
        dp_replicate=1,
        dp_shard=layout.dp,
        cp=1,
        micro_batch=layout.micro_batch,
        grad_accum=layout.grad_accum,
        recompute=layout.recompute,
        gpus_per_node=min(layout.gpus, GPUS_PER_NODE),
        pp_schedule="interleaved_1f1b" if interleaved else "1f1b",
        pp_stages_per_rank=layout.virtual_stages if interleaved else 1,
    )
