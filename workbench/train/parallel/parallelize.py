"""Apply a TP x PP x DP layout to the plain model (workbench.model.transformer), in a fixed order.

    mesh (pp, dp_replicate, dp_shard, tp)  ->  build on meta  ->  split_pipeline  ->  apply_tp
      ->  apply_checkpointing (and compile)  ->  apply_fsdp  ->  materialise this rank's shards
      ->  parallel_init.init_parameters (a function of seed and name)

The model file knows nothing of this. Parameter names stay those of the plain model under every layout
(a pipeline stage keeps `tok_embeddings`, `layers.<i>`, `norm`, `output`), which is what lets the DCP
checkpoints of workbench.train.checkpoint reshard from one layout to another.

- TP (DTensor `parallelize_module`): q/k/v column-wise, wo row-wise; SwiGLU w1/w3 column-wise, w2
  row-wise; the embedding row-wise; RMSNorms sequence-parallel (the residual stream is split over the
  sequence between blocks); the output projection column-wise, its logits left sharded over the vocab
  and the cross-entropy computed under `loss_parallel`, with or without PP (the last stage hands its
  vocab shard to the schedule's loss function as a plain tensor, which wraps it back).
- PP (torch.distributed.pipelining): stages of contiguous blocks, the first with the embedding, the last
  with the final norm and output; schedules 1F1B or interleaved 1F1B (pp_stages_per_rank stages a rank,
  looped), one micro-batch per chunk of batch.micro_batch sequences. The config refuses a batch that
  gives a replica fewer micro-batches than the schedule needs (workbench.train.config.pipeline_microbatches).
- FSDP2 (`fully_shard`, workbench.train.parallel.distributed.shard_fsdp) over dp_shard, HSDP when
  dp_replicate > 1: the embedding, each block, norm + output, then the whole stage, under the mixed
  precision policy. In bf16 it is applied even with DP 1 (a mesh of one), since it is what casts.
- Activation checkpointing: none; selective (per block, torchtitan's policy: every other matmul, the
  attention and the collectives' outputs saved, the rest recomputed); full (each block's input kept, the
  block recomputed). With runtime.compile the function that calls `checkpoint` is compiled, so dynamo
  traces the recomputed region (a compiled `checkpoint` call is a higher-order op, not a graph break).
- Context parallelism is rejected by the config (LayoutConfig.cp must be 1).
"""

from __future__ import annotations

import collections
import contextlib
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy
from torch.distributed.pipelining import PipelineStage as TorchStage
from torch.distributed.pipelining import Schedule1F1B, ScheduleInterleaved1F1B
from torch.distributed.tensor import DTensor, Replicate, Shard
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
from workbench.train.config import LayoutConfig, eval_pipeline_microbatches
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
    micro_batch: int = 1  # batch.micro_batch: sequences per training micro-batch
    stage_ids: list[int] = field(default_factory=list)  # this rank's pipeline stages (PP only)
    stages: dict = field(default_factory=dict)  # sequences a micro-batch -> torch PipelineStage objects
    schedules: dict = field(default_factory=dict)  # (micro-batches, sequences each) -> schedule

    @property
    def loss_parallel(self) -> bool:
        return self.layout.tp > 1

    @property
    def pp_stages(self) -> list:
        """torch's PipelineStage objects of this rank for training micro-batches (none without PP)."""
        return self.stages_for(self.micro_batch) if self.stage_ids else []

    @property
    def is_first_stage(self) -> bool:
        return not self.stage_ids or self.stage_ids[0] == 0

    @property
    def is_last_stage(self) -> bool:
        return not self.stage_ids or self.stage_ids[-1] == self.layout.pp * self.layout.pp_stages_per_rank - 1

    def stages_for(self, sequences: int) -> list:
        """PipelineStage objects for micro-batches of `sequences` sequences: a stage fixes the shapes it sends
        and receives at its first step, so evaluation batches cut otherwise get stages of their own."""
        if sequences not in self.stages:
            group, total = self.mesh["pp"].get_group(), self.layout.pp * self.layout.pp_stages_per_rank
            device = next(p.device for part in self.parts for p in part.parameters())
            pairs = zip(self.parts, self.stage_ids, strict=True)
            self.stages[sequences] = [TorchStage(p, i, total, device, group=group) for p, i in pairs]
        return self.stages[sequences]

    def parameters(self) -> list[nn.Parameter]:
        return [p for part in self.parts for p in part.parameters()]

    def loss_context(self):
        """`loss_parallel` under TP (forward and backward of the loss), else nothing."""
        return loss_parallel() if self.loss_parallel else contextlib.nullcontext()

    def schedule(self, n_microbatches: int, sequences: int | None = None):
        """The pipeline schedule for `n_microbatches` micro-batches of `sequences` sequences each (default
        batch.micro_batch), built once per pair."""
        key = (n_microbatches, sequences or self.micro_batch)
        if key not in self.schedules:
            stages, loss = self.stages_for(key[1]), PipelineLoss(self.mesh["tp"] if self.layout.tp > 1 else None)
            if self.layout.pp_schedule == "1f1b":
                made = Schedule1F1B(stages[0], n_microbatches, loss_fn=loss)
            else:
                made = ScheduleInterleaved1F1B(stages, n_microbatches, loss_fn=loss)
            self.schedules[key] = made
        return self.schedules[key]

    def pp_group(self):
        return self.mesh["pp"].get_group() if self.layout.pp > 1 else None


