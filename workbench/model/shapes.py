"""The size rule: a parameter target -> a hardware-friendly Llama-3-style shape. Pure: no torch.

How the rule works (documented in docs/FITTING.md too):
1. Candidates: every (n_layers, d_model) with n_layers in 2..200 (a one-layer transformer cannot
   form induction heads and falls off the scaling curve) and d_model a multiple of 2 below 64,
   8 below 256, 64 below 1024, 512 below 2048 and 1024 from there (so n_heads is a multiple of 4, and of 8
   from d = 1024: about 0.3B parameters at Llama 3's vocabulary, every shape from 1B up),
   whose width/depth ratio d_model / n_layers is within a factor 2 (3 below d = 64) of the ideal
   ratio r(d) = clip(64 * sqrt(d / 1024), 16, 128). r rises from 16 for tiny models to 128 at
   d = 4096, the Llama 3 family's ratio (8B: 4096 / 32 = 128; 405B: 16384 / 126 = 130).
2. Each candidate gets head_dim 16 (d < 64), 32 (d < 256), 64 (d < 2048) or 128 (below 64 the
   largest divisor of d giving at most d / 16 heads); n_kv_heads is the
   largest divisor of n_heads that is at most min(8, n_heads / 2) (Llama 3 uses 8 KV heads throughout: 8 from
   d = 1024, so TP 8 splits both the heads and the KV heads);
   ffn_dim = 3.5 d rounded up to a multiple of 64 (8 below d = 256), Llama 3 8B/70B's ratio.
3. The candidates are sorted by N and cut into log-spaced bins 4% wide; each bin keeps the candidate
   whose ratio is closest to r(d). These rungs form a ladder sorted by N.
4. A target picks the rung nearest to it in log N. Nearest-on-a-sorted-ladder is monotone (a larger
   target never gives a smaller model), and the rungs are at most ~8% apart, so the pick lands within
   ~4% of the target wherever the ladder is dense (it is from about 10K parameters at vocabulary 256,
   and from about 40M at Llama 3's vocabulary of 128256).
The three presets 8b, 70b and 405b are the published shapes, not the rule's output. A size may also
name its shape, `L<n_layers>-d<d_model>` (heads and FFN from step 2): a ladder whose depth never falls
as N grows, which the rule's nearest rung does not promise at tiny sizes (docs/DEMO.md, the pilot).
"""

from __future__ import annotations

import bisect
import math
import re
from dataclasses import asdict, dataclass
from functools import lru_cache

from workbench.core.errors import WorkbenchError
from workbench.core.units import parse_number
from workbench.model import flops

LLAMA3_VOCAB = 128256
MIN_LAYERS = 2  # one-layer models cannot form induction heads: a different kind of model, off the curve
MAX_LAYERS = 200
BIN_WIDTH = 1.04  # ratio between neighbouring bins of the ladder
SHAPE_NAME = re.compile(r"L(\d+)-d(\d+)")  # an explicit shape: L3-d20


@dataclass(frozen=True)
class ModelShape:
    """A decoder shape. Parameter counts come from workbench.model.flops."""

    name: str
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    ffn_dim: int
    vocab_size: int

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def params_total(self) -> int:
        return flops.params_total(self)

    @property
    def params(self) -> int:
        """N: non-embedding parameters (the output projection counts)."""
        return flops.params_non_embedding(self)

    def as_dict(self) -> dict:
        return asdict(self)


PRESETS = {
    "8b": ModelShape("8b", 32, 4096, 32, 8, 14336, LLAMA3_VOCAB),
    "70b": ModelShape("70b", 80, 8192, 64, 8, 28672, LLAMA3_VOCAB),
    "405b": ModelShape("405b", 126, 16384, 128, 8, 53248, LLAMA3_VOCAB),
}


def ideal_ratio(d_model: int) -> float:
    """The width/depth ratio the rule aims for at width d_model."""
    return min(128.0, max(16.0, 64.0 * math.sqrt(d_model / 1024)))


def _widths() -> list[int]:
    # coarser steps for wider models: n_heads a multiple of 4 below d = 1024, and of 8 from there (about
    # 0.3B parameters), so that 8 KV heads divide it and tensor parallelism 8 splits the heads
    return (
        list(range(8, 64, 2))
        + list(range(64, 256, 8))
        + list(range(256, 1024, 64))
        + list(range(1024, 2048, 512))
        + list(range(2048, 20480 + 1, 1024))
    )


def _round_up(x: float, multiple: int) -> int:
    return int(math.ceil(x / multiple) * multiple)


