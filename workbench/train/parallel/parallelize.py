"""Apply a TP x PP x DP layout to the plain model (workbench.model.transformer), in a fixed order.

    mesh (pp, dp_replicate, dp_shard, tp)  ->  build on meta  ->  split_pipeline  ->  apply_tp
      ->  apply_checkpointing  ->  compile  ->  apply_fsdp  ->  materialise this rank's shards
      ->  parallel_init.init_parameters (a function of seed and name)

The model file knows nothing of this. Parameter names stay those of the plain model under every layout
(a pipeline stage keeps `tok_embeddings`, `layers.<i>`, `norm`, `output`), which is what lets the DCP
checkpoints of workbench.train.checkpoint reshard from one layout to another.

- TP (DTensor `parallelize_module`): q/k/v column-wise, wo row-wise; SwiGLU w1/w3 column-wise, w2
  row-wise; the embedding row-wise; RMSNorms sequence-parallel (the residual stream is split over the
  sequence between blocks); the output projection column-wise, its logits left sharded over the vocab
  for `loss_parallel` (gathered instead under PP, whose stages pass plain tensors).
- PP (torch.distributed.pipelining): stages of contiguous blocks, the first with the embedding, the last
  with the final norm and output; schedules 1F1B or interleaved 1F1B (pp_stages_per_rank stages a rank,
  looped), one micro-batch per chunk of batch.micro_batch sequences.
- FSDP2 (`fully_shard`) over dp_shard, HSDP when dp_replicate > 1, per block and then the whole stage.
- Activation checkpointing: none; selective (per block, matmul and attention outputs saved, the rest
  recomputed); full (each block's input kept, the block recomputed).
- Context parallelism is rejected by the config (LayoutConfig.cp must be 1).
"""

from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.pipelining import PipelineStage as TorchStage
from torch.distributed.pipelining import Schedule1F1B, ScheduleInterleaved1F1B
from torch.distributed.tensor import Replicate, Shard
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    PrepareModuleInput,
    RowwiseParallel,
    SequenceParallel,
    loss_parallel,
    parallelize_module,
)
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from workbench.core.errors import WorkbenchError
from workbench.core.files import env_number
from workbench.model.config import ModelConfig
from workbench.model.transformer import Transformer, rope_tables
from workbench.train.config import LayoutConfig
from workbench.train.parallel.distributed import shard_fsdp
from workbench.train.parallel.weights_init import init_parameters

MESH_DIMS = ("pp", "dp_replicate", "dp_shard", "tp")


