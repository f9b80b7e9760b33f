"""`workbench plan`: from a law and a compute budget (or GPUs x days) to the flagship run and its config."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import typer

from workbench.errors import WorkbenchError
from workbench.units import human, parse_number

app = typer.Typer(no_args_is_help=True)


def _positive(text: str | None, option: str) -> float | None:
    if text is None:
        return None
    value = parse_number(text, option)
    if value <= 0:
        raise WorkbenchError(f"{option}: {text} must be positive", f"Give {option} a number above 0, e.g. 1e21.")
    return value


def _budget(compute: str | None, gpus_text: str | None, days_text: str | None, gpu, mfu: float):
    """(budget FLOPs, GPU count or None, days or None) from --compute | --gpus --days."""
    budget = _positive(compute, "--compute")
    gpus = _positive(gpus_text, "--gpus")
    days = _positive(days_text, "--days")
    if gpus is not None and gpus != math.floor(gpus):
        raise WorkbenchError(f"--gpus: {gpus_text} is not a whole number", "Give a GPU count such as 1024.")
    gpus = int(gpus) if gpus is not None else None
    if budget is None:
        if gpus is None or days is None:
            raise WorkbenchError("no compute budget", "Give --compute FLOPS, or both --gpus G and --days T.")
        from workbench.plan import budget_from_gpus

        return budget_from_gpus(gpus, days, gpu, mfu), gpus, None
    if gpus is not None and days is not None:
        raise WorkbenchError(
            "--compute, --gpus and --days all given",
            "With --compute give --gpus (days follow) or --days (GPUs follow).",
        )
    return budget, gpus, days


def _law(spec: str, budget_flops: float):
    """A built-in law by name, or a fit file fits/NAME.json."""
    from workbench.laws import BUILTIN, builtin_law, law_from_fit

    if spec.strip().lower() in BUILTIN:
        return builtin_law(spec, budget_flops)
    path = Path(spec)
    if path.suffix != ".json" and not path.exists():
        return builtin_law(spec, budget_flops)  # raises: unknown law, listing the valid ones
    if not path.is_file():
        raise WorkbenchError(f"--law: fit file {path} not found", "Run `workbench fit --out` first or check the path.")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        where = f" (line {err.lineno})" if isinstance(err, json.JSONDecodeError) else ""
        raise WorkbenchError(
            f"--law: {path} is not valid JSON{where}", "Use a fits/NAME.json from `workbench fit`."
        ) from None
    return law_from_fit(data, str(path))


def _read_json(path: Path, option: str, hint: str) -> object:
    if not path.is_file():
        raise WorkbenchError(f"{option}: file {path} not found", hint)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        where = f" (line {err.lineno})" if isinstance(err, json.JSONDecodeError) else ""
        raise WorkbenchError(f"{option}: {path} is not valid JSON{where}", hint) from None


def _with_hparams(law, path: Path):
    """The law with the batch and LR laws of a tune study's fits/SWEEP-hparams.json."""
    import dataclasses

    from workbench.laws import hparams_from_json

    hint = "Give the fits/SWEEP-hparams.json that `workbench sweep tune` wrote."
    return dataclasses.replace(law, hparams=hparams_from_json(_read_json(path, "--hparams", hint), str(path)))


def _anchors_left_out(keys: list[str]) -> tuple[str, ...]:
    from workbench.hparams import ANCHORS

    known = {a.key for a in ANCHORS}
    for key in keys:
        if key not in known:
            raise WorkbenchError(
                f"--leave-out-anchor: unknown anchor {key!r}", f"Use one of {', '.join(sorted(known))}."
            )
    return tuple(keys)


def _interval(ci: dict | None, key: str):
    if not ci:
        return None
    i = ci[key]
    return {"p5": i.p5, "p50": i.p50, "p95": i.p95}