def shape_for(n_layers: int, d_model: int, vocab_size: int) -> ModelShape:
    """Heads, KV heads and FFN width for a given depth and width (step 2 of the rule)."""
    head_dim = 16 if d_model < 64 else 32 if d_model < 256 else 64 if d_model < 2048 else 128
    # the most heads up to d / head_dim that split d into even head widths (RoPE rotates pairs)
    n_heads = max(h for h in range(1, max(1, d_model // head_dim) + 1) if d_model % (2 * h) == 0)
    cap = min(8, max(1, n_heads // 2))
    n_kv_heads = max(k for k in range(1, cap + 1) if n_heads % k == 0)
    ffn_dim = _round_up(3.5 * d_model, 8 if d_model < 256 else 64)
    return ModelShape(f"L{n_layers}-d{d_model}", n_layers, d_model, n_heads, n_kv_heads, ffn_dim, vocab_size)


@lru_cache(maxsize=8)
def ladder(vocab_size: int) -> tuple[tuple[int, ...], tuple[ModelShape, ...]]:
    """The rungs (N, shape) of the size rule for a vocabulary, sorted by N."""
    best: dict[int, tuple[float, int, ModelShape]] = {}
    for d_model in _widths():
        ratio = ideal_ratio(d_model)
        for n_layers in range(MIN_LAYERS, MAX_LAYERS + 1):
            miss = abs(math.log(d_model / n_layers / ratio))
            if miss > math.log(2 if d_model >= 64 else 3):
                continue
            shape = shape_for(n_layers, d_model, vocab_size)
            n = shape.params
            key = int(math.floor(math.log(n) / math.log(BIN_WIDTH)))
            if key not in best or (miss, n) < best[key][:2]:
                best[key] = (miss, n, shape)
    rungs = sorted((n, shape) for _, n, shape in best.values())
    return tuple(n for n, _ in rungs), tuple(shape for _, shape in rungs)


def shape_for_params(target: float, vocab_size: int = LLAMA3_VOCAB) -> ModelShape:
    """The rung of the ladder nearest to `target` non-embedding parameters (in log space)."""
    counts, shapes = ladder(vocab_size)
    low, high = counts[0] / BIN_WIDTH, counts[-1] * BIN_WIDTH
    if not low <= target <= high:
        raise WorkbenchError(
            f"size {target:.3g} is outside what the size rule covers at vocabulary {vocab_size}",
            f"Give a number of parameters from {counts[0]:.3g} to {counts[-1]:.3g}, or a preset (8b, 70b, 405b).",
        )
    i = bisect.bisect_left(counts, target)
    if i == len(counts) or (i > 0 and math.log(target / counts[i - 1]) <= math.log(counts[i] / target)):
        i -= 1
    return shapes[i]


def shape_named(name: str, vocab_size: int = LLAMA3_VOCAB) -> ModelShape | None:
    """The explicit shape `L<n_layers>-d<d_model>` (step 2 of the rule gives heads and FFN); None if `name`
    is not of that form."""
    match = SHAPE_NAME.fullmatch(name.strip())
    if match is None:
        return None
    n_layers, d_model = int(match[1]), int(match[2])
    if not (1 <= n_layers <= MAX_LAYERS and 2 <= d_model <= 1_000_000 and d_model % 2 == 0):
        raise WorkbenchError(
            f"shape {name!r} needs 1 to {MAX_LAYERS} layers and an even d_model (RoPE rotates pairs)",
            "Name a shape like L3-d20, or give a number of parameters.",
        )
    return shape_for(n_layers, d_model, vocab_size)


def resolve_size(size: str, vocab_size: int = LLAMA3_VOCAB) -> ModelShape:
    """A preset name ('8b'), an explicit shape ('L3-d20') or a parameter target ('350M', '1.2e9') -> a shape."""
    named = shape_named(size, vocab_size)
    if named is not None:
        return named
    key = size.strip().lower()
    if key in PRESETS:
        preset = PRESETS[key]
        if vocab_size != preset.vocab_size:
            preset = ModelShape(**{**preset.as_dict(), "vocab_size": vocab_size})
        return preset
    try:
        target = parse_number(size, "SIZE")
    except WorkbenchError as err:
        raise WorkbenchError(
            f"SIZE {size!r} is neither a preset nor a number of parameters",
            "Use 8b, 70b, 405b, a shape like L3-d20, or a number like 350M, 1.2e9, 16B.",
        ) from err
    if target <= 0:
        raise WorkbenchError(f"SIZE {size!r} must be positive", "Use a number of parameters like 350M or 1.2e9.")
    return shape_for_params(target, vocab_size)