class PipelineStage(nn.Module):
    """Blocks [first, last) of the plain model, plus the embedding (first stage) or the final norm and
    output projection (last stage); the plain model's attribute names, so parameter names are unchanged."""

    def __init__(self, model: Transformer, first: int, last: int):
        super().__init__()
        self.cfg = model.cfg
        self.tok_embeddings = model.tok_embeddings if first == 0 else None
        self.layers = nn.ModuleDict({str(i): model.layers[i] for i in range(first, last)})
        self.norm = model.norm if last == len(model.layers) else None
        self.output = model.output if last == len(model.layers) else None
        self.register_buffer("rope_cos", model.rope_cos, persistent=False)
        self.register_buffer("rope_sin", model.rope_sin, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tok_embeddings is not None:
            x = self.tok_embeddings(x)
        for layer in self.layers.values():
            x = layer(x, self.rope_cos, self.rope_sin)
        if self.output is not None:
            x = self.output(self.norm(x))
        return x


@dataclass
class Parallel:
    """This rank's model parts and how to run a step on them."""

    layout: LayoutConfig
    mesh: object  # torch DeviceMesh with MESH_DIMS
    parts: list[nn.Module]  # the model (no PP), or this rank's pipeline stages
    dp_rank: int
    dp_size: int
    pp_stages: list = field(default_factory=list)  # torch PipelineStage objects
    schedules: dict = field(default_factory=dict)  # micro-batches -> schedule

    @property
    def loss_parallel(self) -> bool:
        return self.layout.tp > 1 and self.layout.pp == 1

    @property
    def is_last_stage(self) -> bool:
        return not self.pp_stages or any(s.is_last for s in self.pp_stages)

    def parameters(self) -> list[nn.Parameter]:
        return [p for part in self.parts for p in part.parameters()]

    def loss_context(self):
        if not self.loss_parallel:
            return contextlib.nullcontext()

        return loss_parallel()

    def schedule(self, n_microbatches: int):
        """The pipeline schedule for `n_microbatches` micro-batches (built once per count)."""
        if n_microbatches not in self.schedules:
            if self.layout.pp_schedule == "1f1b":
                made = Schedule1F1B(self.pp_stages[0], n_microbatches, loss_fn=pipeline_loss)
            else:
                made = ScheduleInterleaved1F1B(self.pp_stages, n_microbatches, loss_fn=pipeline_loss)
            self.schedules[n_microbatches] = made
        return self.schedules[n_microbatches]

    def pp_group(self):
        return self.mesh["pp"].get_group() if self.layout.pp > 1 else None


def pipeline_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of one micro-batch (the schedule averages the gradients over micro-batches)."""
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())


def build_mesh(layout: LayoutConfig, device_type: str, world: int):
    """The DeviceMesh (pp, dp_replicate, dp_shard, tp): TP innermost, so consecutive ranks (one node) share it."""
    if layout.world != world:
        raise WorkbenchError(
            f"layout: pp {layout.pp} x dp_replicate {layout.dp_replicate} x dp_shard {layout.dp_shard} x tp "
            f"{layout.tp} = {layout.world} processes, but {world} were started",
            f"Start {layout.world} processes (torchrun --nproc_per_node, or Slurm tasks) or change the layout.",
        )
    if layout.tp > layout.gpus_per_node or layout.gpus_per_node % layout.tp:
        raise WorkbenchError(
            f"layout.tp {layout.tp} does not fit in a node of {layout.gpus_per_node} GPUs",
            "Keep tensor parallelism inside a node: tp must divide layout.gpus_per_node.",
        )
    per_node = env_number("LOCAL_WORLD_SIZE", layout.tp, 1, 1 << 16, low_open=False, integer=True)  # torchrun sets it
    if per_node % layout.tp:
        raise WorkbenchError(
            f"layout.tp {layout.tp} does not divide the {per_node} processes of a node: a TP group would span nodes",
            "Start one task per GPU with a multiple of tp tasks per node.",
        )

    shape = (layout.pp, layout.dp_replicate, layout.dp_shard, layout.tp)
    return init_device_mesh(device_type, shape, mesh_dim_names=MESH_DIMS)


def build(
    cfg: ModelConfig,
    layout: LayoutConfig,
    *,
    seq_len: int,
    device: torch.device,
    seed: int,
    compile: bool = False,
) -> Parallel:
    """This rank's parts of the model under `layout`, materialised on `device` and initialised from `seed`."""
    world = dist.get_world_size() if dist.is_initialized() else 1
    mesh = build_mesh(layout, device.type, world)
    dp_rank = mesh["dp_replicate"].get_local_rank() * layout.dp_shard + mesh["dp_shard"].get_local_rank()
    with torch.device("meta"):
        model = Transformer(cfg, max_seq_len=seq_len)
    parts, stage_ids = split_pipeline(model, layout, mesh["pp"].get_local_rank())
    for part in parts:
        if layout.tp > 1:
            apply_tp(part, mesh["tp"], gather_logits=layout.pp > 1)
        apply_checkpointing(part, layout.recompute)
        if compile:
            for layer in part.layers.values() if isinstance(part, PipelineStage) else part.layers:
                layer.compile()
        apply_fsdp(part, mesh, layout)
    for part in parts:
        part.to_empty(device=device)
        cos, sin = rope_tables(cfg.d_model // cfg.n_heads, seq_len, cfg.rope_theta, device)
        part.rope_cos, part.rope_sin = cos, sin
    init_parameters(parts, cfg, seed)
    result = Parallel(layout, mesh, parts, dp_rank, layout.dp_replicate * layout.dp_shard)
    if layout.pp > 1:
        group, total = mesh["pp"].get_group(), layout.pp * layout.pp_stages_per_rank
        result.pp_stages = [TorchStage(p, i, total, device, group=group) for p, i in zip(parts, stage_ids, strict=True)]
    return result


def split_pipeline(model: Transformer, layout: LayoutConfig, pp_rank: int) -> tuple[list[nn.Module], list[int]]:
    """This rank's stages (looped: stage s on rank s % pp) and their indices; the model itself without PP."""
    if layout.pp == 1:
        return [model], [0]
    stages = layout.pp * layout.pp_stages_per_rank
    n = len(model.layers)
    bounds = [round(i * n / stages) for i in range(stages + 1)]
    ids = list(range(pp_rank, stages, layout.pp))
    return [PipelineStage(model, bounds[s], bounds[s + 1]) for s in ids], ids


def apply_tp(part: nn.Module, tp_mesh, gather_logits: bool) -> None:
    """Tensor (and sequence) parallelism on a model or stage; logits vocab-sharded unless `gather_logits`."""

    plan = {}
    if part.tok_embeddings is not None:
        plan["tok_embeddings"] = RowwiseParallel(input_layouts=Replicate(), output_layouts=Shard(1))
    if part.output is not None:
        plan["norm"] = SequenceParallel()
        plan["output"] = ColwiseParallel(
            input_layouts=Shard(1),
            output_layouts=Replicate() if gather_logits else Shard(-1),
            use_local_output=gather_logits,
        )
    parallelize_module(part, tp_mesh, plan)
    gather = PrepareModuleInput(
        input_layouts=(Shard(1), None, None), desired_input_layouts=(Replicate(), None, None), use_local_output=True
    )
    block_plan = {
        "attention_norm": SequenceParallel(),
        "attention": gather,
        "attention.wq": ColwiseParallel(),
        "attention.wk": ColwiseParallel(),
        "attention.wv": ColwiseParallel(),
        "attention.wo": RowwiseParallel(output_layouts=Shard(1)),
        "ffn_norm": SequenceParallel(),
        "ffn": PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),)),
        "ffn.w1": ColwiseParallel(),
        "ffn.w3": ColwiseParallel(),
        "ffn.w2": RowwiseParallel(output_layouts=Shard(1)),
    }
    for layer in _layers(part):
        parallelize_module(layer, tp_mesh, block_plan)


