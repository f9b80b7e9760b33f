"""What the trainer reads (`data:` of a run config): a weighted mixture of prepared data sets."""

from __future__ import annotations

from pydantic import Field

from workbench.core.configfile import Count, Number, Strict


class SourceConfig(Strict):
    """One prepared data set (a folder written by `workbench data prepare`) and its mixture weight."""

    path: str
    weight: Number = Field(default=1.0, gt=0)


class DataConfig(Strict):
    """What the trainer reads: a weighted mixture of prepared sources, and an optional annealing mixture
    used for the last `anneal_tokens` tokens (Llama 3 upweights high-quality data at the end)."""

    sources: list[SourceConfig] = Field(min_length=1)
    seq_len: Count = Field(default=256, gt=0)
    anneal_sources: list[SourceConfig] = Field(default_factory=list)
    anneal_tokens: Count = Field(default=0, ge=0)
