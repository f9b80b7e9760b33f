"""Batch size and peak LR for a plan, each with its source. Pure: no torch, no I/O.

In this order (the first that applies wins; each number names where it came from):
1. tuned: the user's own tune sweep (`workbench sweep tune`, `plan --hparams`, or a fit file's `hparams`);
2. law: a published law whose fitted range covers the budget: DeepSeek LLM (2024, arXiv:2401.02954,
   Sec. 3.1), B_opt = 0.292 C^0.3271 tokens and lr_opt = 0.3118 C^-0.125, fitted on 1e17 to 3e20 FLOPs;
3. anchors: power laws in C fitted (least squares in log-log) to the final batch and peak LR of published
   dense-transformer runs (`ANCHORS`, each cited), the batch capped at the largest any of them used.
Outside every range the nearest source (in log C) is used and a warning says it is extrapolated. The batch is
rounded to whole sequences of the form 2^k or 3 x 2^k, so that data parallelism and the 1/4 -> 1/2 -> 1 ramp
divide it. Compute C = 6 N D of each anchor's stated N and D (Llama 3 405B: the report's 3.8e25).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from workbench.core.errors import WorkbenchError
from workbench.fit.laws import DEEPSEEK_HPARAMS, DEEPSEEK_RANGE_FLOPS, HparamLaws, PowerLaw


@dataclass(frozen=True)
class Anchor:
    """A published run: its final batch (tokens), peak LR and compute, with the citation."""

    key: str
    name: str
    compute_flops: float
    batch_tokens: float
    lr_peak: float
    source: str


def _anchor(key: str, name: str, params: float, tokens: float, batch: float, lr: float, source: str) -> Anchor:
    return Anchor(key, name, 6 * params * tokens, batch, lr, source)


ANCHORS = (
    _anchor("gpt3-1.3b", "GPT-3 XL 1.3B", 1.3e9, 300e9, 1e6, 2.0e-4, "Brown et al. 2020, Table 2.1"),
    _anchor("gpt3-6.7b", "GPT-3 6.7B", 6.7e9, 300e9, 2e6, 1.2e-4, "Brown et al. 2020, Table 2.1"),
    _anchor("gpt3-13b", "GPT-3 13B", 13e9, 300e9, 2e6, 1.0e-4, "Brown et al. 2020, Table 2.1"),
    _anchor("gpt3-175b", "GPT-3 175B", 175e9, 300e9, 3.2e6, 0.6e-4, "Brown et al. 2020, Table 2.1"),
    _anchor("gopher-280b", "Gopher 280B", 280e9, 300e9, 6e6, 4e-5, "Rae et al. 2021, Table 1 (batch 3M -> 6M)"),
    _anchor("chinchilla-70b", "Chinchilla 70B", 70e9, 1.4e12, 3e6, 1e-4, "Hoffmann et al. 2022, Table 4 (1.5M->3M)"),
    _anchor("llama2-7b", "Llama 2 7B", 7e9, 2e12, 4e6, 3e-4, "Touvron et al. 2023, Table 1"),
    _anchor("llama2-13b", "Llama 2 13B", 13e9, 2e12, 4e6, 3e-4, "Touvron et al. 2023, Table 1"),
    _anchor("llama2-70b", "Llama 2 70B", 70e9, 2e12, 4e6, 1.5e-4, "Touvron et al. 2023, Table 1"),
    _anchor("deepseek-7b", "DeepSeek LLM 7B", 7e9, 2e12, 2304 * 4096, 4.2e-4, "DeepSeek-AI 2024, Table 2"),
    _anchor("deepseek-67b", "DeepSeek LLM 67B", 67e9, 2e12, 4608 * 4096, 3.2e-4, "DeepSeek-AI 2024, Table 2"),
    Anchor("llama3-405b", "Llama 3 405B", 3.8e25, 16 * 2**20, 8e-5, "Llama 3 Herd of Models 2024, Sec. 3.4.1"),
)


@dataclass(frozen=True)
class HparamChoice:
    """The plan's final batch (tokens, whole sequences) and peak LR, and where each came from."""

    batch_tokens: int
    lr_peak: float
    rule: str  # "tuned", "law" or "anchors"
    batch_source: str
    lr_source: str
    warnings: tuple[str, ...] = ()

    @property
    def source(self) -> str:
        same = self.batch_source.startswith(self.lr_source)  # one rule for both (the batch's may add its cap)
        text = self.batch_source if same else f"{self.batch_source}; {self.lr_source}"
        return text + "".join(f" (warning: {w})" for w in self.warnings)


