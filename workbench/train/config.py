"""The trainer's config (`workbench train CONFIG.yaml`): every section of a run, resolved once from YAML."""

from __future__ import annotations

import itertools
import re
from typing import Annotated, Literal

from pydantic import Field, model_validator

from workbench.core.configfile import Count, Number, Strict
from workbench.core.errors import WorkbenchError
from workbench.data.config import DataConfig
from workbench.model.config import ModelConfig
from workbench.train.microbatches import pipeline_microbatches_ok

Beta = Annotated[Number, Field(ge=0, lt=1)]  # AdamW's moment decay rates live in [0, 1)


class OptimConfig(Strict):
    """AdamW. `weight_decay_mode: lr_scaled` decays by weight_decay x the step's LR (Llama 3's 0.1 x LR
    uses weight_decay 0.1 and this mode, i.e. torch's coupled-to-LR decay); `constant` decays by
    weight_decay x lr_peak each step regardless of the schedule."""

    lr_peak: Number = Field(gt=0)
    betas: tuple[Beta, Beta] = (0.9, 0.95)
    eps: Number = Field(default=1e-8, gt=0)
    weight_decay: Number = Field(default=0.1, ge=0)
    weight_decay_mode: Literal["lr_scaled", "constant"] = "lr_scaled"
    grad_clip: Number = Field(default=1.0, ge=0)


class ScheduleConfig(Strict):
    """LR schedule over tokens: linear warmup, then cosine to `floor` x peak (cosine), or stable then a
    linear decay over the last `decay_fraction` of the run (wsd), or constant; finally a linear anneal
    to 0 over the last `anneal_tokens` tokens (0: off)."""

    kind: Literal["cosine", "wsd", "constant"] = "cosine"
    warmup_tokens: Count = Field(default=0, ge=0)
    floor: Number = Field(default=0.1, ge=0, le=1)
    decay_fraction: Number = Field(default=0.2, ge=0, le=1)
    anneal_tokens: Count = Field(default=0, ge=0)


class RampStep(Strict):
    after_tokens: Count = Field(ge=0)
    batch_tokens: Count = Field(gt=0)


class BatchConfig(Strict):
    """Global batch in tokens (a multiple of seq_len x micro_batch x world size), the micro-batch in
    sequences per process, and an optional ramp by tokens seen (Llama 3 405B: 4M -> 8M -> 16M)."""

    batch_tokens: Count = Field(gt=0)
    micro_batch: Count = Field(default=16, gt=0)
    ramp: list[RampStep] = Field(default_factory=list)

    def all_batches(self) -> list[tuple[str, int]]:
        """(field, batch tokens) of the batch and of each step of the ramp."""
        ramp = [(f"batch.ramp.{i}.batch_tokens", r.batch_tokens) for i, r in enumerate(self.ramp)]
        return [("batch.batch_tokens", self.batch_tokens), *ramp]


class StopConfig(Strict):
    """Stop after `tokens` tokens or after `budget_flops` FLOPs (converted to tokens by `flop_rule`)."""

    tokens: Count | None = Field(default=None, gt=0)
    budget_flops: Number | None = Field(default=None, gt=0)
    flop_rule: Literal["6N+attn", "6N"] = "6N+attn"

    @model_validator(mode="after")
    def _one_target(self) -> StopConfig:
        if (self.tokens is None) == (self.budget_flops is None):
            raise ValueError("give exactly one of tokens or budget_flops")
        return self


class EvalConfig(Strict):
    """Validation: `batches` fixed batches of `batch_seqs` sequences from the held-out split (pooled over
    the sources: `val_loss`). Named held-out sets add one loss each, `val_loss_NAME`: `sets` maps a name to
    a prepared folder (its val split), and `per_source: true` adds one per data source, named by its folder."""

    every_tokens: Count = Field(default=0, ge=0)
    batches: Count = Field(default=8, gt=0)
    batch_seqs: Count = Field(default=16, gt=0)
    sets: dict[str, str] = Field(default_factory=dict)
    per_source: bool = False

    @model_validator(mode="after")
    def _names(self) -> EvalConfig:
        bad = [n for n in self.sets if not re.fullmatch(r"[A-Za-z0-9_]+", n)]
        if bad:
            raise ValueError(f"eval.sets name {bad[0]!r} must be letters, digits and _ (it names a column)")
        return self


