"""GPUs, memory per GPU and a TP x PP x DP layout for a planned model. Pure arithmetic: no torch, no I/O.

Memory model (documented in the README too), bytes per GPU, for the worst pipeline stage:
- Weights and gradients in bf16 (2 + 2 bytes per parameter), sharded over TP x PP; the fp32 master copy
  and AdamW's two moments (4 + 4 + 4 bytes) sharded over DP as well (a distributed optimizer / ZeRO-1, as
  Megatron and Llama 3's FSDP do): 16 bytes per parameter with DP = 1. A stage holds ceil(layers / PP)
  blocks; the first also the embedding table, the last the output projection (both split over TP).
- Activations, bf16, flash attention (no seq^2 scores kept), no dropout, sequence parallel (the whole
  activation split over TP). Selective recompute keeps, per token and block,
  12 d_model + 4 d_kv + 8 ffn_dim bytes: norm inputs and outputs, q/k/v, the attention output, the
  SwiGLU w1/w3 outputs, the gated product and its SiLU (Korthikanti et al. 2022's count, for SwiGLU and
  GQA). Full recompute keeps only each block's input (2 d_model bytes) plus one block's selective set.
  Under 1F1B the first stage holds PP micro-batches in flight, the last one; the last stage also holds
  the fp32 logits (4 x vocab bytes per token).
- A layout fits when the total is at most 90% of the GPU's memory (CUDA context, NCCL buffers and
  allocator fragmentation take the rest).
Search: TP in 1, 2, 4, 8 (within a node of 8 GPUs, dividing n_heads; KV heads are replicated where TP exceeds
them), PP from 1 up; the smallest TP x PP that fits wins (ties: more TP, fewer pipeline stages), first with
selective recompute, then full; DP takes the rest of the GPUs, at most one micro-batch per replica per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from workbench import flops
from workbench.errors import WorkbenchError
from workbench.shapes import ModelShape
from workbench.units import parse_number

GPUS_PER_NODE = 8
USABLE_MEMORY = 0.9
GB = 1e9


@dataclass(frozen=True)
class Gpu:
    """An accelerator: dense bf16 peak (FLOP/s) and memory (bytes)."""

    name: str
    peak_flops: float
    memory_bytes: float


# dense bf16 peaks from the vendors' data sheets (no sparsity)
GPUS = {
    "h100": Gpu("h100", 989e12, 80 * GB),
    "a100": Gpu("a100", 312e12, 80 * GB),
    "h200": Gpu("h200", 989e12, 141 * GB),
    "b200": Gpu("b200", 2250e12, 192 * GB),
}


def resolve_gpu(spec: str, memory_gb: float | None = None) -> Gpu:
    """A GPU by name (h100, a100, h200, b200) or by its peak in TFLOPS (memory 80 GB unless given)."""
    key = spec.strip().lower()
    known = ", ".join(GPUS)
    if key in GPUS:
        gpu = GPUS[key]
    else:
        try:
            peak_tflops = parse_number(spec, "--gpu")
        except WorkbenchError:
            raise WorkbenchError(
                f"--gpu: unknown GPU {spec!r}", f"Use one of {known}, or a bf16 peak in TFLOPS such as 989."
            ) from None
        if peak_tflops <= 0:
            raise WorkbenchError(f"--gpu: peak {spec!r} TFLOPS must be positive", f"Use one of {known} or e.g. 989.")
        gpu = Gpu(f"{peak_tflops:g} TFLOPS", peak_tflops * 1e12, 80 * GB)
    if memory_gb is not None:
        if memory_gb <= 0:
            raise WorkbenchError(f"--gpu-memory-gb {memory_gb:g} must be positive", "Give the GPU's memory in GB.")
        gpu = Gpu(gpu.name, gpu.peak_flops, memory_gb * GB)
    return gpu


@dataclass(frozen=True)
class Memory:
    """Bytes per GPU on the fullest pipeline stage."""

    weights: float
    grads: float
    optimizer: float
    activations: float

    @property
    def total(self) -> float:
        return self.weights + self.grads + self.optimizer + self.activations


def _activation_bytes_per_token_layer(shape: ModelShape) -> int:
    """Bytes per token and block kept for the backward pass under selective recompute (bf16)."""
    d_kv = shape.n_kv_heads * shape.head_dim
    return 12 * shape.d_model + 4 * d_kv + 8 * shape.ffn_dim


def memory_per_gpu(
    shape: ModelShape, seq_len: int, micro_batch: int, tp: int, pp: int, dp: int, recompute: str
) -> Memory:
    """Memory of the fullest stage of a TP x PP x DP layout (bytes; see the module docstring)."""
    layers = math.ceil(shape.n_layers / pp)
    block = flops.layer_params(shape.d_model, shape.n_heads, shape.n_kv_heads, shape.ffn_dim)
    table = shape.vocab_size * shape.d_model
    tokens = micro_batch * seq_len
    selective = _activation_bytes_per_token_layer(shape) / tp
    kept = selective if recompute == "selective" else 2 * shape.d_model / tp
    working = 0 if recompute == "selective" else tokens * selective  # one block recomputed at a time
    logits = tokens * 4 * shape.vocab_size / tp
    stages = []  # (params, activation bytes) of the first and the last stage
    if pp == 1:
        stages.append(((layers * block + 2 * table) / tp, tokens * kept * layers + working + logits))
    else:
        stages.append(((layers * block + table) / tp, tokens * kept * layers * pp + working))
        stages.append(((layers * block + table) / tp, tokens * kept * layers + working + logits))
    worst = max(stages, key=lambda s: 16 * s[0] + s[1])
    params, activations = worst
    return Memory(2 * params, 2 * params, 12 * params / dp, activations)


@dataclass(frozen=True)
class Layout:
    """A TP x PP x DP layout and its memory per GPU."""

    tp: int
    pp: int
    dp: int
    gpus: int
    idle_gpus: int
    micro_batch: int
    grad_accum: int
    recompute: str
    memory: Memory
    memory_limit_bytes: float

    @property
    def nodes(self) -> int:
        return math.ceil(self.gpus / GPUS_PER_NODE)


def _candidates(shape: ModelShape) -> list[tuple[int, int]]:
    tps = [t for t in (1, 2, 4, 8) if shape.n_heads % t == 0]
    pairs = [(tp, pp) for tp in tps for pp in range(1, shape.n_layers + 1)]
    return sorted(pairs, key=lambda p: (p[0] * p[1], p[1]))


def choose_layout(
    shape: ModelShape, seq_len: int, micro_batch: int, batch_seqs: int, gpu: Gpu, gpus: int, fixed_gpus: bool
) -> Layout:
    """The smallest TP x PP that fits `gpu`; DP fills `gpus` (fixed) or ceil(gpus / (TP x PP)) replicas."""
    limit = USABLE_MEMORY * gpu.memory_bytes
    max_dp = max(1, batch_seqs // micro_batch)
    for recompute in ("selective", "full"):
        for tp, pp in _candidates(shape):
            mp = tp * pp
            if fixed_gpus and mp > gpus:
                break
            dp = min(gpus // mp if fixed_gpus else max(1, math.ceil(gpus / mp)), max_dp)
            memory = memory_per_gpu(shape, seq_len, micro_batch, tp, pp, dp, recompute)
            if memory.total <= limit:
                accum = math.ceil(batch_seqs / (micro_batch * dp))
                used = mp * dp
                idle = gpus - used if fixed_gpus else 0
                return Layout(tp, pp, dp, used, idle, micro_batch, accum, recompute, memory, limit)
    if fixed_gpus:
        least = choose_layout(shape, seq_len, micro_batch, batch_seqs, gpu, 1, fixed_gpus=False)
        raise WorkbenchError(
            f"--gpus {gpus}: model {shape.name} does not fit {gpus} x {gpu.name} ({gpu.memory_bytes / GB:g} GB)",
            f"Give at least {least.tp * least.pp} GPUs (TP {least.tp} x PP {least.pp}).",
        )
    raise WorkbenchError(
        f"model {shape.name} at seq_len {seq_len} fits no TP x PP layout on {gpu.name} ({gpu.memory_bytes / GB:g} GB)",
        "Use a GPU with more memory (--gpu-memory-gb) or a shorter --seq-len.",
    )
