"""Typed configs resolved once from YAML; every error names the file, the line and the field.

Numbers such as 1e18, 350M or 16B are accepted wherever a count or a float is expected (YAML 1.1
reads `1e18` as a string; these types read it as a number).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from workbench.errors import WorkbenchError
from workbench.units import parse_number


def number(value: Any) -> float:
    """A config value as a finite float (1e18, '6e18', '350M'); a ValueError that pydantic places at the field."""
    try:
        return parse_number(value)
    except WorkbenchError as err:  # pydantic collects ValueErrors with the field's location
        raise ValueError(str(err.message).removeprefix("value: ") + f"; {err.hint}") from None


def count(value: Any) -> int:
    """A config value as a whole number (4096, '16B', 1e6); a ValueError that pydantic places at the field."""
    as_float = number(value)
    if as_float != math.floor(as_float):
        raise ValueError(f"{value!r} is not a whole number")
    return int(as_float)


Number = Annotated[float, BeforeValidator(number)]
Count = Annotated[int, BeforeValidator(count)]


class Strict(BaseModel):
    """Unknown keys are errors; configs are frozen once resolved."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(Strict):
    """The decoder shape (see workbench.shapes) and its numerics."""

    n_layers: Count = Field(gt=0)
    d_model: Count = Field(gt=0)
    n_heads: Count = Field(gt=0)
    n_kv_heads: Count = Field(gt=0)
    ffn_dim: Count = Field(gt=0)
    vocab_size: Count = Field(gt=1)
    rope_theta: Number = 500000.0
    norm_eps: Number = 1e-5
    init_std: Number = 0.02

    @model_validator(mode="after")
    def _heads_fit(self) -> ModelConfig:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_kv_heads {self.n_kv_heads} does not divide n_heads {self.n_heads}")
        if (self.d_model // self.n_heads) % 2:
            raise ValueError("head_dim (d_model / n_heads) must be even for RoPE")
        return self

    @classmethod
    def from_shape(cls, shape, **numerics) -> ModelConfig:
        """The config of a workbench.shapes.ModelShape (plus rope_theta, norm_eps, init_std overrides)."""
        fields = ("n_layers", "d_model", "n_heads", "n_kv_heads", "ffn_dim", "vocab_size")
        return cls(**{f: getattr(shape, f) for f in fields}, **numerics)

    def shape(self, name: str = "model"):
        """The pure ModelShape for parameter and FLOP accounting."""
        from workbench.shapes import ModelShape

        return ModelShape(
            name, self.n_layers, self.d_model, self.n_heads, self.n_kv_heads, self.ffn_dim, self.vocab_size
        )


class SourceConfig(Strict):
    """One prepared data set (a folder written by `workbench data prepare`) and its mixture weight."""

    path: str
    weight: Number = Field(default=1.0, gt=0)


class DataConfig(Strict):
    """What the trainer reads: a weighted mixture of prepared sources, and an optional annealing mixture
    used for the last `anneal_tokens` tokens (Llama 3 upweights high-quality data at the end)."""

    sources: list[SourceConfig] = Field(min_length=1)
    seq_len: Count = Field(default=256, gt=0)
    anneal_sources: list[SourceConfig] = Field(default_factory=list)
    anneal_tokens: Count = Field(default=0, ge=0)


class OptimConfig(Strict):
    """AdamW. `weight_decay_mode: lr_scaled` decays by weight_decay x the step's LR (Llama 3's 0.1 x LR
    uses weight_decay 0.1 and this mode, i.e. torch's coupled-to-LR decay); `constant` decays by
    weight_decay x lr_peak each step regardless of the schedule."""

    lr_peak: Number = Field(gt=0)
    betas: tuple[Number, Number] = (0.9, 0.95)
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
    """Trackers the trainer also logs to, from rank 0 (see workbench.trackers)."""

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
    def _batch_fits(self) -> TrainConfig:
        seq = self.data.seq_len
        for where, tokens in [("batch.batch_tokens", self.batch.batch_tokens)] + [
            (f"batch.ramp.{i}.batch_tokens", r.batch_tokens) for i, r in enumerate(self.batch.ramp)
        ]:
            if tokens % seq:
                raise ValueError(f"{where} {tokens} is not a multiple of data.seq_len {seq}")
        return self


def load_yaml(path: str | Path) -> tuple[Any, dict[tuple, int]]:
    """Read a YAML file: (data, {key path: line number}). Malformed YAML, a file that is not UTF-8 text,
    a duplicate key, an anchor or alias (a few bytes of nested aliases expand without bound) and
    nesting deeper than MAX_YAML_DEPTH are one-line errors at file:line."""
    path = Path(path)
    if not path.is_file():
        raise WorkbenchError(f"config file {path} not found", "Check the path.")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise WorkbenchError(
            f"{path}: not a UTF-8 text file (byte {err.start})", "Give the YAML config file, saved as UTF-8."
        ) from None
    loader = None
    try:
        loader = _TreeLoader(text)  # checks the characters first
        node = loader.get_single_node()
        lines = _key_lines(node, source=str(path))
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        position = getattr(err, "position", None)  # a ReaderError: a character YAML does not allow
        line = mark.line + 1 if mark else text[:position].count("\n") + 1 if isinstance(position, int) else None
        where = f"{path}:{line}" if line else str(path)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise WorkbenchError(f"{where}: malformed YAML ({problem})", "Fix the YAML syntax there.") from None
    except _YamlRefusal as err:
        raise WorkbenchError(f"{path}:{err.line}: {err.message}", err.hint) from None
    except RecursionError:
        raise WorkbenchError(f"{path}: YAML nested too deeply", "Flatten the file.") from None
    finally:
        if loader is not None:
            loader.dispose()
    return data, lines


MAX_YAML_DEPTH = 64


class _TreeLoader(yaml.SafeLoader):
    """A safe loader whose node graph is a tree: anchors and aliases are refused where they appear."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _refused(event.start_mark, f"alias *{event.anchor}", "aliases are not supported")
        event = self.peek_event()
        if getattr(event, "anchor", None) is not None:
            raise _refused(event.start_mark, f"anchor &{event.anchor}", "anchors are not supported")
        return super().compose_node(parent, index)


def _refused(mark, what: str, why: str) -> WorkbenchError:
    return _YamlRefusal(mark.line + 1, f"{what} ({why})", "Write the values out in full.")


class _YamlRefusal(WorkbenchError):
    """A refused YAML construct; load_yaml adds the file name."""

    def __init__(self, line: int, message: str, hint: str):
        super().__init__(message, hint)
        self.line = line


def _key_lines(node: yaml.Node | None, prefix: tuple = (), source: str = "config") -> dict[tuple, int]:
    """{key path: line} for every key and list item; visits each node once (iteratively, the tree has no
    aliases) and refuses duplicate keys and nesting deeper than MAX_YAML_DEPTH."""
    lines: dict[tuple, int] = {}
    stack = [(node, prefix)]
    while stack:
        current, where = stack.pop()
        if len(where) - len(prefix) > MAX_YAML_DEPTH:
            raise WorkbenchError(f"{source}:{current.start_mark.line + 1}: YAML nested too deeply", "Flatten the file.")
        if isinstance(current, yaml.MappingNode):
            seen: dict[tuple, int] = {}
            for key, value in current.value:
                ident = (key.tag, key.value) if isinstance(key, yaml.ScalarNode) else (key.tag, id(key))
                line = key.start_mark.line + 1
                if ident in seen:
                    raise WorkbenchError(
                        f"{source}:{line}: duplicate key '{key.value}' (first at line {seen[ident]})",
                        "Keep one of them.",
                    )
                seen[ident] = line
                path = (*where, key.value if isinstance(key, yaml.ScalarNode) else line)
                lines[path] = line
                stack.append((value, path))
        elif isinstance(current, yaml.SequenceNode):
            for i, item in enumerate(current.value):
                lines[(*where, i)] = item.start_mark.line + 1
                stack.append((item, (*where, i)))
    return lines


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """The valid keys of the sub-model that `loc` (ending in the bad key) points into."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or current is None:
            continue
        field = current.model_fields.get(part) if hasattr(current, "model_fields") else None
        current = _model_in(field.annotation) if field else None
    return sorted(current.model_fields) if current is not None and hasattr(current, "model_fields") else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def line_of(lines: dict[tuple, int], key: tuple) -> int | None:
    """The line of a key path (from `load_yaml`), or of its nearest parent that has one; None if none."""
    return next((lines[key[:i]] for i in range(len(key), 0, -1) if key[:i] in lines), None)


class Where:
    """`file:line` of a key path of a loaded YAML file, for errors found after validation."""

    def __init__(self, source: str, lines: dict[tuple, int]):
        self.source, self.lines = source, lines

    def __call__(self, key: tuple) -> str:
        line = line_of(self.lines, key)
        return f"{self.source}:{line}" if line else self.source


def describe(
    err: ValidationError,
    model: type[BaseModel],
    where: str | Where,
    at: tuple | None = None,
    context: str = "",
    hint: str = "",
) -> WorkbenchError:
    """One line for the first problem of a ValidationError: file:line, field, what is wrong, the fix.

    `where` is the file (a Where finds the field's line); `at` places the error at that key path instead
    (for a model built from a file rather than read from it); `context` names what was being built;
    `hint` replaces the default fix.
    """
    first = err.errors()[0]
    loc = tuple(p for p in first["loc"] if not (isinstance(p, str) and p.startswith(("function-", "tagged-"))))
    field = ".".join(str(p) for p in loc) or "(top level)"
    if not field.isprintable():  # a key with a newline or a control character stays on one line
        field = repr(field)[1:-1]
    place = where(loc if at is None else at) if isinstance(where, Where) else where
    prefix = f"{context}: " if context else ""
    if first["type"] == "extra_forbidden":
        valid = _fields_at(model, loc)
        hint = hint or f"Valid keys here: {', '.join(valid)}."
        return WorkbenchError(f"{prefix}unknown key '{field}'", hint, where=place)
    if first["type"] == "missing":
        return WorkbenchError(f"{prefix}missing required key '{field}'", hint or "Add it to the config.", where=place)
    message = first["msg"].removeprefix("Value error, ")
    value = first.get("input")
    got = "" if isinstance(value, dict | list) else f" (got {value!r})"
    subject = f"{field}: " if loc else ""
    return WorkbenchError(f"{prefix}{subject}{message}{got}", hint or "Fix this value in the config.", where=place)


def parse_model(model: type[BaseModel], data: Any, source: str, lines: dict[tuple, int] | None = None):
    """Validate `data` against `model`; any problem becomes a one-line WorkbenchError."""
    if not isinstance(data, dict):
        raise WorkbenchError(
            f"{source}: expected a mapping of keys at the top level, got {type(data).__name__}",
            "Write the config as `key: value` lines.",
        )
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise describe(err, model, Where(source, lines or {})) from None


def load(model: type[BaseModel], path: str | Path):
    """Load and validate a YAML config file against `model`."""
    data, lines = load_yaml(path)
    return parse_model(model, data, str(path), lines)


def dump_yaml(config: BaseModel) -> str:
    """The config as YAML that `load` reads back to an equal object."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