class WandbConfig(Strict):
    """Weights & Biases: mode offline needs no network (`wandb sync` later); None: W&B's default (WANDB_MODE)."""

    project: str
    entity: str | None = None
    group: str | None = None  # default: the sweep
    mode: Literal["online", "offline", "disabled"] | None = None
    tags: list[str] = Field(default_factory=list)


class LoggingConfig(Strict):
    """Trackers the trainer also logs to, from rank 0 (see workbench.train.trackers)."""

    wandb: WandbConfig | None = None
    tensorboard: bool = False


class CheckpointConfig(Strict):
    """Checkpoints under RUN_DIR/ckpt every `every_tokens` tokens (0: only on signals and at the end),
    keeping the last `keep` plus those at `save_at_tokens`. `init_from` starts from another run's
    checkpoint (a WSD cooldown branch): weights, optimizer state, step and tokens seen, so the branch
    continues the trunk's data stream and its schedule (over the branch's own total) from there.
    `async_save` (runs with a layout: block, whose checkpoints are sharded): the state is copied to CPU
    memory and the step loop goes on while a background thread writes and hashes it; the checkpoint is
    published (manifest, rename) at the next logging step after every rank has finished writing."""

    every_tokens: Count = Field(default=0, ge=0)
    keep: Count = Field(default=2, gt=0)
    save_at_tokens: list[Count] = Field(default_factory=list)  # kept for good: a WSD trunk's branch points
    init_from: str | None = None  # a checkpoint dir, or RUN_DIR@TOKENS for RUN_DIR's checkpoint at TOKENS
    async_save: bool = False


class FaultConfig(Strict):
    """A NaN/inf loss, or a loss above spike_factor x the running mean, rolls back to the last good
    checkpoint and skips the offending batches, at most max_rollbacks times; then status `diverged`."""

    spike_factor: Number = Field(default=3.0, gt=1)
    max_rollbacks: Count = Field(default=3, ge=0)


