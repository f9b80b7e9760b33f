"""Peak memory of one training step on one GPU, measured without a GPU from the trainer's own code.

One measurement is one rank of a layout: `parallelize.build` (meta -> pipeline split -> TP -> activation
checkpointing -> FSDP2 with the trainer's bf16 mixed-precision policy -> materialise) and the trainer's step
(`parallelize.forward_backward` over the rank's micro-batches, `parallelize.clip_grad_norm`, the trainer's AdamW,
fused as on a GPU, then `zero_grad(set_to_none=True)`), on fake tensors (shapes, no data) in a fake process group of
the layout's world size (workbench.train.parallel.fake_step has what that takes). torch's FSDPMemTracker counts
every storage the device holds, by category (workbench.train.parallel.memory_run). AdamW's moments are made before
the step (one update on zero gradients), so the measured step is a steady one.

Categories (bytes at the step's peak): weights (sharded fp32 master weights, the unsharded bf16 copies FSDP2
gathers, the RoPE tables), gradients (sharded fp32, unsharded bf16, and under a pipeline FSDP2's unsharded fp32
accumulators), optimizer state (AdamW's two moments), activations (what the forward keeps for the backward, and
the backward's temporaries), logits/loss (every tensor whose last dimension is this rank's share of the
vocabulary: the logits, their fp32 copy, the log-softmax and their gradients), buffers (FSDP2's all-gather and
reduce-scatter buffers, the pipeline's receive buffers, the input tokens).

What a CPU tracker does not see (the reason plans keep 10% of the card free): the CUDA context, NCCL's buffers,
cuBLAS and attention workspaces, the caching allocator's fragmentation, and FSDP2's stream overlap (the GPU may
gather the next unit while the CPU has moved on).

Measurements run in one child process (`python -m workbench.train.parallel.memory_run`), which imports torch
once and forks a fresh process per measurement: the fake process group and the patches are process-wide.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from workbench.core.errors import WorkbenchError

CATEGORIES = ("weights", "gradients", "optimizer", "activations", "logits", "buffers")
TRACKER_CATEGORIES = {  # FSDPMemTracker's reference types (and two of ours) -> the categories above
    "Sharded Param": "weights",
    "Unsharded Param": "weights",
    "Buffer": "weights",
    "Sharded Grad": "gradients",
    "Unsharded Grad": "gradients",
    "OptState": "optimizer",
    "Activation": "activations",
    "Temp": "activations",
    "Logits": "logits",
    "All Gather": "buffers",
    "Reduce Scatter": "buffers",
    "Pipeline": "buffers",
    "Inputs": "buffers",
}


@dataclass(frozen=True)
class ProbeSpec:
    """One rank of a layout to measure: the model (n_layers may be fewer than the shape's: a reduced depth), the
    layout, the micro-batches of one data-parallel replica's step, and the pipeline rank."""

    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    ffn_dim: int
    vocab_size: int
    seq_len: int
    micro_batch: int
    tp: int
    pp: int
    dp: int
    recompute: str  # none, selective, full
    virtual: int = 1  # pipeline stages per rank (interleaved 1F1B when > 1)
    micro_batches: int = 1
    pp_rank: int = 0

    @property
    def world(self) -> int:
        return self.tp * self.pp * self.dp


@dataclass(frozen=True)
class Probe:
    """One measured rank: the peak (bytes by the tracker's category, "Total" their sum), the peak of each window of
    the step (key -> the same), the blocks the rank holds, and the seconds it took."""

    spec: ProbeSpec
    peak: dict[str, int]
    windows: list = field(default_factory=list)  # [[key, snapshot], ...]
    blocks_on_rank: int = 0
    wall_s: float = 0.0

    @property
    def peak_bytes(self) -> int:
        return self.peak["Total"]


def categorise(tracker: dict[str, int]) -> dict[str, int]:
    """The tracker's categories summed into CATEGORIES."""
    out = dict.fromkeys(CATEGORIES, 0)
    for name, value in tracker.items():
        if name in TRACKER_CATEGORIES:
            out[TRACKER_CATEGORIES[name]] += value
    return out


def measure(
    specs: list[ProbeSpec], on_done: Callable[[int, Probe], None] | None = None, timeout_s: float = 3600
) -> list[Probe]:
    """Measure every spec (one forked process each, inside one child process); `on_done(i, probe)` as each ends."""
    with tempfile.TemporaryDirectory(prefix="workbench-memory-") as folder:
        inputs = os.path.join(folder, "specs.json")
        with open(inputs, "w") as fh:
            json.dump([asdict(s) for s in specs], fh)
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        command = [sys.executable, "-m", "workbench.train.parallel.memory_run", inputs]
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        found: list[Probe] = []
        started = time.monotonic()
        for line in child.stdout:
            record = json.loads(line)
            if "error" in record:
                child.kill()
                said = " ".join(record["error"].split())[:300]  # one line (a validation error spans several)
                raise WorkbenchError(
                    f"--measure failed on pipeline rank {specs[len(found)].pp_rank}: {said}",
                    "Run with --debug for the traceback.",
                )
            found.append(Probe(ProbeSpec(**record.pop("spec")), **record))
            if on_done:
                on_done(len(found) - 1, found[-1])
            if time.monotonic() - started > timeout_s:
                child.kill()
                raise WorkbenchError(
                    f"--measure: over {timeout_s:g} s", "Measure at the reduced depth (leave out --full-depth)."
                )
        errors = child.stderr.read()
        if child.wait() or len(found) != len(specs):
            last = [line for line in errors.splitlines() if line.strip()][-1:] or [f"exit code {child.returncode}"]
            raise WorkbenchError(f"--measure failed: {last[0][:300]}", "Run with --debug for the traceback.")
    return found