def plan_record(plan) -> dict:
    """The JSON object `--json` prints (and the plans table stores)."""
    from workbench import flops

    law, shape, sched, lay = plan.law, plan.shape, plan.schedule, plan.layout
    ci = None
    if plan.ci:
        ci = {k: _interval(plan.ci, k) for k in ("params", "tokens", "tokens_per_param", "loss", "shape_loss")}
        ci["draws"] = plan.ci["draws"]
    law_info = {"name": law.name, "source": law.source, "notes": list(law.notes), "hparams_source": plan.hparams_source}
    if law.parametric:
        p = law.parametric
        law_info["parametric"] = {"E": p.E, "A": p.A, "B": p.B, "alpha": p.alpha, "beta": p.beta}
    if law.token_law:
        law_info["token_law"] = {"coef": law.token_law.coef, "exp": law.token_law.exp}
    if law.isoflop:
        n_iso, d_iso = (f(plan.budget_flops) for f in law.isoflop)
        law_info["isoflop_check"] = {"params": n_iso, "tokens": d_iso}
    choice = plan.hparams
    record = {
        "compute_flops": plan.budget_flops,
        "spent_flops": plan.train_flops,
        "params": plan.params,
        "tokens": plan.tokens,
        "tokens_per_param": plan.tokens / plan.params,
        "shape": {
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
        "loss": plan.loss,
        "ci": ci,
        "batch_tokens": plan.batch_tokens,
        "lr_peak": plan.lr_peak,
        "hparams": {
            "rule": choice.rule if choice else None,
            "at_flops": plan.train_flops,
            "batch_source": choice.batch_source if choice else plan.hparams_source,
            "lr_source": choice.lr_source if choice else plan.hparams_source,
            "warnings": list(choice.warnings) if choice else [],
        },
        "schedule": {
            "kind": "cosine",
            "warmup_tokens": sched.warmup_tokens,
            "warmup_steps": sched.warmup_steps,
            "floor": sched.floor,
            "anneal_tokens": sched.anneal_tokens,
            "ramp": [{"after_tokens": a, "batch_tokens": b} for a, b in sched.ramp],
            "steps": sched.steps,
            "source": "Llama 3 405B recipe scaled to the run (workbench.plan)",
        },
        "gpu_hours": plan.gpu_hours,
        "days": plan.days,
        "layout": {
            "gpu": plan.gpu.name,
            "peak_tflops": plan.gpu.peak_flops / 1e12,
            "memory_gb": plan.gpu.memory_bytes / 1e9,
            "mfu": plan.modelled_mfu,
            "mfu_input": plan.mfu,
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
                "total": lay.memory.total / 1e9,
                "limit": lay.memory_limit_bytes / 1e9,
            },
            "alternatives": [c.as_dict() for c in lay.alternatives],
            "faster_but_too_big": [c.as_dict() for c in lay.rejected],
        },
        "law": law_info,
    }
    if plan.inference:
        inf = plan.inference
        record["inference"] = {
            "inference_tokens": inf.inference_tokens,
            "params": inf.params,
            "tokens": inf.tokens,
            "loss": inf.loss,
            "train_flops": inf.train_flops,
            "extra_train_flops": inf.extra_train_flops,
            "total_flops": inf.total_flops,
            "compute_optimal_total_flops": inf.compute_optimal_total_flops,
        }
    return record


def _between(ci: dict | None, key: str, fmt) -> str:
    i = (ci or {}).get(key)
    return f" [5-95%: {fmt(i['p5'])} - {fmt(i['p95'])}]" if i else ""


