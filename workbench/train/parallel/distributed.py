"""Process-group set-up and model wrapping for the trainer: one process, DDP, or FSDP2 (fully_shard).

The same trainer runs alone, under torchrun, or as submitit tasks (which export the same RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT variables). On CPU the backend is gloo.

Mixed precision (runtime.dtype bf16, or auto on a GPU) is one policy, `mixed_precision_policy`, applied by
FSDP2 wherever the trainer shards (`shard_fsdp`): parameters are all-gathered and computed in bf16 (so the
activations, the residual stream and whatever TP and PP move are bf16), gradients are reduced in fp32 into
fp32 shards, and the optimizer updates fp32 master weights, as torchtitan does. runtime.dtype fp32 is the
exact test mode: no cast anywhere. Without FSDP (one process, DDP) bf16 is autocast over fp32 weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import distribute_tensor
from torch.nn.parallel import DistributedDataParallel

from workbench.core.errors import WorkbenchError
from workbench.core.files import env_number


@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def uses_bf16(runtime, device_type: str) -> bool:
    """Whether a run computes in bf16: runtime.dtype bf16, or auto on a GPU (`runtime`: a RuntimeConfig)."""
    return runtime.dtype == "bf16" or (runtime.dtype == "auto" and device_type == "cuda")


def mixed_precision_policy(runtime, device_type: str = "cuda") -> MixedPrecisionPolicy:
    """The trainer's one FSDP2 mixed-precision policy for `runtime` (a RuntimeConfig) on `device_type`:
    bf16 parameters in forward and backward (so bf16 activations), fp32 gradient reduction into the fp32
    sharded gradients and master weights; in fp32 mode nothing is cast (MixedPrecisionPolicy())."""
    if not uses_bf16(runtime, device_type):
        return MixedPrecisionPolicy()
    return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)


def check_layout(layout, world: int, micro_batch: int) -> None:
    """The config's layout block (workbench.config.LayoutConfig, or None) against this run's processes.

    The layout's GPUs must be the world size and its micro-batch the batch block's (LayoutConfig itself
    refuses context parallelism)."""

    if layout is None:
        return
    if layout.gpus != world:
        raise WorkbenchError(
            f"layout: {layout.describe()}, but the run has {world} processes",
            f"Launch {layout.gpus} processes (`workbench flagship launch` sizes the job from it) or fix layout.",
        )
    if layout.micro_batch is not None and layout.micro_batch != micro_batch:
        raise WorkbenchError(
            f"layout.micro_batch {layout.micro_batch} differs from batch.micro_batch {micro_batch}",
            "Give both the same micro-batch (the plan writes them equal).",
        )


def export_slurm_env() -> None:
    """Under `srun` (one task per GPU, any number of nodes) without a launcher's RANK/WORLD_SIZE, export
    them from Slurm's environment: RANK = SLURM_PROCID, LOCAL_RANK = SLURM_LOCALID, MASTER_ADDR = the
    job's first node. Ranks are numbered node by node, so the innermost mesh dimension (TP) stays in a node."""
    tasks = env_number("SLURM_NTASKS", 1, 0, 1 << 24, low_open=False, integer=True)
    if "RANK" in os.environ or tasks <= 1 or "SLURM_PROCID" not in os.environ:
        return
    import submitit

    submitit.helpers.TorchDistributedEnvironment().export()


def setup(device_kind: str, group: bool = False) -> Dist:
    """Read the launcher's environment, pick the device and start the process group if world > 1 (or
    `group`: a one-process group for a DeviceMesh of size 1)."""
    export_slurm_env()
    world = env_number("WORLD_SIZE", 1, 1, 1 << 24, low_open=False, integer=True)
    rank = env_number("RANK", 0, 0, world - 1, low_open=False, integer=True)
    local_rank = env_number("LOCAL_RANK", 0, 0, world - 1, low_open=False, integer=True)
    if device_kind == "cuda" and not torch.cuda.is_available():
        raise WorkbenchError(
            "runtime.device: cuda, but this machine has no usable CUDA GPU (or torch is a CPU build)",
            "Set runtime.device: auto or cpu, or run on a GPU node.",
        )
    use_cuda = device_kind == "cuda" or (device_kind == "auto" and torch.cuda.is_available())
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    backend = "nccl" if use_cuda else "gloo"
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world)
    elif group and not dist.is_initialized():
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    return Dist(rank, world, local_rank, device)


