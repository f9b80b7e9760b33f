"""LR and batch size as functions of tokens seen. Pure: no torch.

Schedules are over tokens, not steps, so that a batch-size ramp does not bend them (the Llama 3
recipe states its warmup in steps at a fixed batch; `warmup_tokens` = steps x batch tokens).
"""

from __future__ import annotations

import math

from workbench.train.config import BatchConfig, ScheduleConfig


def lr_at(tokens: float, total_tokens: float, lr_peak: float, schedule: ScheduleConfig) -> float:
    """Learning rate for the step that starts after `tokens` tokens of a `total_tokens` run."""
    warmup = schedule.warmup_tokens
    if warmup and tokens < warmup:
        return lr_peak * (tokens + 1) / warmup  # never exactly 0 at step 0
    anneal = schedule.anneal_tokens
    anneal_start = total_tokens - anneal
    if anneal and tokens >= anneal_start:  # final linear anneal to 0 over the last `anneal` tokens
        base = _base_lr(max(anneal_start, warmup), total_tokens, lr_peak, schedule)
        return base * max(0.0, total_tokens - tokens) / anneal
    return _base_lr(tokens, total_tokens, lr_peak, schedule)


def _base_lr(tokens: float, total_tokens: float, lr_peak: float, schedule: ScheduleConfig) -> float:
    floor = schedule.floor * lr_peak
    warmup = schedule.warmup_tokens
    if schedule.kind == "constant":
        return lr_peak
    if schedule.kind == "cosine":
        span = max(total_tokens - warmup, 1.0)
        progress = min(1.0, max(0.0, (tokens - warmup) / span))
        return floor + (lr_peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    # wsd: stable at the peak, then a linear decay to the floor over the last decay_fraction of the run
    decay_start = total_tokens * (1.0 - schedule.decay_fraction)
    if tokens < decay_start:
        return lr_peak
    progress = min(1.0, (tokens - decay_start) / max(total_tokens - decay_start, 1.0))
    return lr_peak + (floor - lr_peak) * progress


def batch_tokens_at(tokens: float, batch: BatchConfig) -> int:
    """Global batch size in tokens for the step that starts after `tokens` tokens (ramp by tokens seen)."""
    current = batch.batch_tokens
    for step in sorted(batch.ramp, key=lambda r: r.after_tokens):
        if tokens >= step.after_tokens:
            current = step.batch_tokens
    return current