def _layers(part: nn.Module) -> list[nn.Module]:
    return list(part.layers.values()) if isinstance(part.layers, nn.ModuleDict) else list(part.layers)


def _selective_policy(ctx, op, *args, **kwargs):

    saved = {
        torch.ops.aten.mm.default,
        torch.ops.aten._scaled_dot_product_efficient_attention.default,
        torch.ops.aten._scaled_dot_product_flash_attention.default,
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default,
    }
    return CheckpointPolicy.MUST_SAVE if op in saved else CheckpointPolicy.PREFER_RECOMPUTE


def apply_checkpointing(part: nn.Module, mode: str) -> None:
    """Recompute each block in the backward pass (full), or all but its matmuls and attention (selective).
    The block's forward is replaced on the instance, so parameter names do not change."""
    if mode == "none":
        return

    for layer in _layers(part):
        plain = layer.forward
        if mode == "selective":
            context = functools.partial(create_selective_checkpoint_contexts, _selective_policy)
            layer.forward = functools.partial(checkpoint, plain, use_reentrant=False, context_fn=context)
        else:
            layer.forward = functools.partial(checkpoint, plain, use_reentrant=False)


def apply_fsdp(part: nn.Module, mesh, layout: LayoutConfig) -> None:
    """FSDP2 per block and then the whole part, over dp_shard (HSDP with dp_replicate); nothing if DP is 1."""
    if layout.dp_shard * layout.dp_replicate == 1:
        return
    dp_mesh = mesh["dp_replicate", "dp_shard"] if layout.dp_replicate > 1 else mesh["dp_shard"]
    shard_fsdp(part, dp_mesh, reshard_after_forward=layout.pp == 1)


def clip_grad_norm(params: list[torch.Tensor], max_norm: float, pp_group) -> float:
    """Clip by the global gradient norm over every shard and pipeline stage; returns the norm before."""
    grads = [p.grad for p in params if p.grad is not None]
    total = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
    if hasattr(total, "full_tensor"):
        total = total.full_tensor()
    if pp_group is not None:
        squared = total.double() ** 2
        dist.all_reduce(squared, group=pp_group)
        total = squared.sqrt().to(total.dtype)
    if math.isfinite(max_norm):
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
    return float(total)


def _scalar(loss: torch.Tensor) -> float:
    loss = loss.detach()
    return float(loss.full_tensor() if hasattr(loss, "full_tensor") else loss)


def forward_backward(par: Parallel, batches: list[torch.Tensor], grad_scale: float, bf16: bool) -> tuple[float, int]:
    """Forward and backward over this rank's micro-batches (tokens [micro, seq + 1] each); gradients are
    `grad_scale` x the sum of the micro-batch means. Returns (sum of their losses, how many) on the ranks
    that compute the loss, (0.0, 0) on the other pipeline stages."""
    device_type = batches[0].device.type
    autocast = functools.partial(torch.autocast, device_type, dtype=torch.bfloat16, enabled=bf16)
    if not par.pp_stages:
        model, total = par.parts[0], 0.0
        for batch in batches:
            with par.loss_context(), autocast():
                loss = model(batch[:, :-1], batch[:, 1:])
                (loss * grad_scale).backward()
            total += _scalar(loss)
        return total, len(batches)
    tokens = torch.cat(batches)  # the schedule cuts it back into the micro-batches, averaging their gradients
    schedule, losses = par.schedule(len(batches)), []
    inputs = (tokens[:, :-1],) if par.pp_stages[0].is_first else ()
    target = tokens[:, 1:] if par.is_last_stage else None
    with autocast():
        schedule.step(*inputs, target=target, losses=losses, return_outputs=False)
    # the schedule's gradients are the mean over this rank's micro-batches; the trainer wants grad_scale x sum
    correction = grad_scale * len(batches)
    if correction != 1.0:
        for p in par.parameters():
            if p.grad is not None:
                p.grad.mul_(correction)
    return sum(_scalar(x) for x in losses), len(losses)


@torch.no_grad()
def eval_loss(par: Parallel, tokens: torch.Tensor, bf16: bool) -> tuple[float, int]:
    """(loss, 1) of one validation batch on the ranks that compute the loss; (0.0, 0) elsewhere."""
    with torch.autocast(tokens.device.type, dtype=torch.bfloat16, enabled=bf16):
        if not par.pp_stages:
            with par.loss_context():
                return _scalar(par.parts[0](tokens[:, :-1], tokens[:, 1:])), 1
        stages = par.layout.pp * par.layout.pp_stages_per_rank
        n = stages if tokens.shape[0] % stages == 0 else 1
        losses = []
        inputs = (tokens[:, :-1],) if par.pp_stages[0].is_first else ()
        target = tokens[:, 1:] if par.is_last_stage else None
        par.schedule(n).eval(*inputs, target=target, losses=losses)
    if not losses:
        return 0.0, 0
    return sum(_scalar(x) for x in losses) / len(losses), 1
