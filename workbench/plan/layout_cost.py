"""A costed TP x PP x DP layout for a planned model: memory and step time per candidate. Pure: no torch, no I/O.

Every number below is an input or a documented modelling choice (docs/throughput.md); workbench.plan.efficiency_fit
checks the model against 57 published runs, each predicted with its own row left out of the fit.

Hardware (`Gpu`): dense bf16 peak (data sheet), memory, and the achievable matmul throughput of a training step:
a share of the peak that depends on the GPU type and the model's width (workbench.plan.efficiency, fitted on
the published runs). HBM bandwidths from the data sheets: H100 3.35, A100 2.04, H200 4.8, B200 8 TB/s. NVLink
and the inter-node network are NCCL bus bandwidths per GPU and direction: 80% of the line rate (nccl-tests
reach about that): H100/H200 NVLink 4 450 GB/s, A100 NVLink 3 300 GB/s, B200 NVLink 5 900 GB/s; 400 Gb/s per
GPU of RoCE/InfiniBand (Llama 3 Sec. 3.3.1), 200 Gb/s for A100 clusters (HDR). Each collective step costs a
latency of 3 us on NVLink and 10 us across nodes (ring algorithms: (n - 1) steps).

Memory per GPU: workbench.plan.memory_model, the peak of one training step of this trainer on its fullest pipeline
rank (FSDP2 with bf16 parameters and fp32 gradient reduction, TP with sequence and loss parallelism, torch's
pipeline schedules), which `workbench memory --measure` checks against the trainer's own code on fake tensors
(docs/MEMORY.md). A layout fits when the model's total is at most the card's memory less its headroom: 10% of
the card for what no model counts, plus the model's largest measured error for the layout family (`headroom`).
A published run (`options`, `best_at`, `published=True`) is costed instead with the textbook rule the efficiency
was calibrated with (memory_model.textbook_memory) against 90% of the card: its system is not this trainer.
Selective recompute (torchtitan's policy) recomputes the elementwise ops between the saved matmuls: costed at the
GPU's memory bandwidth; full recompute costs one more forward of each block (2 x block params + 4 T d FLOPs per
token and layer) and the TP collectives of that forward.

Step time of one optimizer step of the final batch:
- a micro-batch of the fullest stage takes tau = compute (model FLOPs + recompute FLOPs at the achievable
  throughput) + TP (8 all-gathers/reduce-scatters of the activation per layer, 12 with full recompute, over
  NVLink) + PP point-to-point (2 v sends of its activation per micro-batch; NVLink inside a node, else network);
- the pipeline runs m micro-batches in (m + (PP - 1) / v) x tau: the bubble (PP - 1) / v x tau (1F1B: v = 1;
  interleaved: m a multiple of max(1, m // PP), as torch's schedule needs, and in a plan v divides the fullest
  stage's layers with PP x v chunks at most the layers: the trainer gives each chunk at least one, so 126 layers
  cannot run as 16 x 8 chunks, while 97 run as 4 x 5 chunks of 4 or 5 layers, costed at the fullest stage);
- DP, as the trainer shards it (FSDP2): with a pipeline (reshard_after_forward=False, gradients reduced at the
  last micro-batch) one all-gather of the bf16 stage weights (overlapped with the first forward, tau / 3) and one
  fp32 reduce-scatter (overlapped with the last backward, 2 tau / 3) per step, what does not overlap adding to
  the step; without one (reshard_after_forward=True) every micro-batch gathers the weights for its forward and
  again for its backward and reduce-scatters its gradients, prefetched block by block under its compute, so a
  micro-batch takes the longer of its compute and its communication. The published runs add ZeRO-1/2 (as FSDP
  with a pipeline), ZeRO-3 (as FSDP without one) and DDP (an fp32 all-reduce after the backward, not overlapped:
  Megatron-LM before its distributed optimizer; Korthikanti et al. 2022 Sec. 6.3);
- context parallelism (published rows only; the plan uses CP 1): each GPU computes 1/CP of the sequence's tokens
  with attention over all of it, and gathers K and V (forward and backward) and reduce-scatters their gradients.
MFU = model FLOPs of the step (workbench.model.flops: 6N + 12 L T d per token) / (step time x GPUs x peak).

Search: TP in 1, 2, 4, 8 within a node and dividing n_heads; PP from 1 to the layers (at most 64), used only when
no PP = 1 layout fits memory or every one that fits leaves GPUs idle; DP a divisor of the global batch's
micro-batches (sequences / micro-batch), so the trainer's batch check holds; micro-batches dividing the planned
one; recompute none, selective or full; 1F1B or interleaved with v chunks, v dividing the fullest stage's layers
and PP x v at most the layers; CP 1. The fastest layout that fits wins (ties: fewer GPUs, larger micro-batch,
less recompute).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from workbench.core.errors import WorkbenchError
from workbench.model import flops
from workbench.model.shapes import ModelShape
from workbench.plan.hardware import GB, GPUS_PER_NODE, NVLINK_LATENCY_S, Gpu, network
from workbench.plan.memory_model import MODEL_ERROR, Memory, Step, layout_family, peak_memory, textbook_memory
from workbench.plan.step_time import (
    OPTIMIZER_BYTES,
    StepParts,
    data_parallel_s,
    dp_link,
    recompute_flops,
    ring_s,
    timeline,
)
from workbench.train.microbatches import pipeline_microbatches_ok

USABLE_MEMORY = 0.9
RECOMPUTE = ("none", "selective", "full")
# what published runs call selective, with the memory policy it is held to: Megatron-LM's recomputes the attention
# core (Korthikanti et al. 2022); torchtitan's "layer" option recomputes every second block whole, its "op" option
# every second matmul of a block (its selective AC policy at the time of its published numbers)
PUBLISHED_RECOMPUTE = {"attention": "none", "alternate_blocks": "selective", "alternate_matmuls": "selective"}
MAX_PIPELINE_STAGES = 64
MAX_VIRTUAL_STAGES = 16
# parallel layouts whose modelled step times lie within this fraction of the fastest are a tie to the cost model
# (its constants are rounded published figures, its calibration's error is several times this); among them a
# plan takes the one that keeps the most of the card free: an out-of-memory is a failed run, 2% of time is not
STEP_TIME_TIE = 0.02


def _recomputed_bytes_per_token_layer(shape: ModelShape) -> int:
    """Bytes per token and block that selective recompute drops: the two norm outputs, SiLU and the product."""
    return 4 * shape.d_model + 4 * shape.ffn_dim


def _stage_params(shape: ModelShape, pp: int, tp: int) -> tuple[float, float]:
    """Parameters per GPU of the first and the last (fullest) pipeline stage."""
    layers = math.ceil(shape.n_layers / pp)
    block = flops.layer_params(shape.d_model, shape.n_heads, shape.n_kv_heads, shape.ffn_dim)
    table = shape.vocab_size * shape.d_model
    if pp == 1:
        both = (layers * block + 2 * table) / tp
        return both, both
    return (layers * block + table) / tp, (layers * block + table) / tp


def headroom(family: str) -> float:
    """The share of the card a plan keeps free for a layout family: 10% for what no model counts (CUDA context,
    NCCL, allocator fragmentation) plus the analytical model's largest measured error for the family."""
    return 1 - USABLE_MEMORY + MODEL_ERROR[family]


