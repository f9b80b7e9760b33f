"""Peak memory per GPU of one training step, modelled from what this trainer's code holds. Pure: no torch.

The trainer (workbench.train.parallel.parallelize) runs FSDP2 with bf16 parameters and fp32 gradient reduction
(its mixed-precision policy), TP with sequence parallelism and loss parallelism, torch's pipeline schedules, and
no autocast. `workbench memory --measure` measures the same step on fake tensors; this model follows those
measurements term by term (docs/MEMORY.md has the table). Per pipeline rank, the peak is the largest of a few
moments of the step, each a sum of the terms below (bytes; t = TP, D = DP, T = tokens per micro-batch, P = this
rank's parameters, its TP shard; V = vocabulary, d = width, f = FFN width, h / kv = heads / KV heads, hd = head
width):

- **States**: fp32 master weights 4 P / D, AdamW's moments 8 P / D; fp32 gradients 4 P / D once a micro-batch's
  reduce-scatter has run (without a pipeline, from the second micro-batch on).
- **Without a pipeline** FSDP2 reshards each block after its forward and gathers it again for its backward, but
  keeps the last unit (final norm + output projection) gathered in bf16 from its forward to its backward: 2 P_out.
- **Under 1F1B** nothing is resharded and gradients are reduced only at the last micro-batch, so each rank holds
  its stage's bf16 weights (2 P) and fp32 gradient accumulators (4 P) unsharded for the whole step. **Under
  interleaved 1F1B** torch gathers three chunks at a time and reduces a chunk after its last backward: the rank's
  schedule is walked and each backward costed (workbench.plan.interleaved, `interleaved_moments`). Torch's stages
  keep one receive buffer per micro-batch and direction for the whole step (m T 2 d / t each way); a chunk's
  input is that buffer, its output one more [T, d] tensor per micro-batch (the first stage: both).
- **Activations per block and micro-batch** (bf16; the residual stream between blocks is split over the
  sequence under TP, the norm outputs are gathered whole for the matmuls):
  none: T (4d/t + 8/t + 4d + 4(h+kv)hd/t + 2 kv hd/t + 2 h hd/t + 4h/t + 8f/t) (norm inputs and fp32 rstd,
  gathered norm outputs, q and k before and after RoPE, v, attention output and logsumexp, SwiGLU's four);
  selective (torchtitan's policy: odd matmul outputs, attention, collectives kept): T (2d/t + 2d + 4 h hd/t +
  2 kv hd/t + 2f/t + 4h/t) plus, under TP, the gathered norm outputs and reduce-scattered outputs T (4d + 4d/t);
  full: the block input, T 2d/t. Blocks in flight: all of them without a pipeline; under 1F1B min(PP - rank, m)
  micro-batches of the rank's blocks; interleaved, the chunks torch's order has run forward and not yet backward.
  A block's backward adds its recomputed activations and one fp32 [T, d] gradient (4 T d); without a pipeline the
  top block's, the first of the backward, two (8 T d) and its all-gathered bf16 weights (2 P_block).
- **Loss**: the cross-entropy over the vocabulary shard, 12 T V bytes (three fp32 [T, V] tensors), 16 T V / t
  under loss parallelism; on the last pipeline stage also the bf16 logits the schedule keeps (2 T V / t).
- **Embedding backward**: the embedding's gradient is made for the whole vocabulary under TP (DTensor's
  embedding backward has no vocabulary-sharded rule): in bf16 (2 V d) without a pipeline, next to the gathered
  bf16 embedding and FSDP2's fp32 reduce-scatter input (2 V d / t, 4 V d / t); under a pipeline on the first
  stage in bf16 and then fp32 (`embedding_grad`).

Not modelled (what the 10% of the card a plan keeps free is for): the CUDA context, NCCL and cuBLAS workspaces,
the caching allocator's fragmentation, FSDP2 prefetching a unit early on its own stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from workbench.model import flops
from workbench.model.shapes import ModelShape
from workbench.plan import interleaved

CATEGORIES = ("weights", "gradients", "optimizer", "activations", "logits", "buffers")
# the model's largest error against `workbench memory --measure` per layout family (docs/MEMORY.md,
# tests/test_memory.py), rounded up to a whole percent: a plan keeps it free on top of 10% of the card
MODEL_ERROR = {"FSDP": 0.01, "TP x FSDP": 0.07, "TP x PP x FSDP": 0.06}


def layout_family(tp: int, pp: int) -> str:
    """FSDP (TP 1, PP 1), TP x FSDP (PP 1), or TP x PP x FSDP: the families whose model error is measured."""
    return "FSDP" if tp == 1 and pp == 1 else "TP x FSDP" if pp == 1 else "TP x PP x FSDP"


@dataclass(frozen=True)
class Memory:
    """Bytes per GPU at the step's peak on the fullest pipeline rank, by category, and which moment it is."""

    weights: float
    grads: float
    optimizer: float
    activations: float
    logits: float = 0.0
    buffers: float = 0.0
    pp_rank: int = 0
    moment: str = ""

    @property
    def total(self) -> float:
        return self.weights + self.grads + self.optimizer + self.activations + self.logits + self.buffers

    def as_dict(self) -> dict[str, float]:
        """Bytes by CATEGORIES (gradients spelled out) and the total."""
        values = (self.weights, self.grads, self.optimizer, self.activations, self.logits, self.buffers)
        return {**dict(zip(CATEGORIES, values, strict=True)), "total": self.total}


