"""Plan a sweep's own flagship at one of its budgets, trained as the sweep's runs were (the demo's plan).

The law is the fit's isoFLOP law (Llama 3's method: N*(C), D*(C) from the parabolas' vertices); the batch
is the sweep's batch rule at the budget and the peak LR the sweep's LR rule at the planned size
(workbench.sweep.grid.lr_for), so that the flagship differs from the sweep's runs in size only; its init,
schedule (cosine or WSD, warmup, floor: grid.standalone_schedule), evaluation and CPU runtime are the
sweep's too. Pure: no file is written here.
"""

from __future__ import annotations

from pathlib import Path

from workbench.fit.laws import HparamLaws, PowerLaw, isoflop_law
from workbench.model.shapes import ModelShape, shape_named
from workbench.plan.hardware import resolve_gpu
from workbench.plan.planner import Plan, flagship_config, make_plan
from workbench.plan.record import to_record
from workbench.records import FitRecord, PlanRecord
from workbench.sweep.grid import init_std_for, lr_for, standalone_schedule
from workbench.sweep.spec import SweepSpec
from workbench.train.config import TrainConfig


def sweep_hparams(spec: SweepSpec) -> HparamLaws:
    """The sweep's batch rule as a power law of the budget; the LR law is a placeholder (the sweep's LR rule
    depends on N, and `plan_sweep_flagship` sets it at the planned size)."""
    rules, train = spec.rules, spec.train
    if train.batch_tokens == "auto":
        batch = PowerLaw(rules.batch_ref_tokens / rules.batch_ref_flops**rules.batch_exponent, rules.batch_exponent)
    else:
        batch = PowerLaw(float(train.batch_tokens), 0.0)
    return HparamLaws(batch, PowerLaw(1.0, 0.0), f"the {spec.name} sweep's rules")


def sweep_shapes(spec: SweepSpec) -> list[ModelShape] | None:
    """The sweep's own ladder when it names every size's shape (L3-d20): the flagship is then one of its
    shapes, not the size rule's nearest rung, whose depth may differ (README, "The embedded default")."""
    sizes = spec.grid.sizes
    if not sizes or not all(isinstance(s, str) for s in sizes):
        return None
    return sorted((shape_named(s, spec.model.vocab_size) for s in sizes), key=lambda s: s.params)


def plan_sweep_flagship(
    record: FitRecord, spec: SweepSpec, budget_flops: float, data_dir: str
) -> tuple[Plan, PlanRecord, TrainConfig]:
    """(plan, its record, the flagship's train config) at `budget_flops` from the sweep's fit."""
    plan = make_plan(
        isoflop_law(record, sweep_hparams(spec)),
        budget_flops,
        gpu=resolve_gpu(str(spec.launch.gpu_peak_flops / 1e12)),
        seq_len=spec.data.seq_len,
        vocab_size=spec.model.vocab_size,
        floor=spec.train.schedule.floor,
        shapes=sweep_shapes(spec),
    )
    name = f"{spec.name}-flagship"
    run_dir = Path(spec.runs_root).resolve() / name / f"c{budget_flops:.2g}-{plan.shape.name}"
    config = flagship_config(plan, data_dir, str(run_dir), name)
    lr = lr_for(spec, plan.shape.params)
    eval_block = {"batches": spec.train.eval.batches, "batch_seqs": spec.train.eval.batch_seqs}
    schedule = standalone_schedule(spec, config.batch.batch_tokens, config.stop.tokens)
    config = config.model_copy(
        update={
            "model": config.model.model_copy(update={"init_std": init_std_for(spec, plan.shape)}),
            "schedule": config.schedule.model_copy(update=schedule),
            "optim": config.optim.model_copy(update={"lr_peak": lr}),
            "eval": config.eval.model_copy(update=eval_block),
            "runtime": config.runtime.model_copy(update={"device": "cpu", "threads": spec.train.runtime.threads}),
        }
    )
    return plan, to_record(plan).model_copy(update={"lr_peak": lr, "name": name}), config