class PipelineLoss:
    """Mean cross-entropy of one micro-batch (the schedule averages the gradients over micro-batches). Under
    TP the last stage's output is its vocab shard of the logits: wrapped back into a DTensor, the loss is
    computed under `loss_parallel` (the schedule runs inside Parallel.loss_context), so no rank gathers the
    full-vocabulary logits."""

    def __init__(self, tp_mesh=None):
        self.tp_mesh = tp_mesh

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.tp_mesh is not None:
            logits = DTensor.from_local(logits, self.tp_mesh, [Shard(-1)], run_check=False)
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        return loss.to_local() if isinstance(loss, DTensor) else loss


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
    mp_policy: MixedPrecisionPolicy | None = None,
    micro_batch: int = 1,
) -> Parallel:
    """This rank's parts of the model under `layout`, materialised on `device` and initialised from `seed`;
    `mp_policy`: distributed.mixed_precision_policy (default: none, fp32)."""
    mp_policy = mp_policy or MixedPrecisionPolicy()
    world = dist.get_world_size() if dist.is_initialized() else 1
    mesh = build_mesh(layout, device.type, world)
    dp_rank = mesh["dp_replicate"].get_local_rank() * layout.dp_shard + mesh["dp_shard"].get_local_rank()
    with torch.device("meta"):
        model = Transformer(cfg, max_seq_len=seq_len)
    parts, stage_ids = split_pipeline(model, layout, mesh["pp"].get_local_rank())
    for part in parts:
        if layout.tp > 1:
            apply_tp(part, mesh["tp"], local_logits=layout.pp > 1)
        apply_checkpointing(part, layout.recompute, compile=compile)
        apply_fsdp(part, mesh, layout, mp_policy)
    for part in parts:
        part.to_empty(device=device)
        cos, sin = rope_tables(cfg.d_model // cfg.n_heads, seq_len, cfg.rope_theta, device)
        part.rope_cos, part.rope_sin = cos, sin
    init_parameters(parts, cfg, seed)
    stages = stage_ids if layout.pp > 1 else []
    return Parallel(layout, mesh, parts, dp_rank, layout.dp_replicate * layout.dp_shard, micro_batch, stages)


def split_pipeline(model: Transformer, layout: LayoutConfig, pp_rank: int) -> tuple[list[nn.Module], list[int]]:
    """This rank's stages (looped: stage s on rank s % pp) and their indices; the model itself without PP."""
    if layout.pp == 1:
        return [model], [0]
    stages = layout.pp * layout.pp_stages_per_rank
    n = len(model.layers)
    bounds = [round(i * n / stages) for i in range(stages + 1)]
    ids = list(range(pp_rank, stages, layout.pp))
    return [PipelineStage(model, bounds[s], bounds[s + 1]) for s in ids], ids


def apply_tp(part: nn.Module, tp_mesh, local_logits: bool) -> None:
    """Tensor (and sequence) parallelism on a model or stage. The logits stay sharded over the vocab: a
    DTensor for the model's own loss, or (`local_logits`, a pipeline stage) this rank's plain shard."""

    plan = {}
    if part.tok_embeddings is not None:
        plan["tok_embeddings"] = RowwiseParallel(input_layouts=Replicate(), output_layouts=Shard(1))
    if part.output is not None:
        plan["norm"] = SequenceParallel()
        plan["output"] = ColwiseParallel(
            input_layouts=Shard(1), output_layouts=Shard(-1), use_local_output=local_logits
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


# torchtitan's selective-recompute save list: matmuls (every other one), attention, collectives
SAVED_OPS = {
    torch.ops.aten.mm.default,
    torch.ops.aten._scaled_dot_product_efficient_attention.default,
    torch.ops.aten._scaled_dot_product_flash_attention.default,
    torch.ops.aten._scaled_dot_product_cudnn_attention.default,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default,
    torch.ops._c10d_functional.reduce_scatter_tensor.default,
    torch.ops._c10d_functional.all_gather_into_tensor.default,
    torch.ops._c10d_functional.all_reduce.default,
    torch.ops._c10d_functional.all_to_all_single.default,
}


def selective_policy():
    """A fresh selective-recompute policy for one checkpointed call: the outputs of SAVED_OPS are saved,
    except every second matmul (counted apart in the forward and in the recompute), and everything else
    (norms, RoPE, SwiGLU's pointwise ops) is recomputed."""
    matmuls = collections.Counter()

    def policy(ctx, op, *args, **kwargs) -> CheckpointPolicy:
        if op == torch.ops.aten.mm.default:
            key = "recompute" if ctx.is_recompute else "forward"
            matmuls[key] += 1
            if matmuls[key] % 2 == 0:
                return CheckpointPolicy.PREFER_RECOMPUTE
        return CheckpointPolicy.MUST_SAVE if op in SAVED_OPS else CheckpointPolicy.PREFER_RECOMPUTE

    return policy


def _selective_context():
    return create_selective_checkpoint_contexts(selective_policy())


def _block_forward(plain, mode: str):
    """`plain` (a block's forward) under activation checkpointing `mode` (selective or full)."""
    context = {"context_fn": _selective_context} if mode == "selective" else {}

    def forward(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        return checkpoint(plain, x, cos, sin, use_reentrant=False, **context)

    return forward


def apply_checkpointing(part: nn.Module, mode: str, compile: bool = False) -> None:
    """Recompute each block in the backward pass (full), or all but what selective_policy saves (selective);
    with `compile`, compile each block's forward, the checkpointed one included (so the recomputed region
    is traced). The block's forward is replaced on the instance, so parameter names do not change, and
    the FSDP hooks around the block stay outside the compiled code."""
    if mode == "none" and not compile:
        return
    for layer in _layers(part):
        forward = layer.forward if mode == "none" else _block_forward(layer.forward, mode)
        layer.forward = torch.compile(forward) if compile else forward


def apply_fsdp(part: nn.Module, mesh, layout: LayoutConfig, mp_policy: MixedPrecisionPolicy) -> None:
    """FSDP2 over dp_shard (HSDP with dp_replicate). With DP 1 only when `mp_policy` casts (bf16): FSDP over a
    mesh of one is then what keeps bf16 weights for the compute and fp32 master weights and gradients."""
    if layout.dp_shard * layout.dp_replicate == 1 and mp_policy.param_dtype is None:
        return
    dp_mesh = mesh["dp_replicate", "dp_shard"] if layout.dp_replicate > 1 else mesh["dp_shard"]
    shard_fsdp(part, dp_mesh, layout.pp == 1, mp_policy)


def clip_grad_norm(params: list[torch.Tensor], max_norm: float, pp_group) -> torch.Tensor:
    """Clip by the global gradient norm over every shard and pipeline stage; returns the norm before (a
    0-dim tensor on the device: reading it is the caller's host sync)."""
    grads = [p.grad for p in params if p.grad is not None]
    total = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=params[0].device)
    if isinstance(total, DTensor):
        total = total.full_tensor()
    if pp_group is not None:
        squared = total.double() ** 2
        dist.all_reduce(squared, group=pp_group)
        total = squared.sqrt().to(total.dtype)
    if max_norm != float("inf"):
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
    return total


def _local(loss: torch.Tensor) -> torch.Tensor:
    loss = loss.detach()
    return loss.full_tensor() if isinstance(loss, DTensor) else loss


def forward_backward(par: Parallel, batches: list[torch.Tensor], grad_scale: float) -> tuple[torch.Tensor, int]:
    """Forward and backward over this rank's micro-batches (tokens [micro, seq + 1] each); gradients are
    `grad_scale` x the sum of the micro-batch means. Returns (sum of their losses as an fp64 tensor on the
    device, how many) on the ranks that compute the loss, (0, 0) on the other pipeline stages. Nothing
    here reads a value on the host."""
    device = batches[0].device
    total = torch.zeros((), dtype=torch.float64, device=device)
    if not par.stage_ids:
        model = par.parts[0]
        for batch in batches:
            with par.loss_context():
                loss = model(batch[:, :-1], batch[:, 1:])
                (loss * grad_scale).backward()
            total += _local(loss).double()
        return total, len(batches)
    tokens = torch.cat(batches)  # the schedule cuts it back into the micro-batches, averaging their gradients
    schedule, losses = par.schedule(len(batches)), []
    inputs = (tokens[:, :-1],) if par.is_first_stage else ()
    target = tokens[:, 1:] if par.is_last_stage else None
    with par.loss_context():
        schedule.step(*inputs, target=target, losses=losses, return_outputs=False)
    # the schedule's gradients are the mean over this rank's micro-batches; the trainer wants grad_scale x sum
    correction = grad_scale * len(batches)
    if correction != 1.0:
        for p in par.parameters():
            if p.grad is not None:
                p.grad.mul_(correction)
    for loss in losses:
        total += _local(loss).double()
    return total, len(losses)


@torch.no_grad()
def eval_loss(par: Parallel, tokens: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(loss as a device tensor, 1) of one validation batch on the ranks that compute the loss; (0, 0) elsewhere.
    Under PP the batch is cut into eval_pipeline_microbatches micro-batches (the config has checked it can be)."""
    if not par.stage_ids:
        with par.loss_context():
            return _local(par.parts[0](tokens[:, :-1], tokens[:, 1:])).float(), 1
    n = eval_pipeline_microbatches(tokens.shape[0], par.micro_batch, par.layout)
    losses = []
    inputs = (tokens[:, :-1],) if par.is_first_stage else ()
    target = tokens[:, 1:] if par.is_last_stage else None
    with par.loss_context():
        par.schedule(n, tokens.shape[0] // n).eval(*inputs, target=target, losses=losses)
    if not losses:
        return torch.zeros((), device=tokens.device), 0
    return sum(_local(x).float() for x in losses) / len(losses), 1