@dataclass(frozen=True)
class Step:
    """One rank's step: the model, the layout, tokens per micro-batch, micro-batches per replica and step."""

    shape: ModelShape
    seq_len: int
    micro_batch: int
    tp: int
    pp: int
    dp: int
    recompute: str
    virtual: int
    micro_batches: int

    @property
    def tokens(self) -> int:
        return self.micro_batch * self.seq_len

    def blocks(self, rank: int) -> int:
        """Blocks on pipeline rank `rank` (the trainer's split: stage s holds round(s n / S) to round((s+1) n / S))."""
        return _rank_blocks(self.shape.n_layers, self.pp, self.virtual, rank)


@lru_cache(maxsize=65536)
def _rank_blocks(n_layers: int, pp: int, virtual: int, rank: int) -> int:
    stages = pp * virtual
    bounds = [round(i * n_layers / stages) for i in range(stages + 1)]
    return sum(bounds[s + 1] - bounds[s] for s in range(rank, stages, pp))


def block_params(shape: ModelShape, tp: int) -> float:
    """One block's parameters on a GPU: the TP shard of its matmuls and the two norm gains (replicated)."""
    matmuls = flops.layer_params(shape.d_model, shape.n_heads, shape.n_kv_heads, shape.ffn_dim) - 2 * shape.d_model
    return matmuls / tp + 2 * shape.d_model


def block_activations(shape: ModelShape, tp: int, recompute: str) -> float:
    """Bytes per token one block keeps for its backward (see the module docstring)."""
    d, t, f, h = shape.d_model, tp, shape.ffn_dim, shape.n_heads
    q, kv = shape.n_heads * shape.head_dim, shape.n_kv_heads * shape.head_dim
    if recompute == "full":
        return 2 * d / t
    if recompute == "selective":
        gathered = 4 * d + 4 * d / t if t > 1 else 0
        return 2 * d / t + 2 * d + 4 * q / t + 2 * kv / t + 2 * f / t + 4 * h / t + gathered
    return 4 * d / t + 8 / t + 4 * d + 4 * (q + kv) / t + 2 * kv / t + 2 * q / t + 4 * h / t + 8 * f / t


def in_flight(step: Step, rank: int) -> tuple[int, float]:
    """(micro-batch chunks whose activations rank `rank` holds at once, blocks in each)."""
    blocks = step.blocks(rank)
    if step.pp == 1:
        return 1, blocks
    if step.virtual == 1:
        return min(step.pp - rank, step.micro_batches), blocks
    per_round = step.micro_batches // max(1, step.micro_batches // step.pp)  # torch's rounds of micro-batches
    chunks = (step.virtual - 1) * per_round + 2 * (step.pp - 1 - rank) + 1
    return min(chunks, step.micro_batches * step.virtual), blocks / step.virtual