class RuntimeConfig(Strict):
    """Where and how a run computes. dtype: bf16 (auto on a GPU) or fp32, the exact test mode (see
    workbench.train.parallel.distributed.mixed_precision_policy). log_every_steps: a progress line every N
    steps, and the trainer's host syncs: the step loop reads losses, gradient norms and signals (and
    catches a non-finite loss or a spike, then rolls back) only every N steps and before evaluations,
    checkpoints and the end, so a GPU never waits for the host in between."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "fp32", "bf16"] = "auto"
    compile: bool = False
    threads: Count | None = Field(default=None, gt=0, le=4096)
    parallel: Literal["ddp", "fsdp"] = "ddp"
    log_every_steps: Count = Field(default=10, gt=0)  # a progress line (a terminal: a bar) and a host sync


class LayoutConfig(Strict):
    """The package's one description of a parallel layout (what `workbench plan` writes for the flagship,
    what `flagship launch` sizes the job from and what the trainer builds): the DeviceMesh (pp, dp_replicate,
    dp_shard, tp) of world = pp x dp_replicate x dp_shard x tp processes, TP innermost (inside a node),
    FSDP2 over dp_shard (HSDP with dp_replicate), activation checkpointing, and the pipeline schedule.
    micro_batch and grad_accum record the plan's choice (micro_batch must equal batch.micro_batch).
    Context parallelism is declared but unsupported (cp must be 1)."""

    tp: Count = Field(default=1, gt=0)
    pp: Count = Field(default=1, gt=0)
    dp_replicate: Count = Field(default=1, gt=0)
    dp_shard: Count = Field(default=1, gt=0)
    cp: Count = Field(default=1, gt=0)
    micro_batch: Count | None = Field(default=None, gt=0)
    grad_accum: Count | None = Field(default=None, gt=0)
    recompute: Literal["none", "selective", "full"] = "none"
    gpus_per_node: Count = Field(default=8, gt=0)
    pp_schedule: Literal["1f1b", "interleaved_1f1b"] = "1f1b"
    pp_stages_per_rank: Count = Field(default=1, gt=0)

    @model_validator(mode="after")
    def _supported(self) -> LayoutConfig:
        if self.cp != 1:
            raise ValueError(f"context parallelism (cp {self.cp}) is not supported yet; set layout.cp: 1")
        if self.pp_schedule == "1f1b" and self.pp_stages_per_rank != 1:
            raise ValueError("pp_stages_per_rank > 1 needs pp_schedule: interleaved_1f1b")
        return self

    @property
    def world(self) -> int:
        """Processes (GPUs) of the layout: pp x dp_replicate x dp_shard x tp (cp is 1)."""
        return self.pp * self.dp_replicate * self.dp_shard * self.tp * self.cp

    @property
    def gpus(self) -> int:
        return self.world

    @property
    def nodes(self) -> int:
        return -(-self.gpus // self.gpus_per_node)

    def describe(self) -> str:
        """TP x PP x CP x DP (replicate x shard) on nodes x GPUs, for messages."""
        return (
            f"TP {self.tp} x PP {self.pp} x CP {self.cp} x DP {self.dp_replicate}x{self.dp_shard} "
            f"= {self.gpus} GPUs ({self.nodes} nodes of {self.gpus_per_node})"
        )


def _runs(n: int, layout: LayoutConfig) -> bool:
    return pipeline_microbatches_ok(n, layout.pp, layout.pp_schedule != "1f1b")


def eval_pipeline_microbatches(batch_seqs: int, micro_batch: int, layout: LayoutConfig) -> int | None:
    """The micro-batches an evaluation batch of `batch_seqs` sequences is cut into under PP: equal ones, as
    many as the schedule needs and at most `micro_batch` sequences each where possible; None if no count works."""
    if layout.pp == 1:
        return 1
    valid = [n for n in range(1, batch_seqs + 1) if batch_seqs % n == 0 and _runs(n, layout)]
    small = [n for n in valid if batch_seqs // n <= micro_batch]
    return min(small) if small else max(valid, default=None)


def _schedule_rule(layout: LayoutConfig) -> str:
    if layout.pp_schedule == "1f1b":
        return f"1F1B over pp {layout.pp} needs at least {layout.pp}"
    return f"interleaved 1F1B over pp {layout.pp} needs a multiple of its rounds, n // {layout.pp}"


def _nearest(value: int, ok, unit: int = 1) -> str:
    """The nearest multiples of `unit` below and above `value` for which ok(multiple // unit) holds."""
    below = next((k * unit for k in range(-(-value // unit) - 1, 0, -1) if ok(k)), None)
    above = next(k * unit for k in itertools.count(value // unit + 1) if ok(k))  # k = a multiple of pp always is
    return f"{below} or {above}" if below else f"{above}"


def check_pipeline_batches(cfg: TrainConfig) -> None:
    """Every pipeline schedule of a run, training and evaluation, gets the micro-batches it needs: each batch
    of the ramp gives each data-parallel replica batch_tokens / (seq_len x micro_batch x replicas) micro-
    batches, and an eval batch of eval.batch_seqs sequences is cut into eval_pipeline_microbatches. Raises
    ValueError (one line: the field, the rule, the nearest valid values)."""
    lay = cfg.layout
    if lay is None or lay.pp == 1:
        return
    replicas, micro, seq = lay.dp_replicate * lay.dp_shard, cfg.batch.micro_batch, cfg.data.seq_len
    unit = seq * micro * replicas
    for where, tokens in cfg.batch.all_batches():
        n = tokens // unit
        if not _runs(n, lay):
            raise ValueError(
                f"{where} {tokens} gives each data-parallel replica {n} pipeline micro-batch(es) of batch.micro_batch "
                f"{micro} ({tokens // seq} sequences over {replicas} replicas), and {_schedule_rule(lay)}; "
                f"nearest valid {where}: {_nearest(tokens, lambda k: _runs(k, lay), unit)}"
            )
    seqs = cfg.eval.batch_seqs
    if eval_pipeline_microbatches(seqs, micro, lay) is None:
        raise ValueError(
            f"eval.batch_seqs {seqs} cannot be cut into equal pipeline micro-batches: {_schedule_rule(lay)}; "
            f"nearest valid eval.batch_seqs: {_nearest(seqs, lambda k: eval_pipeline_microbatches(k, micro, lay))}"
        )


class TrainConfig(Strict):
    """Everything one training run needs; `workbench train CONFIG.yaml` and `train.main(config)` take it."""

    name: str = "run"
    run_dir: str
    seed: Count = Field(default=0, ge=0, lt=2**32)  # torch and numpy take seeds in [0, 2^32)
    # labels the launcher sets and the store reads: sweep, budget_flops, target_params, branch_of, ...
    meta: dict[str, str | float | int | None] = Field(default_factory=dict)
    model: ModelConfig
    data: DataConfig
    optim: OptimConfig
    schedule: ScheduleConfig = ScheduleConfig()
    batch: BatchConfig
    stop: StopConfig
    eval: EvalConfig = EvalConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    faults: FaultConfig = FaultConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    logging: LoggingConfig = LoggingConfig()
    layout: LayoutConfig | None = None  # None: runtime.parallel over all processes (DDP or FSDP2)

    @model_validator(mode="after")
    def _layout_fits(self) -> TrainConfig:
        lay = self.layout
        if lay is None:
            return self
        if lay.micro_batch is not None and lay.micro_batch != self.batch.micro_batch:
            raise ValueError(
                f"layout.micro_batch {lay.micro_batch} differs from batch.micro_batch {self.batch.micro_batch}"
            )
        if self.model.n_heads % lay.tp or self.model.n_kv_heads % lay.tp:
            raise ValueError(f"layout.tp {lay.tp} must divide model.n_heads and model.n_kv_heads")
        if self.model.n_layers < lay.pp * lay.pp_stages_per_rank:
            raise ValueError(f"layout: {lay.pp} x {lay.pp_stages_per_rank} pipeline stages exceed model.n_layers")
        return self

    @model_validator(mode="after")
    def _lengths_fit(self) -> TrainConfig:
        if self.stop.tokens is not None:
            lengths_fit(self, self.stop.tokens, ValueError)
        return self

    @model_validator(mode="after")
    def _async_save_is_sharded(self) -> TrainConfig:
        if self.checkpoint.async_save and self.layout is None:
            raise ValueError("checkpoint.async_save needs a layout: block (its checkpoints are sharded, DCP)")
        return self

    @model_validator(mode="after")
    def _batch_fits(self) -> TrainConfig:
        seq = self.data.seq_len
        for where, tokens in self.batch.all_batches():
            if tokens % seq:
                raise ValueError(f"{where} {tokens} is not a multiple of data.seq_len {seq}")
        check_pipeline_batches(self)
        return self


def lengths_fit(cfg: TrainConfig, total_tokens: int, error: type[Exception] = WorkbenchError) -> None:
    """The token lengths of a run's phases fit in the run: warmup, the LR anneal and the data anneal each at
    most the run's `total_tokens` (a warmup longer than the run trains at a sliver of the peak LR and ends
    "completed" having learned little). Called by the config (stop.tokens) and the trainer (any stop)."""
    for field, tokens in (
        ("schedule.warmup_tokens", cfg.schedule.warmup_tokens),
        ("schedule.anneal_tokens", cfg.schedule.anneal_tokens),
        ("data.anneal_tokens", cfg.data.anneal_tokens),
    ):
        if tokens > total_tokens:
            message = f"{field} {tokens:,} is longer than the run ({total_tokens:,} tokens)"
            raise error(message) if error is not WorkbenchError else WorkbenchError(message, "Shorten it.")
