"""Peak memory per GPU of a layout, measured from the trainer's own code (workbench.train.parallel.memory_probe) on
one rank of the first, a middle and the last pipeline stage, and scaled to the real model and step.

- **Depth.** A deep model is measured at two reduced depths (`depths`: blocks per pipeline chunk, default 2 and 4;
  the same width, vocabulary, sequence and layout) and extrapolated to the real number of blocks on the rank. The
  step's peak can move (the embedding's backward is the peak of a shallow TP model, the loss's of a deep one), so
  each window of the step (one forward or backward of one micro-batch: its start, first block, last block, head,
  end) is extrapolated on its own, every category linearly in the blocks, and the largest window is the peak.
  Models no deeper than the larger reduced depth are measured as they are.
- **Micro-batches.** Without a pipeline, two micro-batches are measured when the step has two or more (from the
  second on, the sharded fp32 gradients of the first exist): the later ones repeat it. Under a pipeline the
  schedule runs min(m, PP) micro-batches (1F1B) or min(m, 2 PP) (interleaved), which already keeps as many in
  flight as the real step; the receive buffers torch's stages allocate per micro-batch for the whole step (the
  "buffers" category) are scaled to the step's m.

Pure Python (torch is imported by the measuring child process only).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from workbench.core.errors import WorkbenchError
from workbench.model.shapes import ModelShape
from workbench.train.microbatches import pipeline_microbatches_ok
from workbench.train.parallel.memory_probe import CATEGORIES, Probe, ProbeSpec, categorise, measure

DEFAULT_DEPTHS = (2, 4)


@dataclass(frozen=True)
class MeasureRequest:
    """One layout to measure: the model, the sequence and micro-batch (sequences), TP x PP x DP (DP: FSDP2 shards
    over it), recompute, chunks per pipeline rank (interleaved 1F1B when > 1), micro-batches per DP replica and
    step, and the reduced depths (blocks per chunk; None: the full model)."""

    shape: ModelShape
    seq_len: int
    micro_batch: int
    tp: int
    pp: int
    dp: int
    recompute: str
    virtual: int = 1
    micro_batches: int = 1
    depths: tuple[int, int] | None = DEFAULT_DEPTHS

    def check(self) -> None:
        """One-line errors for a layout the trainer cannot build."""
        s = self.shape
        if s.n_heads % self.tp or s.n_kv_heads % self.tp:
            raise WorkbenchError(
                f"TP {self.tp} does not divide the {s.n_heads} heads and {s.n_kv_heads} KV heads of {s.name}",
                "Pick a TP that divides both (1, 2, 4, 8 for the Llama 3 shapes).",
            )
        if self.seq_len % self.tp:
            raise WorkbenchError(
                f"TP {self.tp} does not divide --seq-len {self.seq_len}", "Sequence parallelism splits it."
            )
        if self.pp * self.virtual > s.n_layers:
            raise WorkbenchError(
                f"PP {self.pp} x {self.virtual} chunks: more pipeline stages than the {s.n_layers} layers of {s.name}",
                "Give every stage at least one layer: lower --pp or --virtual-stages.",
            )
        if self.virtual > 1 and self.pp == 1:
            raise WorkbenchError("--virtual-stages > 1 needs a pipeline (--pp > 1)", "Use --schedule 1f1b or --pp > 1.")
        if self.recompute not in ("none", "selective", "full"):
            raise WorkbenchError(f"unknown recompute {self.recompute!r}", "Use none, selective or full.")
        if not pipeline_microbatches_ok(self.micro_batches, self.pp, self.virtual > 1):
            raise WorkbenchError(
                f"{self.micro_batches} micro-batches per replica cannot run {self.schedule} over PP {self.pp}",
                "1F1B needs at least PP micro-batches; interleaved a multiple of max(1, m // PP).",
            )

    @property
    def schedule(self) -> str:
        return "none" if self.pp == 1 else "1f1b" if self.virtual == 1 else "interleaved"

    @property
    def chunks(self) -> int:
        return self.pp * self.virtual

    @property
    def reduced(self) -> bool:
        return self.depths is not None and self.shape.n_layers > self.depths[1] * self.chunks

    @property
    def measured_micro_batches(self) -> int:
        if self.pp == 1:
            return min(self.micro_batches, 2)
        return min(self.micro_batches, self.pp if self.virtual == 1 else 2 * self.pp)

    def ranks(self) -> list[int]:
        """Pipeline ranks measured: the first (most micro-batches in flight, the embedding), a middle one (receive
        buffers both ways) and the last (the loss)."""
        return sorted({0, self.pp // 2, self.pp - 1})

    def blocks_on_rank(self, rank: int, n_layers: int | None = None) -> int:
        """Blocks rank `rank` holds in a model of `n_layers` (the trainer's split: round(i n / stages))."""
        n = n_layers or self.shape.n_layers
        bounds = [round(i * n / self.chunks) for i in range(self.chunks + 1)]
        return sum(bounds[s + 1] - bounds[s] for s in range(rank, self.chunks, self.pp))


@dataclass(frozen=True)
class RankMemory:
    """The peak of one pipeline rank (bytes), by category (CATEGORIES), the window of the step it falls in, and
    how it was found: the blocks measured (one entry: as is; two: extrapolated to `blocks`)."""

    pp_rank: int
    peak_bytes: float
    breakdown: dict[str, float]
    window: str
    blocks: int
    measured_blocks: tuple[int, ...]
    wall_s: float

    def as_dict(self) -> dict:
        return {
            "pp_rank": self.pp_rank,
            "peak_bytes": self.peak_bytes,
            "breakdown_bytes": self.breakdown,
            "window": self.window,
            "blocks": self.blocks,
            "measured_blocks": list(self.measured_blocks),
            "wall_s": self.wall_s,
        }


def specs(req: MeasureRequest) -> list[tuple[int, ProbeSpec]]:
    """(pipeline rank, probe) pairs: each rank at the full depth or at both reduced depths."""
    s = req.shape
    depths = [d * req.chunks for d in req.depths] if req.reduced else [s.n_layers]
    out = []
    for rank in req.ranks():
        for n_layers in depths:
            spec = ProbeSpec(
                n_layers=n_layers,
                d_model=s.d_model,
                n_heads=s.n_heads,
                n_kv_heads=s.n_kv_heads,
                ffn_dim=s.ffn_dim,
                vocab_size=s.vocab_size,
                seq_len=req.seq_len,
                micro_batch=req.micro_batch,
                tp=req.tp,
                pp=req.pp,
                dp=req.dp,
                recompute=req.recompute,
                virtual=req.virtual,
                micro_batches=req.measured_micro_batches,
                pp_rank=rank,
            )
            out.append((rank, spec))
    return out


def _window_name(key) -> str:
    return "/".join(str(k) for k in key)


def _scaled(req: MeasureRequest, snap: dict[str, int]) -> dict[str, float]:
    """Categories of a snapshot, with the pipeline's receive buffers scaled to the step's micro-batches."""
    out = {k: float(v) for k, v in categorise(snap).items()}
    out["buffers"] += snap.get("Pipeline", 0) * (req.micro_batches / req.measured_micro_batches - 1)
    return out


def combine(req: MeasureRequest, rank: int, probes: list[Probe]) -> RankMemory:
    """One rank's peak from its measurement (as is) or its two reduced-depth ones (per window, extrapolated)."""
    target = req.blocks_on_rank(rank)
    wall_s = sum(p.wall_s for p in probes)
    if len(probes) == 1:
        p = probes[0]
        best = max(p.windows, key=lambda w: w[1].get("Total", 0), default=[["step"], p.peak])
        breakdown = _scaled(req, p.peak)
        return RankMemory(
            rank, sum(breakdown.values()), breakdown, _window_name(best[0]), target, (p.blocks_on_rank,), wall_s
        )
    low, high = probes
    a, b = low.blocks_on_rank, high.blocks_on_rank
    at_low = {tuple(k): v for k, v in low.windows}
    found = []
    for key, snap in high.windows:
        key = tuple(key)
        if key not in at_low or "mid" in key:
            continue
        lo, hi = _scaled(req, at_low[key]), _scaled(req, snap)
        cats = {c: hi[c] + (hi[c] - lo[c]) * (target - b) / (b - a) for c in CATEGORIES}
        found.append((sum(cats.values()), key, cats))
    if not found:
        raise WorkbenchError("--measure found no window of the step at both reduced depths", "Measure at full depth.")
    total, key, cats = max(found, key=lambda f: f[0])
    return RankMemory(rank, total, cats, _window_name(key), target, (a, b), wall_s)


def measure_layout(
    req: MeasureRequest, on_done: Callable[[int, int, ProbeSpec, Probe], None] | None = None, timeout_s: float = 3600
) -> list[RankMemory]:
    """Measure `req` (see the module docstring): one RankMemory per measured pipeline rank. `on_done(i, n, spec,
    probe)` after each of the n measurements."""
    req.check()
    pairs = specs(req)
    done = (lambda i, p: on_done(i, len(pairs), pairs[i][1], p)) if on_done else None
    probes = measure([spec for _, spec in pairs], done, timeout_s)
    out = []
    for rank in req.ranks():
        mine = [p for (r, _), p in zip(pairs, probes, strict=True) if r == rank]
        out.append(combine(req, rank, mine))
    return out


def peak(ranks: list[RankMemory]) -> RankMemory:
    """The fullest measured rank."""
    return max(ranks, key=lambda r: r.peak_bytes)


def gib(n: float) -> float:
    return n / 2**30