def moments(step: Step, rank: int) -> dict[str, Memory]:
    """The candidate peaks of pipeline rank `rank` (bytes by category), by moment."""
    s, t, D, T = step.shape, step.tp, step.dp, step.tokens
    d, V = s.d_model, s.vocab_size
    first, last = rank == 0, rank == step.pp - 1
    p_out = V * d / t + d if last else 0.0
    p_emb = V * d / t if first else 0.0
    P_blk = block_params(s, t)
    P = step.blocks(rank) * P_blk + p_emb + p_out
    A = T * block_activations(s, t, step.recompute)
    rebuilt = T * block_activations(s, t, "none") - A  # what a block's backward recomputes
    loss = T * V / t * (12 if t == 1 else 16)
    head = T * (4 * d + 2 * d / t)  # the final norm's input and its gathered output
    emb_grad = embedding_grad(s, t, T)
    if step.pp == 1:
        grads = 4 * P / D if step.micro_batches > 1 else 0.0
        states = (4 * P / D, 8 * P / D)
        return {
            "loss backward": Memory(states[0] + 2 * p_out, grads, states[1], step.blocks(0) * A + head, loss),
            "top block backward": Memory(
                states[0] + 2 * p_out, grads, states[1], step.blocks(0) * A + rebuilt + 8 * T * d, 0.0, 2 * P_blk
            ),
            "embedding backward": Memory(
                states[0] + 2 * V * d / t, 4 * P / D + 2 * V * d, states[1], 2 * V * d / t, 0.0, 4 * V * d / t
            ),
        }
    stages = [rank + i * step.pp for i in range(step.virtual)]
    ends = sum((i > 0) + (i < step.pp * step.virtual - 1) for i in stages)  # receive buffers: one per direction
    buffers = step.micro_batches * T * 2 * d / t * ends
    if step.virtual > 1:
        return interleaved_moments(step, rank, buffers)
    weights, grads, optimizer = 4 * P / D + 2 * P, 4 * P, 8 * P / D
    chunks, blocks = in_flight(step, rank)
    held = chunks * (blocks * A + chunk_ends(step, rank) * T * 2 * d / t)
    out = {"steady 1F1B": Memory(weights, grads, optimizer, held + rebuilt + 4 * T * d, 0.0, buffers, rank)}
    if last:
        out["loss backward"] = Memory(weights, grads, optimizer, held + head, loss + 2 * T * V / t, buffers, rank)
    if first:
        out["embedding backward"] = Memory(
            weights, grads + emb_grad[1], optimizer, held + emb_grad[0], 0, buffers, rank
        )
    return out


def embedding_grad(shape: ModelShape, tp: int, tokens: int) -> tuple[float, float]:
    """(activations, gradients) in bytes the first pipeline stage adds in its embedding's backward. Under TP,
    DTensor's embedding backward makes the whole vocabulary's gradient: in bf16 (2 V d) from the bf16 output
    gradient (2 T d), then in fp32 (4 V d), whose own vocabulary shard becomes FSDP2's accumulator (counted in
    the stage's 4 B/param), so 4 V d (TP - 1) / TP more. Measured at TP 2, 4 and 8 (70B, L120-d15360); the earlier
    4 V d + 12 V d / TP is the same at TP 8 only. Without TP (not measured under a pipeline): 2 V d and 4 V d."""
    V, d = shape.vocab_size, shape.d_model
    if tp == 1:
        return 2 * V * d, 4 * V * d
    return 2 * V * d + 2 * tokens * d, 4 * V * d * (tp - 1) / tp


def chunk_ends(step: Step, stage: int) -> int:
    """[T, d] tensors a chunk keeps per micro-batch besides its blocks' saves: its output (the schedule keeps it for
    the backward), less its input on every stage but the first (the receive buffer, counted in buffers; its first
    block's saved input is that buffer: measured on the 3.8e25 plan's one-block chunks, 2 d / TP bytes a token per
    chunk and micro-batch, not 4)."""
    return 1 if stage == 0 else 0


def chunk_params(step: Step, rank: int) -> list[tuple[float, int]]:
    """(parameters on a GPU, blocks) of each of rank `rank`'s chunks (local index order): its blocks, and the
    embedding on the first stage, the final norm and output on the last."""
    s, t, n, stages = step.shape, step.tp, step.shape.n_layers, step.pp * step.virtual
    bounds = [round(i * n / stages) for i in range(stages + 1)]
    out = []
    for c in range(step.virtual):
        stage = rank + c * step.pp
        extra = (s.vocab_size * s.d_model / t if stage == 0 else 0.0) + (
            s.vocab_size * s.d_model / t + s.d_model if stage == stages - 1 else 0.0
        )
        blocks = bounds[stage + 1] - bounds[stage]
        out.append((blocks * block_params(s, t) + extra, blocks))
    return out