def _fit(xs: list[float], ys: list[float]) -> PowerLaw:
    """y = coef x^exp by least squares in log-log."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    slope = sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / sum((a - mx) ** 2 for a in lx)
    return PowerLaw(math.exp(my - slope * mx), slope)


@dataclass(frozen=True)
class AnchorRule:
    """Batch and LR power laws fitted to the anchors, the batch cap and the anchors' compute range."""

    batch: PowerLaw
    lr: PowerLaw
    batch_cap_tokens: float
    range_flops: tuple[float, float]
    anchors: tuple[Anchor, ...]

    def describe(self) -> str:
        names = ", ".join(a.name for a in self.anchors)
        return (
            f"rule anchored to {len(self.anchors)} published runs ({names}): batch {self.batch.coef:.4g} "
            f"C^{self.batch.exp:.4f} tokens capped at {self.batch_cap_tokens / 1e6:.3g}M, "
            f"lr {self.lr.coef:.4g} C^{self.lr.exp:.4f} (workbench.plan.hparams)"
        )


def anchor_rule(leave_out: tuple[str, ...] = ()) -> AnchorRule:
    """The anchored rule on every anchor but those keyed in `leave_out` (leave-one-out checks)."""
    anchors = tuple(a for a in ANCHORS if a.key not in leave_out)
    if len(anchors) < 2:
        raise ValueError("the anchored rule needs at least two anchors")
    compute = [a.compute_flops for a in anchors]
    return AnchorRule(
        _fit(compute, [a.batch_tokens for a in anchors]),
        _fit(compute, [a.lr_peak for a in anchors]),
        max(a.batch_tokens for a in anchors),
        (min(compute), max(compute)),
        anchors,
    )


def round_sequences(batch_tokens: float, seq_len: int, cap_tokens: float = math.inf) -> int:
    """Whole sequences of the form 2^k or 3 x 2^k nearest (in log) to `batch_tokens` / seq_len, at least 1 and
    at most `cap_tokens` / seq_len where that allows one."""
    seqs = max(1.0, batch_tokens / seq_len)
    options = [1, 2, 3] + [m * 2**k for k in range(1, 40) for m in (2, 3)]
    allowed = [s for s in options if s * seq_len <= cap_tokens] or [1]
    return min(allowed, key=lambda s: (abs(math.log(s / seqs)), s))


def _outside(budget_flops: float, low: float, high: float) -> float:
    """How far `budget_flops` is outside [low, high] in decades (0 inside)."""
    return max(0.0, math.log10(low / budget_flops), math.log10(budget_flops / high))


def choose(
    budget_flops: float, seq_len: int, tuned: HparamLaws | None = None, leave_out: tuple[str, ...] = ()
) -> HparamChoice:
    """Batch (tokens) and peak LR at `budget_flops` FLOPs (the budget the run spends), with their sources."""
    if tuned is not None:
        seqs = round_sequences(tuned.batch_tokens(budget_flops), seq_len)
        return HparamChoice(seqs * seq_len, tuned.lr_peak(budget_flops), "tuned", tuned.source, tuned.source)
    rule = anchor_rule(leave_out)
    off_law = _outside(budget_flops, *DEEPSEEK_RANGE_FLOPS)
    off_anchors = _outside(budget_flops, *rule.range_flops)
    warnings = []
    if off_law <= off_anchors:
        low, high = DEEPSEEK_RANGE_FLOPS
        if off_law > 0:
            warnings.append(f"extrapolated {off_law:.1f} decades beyond the law's fitted {low:.0e} to {high:.0e} FLOPs")
        seqs = round_sequences(DEEPSEEK_HPARAMS.batch_tokens(budget_flops), seq_len)
        lr = DEEPSEEK_HPARAMS.lr_peak(budget_flops)
        return HparamChoice(
            seqs * seq_len, lr, "law", DEEPSEEK_HPARAMS.source, DEEPSEEK_HPARAMS.source, tuple(warnings)
        )
    low, high = rule.range_flops
    if off_anchors > 0:
        warnings.append(f"extrapolated {off_anchors:.1f} decades beyond the anchors' {low:.2g} to {high:.2g} FLOPs")
    wanted = rule.batch(budget_flops)
    batch_source = rule.describe()
    if wanted > rule.batch_cap_tokens:
        wanted = rule.batch_cap_tokens
        batch_source += f"; batch at the cap ({rule.batch_cap_tokens / 1e6:.3g}M tokens, the largest anchor's)"
    seqs = round_sequences(wanted, seq_len, rule.batch_cap_tokens)
    return HparamChoice(
        seqs * seq_len, rule.lr(budget_flops), "anchors", batch_source, rule.describe(), tuple(warnings)
    )


def anchors_left_out(keys: list[str]) -> tuple[str, ...]:
    """The --leave-out-anchor keys, checked against the published anchors."""
    known = {a.key for a in ANCHORS}
    for key in keys:
        if key not in known:
            raise WorkbenchError(
                f"--leave-out-anchor: unknown anchor {key!r}", f"Use one of {', '.join(sorted(known))}."
            )
    return tuple(keys)