def _print(record: dict) -> None:
    """The plan as readable lines."""
    r, s, sc, lay, ci = record, record["shape"], record["schedule"], record["layout"], record["ci"]
    mem = lay["memory_per_gpu_gb"]
    loss = "n/a (token law)" if r["loss"] is None else f"{r['loss']:.4f}{_between(ci, 'loss', lambda x: f'{x:.4f}')}"
    ramp = " -> ".join(f"{human(x['batch_tokens'])} after {human(x['after_tokens'])}" for x in sc["ramp"])
    lines = [
        f"plan for {r['compute_flops']:.3g} FLOPs with law {r['law']['name']}: {r['law']['source']}",
        f"  compute-optimal  N* {human(r['params'])}{_between(ci, 'params', human)} params, "
        f"D* {human(r['tokens'])}{_between(ci, 'tokens', human)} tokens, {r['tokens_per_param']:.1f} tokens/param",
        f"  predicted loss   {loss}",
        f"  model            {s['name']}: {s['n_layers']} layers, d_model {s['d_model']}, {s['n_heads']} heads "
        f"({s['n_kv_heads']} KV), ffn {s['ffn_dim']}, vocab {s['vocab_size']}; N {s['params']:,} "
        f"({s['params_total']:,} total)",
        f"  trains           {human(s['tokens'])} tokens at seq_len {s['seq_len']}: spends {s['train_flops']:.3g} "
        f"FLOPs (6N + 12 L T d) of the {r['compute_flops']:.3g} asked, predicted loss "
        + ("n/a" if s["loss"] is None else f"{s['loss']:.4f}"),
        f"  batch, LR        {human(r['batch_tokens'])} tokens, lr_peak {r['lr_peak']:.3g} "
        f"({r['law']['hparams_source']})",
        f"  schedule         warmup {sc['warmup_steps']} steps ({human(sc['warmup_tokens'])} tokens), cosine to "
        f"{sc['floor']:g} x peak, final anneal to 0 over {human(sc['anneal_tokens'])} tokens, ~{sc['steps']:,} steps",
        f"  batch ramp       {ramp}",
        f"  compute          {r['gpu_hours']:.4g} GPU-hours on {lay['gpu']} ({lay['peak_tflops']:g} TFLOPS) at "
        f"modelled MFU {lay['mfu']:.3f}: {r['days']:.3g} days on {lay['gpus']:,} GPUs ({lay['nodes']:,} nodes)",
        f"  memory per GPU   weights {mem['weights']:.3g} GB, grads {mem['grads']:.3g} GB, AdamW state "
        f"{mem['optimizer']:.3g} GB, activations {mem['activations']:.3g} GB: {mem['total']:.3g} of "
        f"{mem['limit']:.3g} GB usable",
        f"  layout           TP {lay['tp']} x PP {lay['pp']} x DP {lay['dp']} (CP 1), {lay['recompute']} recompute, "
        f"{lay['schedule'] if lay['schedule'] != 'interleaved' else 'interleaved x ' + str(lay['virtual_stages'])} "
        f"schedule, micro-batch {lay['micro_batch']}, grad accumulation {lay['grad_accum']}: step "
        f"{lay['step_time_s']:.3g} s, bubble {lay['bubble_fraction']:.1%}"
        + (f", {lay['idle_gpus']} GPUs idle" if lay["idle_gpus"] else ""),
    ]
    lines += [f"  warning          batch/LR {w}" for w in r["hparams"]["warnings"]]
    if "inference" in r:
        inf = r["inference"]
        lines.append(
            f"  inference-aware  for {human(inf['inference_tokens'])} inference tokens: N {human(inf['params'])}, "
            f"D {human(inf['tokens'])} at the same loss; training {inf['train_flops']:.3g} FLOPs "
            f"({inf['extra_train_flops']:+.3g}), total {inf['total_flops']:.3g} vs "
            f"{inf['compute_optimal_total_flops']:.3g} compute-optimal"
        )
    if "isoflop_check" in r["law"]:
        iso = r["law"]["isoflop_check"]
        lines.append(f"  isoFLOP check    N* {human(iso['params'])}, D* {human(iso['tokens'])}")
    lines += [f"  note             {note}" for note in r["law"]["notes"]]
    typer.echo("\n".join(lines))


def explain_layout(plan) -> str:
    """The table of layout candidates: the chosen one, the next-best, and faster ones that do not fit."""
    from workbench.layout import candidates_table

    head = f"layout candidates on {plan.gpu.name} (the fastest that fits wins; workbench.layout):"
    return head + "\n" + candidates_table(plan.layout)


def _data_dir(data: str | None) -> str:
    if data:
        return data
    from workbench.data import default_corpus_dir

    return str(default_corpus_dir())


def _record(db: Path | None, record: dict) -> str:
    """Store the plan in the plans table when --db is given or the default database exists."""
    from workbench.store import Store, default_db_path

    path = db or default_db_path()
    if db is None and not path.is_file():
        return ""
    with Store(path) as store:
        store.record_plan(record)
    return f"plans table: recorded plan {record['name']} in {path}"


