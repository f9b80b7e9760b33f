"""A Plan (workbench.plan.planner) as its typed record (workbench.records.PlanRecord) and the record as prose.

`to_record` is the plan's output format: `workbench plan --json` prints it, the plans table stores it,
the report reads it. `plan_lines` and `plan_sentence` are the one place the plan is put into words:
the command prints them and the report shows them. Pure: no torch, no I/O.
"""

from __future__ import annotations

from workbench.core.units import human
from workbench.model import flops
from workbench.plan.hardware import GB
from workbench.plan.layout_cost import Candidate, Layout, headroom
from workbench.plan.memory_model import layout_family
from workbench.plan.planner import Plan
from workbench.records import PlanRecord


def _interval(ci: dict | None, key: str) -> dict | None:
    if not ci:
        return None
    i = ci[key]
    return {"p5": i.p5, "p50": i.p50, "p95": i.p95}


def _law_info(plan: Plan) -> dict:
    law = plan.law
    info = {"name": law.name, "source": law.source, "notes": list(law.notes), "hparams_source": plan.hparams_source}
    if law.convention:
        info["convention"] = law.convention
    if law.parametric:
        info["parametric"] = {k: float(v) for k, v in law.parametric.as_dict().items()}
    if law.token_law:
        info["token_law"] = {"coef": law.token_law.coef, "exp": law.token_law.exp}
    if law.isoflop:
        n_iso, d_iso = (f(plan.budget_flops) for f in law.isoflop)
        info["isoflop_check"] = {"params": n_iso, "tokens": d_iso}
    return info


def _layout(plan: Plan) -> dict:
    lay = plan.layout
    return {
        "gpu": plan.gpu.name,
        "peak_tflops": plan.gpu.peak_flops / 1e12,
        "memory_gb": plan.gpu.memory_bytes / 1e9,
        "mfu": plan.modelled_mfu,
        "step_time_s": lay.step_time_s,
        "bubble_fraction": lay.bubble_fraction,
        "schedule": lay.schedule,
        "virtual_stages": lay.virtual_stages,
        "cp": lay.cp,
        "gpus": lay.gpus,
        "idle_gpus": lay.idle_gpus,
        "nodes": lay.nodes,
        "tp": lay.tp,
        "pp": lay.pp,
        "dp": lay.dp,
        "micro_batch": lay.micro_batch,
        "grad_accum": lay.grad_accum,
        "recompute": lay.recompute,
        "memory_per_gpu_gb": {
            "weights": lay.memory.weights / 1e9,
            "grads": lay.memory.grads / 1e9,
            "optimizer": lay.memory.optimizer / 1e9,
            "activations": lay.memory.activations / 1e9,
            "logits": lay.memory.logits / 1e9,
            "buffers": lay.memory.buffers / 1e9,
            "total": lay.memory.total / 1e9,
            "limit": lay.memory_limit_bytes / 1e9,
            "headroom": headroom(layout_family(lay.tp, lay.pp)),
            "family": layout_family(lay.tp, lay.pp),
        },
        "alternatives": [c.as_dict() for c in lay.alternatives],
        "faster_but_too_big": [c.as_dict() for c in lay.rejected],
    }


def _hparams(plan: Plan) -> dict:
    """Where the batch and the peak LR come from, at the spent budget, with any extrapolation warning."""
    choice = plan.hparams
    return {
        "rule": choice.rule if choice else None,
        "at_flops": plan.train_flops,
        "batch_source": choice.batch_source if choice else plan.hparams_source,
        "lr_source": choice.lr_source if choice else plan.hparams_source,
        "warnings": list(choice.warnings) if choice else [],
    }