def memory_per_gpu(
    shape: ModelShape,
    seq_len: int,
    micro_batch: int,
    tp: int,
    pp: int,
    dp: int,
    recompute: str,
    micro_batches: int | None = None,
    virtual: int = 1,
    *,
    published: bool = False,
) -> Memory:
    """Peak memory of the fullest pipeline rank of a TP x PP x DP layout (bytes): this trainer's step
    (workbench.plan.memory_model.peak_memory), or for a published run the textbook rule its efficiency was
    calibrated with (`textbook_memory`); micro_batches per replica and step default to PP."""
    m = pp if micro_batches is None else micro_batches
    policy = PUBLISHED_RECOMPUTE.get(recompute, recompute)
    step = Step(shape, seq_len, micro_batch, tp, pp, dp, policy, virtual, m)
    return textbook_memory(step) if published else peak_memory(step)


def memory_limit(gpu: Gpu, tp: int, pp: int, published: bool = False) -> float:
    """Bytes a layout may use: 90% of the card for a published run (as calibrated), else the card less the
    trainer's headroom for the layout family."""
    return (USABLE_MEMORY if published else 1 - headroom(layout_family(tp, pp))) * gpu.memory_bytes


@dataclass(frozen=True)
class Candidate:
    """One costed layout: degrees, schedule, memory per GPU and the modelled step time (seconds)."""

    tp: int
    pp: int
    dp: int
    micro_batch: int
    grad_accum: int  # micro-batches per DP replica and step
    recompute: str
    schedule: str  # "none" (PP 1), "1f1b" or "interleaved"
    virtual_stages: int
    memory: Memory
    memory_limit_bytes: float
    step_time_s: float
    compute_s: float  # per step, all micro-batches of the fullest stage
    tp_comm_s: float
    pp_comm_s: float
    dp_comm_exposed_s: float
    bubble_fraction: float  # share of the step the fullest stage idles in the pipeline bubble
    mfu: float  # modelled: model FLOPs / (step time x GPUs x peak)
    cp: int = 1  # context parallelism: published runs only
    sharding: str = "fsdp"
    parts: StepParts | None = field(default=None, compare=False, repr=False)
    model_flops: float = 0.0  # of one step
    published: bool = False  # memory by the published runs' textbook rule, not this trainer's model

    @property
    def gpus(self) -> int:
        return self.tp * self.pp * self.dp * self.cp

    @property
    def fits(self) -> bool:
        return self.memory.total <= self.memory_limit_bytes

    @property
    def family(self) -> str:
        return layout_family(self.tp, self.pp)

    def as_dict(self) -> dict:
        return {
            "tp": self.tp,
            "pp": self.pp,
            "dp": self.dp,
            "cp": self.cp,
            "gpus": self.gpus,
            "micro_batch": self.micro_batch,
            "grad_accum": self.grad_accum,
            "recompute": self.recompute,
            "schedule": self.schedule,
            "virtual_stages": self.virtual_stages,
            "step_time_s": self.step_time_s,
            "mfu": self.mfu,
            "bubble_fraction": self.bubble_fraction,
            "memory_per_gpu_gb": self.memory.total / GB,
            "memory_limit_gb": self.memory_limit_bytes / GB,
            "compute_s": self.compute_s,
            "tp_comm_s": self.tp_comm_s,
            "pp_comm_s": self.pp_comm_s,
            "dp_comm_exposed_s": self.dp_comm_exposed_s,
            "fits": self.fits,
        }