def interleaved_moments(step: Step, rank: int, buffers: float) -> dict[str, Memory]:
    """Rank `rank`'s candidate peaks under interleaved 1F1B: each backward of the schedule costed with the chunks
    gathered, the fp32 accumulators live and the micro-batches held at its start (workbench.plan.interleaved has
    the rules and what they were measured on); the largest of each moment."""
    s, t, D, T = step.shape, step.tp, step.dp, step.tokens
    d, V = s.d_model, s.vocab_size
    params, blocks = zip(*chunk_params(step, rank), strict=True)
    stages = step.pp * step.virtual
    P = sum(params)
    A = T * block_activations(s, t, step.recompute)
    rebuilt = T * block_activations(s, t, "none") - A
    loss = T * V / t * (12 if t == 1 else 16) + 2 * T * V / t
    head = T * (4 * d + 2 * d / t)
    emb_grad = embedding_grad(s, t, T)
    m = interleaved.simulated_micro_batches(step.pp, step.micro_batches)
    chunk, first, gathered, done, held_n = interleaved.moment_arrays(step.pp, step.virtual, m, rank)
    p = np.array(params)
    ends = np.array([chunk_ends(step, rank + c * step.pp) for c in range(step.virtual)])
    weights = 4 * P / D + 2 * gathered @ p
    grads = np.where(done == m, 4 * p / D, np.where(done > 0, 4 * p, 0.0)).sum(axis=1)
    held = held_n @ (np.array(blocks) * A + ends * T * 2 * d / t)
    stage = rank + chunk * step.pp
    whole = grads + np.where(first, 4 * p[chunk], 0.0) + emb_grad[1]  # the first stage's accumulators, made by now

    def largest(mask, grad, act, logits) -> Memory:
        i = int(np.argmax(np.where(mask, weights + grad + act, -np.inf)))
        return Memory(float(weights[i]), float(grad[i]), 8 * P / D, float(act[i]), logits, buffers, rank)

    out = {"steady 1F1B": largest(stage >= 0, grads, held + rebuilt + 4 * T * d, 0.0)}
    if (stage == stages - 1).any():
        out["loss backward"] = largest(stage == stages - 1, grads, held + head, loss)
    if (stage == 0).any():
        out["embedding backward"] = largest(stage == 0, whole, held + emb_grad[0], 0.0)
    return out


def ranks(pp: int) -> list[int]:
    """Pipeline ranks worth costing: the first, a middle one and the last (the others lie between)."""
    return sorted({0, pp // 2, pp - 1})


def rank_peak(step: Step, rank: int) -> Memory:
    """Rank `rank`'s peak: its largest moment, labelled."""
    found = moments(step, rank)
    name = max(found, key=lambda k: found[k].total)
    m = found[name]
    return Memory(m.weights, m.grads, m.optimizer, m.activations, m.logits, m.buffers, rank, name)


def peak_memory(step: Step) -> Memory:
    """The fullest rank's peak (every pipeline rank costed; they are cheap)."""
    return max((rank_peak(step, r) for r in range(step.pp)), key=lambda m: m.total)


def _textbook_activations(shape: ModelShape, tp: int, recompute: str) -> float:
    """Bytes per token and block the textbook rule keeps (bf16, flash attention; Korthikanti et al. 2022's count
    for SwiGLU and GQA): none 12 d + 4 d_kv + 8 f; selective drops the norm outputs, SiLU and the product
    (4 d + 4 f); full keeps the block input (2 d); all over TP (sequence parallel)."""
    everything = 12 * shape.d_model + 4 * shape.n_kv_heads * shape.head_dim + 8 * shape.ffn_dim
    kept = {"none": everything, "selective": everything - 4 * shape.d_model - 4 * shape.ffn_dim}
    return kept.get(recompute, 2 * shape.d_model) / tp


def textbook_memory(step: Step) -> Memory:
    """Memory of the fullest stage of a published run (bytes): the rule the planner's efficiency was calibrated
    with on the published runs (docs/throughput.md), whatever their sharding. States: bf16 weights and bf16
    gradients unsharded within the TP group (2 + 2 bytes per parameter), fp32 master weights, fp32 reduced
    gradients and AdamW's two moments sharded over DP ((4 + 4 + 8) / D): ZeRO-2 as a pipelined run holds it.
    Activations: `_textbook_activations` per token and block, the first stage holding min(PP, m) micro-batches
    (x (1 + (PP - 1) / (PP v)) interleaved, Narayanan et al. 2021), the last stage one plus the fp32 logits
    (4 V / t per token); full recompute adds one block's whole set while it is recomputed."""
    s, t, D, T = step.shape, step.tp, step.dp, step.tokens
    layers = -(-s.n_layers // step.pp)
    block = flops.layer_params(s.d_model, s.n_heads, s.n_kv_heads, s.ffn_dim)
    table = s.vocab_size * s.d_model
    params = (layers * block + (2 if step.pp == 1 else 1) * table) / t
    kept = T * layers * _textbook_activations(s, t, step.recompute)
    working = T * _textbook_activations(s, t, "none") if step.recompute == "full" else 0.0
    last = kept + working + T * 4 * s.vocab_size / t
    held = min(step.pp, step.micro_batches)
    if step.virtual > 1:
        held *= 1 + (step.pp - 1) / (step.pp * step.virtual)
    activations = max(last, kept * held + working) if step.pp > 1 else last
    states = 2 * params + 4 * params / D
    return Memory(states, states, 8 * params / D, activations, moment="textbook")