def to_record(plan: Plan) -> PlanRecord:
    """The plan's record: what `--json` prints and the plans table stores."""
    shape, sched = plan.shape, plan.schedule
    ci = None
    if plan.ci:
        ci = {k: _interval(plan.ci, k) for k in ("params", "tokens", "tokens_per_param", "loss", "shape_loss")}
        ci["draws"] = plan.ci["draws"]
    inference = None
    if plan.inference:
        inf = plan.inference
        inference = {
            "inference_tokens": inf.inference_tokens,
            "params": inf.params,
            "tokens": inf.tokens,
            "loss": inf.loss,
            "train_flops": inf.train_flops,
            "extra_train_flops": inf.extra_train_flops,
            "total_flops": inf.total_flops,
            "compute_optimal_total_flops": inf.compute_optimal_total_flops,
        }
    return PlanRecord(
        compute_flops=plan.budget_flops,
        spent_flops=plan.train_flops,
        params=plan.params,
        tokens=plan.tokens,
        tokens_per_param=plan.tokens / plan.params,
        shape={
            **shape.as_dict(),
            "params": shape.params,
            "params_total": shape.params_total,
            "tokens": plan.shape_tokens,
            "tokens_per_param": plan.shape_tokens / shape.params,
            "seq_len": plan.seq_len,
            "flops_per_token": flops.flops_per_token(shape, plan.seq_len),
            "train_flops": plan.train_flops,
            "loss": plan.shape_loss,
        },
        loss=plan.loss,
        ci=ci,
        batch_tokens=plan.batch_tokens,
        lr_peak=plan.lr_peak,
        hparams=_hparams(plan),
        schedule={
            "kind": sched.kind,
            "warmup_tokens": sched.warmup_tokens,
            "warmup_steps": sched.warmup_steps,
            "floor": sched.floor,
            "anneal_tokens": sched.anneal_tokens,
            "ramp": [{"after_tokens": a, "batch_tokens": b} for a, b in sched.ramp],
            "steps": sched.steps,
            "source": sched.source,
            **({"decay_fraction": sched.decay_fraction} if sched.decay_fraction is not None else {}),
        },
        gpu_hours=plan.gpu_hours if plan.target == "gpu" else None,
        days=plan.days if plan.target == "gpu" else None,
        layout=_layout(plan) if plan.target == "gpu" else None,
        law=_law_info(plan),
        inference=inference,
        cost=plan.cost.as_dict() if plan.target == "gpu" else None,
        warnings=list(plan.warnings),
        target=plan.target,
        predicted_loss=plan.predicted,
    )


def _between(ci: dict | None, key: str, fmt) -> str:
    i = (ci or {}).get(key)
    return f" [5-95%: {fmt(i['p5'])} - {fmt(i['p95'])}]" if i else ""


def _schedule(lay: dict) -> str:
    kind = lay.get("schedule") or "1f1b"
    return f"interleaved x {lay.get('virtual_stages')}" if kind == "interleaved" else kind


def predicted(plan: dict) -> dict | None:
    """The plan's one predicted loss {loss, interval, interval_kind, of}: the record's `predicted_loss`, or for
    a record written before it, the planned shape's loss and its 5-95% interval over the law's draws."""
    if plan.get("predicted_loss"):
        return plan["predicted_loss"]
    loss, ci = plan["shape"].get("loss"), (plan.get("ci") or {}).get("shape_loss")
    if loss is None:
        return None
    interval = [ci["p5"], ci["p95"]] if ci else None
    return {"loss": loss, "interval": interval, "interval_kind": "5-95%", "of": "the planned shape on its tokens"}


def _loss_text(plan: dict) -> str | None:
    p = predicted(plan)
    if p is None:
        return None
    interval = p.get("interval")
    return f"{p['loss']:.4f}" + (f" [{interval[0]:.4f}, {interval[1]:.4f}] ({p['interval_kind']})" if interval else "")


def _cost_text(plan: dict) -> str:
    """GPU-hours and days for a GPU target; a CPU target (a sweep trained on CPU) has none."""
    if plan.get("target") == "cpu" or plan.get("layout") is None:
        return (
            f"{plan.get('spent_flops') or plan['compute_flops']:.3g} FLOPs on CPU (no GPU-hours: the target is a CPU)"
        )
    lay, cost = plan["layout"], plan.get("cost")
    if cost:
        hours, days = cost["gpu_hours_with_failures"], cost["days_with_failures"]
        time = f"{hours['value']:.3g} GPU-hours, {days['value']:.3g} days{_range(days)} with failures"
    else:
        time = f"{plan['gpu_hours']:.3g} GPU-hours, {plan['days']:.3g} days"
    return f"{time} on {lay['gpus']:,} {lay['gpu']} GPUs"


def plan_sentence(plan: dict) -> str:
    """The recommended flagship in one sentence (a PlanRecord as a dict)."""
    s = plan["shape"]
    loss = _loss_text(plan)
    loss = f", predicted loss {loss}" if loss else ""
    return (
        f"For {plan['compute_flops']:.3g} FLOPs, train the {s['name']} shape ({human(s['params'])} non-embedding "
        f"parameters, {s['n_layers']} layers, d_model {s['d_model']}) on {human(s['tokens'])} tokens"
        f" ({s['tokens'] / s['params']:.1f} tokens/parameter){loss}: {_cost_text(plan)}."
    )


def _range(block: dict, fmt=lambda x: f"{x:.3g}") -> str:
    return f" [5-95%: {fmt(block['p5'])} - {fmt(block['p95'])}]" if block.get("p5") is not None else ""