def _micro_batch_parts(
    shape: ModelShape, seq_len: int, micro_batch: int, gpu: Gpu, tp: int, pp: int, recompute: str, cp: int
):
    """(matmul FLOPs, elementwise s, TP + CP collectives s) of a micro-batch forward + backward, fullest stage."""
    layers = math.ceil(shape.n_layers / pp)
    tokens = micro_batch * seq_len / cp  # this GPU's share of the micro-batch's tokens
    block = flops.layer_params(shape.d_model, shape.n_heads, shape.n_kv_heads, shape.ffn_dim)
    attention = flops.ATTENTION_FLOPS_PER_TOKEN_LAYER * seq_len * shape.d_model  # over the whole sequence
    extra = recompute_flops(shape, block, attention, recompute)
    per_token = layers * (6 * block + attention + extra) + 6 * shape.vocab_size * shape.d_model
    elementwise = 0.0
    if recompute == "selective":  # elementwise work, bound by memory bandwidth: read the input, write the output
        elementwise = 2 * tokens * layers * _recomputed_bytes_per_token_layer(shape) / tp / gpu.hbm_bytes_s
    collectives = 12 if recompute == "full" else 8
    comm = collectives * layers * ring_s(tokens * shape.d_model * 2, tp, gpu.nvlink_bytes_s, NVLINK_LATENCY_S)
    if cp > 1:  # gather K and V of the whole sequence forward and backward, reduce-scatter their gradients
        link = (gpu.nvlink_bytes_s, NVLINK_LATENCY_S) if tp * cp <= GPUS_PER_NODE else network(gpu)
        kv = micro_batch * seq_len * 2 * shape.n_kv_heads * shape.head_dim * 2 / tp
        comm += 3 * layers * ring_s(kv, cp, *link)
    return tokens * per_token / tp, elementwise, comm


