"""Plans that inherit the sweep: a plan from a sweep's fit trains as the sweep's runs were trained.

The fit record carries the spec of the sweep version it fitted (`sweep_spec`, written by `workbench fit`). From it
the plan takes the data (sources, and so the tokenizer), the vocabulary, the sequence length, the init, the
schedule family (grid.standalone_schedule: cosine, or WSD with the sweep's decay), the optimizer, evaluation and
runtime settings, the sweep's own ladder of named shapes, and its batch and LR:
- from the sweep's tune study (fits/SWEEP-hparams.json, or --hparams FILE) when there is one, else
- from the sweep's own rules (train.batch_tokens or the batch rule by budget; train.lr_peak or the LR rule by
  size: workbench.sweep.grid.lr_for), so that the flagship differs from the sweep's runs in size and length only.
Published-run rules (workbench.plan.hparams) are used when asked (`--hparams published`) or when the plan's
budget lies more than SWEEP_RULE_DECADES decades outside the sweep's budgets, with a warning. A sweep trained on
CPU gives a CPU target: no GPU-hours, days or layout. Every inherited setting is named in the plan.

The law is the fit's parametric law (refused in one line when degenerate: workbench.fit.laws.degenerate_reasons,
with what to add to the sweep) or, with method isoflop, its isoFLOP law (Llama 3's method), whose predicted loss is
L*(C) = K C^-gamma with its prediction interval (workbench.fit.frontier). The demo plans its flagship with
`plan_sweep_flagship`, the same planner. Pure: reads a data folder's manifest at most, writes nothing.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from pydantic import ValidationError

from workbench.core.configfile import describe
from workbench.core.errors import WorkbenchError
from workbench.core.units import human
from workbench.data.prepare import default_corpus_dir
from workbench.data.shards import manifest_if_any
from workbench.fit.frontier import predict_at
from workbench.fit.laws import (
    HparamLaws,
    Law,
    ParametricLaw,
    PowerLaw,
    degenerate_reasons,
    isoflop_law,
    law_from_fit,
)
from workbench.model.shapes import ModelShape, shape_named
from workbench.plan import hparams as hp
from workbench.plan.efficiency import CALIBRATION, Calibration
from workbench.plan.goodput import Failures
from workbench.plan.hardware import Gpu, resolve_gpu
from workbench.plan.planner import Plan, Schedule, flagship_config, make_plan
from workbench.plan.record import to_record
from workbench.records import FitRecord, PlanRecord
from workbench.sweep.grid import init_std_for, lr_for, standalone_schedule
from workbench.sweep.preflight import DEFAULT_CORPUS
from workbench.sweep.spec import SweepSpec
from workbench.train.config import TrainConfig

SWEEP_RULE_DECADES = 2.0  # the sweep's own batch/LR rules hold up to this far (in decades) outside its budgets
METHODS = ("parametric", "isoflop")


def sweep_hparams(spec: SweepSpec) -> HparamLaws:
    """The sweep's batch rule as a power law of the budget; the LR law is a placeholder (the sweep's LR rule
    depends on N, and the planners below set it at the planned size)."""
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


def sweep_spec_of(record: FitRecord, source: str) -> SweepSpec | None:
    """The spec of the sweep version a fit record fitted (None for a fit without one: a CSV, an older fit)."""
    data = (record.model_extra or {}).get("sweep_spec")
    if not data:
        return None
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as err:
        raise describe(err, SweepSpec, f"{source} sweep_spec", hint="Refit the sweep with `workbench fit`.") from None


def tokenizer_of(spec: SweepSpec) -> str:
    """The tokenizer of the sweep's first data folder, as its manifest names it (relative paths: this folder)."""
    path = spec.data.sources[0].path
    if path == DEFAULT_CORPUS:
        return "bytes (the embedded corpus)"
    manifest = manifest_if_any(Path(path)) if Path(path).is_dir() else None
    if manifest is None:
        return f"unknown ({path} is not a prepared data set here)"
    tok = manifest.get("tokenizer") or {}
    return str(tok.get("name") or f"{tok.get('kind')}, vocab {tok.get('vocab_size')}")


def _fitted(record: FitRecord) -> tuple[tuple[float, float] | None, list[float]]:
    """((smallest, largest) swept N, the fitted budgets) of a fit record."""
    points = record.points or {}
    params, budgets = points.get("params") or [], points.get("budget_flops") or []
    if record.isoflop is not None and record.isoflop.budgets:
        budgets = record.isoflop.budgets
    return ((min(params), max(params)) if params else None), sorted(set(budgets))