def _cost_rows(r: dict) -> list[tuple[str, str]]:
    """MFU, GPU time without and with failures, and goodput (a record without `cost` keeps the old row)."""
    cost, lay = r.get("cost"), r["layout"]
    where = f"on {lay['gpus']:,} {lay['gpu']} GPUs ({lay['nodes']:,} nodes, {lay['peak_tflops']:g} TFLOPS)"
    if not cost:
        return [("compute", f"{r['gpu_hours']:.4g} GPU-hours at modelled MFU {lay['mfu']:.3f}: {r['days']:.3g} days")]
    cal, good = cost["calibration"], cost["goodput"]
    if cost["mfu_source"] == "modelled":
        interval = cost["mfu_interval"]
        mfu = (
            f"{cost['mfu']:.1%} modelled [5-95%: {interval['p5']:.1%} - {interval['p95']:.1%}]: efficiency "
            f"calibrated on {cal['runs']} published runs"
            + (f" without {', '.join(cal['left_out'])}" if cal["left_out"] else "")
            + " (workbench.plan.efficiency_fit, docs/throughput.md)"
        )
    else:
        mfu = f"{cost['mfu']:.1%}: the --mfu override, not modelled (the model gives {cost['modelled_mfu']:.1%})"
    hours, days = cost["gpu_hours"], cost["days"]
    whours, wdays = cost["gpu_hours_with_failures"], cost["days_with_failures"]
    return [
        ("MFU", mfu),
        ("compute", f"{hours['value']:.4g}{_range(hours)} GPU-hours, {days['value']:.3g}{_range(days)} days {where}"),
        (
            "with failures",
            f"{whours['value']:.4g}{_range(whours)} GPU-hours, {wdays['value']:.3g}{_range(wdays)} days: goodput "
            f"{good['fraction']:.1%}",
        ),
        (
            "failures",
            f"{good['failures_per_gpu_day']:.3g} per GPU-day ({good['failure_source']}): one every "
            f"{good['mtbf_h']:.3g} h; checkpoint {good['checkpoint_gb']:,.4g} GB written in "
            f"{good['checkpoint_s']:.3g} s at {good['write_gb_s']:g} GB/s every {good['interval_min']:.3g} min "
            f"(Young); restart {good['restart_min']:g} min",
        ),
    ]


def plan_rows(plan: dict) -> list[tuple[str, str]]:
    """The plan as (label, text) rows: N*, D*, the one predicted loss, model, tokens, batch and LR, schedule,
    compute (GPU-hours, memory and layout for a GPU target only), what was inherited from a sweep, notes."""
    r, s, ci = plan, plan["shape"], plan.get("ci")
    loss = _loss_text(plan) or "n/a (a token law predicts no loss)"
    rows = [
        (
            "compute-optimal",
            f"N* {human(r['params'])}{_between(ci, 'params', human)} params, "
            f"D* {human(r['tokens'])}{_between(ci, 'tokens', human)} tokens, {r['tokens_per_param']:.1f} tokens/param",
        ),
        ("predicted loss", loss + (f" for {predicted(plan)['of']}" if predicted(plan) else "")),
        (
            "model",
            f"{s['name']}: {s['n_layers']} layers, d_model {s['d_model']}, {s['n_heads']} heads "
            f"({s['n_kv_heads']} KV), ffn {s['ffn_dim']}, vocab {s['vocab_size']}; N {s['params']:,} "
            f"({s['params_total']:,} total)",
        ),
        (
            "trains",
            f"{human(s['tokens'])} tokens at seq_len {s['seq_len']}: spends {s['train_flops']:.3g} FLOPs "
            f"(6N + 12 L T d) of the {r['compute_flops']:.3g} asked",
        ),
        ("batch, LR", f"{human(r['batch_tokens'])} tokens, lr_peak {r['lr_peak']:.3g} ({r['law']['hparams_source']})"),
        ("schedule", _lr_schedule_text(r["schedule"])),
    ]
    if len(r["schedule"]["ramp"]) > 1:
        ramp = " -> ".join(
            f"{human(x['batch_tokens'])} after {human(x['after_tokens'])}" for x in r["schedule"]["ramp"]
        )
        rows.append(("batch ramp", ramp))
    rows += _compute_rows(plan)
    if "warnings" in r:
        rows += [("warning", w) for w in r["warnings"]]
    else:  # a record from before the warnings list
        rows += [("warning", f"batch/LR {w}") for w in (r.get("hparams") or {}).get("warnings", [])]
    inherited = (r.get("inherited") or {}).get("lines", [])
    rows += [("inherited", text) for text in inherited]
    if r.get("inference"):
        inf = r["inference"]
        text = (
            f"for {human(inf['inference_tokens'])} inference tokens: N {human(inf['params'])}, D "
            f"{human(inf['tokens'])} at the same loss; training {inf['train_flops']:.3g} FLOPs "
            f"({inf['extra_train_flops']:+.3g}), total {inf['total_flops']:.3g} vs "
            f"{inf['compute_optimal_total_flops']:.3g} compute-optimal"
        )
        rows.append(("inference-aware", text))
    if "isoflop_check" in r["law"]:
        iso = r["law"]["isoflop_check"]
        rows.append(("isoFLOP check", f"N* {human(iso['params'])}, D* {human(iso['tokens'])}"))
    if r["law"].get("convention"):
        rows.append(("law's N", r["law"]["convention"]))
    rows += [("note", note) for note in r["law"]["notes"] if note not in inherited]
    return rows


