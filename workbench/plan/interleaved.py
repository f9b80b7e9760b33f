"""What one pipeline rank holds, action by action, under torch's interleaved 1F1B schedule as the trainer runs it
(torch.distributed.pipelining.ScheduleInterleaved1F1B over FSDP2 stages). Pure: no torch.

Measured with `workbench memory --measure` (70B, TP 8 x PP 4 x FSDP 4, full recompute: v = 2 and 4 chunks a rank,
m = 4 and 8 micro-batches; the 3.8e25 plan's L120-d15360, TP 8 x PP 8 x 15 chunks x FSDP 256, m = 8), the three
rules below are what the schedule's runtime does, and what the memory model (workbench.plan.memory_model) counts:

- **Order.** A rank runs `warmup` forwards ((v - 1) r + 2 (PP - 1 - rank), at most m v; r the micro-batches of one
  of torch's rounds, PP when m is a multiple of PP), then one forward and one backward at a time, then the
  remaining backwards. Forwards take the rank's chunks in order, r micro-batches each; backwards in reverse order.
- **Weights.** torch lowers the schedule with UNSHARD / RESHARD actions (`_add_unshard_reshard`): before each
  action the next three distinct chunks the rank will compute are gathered (bf16, unsharded) and every other chunk
  is resharded. So min(v, 3) chunks' bf16 weights are live, not v (the 70B rows, v = 4: one chunk less than all).
- **Gradients.** torch adds a REDUCE_GRAD after a chunk's last micro-batch backward (`_add_reduce_grad`): its fp32
  accumulators are reduce-scattered there and only their 1 / DP shard stays. A chunk holds its unsharded fp32
  accumulators from its first backward to its last, so with one round (m = PP) about one chunk's accumulators are
  live at a time; with m >= 2 PP every chunk's are, until the last round.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

MAX_ACTIVE = 3  # chunks torch's _add_unshard_reshard keeps gathered (its max_active_stages)


@dataclass(frozen=True)
class Moment:
    """A rank's state at the start of one backward: the chunk (local index) and micro-batch it runs, the chunks
    whose bf16 weights are gathered, the micro-batch backwards each chunk has done, and the micro-batches each
    chunk has run forward and not yet backward (this one included)."""

    chunk: int
    micro_batch: int
    gathered: frozenset[int]
    done: tuple[int, ...]
    held: tuple[int, ...]


def warmup_forwards(pp: int, virtual: int, micro_batches: int, rank: int) -> int:
    """Forwards rank `rank` runs before its first backward (torch's _get_warmup_ops)."""
    per_round = round_size(pp, micro_batches)
    return min((virtual - 1) * per_round + 2 * (pp - 1 - rank), micro_batches * virtual)


def round_size(pp: int, micro_batches: int) -> int:
    """Micro-batches of one of torch's rounds: m / max(1, m // PP)."""
    return micro_batches // max(1, micro_batches // pp)


def simulated_micro_batches(pp: int, micro_batches: int) -> int:
    """Micro-batches whose schedule has the same backward states, and so the same peaks, as `micro_batches`:
    past the warmup and before the cool-down a step repeats one round's states (r micro-batches of every chunk:
    the same chunks gathered, the same micro-batches held, every chunk's accumulators live), so a step of more
    than 4 rounds costs what 4 do (tests/test_memory.py compares every state for PP up to 8, up to 15 chunks and
    14 rounds). Keeps a plan's search linear in the layouts, not in the batch (thousands of micro-batches at a
    short seq_len)."""
    per_round = round_size(pp, micro_batches)
    if micro_batches % per_round or micro_batches // per_round <= 4:
        return micro_batches
    return 4 * per_round


def actions(pp: int, virtual: int, micro_batches: int, rank: int) -> list[tuple[str, int]]:
    """Rank `rank`'s compute actions in order: ("F" or "B", local chunk index)."""
    per_round, total = round_size(pp, micro_batches), micro_batches * virtual
    warmup = warmup_forwards(pp, virtual, micro_batches, rank)
    out = [("F", (op // per_round) % virtual) for op in range(warmup)]
    for op in range(warmup, total + warmup):
        if op < total:
            out.append(("F", (op // per_round) % virtual))
        out.append(("B", virtual - 1 - ((op - warmup) // per_round) % virtual))
    return out


def gathered(order: list[tuple[str, int]], index: int) -> frozenset[int]:
    """The chunks gathered at action `index`: the next MAX_ACTIVE distinct chunks from it on."""
    found: list[int] = []
    for _, chunk in order[index:]:
        if chunk not in found:
            found.append(chunk)
            if len(found) == MAX_ACTIVE:
                break
    return frozenset(found)


@lru_cache(maxsize=4096)
def backward_moments(pp: int, virtual: int, micro_batches: int, rank: int) -> tuple[Moment, ...]:
    """The state at the start of each of rank `rank`'s backwards (cached: a plan's search costs the same schedule
    for many layouts)."""
    order = actions(pp, virtual, micro_batches, rank)
    forwards, backwards = [0] * virtual, [0] * virtual
    out = []
    for i, (kind, chunk) in enumerate(order):
        if kind == "F":
            forwards[chunk] += 1
            continue
        held = tuple(f - b for f, b in zip(forwards, backwards, strict=True))
        out.append(Moment(chunk, backwards[chunk], gathered(order, i), tuple(backwards), held))
        backwards[chunk] += 1
    return tuple(out)


@lru_cache(maxsize=4096)
def moment_arrays(pp: int, virtual: int, micro_batches: int, rank: int) -> tuple[np.ndarray, ...]:
    """`backward_moments` as arrays, one row a backward: its chunk, whether it is the chunk's first micro-batch,
    and per chunk (columns) gathered (0/1), backwards done, micro-batches held. One pass each way (a plan's search
    costs thousands of schedules)."""
    order = actions(pp, virtual, micro_batches, rank)
    ahead, upcoming = [()] * len(order), ()
    for i in range(len(order) - 1, -1, -1):  # the next MAX_ACTIVE + 1 distinct chunks from each action on
        c = order[i][1]
        upcoming = (c, *(x for x in upcoming if x != c))[: MAX_ACTIVE + 1]
        ahead[i] = upcoming[:MAX_ACTIVE]
    n = micro_batches * virtual
    chunk, first = np.zeros(n, dtype=int), np.zeros(n, dtype=bool)
    gathered, done, held = np.zeros((n, virtual)), np.zeros((n, virtual)), np.zeros((n, virtual))
    forwards, backwards, k = [0] * virtual, [0] * virtual, 0
    for i, (kind, c) in enumerate(order):
        if kind == "F":
            forwards[c] += 1
            continue
        chunk[k], first[k], done[k] = c, backwards[c] == 0, backwards
        held[k] = [f - b for f, b in zip(forwards, backwards, strict=True)]
        gathered[k, list(ahead[i])] = 1.0
        backwards[c] += 1
        k += 1
    return chunk, first, gathered, done, held