def sweep_law(record: FitRecord, source: str, method: str) -> Law:
    """The fit's law to plan with: its parametric law (refused in one line when degenerate, naming what to add to
    the sweep) or its isoFLOP law."""
    if method not in METHODS:
        raise WorkbenchError(f"--method: unknown method {method!r}", f"Use one of {', '.join(METHODS)}.")
    if method == "isoflop":
        return isoflop_law(record)
    if record.parametric is None:
        return law_from_fit(record, source)  # its one-line error
    sizes, budgets = _fitted(record)
    par = record.parametric
    reasons = degenerate_reasons({k: getattr(par, k) for k in ("E", "A", "B", "alpha", "beta")}, sizes, budgets)
    if reasons:
        raise WorkbenchError(
            f"{source}: the parametric law cannot be planned with: {'; '.join(reasons)}",
            _what_to_add(record, sizes, reasons),
        )
    return law_from_fit(record, source)


def _what_to_add(record: FitRecord, sizes: tuple[float, float] | None, reasons: list[str]) -> str:
    """What to add to the sweep so that its parametric law can be planned with: sizes beyond the swept ones when
    the law's N* falls outside them (its only fault), else budgets and sizes around each budget's minimum."""
    where = "budgets (grid.budgets_flops: 3 or more over a decade) with 5 sizes each around their minima"
    budgets = _fitted(record)[1]
    if sizes and budgets and all("outside the swept sizes" in r for r in reasons):
        par = record.parametric
        n_opt = [float(ParametricLaw(par.E, par.A, par.B, par.alpha, par.beta).optimum(c)[0]) for c in budgets]
        if max(n_opt) > sizes[1]:
            where = f"sizes above {human(sizes[1])} (grid.sizes, or grid.max_params and grid.spread)"
        else:
            where = f"sizes below {human(sizes[0])} (grid.sizes, or grid.min_params and grid.spread)"
    return (
        f"Add {where} to the sweep, relaunch it with --new-version and refit; or plan from its isoFLOP law: "
        "--method isoflop."
    )


def _hparams(spec: SweepSpec, budget_flops: float, tuned: HparamLaws | None, published: bool) -> tuple:
    """(batch/LR laws for make_plan or None for published rules, LR by size from the sweep's rule?, note, warning)."""
    budgets = spec.grid.budgets_flops or [budget_flops]
    off = max(0.0, math.log10(min(budgets) / budget_flops), math.log10(budget_flops / max(budgets)))
    if published:
        return None, False, "published-run rules (asked for with --hparams published)", None
    if off > SWEEP_RULE_DECADES:
        warning = (
            f"the plan's {budget_flops:.3g} FLOPs lie {off:.1f} decades outside the sweep's budgets "
            f"({min(budgets):.3g} to {max(budgets):.3g}); its own batch/LR rules hold to {SWEEP_RULE_DECADES:g}: "
            "published-run rules used"
        )
        return None, False, "published-run rules (extrapolating past the sweep's own)", warning
    if tuned is not None:
        return tuned, False, f"the sweep's tune study ({tuned.source})", None
    text = "the sweep's own rules (train.batch_tokens or its batch rule; train.lr_peak or its LR rule by size)"
    return sweep_hparams(spec), True, text, None