def _lr_schedule_text(sc: dict) -> str:
    shape = (
        f"stable, then linear decay over the last {sc['decay_fraction']:.0%} to {sc['floor']:g} x peak"
        if sc.get("kind") == "wsd"
        else f"cosine to {sc['floor']:g} x peak"
    )
    anneal = f", final anneal to 0 over {human(sc['anneal_tokens'])} tokens" if sc["anneal_tokens"] else ""
    return (
        f"warmup {sc['warmup_steps']} steps ({human(sc['warmup_tokens'])} tokens), {shape}{anneal}, "
        f"~{sc['steps']:,} steps ({sc.get('source') or 'workbench.plan.planner'})"
    )


def _compute_rows(plan: dict) -> list[tuple[str, str]]:
    """Compute, memory and layout of a GPU target; one line for a CPU target."""
    r, lay = plan, plan.get("layout")
    if plan.get("target") == "cpu" or lay is None:
        return [("compute", _cost_text(plan))]
    mem = lay["memory_per_gpu_gb"]
    layout = (
        f"TP {lay['tp']} x PP {lay['pp']} x DP {lay['dp']} (CP 1), {lay['recompute']} recompute, "
        f"{_schedule(lay)} schedule, micro-batch {lay['micro_batch']}, grad accumulation {lay['grad_accum']}"
    )
    if lay.get("step_time_s") is not None:
        layout += f": step {lay['step_time_s']:.3g} s, bubble {lay['bubble_fraction']:.1%}"
    if lay["idle_gpus"]:
        layout += f", {lay['idle_gpus']} GPUs idle"
    return [
        *_cost_rows(r),
        (
            "memory per GPU",
            f"weights {mem['weights']:.3g} GB, grads {mem['grads']:.3g} GB, AdamW state "
            f"{mem['optimizer']:.3g} GB, activations {mem['activations']:.3g} GB, logits {mem.get('logits', 0):.3g} "
            f"GB, buffers {mem.get('buffers', 0):.3g} GB: {mem['total']:.3g} of {mem['limit']:.3g} GB usable (keeps "
            f"{100 * mem.get('headroom', 0.1):.0f}% of the card free: 10% + the memory model's measured error for "
            f"{mem.get('family', 'the layout')}; workbench memory --measure checks it)",
        ),
        ("layout", layout),
    ]


def plan_text(plan: dict) -> str:
    """The plan as the readable lines `workbench plan` prints."""
    head = f"plan for {plan['compute_flops']:.3g} FLOPs with law {plan['law']['name']}: {plan['law']['source']}"
    return "\n".join([head] + [f"  {label:<16} {text}" for label, text in plan_rows(plan)])


def _schedule_text(c: Candidate) -> str:
    if c.schedule == "interleaved":
        return f"interleaved 1F1B x {c.virtual_stages}"
    return {"none": "no pipeline", "1f1b": "1F1B"}[c.schedule]


def candidates_table(layout: Layout) -> str:
    """The chosen layout, the next-best ones and faster ones that do not fit, as a Markdown table."""
    rows = [("**chosen**", layout.chosen)] + [("next", c) for c in layout.alternatives]
    rows += [("too big", c) for c in layout.rejected]
    lines = [
        "| | TP | PP | DP | CP | micro-batch | accum | recompute | schedule | step (s) | MFU | bubble | GB/GPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, c in rows:
        lines.append(
            f"| {label} | {c.tp} | {c.pp} | {c.dp} | {c.cp} | {c.micro_batch} | {c.grad_accum} | {c.recompute} | "
            f"{_schedule_text(c)} | {c.step_time_s:.2f} | {c.mfu:.1%} | {c.bubble_fraction:.1%} | "
            f"{c.memory.total / GB:.1f} |"
        )
    return "\n".join(lines)


def explain_layout(plan) -> str:
    """The table of layout candidates: the chosen one, the next-best, and faster ones that do not fit."""

    head = f"layout candidates on {plan.gpu.name} (the fastest that fits wins; workbench.plan.layout_cost):"
    return head + "\n" + candidates_table(plan.layout)