def teardown(d: Dist) -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def total(values: torch.Tensor | list[float], d: Dist) -> list[float]:
    """Element-wise sums over all ranks, read on the host (a device tensor's one host sync)."""
    t = torch.as_tensor(values, dtype=torch.float64, device=d.device)
    if d.active:
        dist.all_reduce(t)
    return t.tolist()


def wrap(model: nn.Module, d: Dist, parallel: str, mp_policy: MixedPrecisionPolicy) -> nn.Module:
    """DDP or FSDP2 (with `mp_policy`) around `model` (returned unchanged when running alone)."""
    if not d.active:
        return model
    if parallel == "fsdp":
        shard_fsdp(model, init_device_mesh(d.device.type, (d.world,)), True, mp_policy)
        return model

    ids = [d.device.index] if d.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def shard_fsdp(model: nn.Module, mesh, reshard_after_forward: bool, mp_policy: MixedPrecisionPolicy) -> None:
    """FSDP2 (fully_shard) units of `model` (or of a pipeline stage): the token embedding, each block, the final
    norm with the output projection, then the root (which holds no parameter of its own), all under `mp_policy`.
    The one place the trainer applies FSDP, with or without a layout. The last unit is not resharded after
    forward (its backward comes next), as torchtitan does; nor is anything when `reshard_after_forward` is False
    (under PP, whose micro-batches run their backward passes later)."""
    units = [model.tok_embeddings] if getattr(model, "tok_embeddings", None) is not None else []
    units += list(model.layers.values() if isinstance(model.layers, nn.ModuleDict) else model.layers)
    for unit in units:
        fully_shard(unit, mesh=mesh, reshard_after_forward=reshard_after_forward, mp_policy=mp_policy)
    if getattr(model, "output", None) is not None:
        fully_shard([model.norm, model.output], mesh=mesh, reshard_after_forward=False, mp_policy=mp_policy)
    fully_shard(model, mesh=mesh, reshard_after_forward=reshard_after_forward, mp_policy=mp_policy)


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer, d: Dist, parallel: str) -> tuple[dict, dict | None]:
    """Unsharded model and optimizer state dicts on CPU, in the single-process format (a collective
    under FSDP), so a checkpoint loads in any world size. The optimizer's is None before its first step."""
    optim_state = optimizer.state_dict() if optimizer.state else None
    if not (d.active and parallel == "fsdp"):
        return model.state_dict(), optim_state
    model_state = {k: _full(v) for k, v in model.state_dict().items()}
    if optim_state is not None:
        optim_state["state"] = {i: {k: _full(v) for k, v in s.items()} for i, s in optim_state["state"].items()}
    return model_state, optim_state


def _full(value):
    return value.full_tensor().cpu() if hasattr(value, "full_tensor") else value


def load_full_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    model_state: dict,
    optim_state: dict | None,
    d: Dist,
    parallel: str,
) -> None:
    """Load unsharded state dicts (see full_state) into a possibly sharded model and optimizer."""
    sharded = d.active and parallel == "fsdp"
    if sharded:
        current = model.state_dict()
        model_state = {k: _like(v, current[k]) for k, v in model_state.items()}
    model.load_state_dict(model_state)
    if optimizer is None:
        return
    if optim_state is None:  # saved before the first step: a fresh optimizer
        optimizer.state.clear()
        return
    if sharded:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        optim_state = {
            **optim_state,
            "state": {i: {k: _like(v, params[int(i)]) for k, v in s.items()} for i, s in optim_state["state"].items()},
        }
    optimizer.load_state_dict(optim_state)


def _like(full: torch.Tensor, reference) -> torch.Tensor:
    """`full` sharded like the DTensor `reference` (unchanged for plain tensors and scalars)."""
    if not hasattr(reference, "device_mesh") or full.ndim == 0:
        return full

    return distribute_tensor(full.to(reference.device), reference.device_mesh, reference.placements)