def plan_from_sweep(
    record: FitRecord,
    source: str,
    spec: SweepSpec,
    budget_flops: float,
    *,
    method: str = "parametric",
    law: Law | None = None,
    tuned: HparamLaws | None = None,
    published: bool = False,
    gpu: Gpu | None = None,
    mfu: float | None = None,
    gpus: int | None = None,
    days: float | None = None,
    seq_len: int | None = None,
    vocab_size: int | None = None,
    inference_tokens: float | None = None,
    leave_out: tuple[str, ...] = (),
    calibration: Calibration = CALIBRATION,
    failures: Failures = Failures(),
) -> Plan:
    """The plan at `budget_flops` from a sweep's fit, trained as the sweep's runs were (module docstring); `law`:
    the fit's law already chosen (sweep_law, perhaps made data-constrained), else chosen here by `method`."""
    law = law or sweep_law(record, source, method)
    laws, lr_by_size, hparams_text, warning = _hparams(spec, budget_flops, tuned, published)
    seq = seq_len or spec.data.seq_len
    vocab = vocab_size or spec.model.vocab_size
    plan = make_plan(
        dataclasses.replace(law, hparams=laws),
        budget_flops,
        gpu=gpu or resolve_gpu(str(spec.launch.gpu_peak_flops / 1e12)),
        mfu=mfu,
        seq_len=seq,
        vocab_size=vocab,
        gpus=gpus,
        days=days,
        inference_tokens=inference_tokens,
        floor=spec.train.schedule.floor,
        hparams_leave_out=leave_out,
        shapes=sweep_shapes(spec) if vocab == spec.model.vocab_size else None,
        calibration=calibration,
        failures=failures,
    )
    choice = plan.hparams
    if lr_by_size:
        choice = hp.HparamChoice(
            plan.batch_tokens,
            lr_for(spec, plan.shape.params),
            "sweep",
            f"the {spec.name} sweep's batch ({_batch_rule(spec)})",
            f"the {spec.name} sweep's LR ({_lr_rule(spec)}) at N {human(plan.shape.params)}",
        )
    if warning:
        choice = dataclasses.replace(choice, warnings=(warning, *choice.warnings))
    isoflop_only = law.parametric is None and law.isoflop is not None
    cpu = spec.train.runtime.device == "cpu"
    plan = dataclasses.replace(
        plan,
        warnings=_warnings(plan, choice, cpu, warning),
        lr_peak=choice.lr_peak,
        hparams=choice,
        hparams_source=choice.source,
        schedule=_schedule(spec, plan.batch_tokens, plan.shape_tokens),
        target="cpu" if cpu else "gpu",
        predicted=_isoflop_prediction(record, budget_flops) if isoflop_only else plan.predicted,
    )
    notes = _inherited_lines(spec, plan, hparams_text, seq_len, vocab_size)
    return dataclasses.replace(plan, law=dataclasses.replace(plan.law, notes=(*plan.law.notes, *notes)))


def _warnings(plan: Plan, choice: hp.HparamChoice, cpu: bool, warning: str | None) -> tuple[str, ...]:
    """The plan's warnings: a CPU target's are its batch/LR ones only (it has no GPU cost to warn about)."""
    if cpu:
        return tuple(f"batch/LR {w}" for w in choice.warnings)
    return (f"batch/LR {warning}", *plan.warnings) if warning else plan.warnings


def _batch_rule(spec: SweepSpec) -> str:
    if spec.train.batch_tokens != "auto":
        return f"train.batch_tokens {spec.train.batch_tokens}"
    r = spec.rules
    return f"{human(r.batch_ref_tokens)} tokens at {r.batch_ref_flops:.3g} FLOPs x (C / that)^{r.batch_exponent:g}"


def _lr_rule(spec: SweepSpec) -> str:
    if spec.train.lr_peak != "auto":
        return f"train.lr_peak {spec.train.lr_peak:g}"
    r = spec.rules
    return f"min({r.lr_max:g}, {r.lr_ref:g} x (N / {human(r.lr_ref_params)})^-{r.lr_exponent:g})"


def _schedule(spec: SweepSpec, batch_tokens: int, tokens: int) -> Schedule:
    """The sweep's schedule family (grid.standalone_schedule) for one run of `tokens` tokens; no batch ramp."""
    sched = standalone_schedule(spec, batch_tokens, tokens)
    return Schedule(
        warmup_tokens=sched["warmup_tokens"],
        warmup_steps=sched["warmup_tokens"] // batch_tokens,
        floor=sched["floor"],
        anneal_tokens=spec.train.schedule.anneal_tokens,
        ramp=((0, batch_tokens),),
        steps=tokens // batch_tokens,
        kind=sched["kind"],
        decay_fraction=sched.get("decay_fraction"),
        source=f"the {spec.name} sweep's {sched['kind']} schedule (warmup, floor and decay as its runs)",
    )


def _isoflop_prediction(record: FitRecord, budget_flops: float) -> dict | None:
    """L*(C) at the budget with the 90% prediction interval of one run (workbench.fit.frontier.predict_at)."""
    loss_law = record.isoflop.loss_law if record.isoflop is not None else None
    if loss_law is None:
        return None
    at = predict_at(loss_law.as_dict(), budget_flops)
    return {
        "loss": at["loss_pred"],
        "interval": at["prediction_interval"],
        "interval_kind": "90% prediction interval of one run: the law's draws widened by the run-to-run scatter",
        "of": "a compute-optimal run at the budget (L*(C) = K C^-gamma on the isoFLOP minima)",
    }


