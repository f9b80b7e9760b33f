"""`workbench memory`'s logic: a layout the user names, checked, with its modelled memory and step time."""

from __future__ import annotations

from workbench.core.errors import WorkbenchError
from workbench.model.shapes import resolve_size
from workbench.plan.hardware import MAX_GPUS, resolve_gpu
from workbench.plan.layout_cost import evaluate, headroom
from workbench.plan.memory_model import Step, layout_family, peak_memory
from workbench.train.parallel.memory_scale import DEFAULT_DEPTHS, MeasureRequest


def cost_layout(
    shape_spec,
    tp,
    pp,
    dp,
    micro_batch,
    micro_batches,
    batch,
    recompute,
    schedule,
    virtual,
    seq_len,
    vocab_size,
    gpu,
    gpu_memory_gb,
    full_depth,
):
    """(result dict, MeasureRequest, Step, shape, Gpu) of a named layout; one-line errors for impossible ones."""
    if schedule not in ("1f1b", "interleaved"):
        raise WorkbenchError(f"--schedule {schedule!r} is not a pipeline schedule", "Use 1f1b or interleaved.")
    virtual = (virtual or 2) if schedule == "interleaved" else 1
    if schedule == "1f1b" and virtual != 1:
        raise WorkbenchError("--virtual-stages > 1 needs --schedule interleaved", "Add --schedule interleaved.")
    shape = resolve_size(shape_spec, vocab_size)
    m = micro_batches or (pp * virtual if pp > 1 else 1)
    batch = batch or dp * micro_batch * m
    if batch % (dp * micro_batch) or batch // (dp * micro_batch) != m:
        raise WorkbenchError(
            f"--batch {batch} is not --dp {dp} x --micro-batch {micro_batch} x {m} micro-batches",
            "Give a batch that DP x micro-batch divides (or leave --batch out).",
        )
    if tp * pp * dp > MAX_GPUS:
        raise WorkbenchError(
            f"TP {tp} x PP {pp} x DP {dp} = {tp * pp * dp:,} GPUs, more than {MAX_GPUS:,}", "Check --tp, --pp, --dp."
        )
    depths = None if full_depth else DEFAULT_DEPTHS
    req = MeasureRequest(shape, seq_len, micro_batch, tp, pp, dp, recompute, virtual, m, depths)
    req.check()
    card = resolve_gpu(gpu, gpu_memory_gb)
    step = Step(shape, seq_len, micro_batch, tp, pp, dp, recompute, virtual, m)
    model = peak_memory(step)
    cost = evaluate(shape, seq_len, batch, card, tp, pp, dp, micro_batch, recompute, virtual)
    family = layout_family(tp, pp)
    spare = headroom(family)
    out = {
        "shape": shape.as_dict(),
        "layout": dict(
            tp=tp,
            pp=pp,
            dp=dp,
            gpus=tp * pp * dp,
            micro_batch=micro_batch,
            micro_batches=m,
            batch_seqs=batch,
            recompute=recompute,
            schedule=req.schedule,
            virtual_stages=virtual,
            seq_len=seq_len,
        ),
        "gpu": {"name": card.name, "memory_bytes": card.memory_bytes},
        "model": {**model.as_dict(), "pp_rank": model.pp_rank, "moment": model.moment},
        "headroom": {"family": family, "fraction": spare, "limit_bytes": (1 - spare) * card.memory_bytes},
        "step_time_s": cost.step_time_s,
        "mfu": cost.mfu,
    }
    return out, req, step, shape, card
