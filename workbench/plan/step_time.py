"""The seconds of one training step, in pieces: what costs a fixed time (communication, memory-bound work) and
the matmul FLOPs that run at the GPU's calibrated throughput (workbench.plan.efficiency). Pure: floats, or numpy
arrays of them, so that workbench.plan.efficiency_fit can fit the efficiency on many published runs at once.
workbench.plan.layout_cost builds the pieces of a layout; its docstring has the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workbench.model.shapes import ModelShape
from workbench.plan.hardware import GPUS_PER_NODE, NETWORK_LATENCY_S, NVLINK_LATENCY_S, Gpu

# AdamW reads the fp32 weight, gradient and two moments and writes the weight, the moments and the bf16 copy
OPTIMIZER_BYTES = 4 * 4 + 3 * 4 + 2
SHARDINGS = ("fsdp", "zero1", "zero2", "zero3", "none")  # none: DDP (replicated weights, all-reduced gradients)


@dataclass(frozen=True)
class StepParts:
    """A layout's step, in pieces: everything but the matmul time is fixed; the matmul FLOPs run at the GPU's
    achievable throughput. Fields are floats, or arrays of them (workbench.plan.efficiency_fit fits on arrays)."""

    micro_batches: float  # m: micro-batches per DP replica and step
    matmul_flops: float  # per micro-batch on the fullest stage and GPU: model + recompute FLOPs
    d_model: float
    elementwise_s: float  # per micro-batch: selective recompute's elementwise work (memory bound)
    tp_comm_s: float  # per micro-batch: TP (and CP) collectives, not overlapped
    pp_comm_s: float  # per micro-batch: pipeline sends
    bubble_units: float  # (PP - 1) / v: the bubble in micro-batch times
    dp_micro_s: float  # per micro-batch: FSDP gathers and reduce-scatter, prefetched under its compute
    gather_s: float  # per step: the weights' all-gather (overlapped with the first forward)
    reduce_s: float  # per step: the gradients' reduce-scatter or all-reduce
    dp_overlap: bool  # the per-step gather and reduction overlap the first forward and the last backward
    optimizer_s: float  # per step: AdamW's update of this GPU's shard (memory bound)


def timeline(parts: StepParts, achievable_flops) -> dict:
    """Seconds of one step and its pieces at `achievable_flops` (floats, or numpy arrays elementwise)."""
    if isinstance(parts.micro_batches, np.ndarray):
        maximum, where = np.maximum, np.where
    else:  # one layout: plain floats are several times faster than numpy scalars in the layout search
        maximum, where = max, (lambda flag, yes, no: yes if flag else no)
    compute = parts.matmul_flops / achievable_flops + parts.elementwise_s
    work = compute + parts.tp_comm_s
    tau = maximum(work, parts.dp_micro_s) + parts.pp_comm_s
    overlapped = maximum(0.0, parts.gather_s - tau / 3) + maximum(0.0, parts.reduce_s - 2 * tau / 3)
    per_step = where(parts.dp_overlap, overlapped, parts.gather_s + parts.reduce_s)
    exposed = per_step + parts.micro_batches * (tau - parts.pp_comm_s - work)
    step = (parts.micro_batches + parts.bubble_units) * tau + per_step + parts.optimizer_s
    return {"tau": tau, "compute": compute, "exposed": exposed, "step": step}


def ring_s(bytes_total: float, ranks: int, bandwidth: float, latency_s: float) -> float:
    """An all-gather or reduce-scatter of `bytes_total` over `ranks` ranks (ring: (n - 1) / n of the data)."""
    if ranks <= 1:
        return 0.0
    return bytes_total * (ranks - 1) / ranks / bandwidth + (ranks - 1) * latency_s


def recompute_flops(shape: ModelShape, block: float, attention: float, recompute: str) -> float:
    """Extra forward FLOPs per token and layer that a recompute policy spends in the backward pass."""
    forward = 2 * block + attention / 3  # the block's forward: its matmuls and the attention scores
    if recompute == "full":
        return forward
    if recompute == "alternate_blocks":
        return forward / 2
    if recompute == "alternate_matmuls":  # wq, wk, wv, wo, w1, w3, w2: the 2nd, 4th and 6th are recomputed
        return 2 * shape.d_model * (shape.n_kv_heads * shape.head_dim + shape.d_model + shape.ffn_dim)
    if recompute == "attention":
        return attention / 3
    return 0.0


def dp_link(gpu: Gpu, tp: int, ranks: int) -> tuple[float, float]:
    """(bandwidth, latency) of a DP collective over `ranks` ranks, TP innermost: within a node, NVLink; across
    nodes, the group's members on a node (GPUS_PER_NODE / TP of them) share their NICs, since NVLink spreads the
    node's traffic over them (a ring all-gather moves the data once into each node, not once into each GPU)."""
    per_node = max(1, min(ranks, GPUS_PER_NODE // tp))
    if ranks <= per_node:
        return gpu.nvlink_bytes_s, NVLINK_LATENCY_S
    return min(gpu.nvlink_bytes_s, per_node * gpu.network_bytes_s), NETWORK_LATENCY_S


def data_parallel_s(params: float, ranks: int, link: tuple[float, float], sharding: str, pp: int):
    """(per micro-batch, per-step gather, per-step reduction, overlapped) seconds of DP for `params` per GPU."""
    gather, reduce = ring_s(2 * params, ranks, *link), ring_s(4 * params, ranks, *link)
    if sharding == "zero3" or (sharding == "fsdp" and pp == 1):  # reshard after forward: every micro-batch
        return 2 * gather + reduce, 0.0, 0.0, True
    if sharding in ("fsdp", "zero1", "zero2"):
        return 0.0, gather, reduce, True
    return 0.0, 0.0, 2 * reduce, False  # DDP: an fp32 all-reduce after the last backward
