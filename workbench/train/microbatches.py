"""How many micro-batches a pipeline schedule runs in one step: the one rule that the config check
(workbench.train.config.check_pipeline_batches) and the layout search of workbench.plan share. Pure Python:
the planner imports it without pydantic or torch."""

from __future__ import annotations


def pipeline_microbatches_ok(n: int, pp: int, interleaved: bool) -> bool:
    """Whether a pipeline schedule over `pp` ranks runs a step of `n` micro-batches. 1F1B needs at least one
    per stage (n >= pp; torch raises otherwise). Interleaved 1F1B (torch's flexible version, as Llama 3's
    first batches need) runs fewer, with a larger bubble, but needs n to be a multiple of its rounds,
    max(1, n // pp)."""
    if pp == 1 or interleaved:
        return n >= 1 and n % max(1, n // pp) == 0
    return n >= pp
