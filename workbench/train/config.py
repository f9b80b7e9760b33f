"""The trainer's config (`workbench train CONFIG.yaml`): every section of a run, resolved once from YAML."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, model_validator

from workbench.core.configfile import Count, Number, Strict
from workbench.core.errors import WorkbenchError
from workbench.data.config import DataConfig
from workbench.model.config import ModelConfig

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
    continues the trunk's data stream and its schedule (over the branch's own total) from there."""

    every_tokens: Count = Field(default=0, ge=0)
    keep: Count = Field(default=2, gt=0)
    save_at_tokens: list[Count] = Field(default_factory=list)  # kept for good: a WSD trunk's branch points
    init_from: str | None = None  # a checkpoint dir, or RUN_DIR@TOKENS for RUN_DIR's checkpoint at TOKENS


class FaultConfig(Strict):
    """A NaN/inf loss, or a loss above spike_factor x the running mean, rolls back to the last good
    checkpoint and skips the offending batches, at most max_rollbacks times; then status `diverged`."""

    spike_factor: Number = Field(default=3.0, gt=1)
    max_rollbacks: Count = Field(default=3, ge=0)


class RuntimeConfig(Strict):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "fp32", "bf16"] = "auto"
    compile: bool = False
    threads: Count | None = Field(default=None, gt=0, le=4096)
    parallel: Literal["ddp", "fsdp"] = "ddp"
    log_every_steps: Count = Field(default=10, gt=0)  # a progress log line every N steps (a terminal: a bar)


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
    def _batch_fits(self) -> TrainConfig:
        seq = self.data.seq_len
        for where, tokens in [("batch.batch_tokens", self.batch.batch_tokens)] + [
            (f"batch.ramp.{i}.batch_tokens", r.batch_tokens) for i, r in enumerate(self.batch.ramp)
        ]:
            if tokens % seq:
                raise ValueError(f"{where} {tokens} is not a multiple of data.seq_len {seq}")
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
