"""The embedded default, end to end: sweep -> store -> fit (largest budget held out) -> plan -> flagship
run with `workbench train` -> prediction vs outcome -> HTML report. `workbench demo` runs it.

Every stage reuses the stage's own module; finished runs are reused on a rerun (run directories are
the cache). The checks of the end-to-end issue are computed here and printed, stored in the report
and returned:
- every fitted budget has an interior isoFLOP minimum;
- the laws fitted without the largest budget predict that budget's best loss within 2% (the
  compute-optimal loss law L*(C) = K C^-gamma on the isoFLOP minima, workbench.fit.frontier) and its
  N* within a factor 1.5 (the isoFLOP power law N*(C) = G C^a);
- the planned flagship's validation loss lies in the prediction interval and within 1% of the best
  sweep run at that budget.
The flagship is planned with the isoFLOP law (N*(C), D*(C) from the parabolas' vertices: the Llama 3
method). The parametric law L(N, D) is fitted and reported too, but at this scale (three budgets
spanning 5x in compute, runs scattering by 1-2% from seed to seed) its five parameters are poorly
determined and it extrapolates worse; the report shows both. The prediction interval is the
bootstrap interval of L*(C) widened by the run-to-run scatter about each budget's parabola
(resampled residuals in log loss): a single new run scatters as the sweep's runs do, which the law's
confidence interval alone does not cover.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from workbench.errors import WorkbenchError

LR_CHECK_FACTORS = (0.5, 2.0)


def _say(step: str, text: str) -> None:
    print(f"[demo {step}] {text}", file=sys.stderr, flush=True)


def run_demo(
    spec_path: str | Path = "sweeps/cpu.yaml",
    db_path: Path | None = None,
    out: Path | None = None,
    bootstrap: int = 1000,
    lr_check: bool = True,
) -> dict:
    """Run every stage; returns the outcome record (also written to fits/NAME-demo.json)."""
    from workbench.data import ensure_default_corpus
    from workbench.store import Store, default_db_path
    from workbench.sweep.spec import expand, load_spec

    t_start = time.time()
    spec, lines = load_spec(spec_path)
    db_path = Path(db_path or default_db_path())
    _say("1/7", f"corpus: {ensure_default_corpus()}")
    checks_lr = _lr_check(spec, db_path, str(spec_path)) if lr_check else None
    plan = expand(spec, str(spec_path), lines)
    budgets = sorted({r.budget_flops for r in plan.runs})
    _say(
        "3/7",
        f"sweep {spec.name}: {len(plan.runs)} runs at {len(budgets)} budgets "
        f"({budgets[0]:.2g} to {budgets[-1]:.2g} FLOPs); finished runs are reused",
    )
    _launch(plan, db_path, str(spec_path))
    with Store(db_path) as store:
        points = store.points(spec.name)
    record, held = _fit(points, spec.name, bootstrap, db_path)
    plan_record, flagship_path = _plan(record, spec, held, db_path)
    flagship = _train_flagship(flagship_path)
    with Store(db_path) as store:
        store.ingest(Path(flagship_path).parent)
    outcome = _compare(record, points, held, plan_record, flagship)
    outcome.update(
        {
            "lr_check": checks_lr,
            "sweep": spec.name,
            "wall_s": time.time() - t_start,
            "flagship_config": str(flagship_path),
        }
    )
    report = _report(spec.name, db_path, record, plan_record, outcome, out)
    outcome["report"] = str(report)
    from workbench.fit.io import write_json_atomic

    write_json_atomic(Path("fits") / f"{spec.name}-demo.json", outcome)
    return outcome


def _launch(plan, db_path: Path, spec_path: str) -> None:
    from workbench.store import Store
    from workbench.sweep.launch import launch

    report = launch(plan, executor="local")
    with Store(db_path) as store:
        store.upsert_sweep(plan.spec.name, plan.spec.model_dump(mode="json"), spec_path)
        store.ingest(report.sweep_dir)
    for rid, state in (report.results or {}).items():
        if state != "completed":  # a diverged point is left out of the fit, as a real sweep's would be
            _say("!", f"run {rid} ended {state}: left out of the fit (see {report.sweep_dir / rid})")


def _lr_check(spec, db_path: Path, spec_path: str) -> dict:
    """The sweep's LR rule against x0.5 and x2 at the smallest budget, every size (the rule is shown
    near-optimal there, as the end-to-end issue asks)."""
    from workbench.store import Store
    from workbench.sweep.spec import expand

    smallest = min(spec.grid.budgets_flops)
    rows: dict[float, dict[float, list[float]]] = {}
    for factor in (1.0, *LR_CHECK_FACTORS):
        name = spec.name if factor == 1.0 else f"{spec.name}-lr{factor:g}x"
        update = {"name": name, "grid": spec.grid.model_copy(update={"budgets_flops": [smallest]})}
        if spec.train.lr_peak == "auto":  # scale the whole LR rule
            rules = spec.rules
            update["rules"] = rules.model_copy(
                update={"lr_ref": rules.lr_ref * factor, "lr_max": rules.lr_max * factor}
            )
        else:
            update["train"] = spec.train.model_copy(update={"lr_peak": spec.train.lr_peak * factor})
        sub_plan = expand(spec.model_copy(update=update), f"{spec.name} LR check")
        lrs = sorted({r.lr_peak for r in sub_plan.runs})
        _say(
            "2/7",
            f"LR check at {smallest:.2g} FLOPs: LR rule x{factor:g}, lr_peak {lrs[0]:.3g} to {lrs[-1]:.3g} "
            f"({len(sub_plan.runs)} runs)",
        )
        _launch(sub_plan, db_path, spec_path if factor == 1.0 else f"{spec_path} (LR rule x{factor:g})")
        with Store(db_path) as store:
            got = store.points(name)
        got = got[np.isclose(got["budget_flops"], smallest)]
        for params, loss in zip(got["params"], got["loss"], strict=True):
            rows.setdefault(float(params), {}).setdefault(factor, []).append(float(loss))
    table = []
    for params, seeds in sorted(rows.items()):
        by_factor = {k: float(np.mean(v)) for k, v in seeds.items()}  # the mean over seeds
        best = min(by_factor.values())
        rule = by_factor.get(1.0, float("nan"))
        table.append(
            {
                "params": params,
                "losses": {str(k): v for k, v in sorted(by_factor.items())},
                "rule_vs_best": rule / best - 1,
            }
        )
    worst = max(r["rule_vs_best"] for r in table)
    _say("2/7", f"LR rule vs best of x0.5/x1/x2 at {smallest:.2g} FLOPs: worst gap {worst:.2%}")
    return {
        "budget_flops": smallest,
        "lr_peak": spec.train.lr_peak,
        "factors": [1.0, *LR_CHECK_FACTORS],
        "sizes": table,
        "worst_gap": worst,
    }


def _lr_rule_text(spec) -> str:
    if spec.train.lr_peak != "auto":
        return f"lr_peak {spec.train.lr_peak:g} for every size"
    r = spec.rules
    return f"lr_peak = min({r.lr_max:g}, {r.lr_ref:g} x (N / {r.lr_ref_params:g})^-{r.lr_exponent:g})"


def _fit(points, sweep: str, bootstrap: int, db_path: Path):
    from workbench.commands.fit import _save_plots
    from workbench.fit import holdout
    from workbench.fit.data import validate_points
    from workbench.fit.io import write_json_atomic
    from workbench.fit.pipeline import FitOptions, fit_all, to_record
    from workbench.store import Store

    points = validate_points(points, f"sweep {sweep!r}")
    budgets = np.unique(points["budget_flops"])
    held = float(budgets[-1])
    train = points[points["budget_flops"] < held]
    _say(
        "4/7",
        f"fit on {len(train)} runs at {len(budgets) - 1} budgets (holding out {held:.2g} FLOPs), "
        f"{bootstrap} bootstrap resamples",
    )
    options = FitOptions(bootstrap=bootstrap, at_flops=(held,))
    results = fit_all(train, options)
    record = to_record(results, sweep, f"sweep:{sweep} without its largest budget", sweep)
    record["holdout"] = holdout.predict_budget(train, points[points["budget_flops"] == held], ("isoflop", "parametric"))
    from workbench.fit.frontier import optimal_loss_law, predict

    record["isoflop"]["loss_law"] = optimal_loss_law(train, bootstrap)
    best = record["holdout"]["observed"]["best_run"]["loss"]
    loss_pred = predict(record["isoflop"]["loss_law"], held)[0]
    record["holdout"]["loss_law"] = {"loss_pred": loss_pred, "loss_rel_err": loss_pred / best - 1}
    out = Path("fits") / f"{sweep}.json"
    record["plots"] = [str(p) for p in _save_plots(results, out)]
    write_json_atomic(out, record)
    with Store(db_path) as store:
        store.record_fit(record)
    return record, held


def _plan(record: dict, spec, held: float, db_path: Path) -> tuple[dict, Path]:
    from workbench.data import ensure_default_corpus
    from workbench.laws import HparamLaws, Law, PowerLaw
    from workbench.layout import resolve_gpu
    from workbench.plan import flagship_config, make_plan
    from workbench.plan_record import to_record
    from workbench.store import Store

    iso = record["isoflop"]
    rules, train = spec.rules, spec.train
    if train.batch_tokens == "auto":  # the sweep's own batch rule, so the flagship is trained as the sweep was
        coef = rules.batch_ref_tokens / rules.batch_ref_flops**rules.batch_exponent
        batch = PowerLaw(coef, rules.batch_exponent)
    else:
        batch = PowerLaw(float(train.batch_tokens), 0.0)
    # The isoFLOP law (Llama 3's method): N*(C) and D*(C) from the parabolas' vertices. The LR law here is
    # a placeholder: the sweep's LR rule depends on N, and the flagship gets it at its size below.
    law = Law(
        f"{spec.name}-isoflop",
        f"fits/{spec.name}.json: isoFLOP minima of {len(iso['minima'])} budgets (Llama 3 / Chinchilla approach 2)",
        isoflop=(PowerLaw(iso["G"], iso["a"]), PowerLaw(iso["H"], iso["b"])),
        hparams=HparamLaws(batch, PowerLaw(1.0, 0.0), f"the {spec.name} sweep's rules"),
    )
    gpu = resolve_gpu(str(spec.launch.gpu_peak_flops / 1e12))
    seq = spec.data.seq_len
    plan = make_plan(
        law,
        held,
        gpu=gpu,
        mfu=spec.launch.mfu,
        seq_len=seq,
        vocab_size=spec.model.vocab_size,
        floor=train.schedule.floor,
    )
    name = f"{spec.name}-flagship"
    run_dir = Path(spec.runs_root).resolve() / name / f"c{held:.2g}-{plan.shape.name}"
    config = flagship_config(plan, str(ensure_default_corpus()), str(run_dir), name)
    lr = _sweep_lr(spec, plan.shape.params)  # the sweep's LR rule at the planned size, as its runs had
    config = config.model_copy(
        update={
            "optim": config.optim.model_copy(update={"lr_peak": lr}),
            "eval": config.eval.model_copy(update={"batches": train.eval.batches, "batch_seqs": train.eval.batch_seqs}),
            "runtime": config.runtime.model_copy(update={"device": "cpu", "threads": os.cpu_count() or 1}),
        }
    )
    from workbench.config import dump_yaml

    path = run_dir.parent / f"{run_dir.name}.yaml"
    from workbench.files import atomic_write_text

    atomic_write_text(path, dump_yaml(config))
    rec = to_record(plan).public()
    rec.update({"name": name, "budget_flops": held, "config_path": str(path), "lr_peak": lr})
    with Store(db_path) as store:
        store.record_plan(rec)
    from workbench.fit.frontier import predict

    rec["predicted_loss"] = predict(iso["loss_law"], held)[0]
    _say(
        "5/7",
        f"plan for {held:.2g} FLOPs: N* {plan.params:,.0f}, shape {plan.shape.name} "
        f"({plan.shape.params:,} params, {plan.shape_tokens:,} tokens), predicted loss {rec['predicted_loss']:.4f}",
    )
    return rec, path


def _sweep_lr(spec, params: float) -> float:
    if spec.train.lr_peak != "auto":
        return float(spec.train.lr_peak)
    r = spec.rules
    return min(r.lr_max, r.lr_ref * (params / r.lr_ref_params) ** -r.lr_exponent)


def _train_flagship(path: Path) -> dict:
    _say("6/7", f"training the flagship: workbench train {path}")
    proc = subprocess.run([sys.executable, "-m", "workbench.cli", "train", str(path)], text=True)
    from workbench.train import coerce_config

    final = Path(coerce_config(path).run_dir) / "final.json"
    if proc.returncode != 0 or not final.is_file():
        raise WorkbenchError(f"the flagship run failed (exit {proc.returncode})", f"See the run dir of {path}.")
    return json.loads(final.read_text())


def prediction_interval(draws: list[float], residuals: list[float], seed: int = 0) -> tuple[float, float, float]:
    """5/50/95% of (law draw) x exp(resampled residual): where a single new run is expected to land."""
    rng = np.random.default_rng(seed)
    law = np.asarray(draws, dtype=float)
    noise = rng.choice(np.asarray(residuals, dtype=float), size=(law.size, 50))
    samples = (law[:, None] * np.exp(noise)).ravel()
    lo, mid, hi = np.percentile(samples, [5, 50, 95])
    return float(lo), float(mid), float(hi)


def _compare(record, points, held, plan_record, flagship) -> dict:
    from workbench.fit.frontier import predict

    iso = record["isoflop"]
    minima_ok = not iso["excluded"] and len(iso["minima"]) == len(np.unique(points["budget_flops"])) - 1
    hold = record["holdout"]
    observed = hold["observed"]
    shape = plan_record["shape"]
    best = observed["best_run"]["loss"]
    loss_law = iso["loss_law"]
    predicted, draws = predict(loss_law, held)
    draws = draws[np.isfinite(draws)]
    lo, _, hi = prediction_interval(draws.tolist() or [predicted], loss_law["scatter_log"])
    val = flagship["val_loss"]
    n_iso = hold.get("isoflop", {}).get("N_opt_pred")
    checks = {
        "interior_minima": minima_ok,
        "best_loss_within_2pct": abs(predicted / best - 1) <= 0.02,
        "n_opt_within_1.5x": n_iso is not None and 1 / 1.5 <= n_iso / observed["N_opt"] <= 1.5,
        "flagship_in_interval": lo <= val <= hi,
        "flagship_within_1pct_of_best": abs(val / best - 1) <= 0.01,
    }
    return {
        "held_out_budget": held,
        "fitted_budgets": [m["budget_flops"] for m in iso["minima"]],
        "excluded": iso["excluded"],
        "best_run": observed["best_run"],
        "loss_law": {"K": loss_law["K"], "gamma": loss_law["gamma"]},
        "predicted_best_loss": predicted,
        "best_loss_rel_err": predicted / best - 1,
        "parametric_predicted_best_loss": hold["parametric"]["loss_pred"],
        "parametric_best_loss_rel_err": hold["parametric"]["loss_rel_err"],
        "observed_n_opt": observed["N_opt"],
        "observed_n_opt_source": observed["N_opt_source"],
        "predicted_n_opt_isoflop": n_iso,
        "predicted_n_opt_parametric": hold["parametric"]["N_opt_pred"],
        "flagship": {
            "params": shape["params"],
            "tokens": shape["tokens"],
            "val_loss": val,
            "predicted": predicted,
            "interval": [lo, hi],
            "law_interval": [float(np.percentile(draws, 5)), float(np.percentile(draws, 95))] if draws.size else None,
            "vs_best": val / best - 1,
            "wall_s": flagship["wall_s"],
        },
        "checks": checks,
        "passed": all(checks.values()),
    }


def _report(sweep: str, db_path: Path, record: dict, plan_record: dict, outcome: dict, out: Path | None) -> Path:
    _say("7/7", "writing the report")
    from workbench.report import write_report

    return write_report(
        sweep,
        db_path,
        fit_path=Path("fits") / f"{sweep}.json",
        plan=plan_record,
        out=out or Path("reports") / f"{sweep}.html",
        extra={"demo": outcome},
    )


def summary(outcome: dict) -> str:
    """The closing lines `workbench demo` prints: the checks and where the report is."""
    f = outcome["flagship"]
    lines = [
        f"held-out budget {outcome['held_out_budget']:.3g} FLOPs (fit on {len(outcome['fitted_budgets'])} budgets)",
        f"  best sweep run: loss {outcome['best_run']['loss']:.4f} at N {outcome['best_run']['params']:,.0f}; "
        f"L*(C) law predicted {outcome['predicted_best_loss']:.4f} ({outcome['best_loss_rel_err']:+.2%}); "
        f"parametric law {outcome['parametric_predicted_best_loss']:.4f} "
        f"({outcome['parametric_best_loss_rel_err']:+.2%})",
        f"  N*: observed {outcome['observed_n_opt']:,.0f} ({outcome['observed_n_opt_source']}), predicted "
        f"{outcome['predicted_n_opt_isoflop'] or float('nan'):,.0f} (isoFLOP law), "
        f"{outcome['predicted_n_opt_parametric']:,.0f} (parametric, C = 6ND)",
        f"  flagship: N {f['params']:,} on {f['tokens']:,} tokens, val loss {f['val_loss']:.4f}; predicted "
        f"{f['predicted']:.4f} [90% PI {f['interval'][0]:.4f}, {f['interval'][1]:.4f}]; "
        f"{f['vs_best']:+.2%} vs the best run",
    ]
    if outcome.get("lr_check"):
        lines.append(
            f"  LR rule at the smallest budget: within {outcome['lr_check']['worst_gap']:.2%} of the best of "
            f"x0.5/x1/x2 for every size"
        )
    lines += [f"  {'PASS' if ok else 'FAIL'} {name}" for name, ok in outcome["checks"].items()]
    lines.append(f"done in {outcome['wall_s'] / 60:.1f} min; report: {outcome['report']}")
    return "\n".join(lines)