def evaluate(
    shape: ModelShape,
    seq_len: int,
    batch_seqs: int,
    gpu: Gpu,
    tp: int,
    pp: int,
    dp: int,
    micro_batch: int,
    recompute: str,
    virtual: int = 1,
    *,
    cp: int = 1,
    sharding: str = "fsdp",
    published: bool = False,
) -> Candidate:
    """Memory and modelled step time of one layout for the final batch of `batch_seqs` sequences; `published`:
    a published run's layout, its memory by the textbook rule (`memory_per_gpu`), else this trainer's."""
    m = batch_seqs // (micro_batch * dp)
    gpus = tp * pp * dp * cp
    matmul, elementwise, tp_comm = _micro_batch_parts(shape, seq_len, micro_batch, gpu, tp, pp, recompute, cp)
    pp_link = (gpu.nvlink_bytes_s, NVLINK_LATENCY_S) if tp * cp * pp <= GPUS_PER_NODE else network(gpu)
    send = micro_batch * seq_len / cp * shape.d_model * 2 / tp / pp_link[0] + pp_link[1]
    first, last = _stage_params(shape, pp, tp)
    dp_micro, gather, reduce, overlap = data_parallel_s(
        max(first, last), dp * cp, dp_link(gpu, tp, dp * cp), sharding, pp
    )
    parts = StepParts(
        m,
        matmul,
        shape.d_model,
        elementwise,
        tp_comm,
        2 * virtual * send if pp > 1 else 0.0,
        (pp - 1) / virtual,
        dp_micro,
        gather,
        reduce,
        overlap,
        max(first, last) / (1 if sharding == "none" else dp * cp) * OPTIMIZER_BYTES / gpu.hbm_bytes_s,
    )
    t = {k: float(v) for k, v in timeline(parts, gpu.achievable_flops(shape.d_model)).items()}
    model_flops = flops.flops_per_token(shape, seq_len) * batch_seqs * seq_len
    memory = memory_per_gpu(shape, seq_len // cp, micro_batch, tp, pp, dp, recompute, m, virtual, published=published)
    return Candidate(
        tp,
        pp,
        dp,
        micro_batch,
        m,
        recompute,
        "none" if pp == 1 else "1f1b" if virtual == 1 else "interleaved",
        virtual,
        memory,
        memory_limit(gpu, tp, pp, published),
        t["step"],
        m * t["compute"],
        m * tp_comm,
        m * parts.pp_comm_s,
        t["exposed"],
        parts.bubble_units * t["tau"] / t["step"],
        model_flops / (t["step"] * gpus * gpu.peak_flops),
        cp,
        sharding,
        parts,
        model_flops,
        published,
    )


@dataclass(frozen=True)
class Layout:
    """The chosen layout: degrees, memory per GPU, the modelled step time and MFU, and the next-best ones."""

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
    step_time_s: float = 0.0
    mfu: float = 0.0
    bubble_fraction: float = 0.0
    schedule: str = "none"
    virtual_stages: int = 1
    cp: int = 1
    chosen: Candidate | None = None
    alternatives: tuple[Candidate, ...] = ()  # the next-best fitting layouts, fastest first
    rejected: tuple[Candidate, ...] = ()  # faster layouts that do not fit memory, fastest first

    @property
    def nodes(self) -> int:
        return math.ceil(self.gpus / GPUS_PER_NODE)

    @property
    def gpus_per_node(self) -> int:
        return min(self.gpus, GPUS_PER_NODE)


def _divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def _data_parallel(units: int, room: float, fixed_gpus: bool) -> list[int]:
    """DP degrees dividing `units` micro-batches: the three largest within `room` replicas (fixed GPUs; fewer
    replicas give more micro-batches per step, which a pipeline may need), else the fewest >= room."""
    divisors = _divisors(units)
    if fixed_gpus:
        return [d for d in divisors if d <= room][-3:]
    enough = [d for d in divisors if d >= room]
    return [enough[0] if enough else divisors[-1]]


def _pipeline_degrees(shape: ModelShape) -> list[int]:
    """PP degrees worth trying: 1 to the number of layers (at most MAX_PIPELINE_STAGES)."""
    return list(range(1, min(shape.n_layers, MAX_PIPELINE_STAGES) + 1))


def virtual_stages(n_layers: int, pp: int, micro_batches: int, balanced: bool = True) -> list[int]:
    """Chunks per GPU to try: 1, and interleaved v > 1 when v divides the stage's layers and torch's interleaved
    1F1B takes the micro-batches (rounds of PP: m a multiple of max(1, m // PP)); in a plan v divides the fullest
    stage's layers, is at most MAX_VIRTUAL_STAGES and PP x v chunks each get a layer (the trainer's rule: 97
    layers run as 4 x 5 chunks, the fullest stage costed); for a published run any v down to one layer a chunk."""
    if pp == 1:
        return [1]
    layers = math.ceil(n_layers / pp)
    if micro_batches % max(1, micro_batches // pp):
        return [1]
    if not balanced:
        return _divisors(layers)
    return [1] + [v for v in _divisors(layers) if 1 < v <= MAX_VIRTUAL_STAGES and pp * v <= n_layers]


def _schedule_ok(micro_batches: int, pp: int, virtual: int) -> bool:
    return pipeline_microbatches_ok(micro_batches, pp, virtual > 1)


def candidates(
    shape: ModelShape,
    seq_len: int,
    micro_batch: int,
    batch_seqs: int,
    gpu: Gpu,
    gpus: int,
    fixed_gpus: bool,
    pipeline: list[int] | None = None,
    ramp_seqs: tuple[int, ...] = (),
    published: bool = False,
) -> list[Candidate]:
    """Every costed layout (fitting or not) for the final batch. Micro-batch x DP divides every batch of the
    ramp (`ramp_seqs`, in sequences; default the final batch only), as the trainer checks, and under PP
    every batch gives each replica the micro-batches its schedule needs (the trainer's config check,
    workbench.train.microbatches.pipeline_microbatches_ok)."""
    out = []
    batches = (batch_seqs, *ramp_seqs)
    unit = math.gcd(*batches)
    tps = [t for t in (1, 2, 4, 8) if shape.n_heads % t == 0 and t <= GPUS_PER_NODE and (t <= gpus or not fixed_gpus)]
    micro_batches = [b for b in _divisors(micro_batch) if unit % b == 0]
    for tp in tps:
        for pp in pipeline or _pipeline_degrees(shape):
            if fixed_gpus and tp * pp > gpus:
                break
            for mb in micro_batches:
                for dp in _data_parallel(unit // mb, gpus / (tp * pp), fixed_gpus):
                    virtuals = virtual_stages(shape.n_layers, pp, batch_seqs // (mb * dp))
                    runs = [v for v in virtuals if all(_schedule_ok(b // (mb * dp), pp, v) for b in batches)]
                    for recompute in RECOMPUTE:
                        for v in runs:
                            c = evaluate(
                                shape, seq_len, batch_seqs, gpu, tp, pp, dp, mb, recompute, v, published=published
                            )
                            out.append(c)
    return out


def _rank(c: Candidate) -> tuple:
    return (round(c.step_time_s, 9), c.gpus, -c.micro_batch, RECOMPUTE.index(c.recompute), c.virtual_stages)


def _roomiest_of_the_fastest(ranked: list[Candidate]) -> Candidate:
    """Of the parallel layouts (TP x PP x DP x CP, each as its fastest micro-batch, recompute and schedule) on as
    many GPUs as the fastest (`ranked` fastest first) and within STEP_TIME_TIE of its step, the one using the
    smallest share of its usable memory. Variants of one layout are not traded for memory: a smaller micro-batch
    or more recompute than the fastest costs what this model does not see (kernel efficiency)."""
    fastest = ranked[0]
    best_of: dict[tuple, Candidate] = {}
    for c in ranked:
        best_of.setdefault((c.tp, c.pp, c.dp, c.cp), c)
    tied = [
        c
        for c in best_of.values()
        if c.gpus == fastest.gpus and c.step_time_s <= fastest.step_time_s * (1 + STEP_TIME_TIE)
    ]
    return min(tied, key=lambda c: (c.memory.total / c.memory_limit_bytes, _rank(c)))


def choose_layout(
    shape: ModelShape,
    seq_len: int,
    micro_batch: int,
    batch_seqs: int,
    gpu: Gpu,
    gpus: int,
    fixed_gpus: bool,
    ramp_seqs: tuple[int, ...] = (),
    published: bool = False,
) -> Layout:
    """The fastest layout that fits `gpu`: on `gpus` GPUs (fixed), or the fewest GPUs reaching about `gpus`;
    `published`: memory by the published runs' textbook rule (a published run that states no layout)."""
    flat = candidates(shape, seq_len, micro_batch, batch_seqs, gpu, gpus, fixed_gpus, [1], ramp_seqs, published)
    fitting = [c for c in flat if c.fits]
    everything = flat
    if not fitting or (fixed_gpus and min(fitting, key=_rank).gpus < gpus):  # a pipeline when memory needs one,
        # or when the fastest PP = 1 layout leaves GPUs idle (DP x micro-batch divides every batch of the ramp)
        everything = candidates(
            shape, seq_len, micro_batch, batch_seqs, gpu, gpus, fixed_gpus, None, ramp_seqs, published
        )
        fitting = [c for c in everything if c.fits]
    if not fitting:
        _no_fit(shape, seq_len, micro_batch, batch_seqs, gpu, gpus, fixed_gpus, published)
    ranked = sorted(fitting, key=_rank)
    best = _roomiest_of_the_fastest(ranked)
    ranked.remove(best)
    ranked.insert(0, best)
    others, seen = [], {(best.tp, best.pp, best.dp)}
    for c in ranked[1:]:
        if (c.tp, c.pp, c.dp) not in seen and len(others) < 8:
            seen.add((c.tp, c.pp, c.dp))
            others.append(c)
    faster = sorted((c for c in everything if not c.fits and c.step_time_s < best.step_time_s), key=_rank)[:4]
    return Layout(
        best.tp,
        best.pp,
        best.dp,
        best.gpus,
        gpus - best.gpus if fixed_gpus else 0,
        best.micro_batch,
        best.grad_accum,
        best.recompute,
        best.memory,
        best.memory_limit_bytes,
        best.step_time_s,
        best.mfu,
        best.bubble_fraction,
        best.schedule,
        best.virtual_stages,
        1,
        best,
        tuple(others),
        tuple(faster),
    )


def _no_fit(shape, seq_len, micro_batch, batch_seqs, gpu, gpus, fixed_gpus, published) -> None:
    if fixed_gpus:
        try:
            least = choose_layout(shape, seq_len, micro_batch, batch_seqs, gpu, 1, False, published=published)
            hint = f"Give at least {least.tp * least.pp} GPUs (TP {least.tp} x PP {least.pp})."
        except WorkbenchError:  # not even at DP 1: FSDP over more GPUs is what shards the states
            hint = "Give more GPUs: FSDP shards the weights, gradients and AdamW state over them."
        raise WorkbenchError(
            f"--gpus {gpus}: model {shape.name} does not fit {gpus} x {gpu.name} ({gpu.memory_bytes / GB:g} GB)", hint
        )
    raise WorkbenchError(
        f"model {shape.name} at seq_len {seq_len} fits no TP x PP layout on {gpu.name} ({gpu.memory_bytes / GB:g} GB)",
        "Use a GPU with more memory (--gpu-memory-gb) or a shorter --seq-len.",
    )


def options(
    shape: ModelShape,
    seq_len: int,
    batch_seqs: int,
    gpu: Gpu,
    tp: int,
    pp: int,
    dp: int,
    *,
    micro_batch: int | None = 1,
    recompute: str | None = None,
    virtual: int | None = None,
    cp: int = 1,
    sharding: str = "fsdp",
    published: bool = True,
) -> list[Candidate]:
    """Every costed variant of a fixed TP x PP x DP (x CP) layout over what is not given (None): micro-batches
    dividing the replica's sequences (up to 8), recompute policies, chunks per GPU (stages may be unbalanced,
    as in published runs); memory by the published runs' textbook rule unless `published` is False."""
    per_replica = batch_seqs // dp
    micro = [micro_batch] if micro_batch else [b for b in _divisors(per_replica) if b <= 8]
    out = []
    for mb in micro:
        m = per_replica // mb
        chunks = [virtual] if virtual else virtual_stages(shape.n_layers, pp, m, balanced=False)
        for policy in [recompute] if recompute else RECOMPUTE:
            for v in chunks:
                out.append(
                    evaluate(
                        shape,
                        seq_len,
                        batch_seqs,
                        gpu,
                        tp,
                        pp,
                        dp,
                        mb,
                        policy,
                        v,
                        cp=cp,
                        sharding=sharding,
                        published=published,
                    )
                )
    return out


def best_at(
    shape: ModelShape, seq_len: int, batch_seqs: int, gpu: Gpu, tp: int, pp: int, dp: int, micro_batch: int = 1
) -> Candidate:
    """The fastest fitting schedule and recompute policy at fixed TP x PP x DP of a published run (its memory by
    the textbook rule the calibration used)."""
    fitting = [c for c in options(shape, seq_len, batch_seqs, gpu, tp, pp, dp, micro_batch=micro_batch) if c.fits]
    if not fitting:
        raise WorkbenchError(f"TP {tp} x PP {pp} x DP {dp} does not fit {gpu.name}", "Pick another layout.")
    return min(fitting, key=_rank)