def _inherited_lines(spec: SweepSpec, plan: Plan, hparams_text: str, seq_len, vocab_size) -> list[str]:
    """What the plan took from the sweep, one line each (and where an option overrode it)."""
    sources = ", ".join(s.path for s in spec.data.sources)
    lines = [
        f"from sweep {spec.name}: data {sources} (tokenizer {tokenizer_of(spec)}), vocabulary "
        f"{spec.model.vocab_size}, seq_len {spec.data.seq_len}",
        f"from sweep {spec.name}: init_std {spec.model.init_std} ({init_std_for(spec, plan.shape):g} at d_model "
        f"{plan.shape.d_model}), {plan.schedule.kind} schedule, optimizer, evaluation and runtime "
        f"({spec.train.runtime.device}: {'no GPU-hours' if plan.target == 'cpu' else 'a GPU target'})",
        f"batch and LR from {hparams_text}",
    ]
    if seq_len and seq_len != spec.data.seq_len:
        lines.append(f"--seq-len {seq_len} replaces the sweep's {spec.data.seq_len}")
    if vocab_size and vocab_size != spec.model.vocab_size:
        lines.append(f"--vocab-size {vocab_size} replaces the sweep's {spec.model.vocab_size} (its data's tokenizer)")
    return lines


def inherited(spec: SweepSpec, plan: Plan, spec_hash: str | None) -> dict:
    """The record's `inherited` block: what the plan took from the sweep, as values and as lines."""
    return {
        "sweep": spec.name,
        "spec_hash": spec_hash,
        "data": [s.path for s in spec.data.sources],
        "tokenizer": tokenizer_of(spec),
        "vocab_size": spec.model.vocab_size,
        "seq_len": spec.data.seq_len,
        "init_std": init_std_for(spec, plan.shape),
        "schedule": plan.schedule.kind,
        "hparams": plan.hparams.rule if plan.hparams else None,
        "target": plan.target,
        "lines": [n for n in plan.law.notes if n.startswith(("from sweep", "batch and LR from", "--"))],
    }


def sweep_config(plan: Plan, spec: SweepSpec, run_dir: str, name: str) -> TrainConfig:
    """The flagship's train config: the planned shape and tokens, trained as the sweep's runs were (its data,
    init, schedule, optimizer, evaluation and runtime; a GPU target keeps the planned layout)."""
    data_dir = spec.data.sources[0].path
    config = flagship_config(plan, str(default_corpus_dir()) if data_dir == DEFAULT_CORPUS else data_dir, run_dir, name)
    data = spec.data.model_dump()
    for key in ("sources", "anneal_sources"):
        data[key] = [
            {**s, "path": str(default_corpus_dir()) if s["path"] == DEFAULT_CORPUS else s["path"]} for s in data[key]
        ]
    schedule = standalone_schedule(spec, config.batch.batch_tokens, config.stop.tokens)
    schedule["anneal_tokens"] = spec.train.schedule.anneal_tokens
    seqs = config.batch.batch_tokens // plan.seq_len
    micro = max(d for d in range(1, min(spec.train.micro_batch, seqs) + 1) if seqs % d == 0)
    update = {
        "data": config.data.model_validate({**data, "seq_len": plan.seq_len}),
        "model": config.model.model_copy(update={"init_std": init_std_for(spec, plan.shape)}),
        "schedule": config.schedule.model_validate(schedule),
        "optim": config.optim.model_validate({"lr_peak": plan.lr_peak, **spec.train.optim.model_dump()}),
        "eval": config.eval.model_validate(spec.train.eval.model_dump()),
        "batch": config.batch.model_copy(update={"ramp": [], "micro_batch": micro}),
        "runtime": config.runtime.model_validate(spec.train.runtime.model_dump()),
        "faults": config.faults.model_validate(spec.train.faults.model_dump()),
    }
    if plan.target == "cpu":
        update["layout"] = None
    return config.model_copy(update=update)


def plan_sweep_flagship(
    record: FitRecord, spec: SweepSpec, budget_flops: float, data_dir: str
) -> tuple[Plan, PlanRecord, TrainConfig]:
    """(plan, its record, the flagship's train config) at `budget_flops` from the sweep's isoFLOP law: the demo's
    plan. Its config keeps the Llama 3 recipe's batch ramp and final anneal of `flagship_config` (the embedded
    default's published figures were measured so) with the sweep's init, schedule family, LR rule and eval."""
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
    plan = dataclasses.replace(plan, lr_peak=lr, target="cpu", predicted=_isoflop_prediction(record, budget_flops))
    return plan, to_record(plan).model_copy(update={"name": name}), config