@app.callback(invoke_without_command=True)
def plan(
    compute: str = typer.Option(None, "--compute", help="Compute budget in FLOPs (1e21, 3.8e25)."),
    gpus: str = typer.Option(None, "--gpus", help="GPUs: with --days gives the budget; with --compute, the days."),
    days: str = typer.Option(None, "--days", help="Wall days: with --gpus gives the budget; with --compute, GPUs."),
    gpu: str = typer.Option("h100", "--gpu", help="h100, a100, h200, b200 or a bf16 peak in TFLOPS."),
    gpu_memory_gb: float = typer.Option(None, "--gpu-memory-gb", help="Memory per GPU in GB (default: the GPU's)."),
    mfu: float = typer.Option(0.4, "--mfu", help="Model FLOPs utilisation in (0, 1]."),
    law_spec: str = typer.Option("chinchilla", "--law", help="chinchilla, epoch, llama3 or fits/NAME.json."),
    hparams: Path = typer.Option(None, "--hparams", help="Batch and LR laws from `sweep tune` (fits/X-hparams.json)."),
    inference_tokens: str = typer.Option(None, "--inference-tokens", help="Tokens to serve (inference-aware)."),
    seq_len: int = typer.Option(None, "--seq-len", help="Sequence length (default 8192; 256 below 1e15 FLOPs)."),
    vocab: int = typer.Option(None, "--vocab", help="Vocabulary (default 128256; 256 below 1e15 FLOPs)."),
    lr_floor: float = typer.Option(0.01, "--lr-floor", help="Cosine floor as a fraction of the peak LR."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    explain: bool = typer.Option(False, "--explain-layout", help="Print the table of costed layout candidates."),
    leave_out: list[str] = typer.Option(
        None, "--leave-out-anchor", help="Drop a published run from the batch/LR anchors (e.g. llama3-405b)."
    ),
    out: Path = typer.Option(None, "--out", help="Write the flagship train config here (flagship.yaml)."),
    data: str = typer.Option(None, "--data", help="Prepared data folder for the flagship config."),
    run_dir: str = typer.Option(None, "--run-dir", help="Run directory of the flagship (default runs/flagship/NAME)."),
    db: Path = typer.Option(None, "--db", help="DuckDB file for the plans table (default: if it exists)."),
) -> None:
    """Plan the flagship: N*, D*, shape, loss, batch, LR, schedule, GPU time, memory and layout."""
    from workbench import config as cfg
    from workbench import plan as planner
    from workbench.layout import resolve_gpu

    if not (0 < mfu <= 1):
        raise WorkbenchError(f"--mfu {mfu:g} is outside (0, 1]", "Give a utilisation such as 0.4 (40%).")
    device = resolve_gpu(gpu, gpu_memory_gb)
    budget, gpu_count, target_days = _budget(compute, gpus, days, device, mfu)
    for option, value, low in (("--seq-len", seq_len, 1), ("--vocab", vocab, 2)):
        if value is not None and value < low:
            raise WorkbenchError(f"{option} {value} is too small", f"Give {option} of at least {low}.")
    if not 0 <= lr_floor <= 1:
        raise WorkbenchError(f"--lr-floor {lr_floor:g} is outside [0, 1]", "Give a fraction of the peak, e.g. 0.01.")
    inference = None
    if inference_tokens is not None:
        inference = parse_number(inference_tokens, "--inference-tokens")
        if inference < 0:
            raise WorkbenchError(f"--inference-tokens {inference_tokens} is negative", "Give 0 or more, e.g. 1e13.")
    law = _law(law_spec, budget)
    if hparams is not None:
        law = _with_hparams(law, hparams)
    result = planner.make_plan(
        law,
        budget,
        gpu=device,
        mfu=mfu,
        seq_len=seq_len or planner.default_seq_len(budget),
        vocab_size=vocab or planner.default_vocab(budget),
        gpus=gpu_count,
        days=target_days,
        inference_tokens=inference,
        floor=lr_floor,
        hparams_leave_out=_anchors_left_out(leave_out or []),
    )
    record = plan_record(result)
    name = f"flagship-{result.law.name}-{budget:.3g}".replace("+", "").replace("/", "_")
    messages = []
    if out is not None:
        config = planner.flagship_config(result, _data_dir(data), run_dir or f"runs/flagship/{name}", name)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(cfg.dump_yaml(config))
        except OSError as err:
            raise WorkbenchError(f"--out: cannot write {out} ({err.strerror})", "Pick a writable path.") from None
        messages.append(f"wrote {out}: run it with `workbench train {out}`")
    stored = {**record, "name": name, "budget_flops": budget, "created": datetime.now(UTC).isoformat()}
    messages.append(_record(db, {**stored, "config_path": str(out) if out else None}))
    if as_json:
        typer.echo(json.dumps(record))
    else:
        _print(record)
    if explain:
        typer.echo(explain_layout(result), err=as_json)
    for message in filter(None, messages):
        typer.echo(message, err=as_json)
