"""Everything `workbench fit` computes, from validated points to the fits/NAME.json record. No I/O."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

import workbench
from workbench.core.errors import WorkbenchError
from workbench.core.logs import progress
from workbench.fit import (
    accuracy,
    bootstrap,
    calibration,
    crosscheck,
    design,
    diagnostics,
    envelope,
    frontier,
    holdout,
)
from workbench.fit.design import Design
from workbench.fit.isoflop import IsoflopFit, fit_isoflop
from workbench.fit.laws import SIX_N, FlopsPerToken
from workbench.fit.parametric import ParametricFit, fit_parametric, start_grid
from workbench.fit.points import data_hash
from workbench.fit.stats import HI_Q, LO_Q, small_sample_inflation
from workbench.records import FIT_SCHEMA_VERSION

METHODS = ("isoflop", "parametric")


@dataclass(frozen=True)
class FitOptions:
    """Settings of one fit (bootstrap 0 turns the intervals off)."""

    method: str = "all"
    bootstrap: int = 1000
    huber_delta: float = 1e-3
    overestimate_penalty: float = 1.0
    starts_per_axis: int = 4
    holdout_largest: bool = False  # also fit without the largest budget and predict it
    exclude_largest: bool = False  # fit without the largest budget (the fit itself predicts it; the demo)
    rollout: bool = True  # budgets 1..k predict k+1: the model error that widens extrapolation intervals
    seed: int = 0
    at_flops: tuple[float, ...] = ()
    bootstrap_mode: str = "auto"  # auto | budget | runs (workbench.fit.design)
    rollout_bootstrap: int = 200  # resamples per rollout step (its prediction intervals)

    @property
    def methods(self) -> tuple[str, ...]:
        return METHODS if self.method == "all" else (self.method,)

    def parametric_kwargs(self) -> dict:
        return {
            "starts": start_grid(self.starts_per_axis),
            "huber_delta": self.huber_delta,
            "overestimate_penalty": self.overestimate_penalty,
        }


@dataclass(frozen=True)
class FitResults:
    """The fit objects (for plots and tables) and the held-out checks."""

    points: pd.DataFrame
    options: FitOptions
    isoflop: IsoflopFit | None
    parametric: ParametricFit | None
    isoflop_draws: dict | None = None
    parametric_draws: dict | None = None
    holdout: dict | None = None
    rollout: list | None = None
    accuracy: list = field(default_factory=list)
    loss_law: dict | None = None  # L*(C) = K C^-gamma on the isoFLOP minima (workbench.fit.frontier)
    checks: dict | None = None  # the held-out budget's checks (exclude_largest), each with its pass flag
    design: Design | None = None  # the sweep's design and the bootstrap scheme chosen for it
    diagnostics: dict | None = None  # warnings about the fits' models (workbench.fit.diagnostics)
    crosscheck: dict | None = None  # the methods' exponents and N* side by side (workbench.fit.crosscheck)
    calibration: dict | None = None  # the rollout's coverage and the widened intervals (workbench.fit.calibration)
    envelope: dict | None = None  # Chinchilla approach 1 on the runs' loss curves (workbench.fit.envelope)
    flops: FlopsPerToken = SIX_N  # FLOPs per token the budgets were counted with (fitted on the runs)
    bootstrap_quality: dict | None = None  # parametric resamples: converged, degenerate


def split_largest(points: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs below the largest budget, runs at it); 3 budgets at least, so that 2 remain to fit."""
    budgets = np.unique(points["budget_flops"])
    if len(budgets) < 3:
        raise WorkbenchError(
            f"holding out the largest budget: {len(budgets)} budgets, and a fit needs 2 after holding one out",
            "Add runs at a third budget.",
        )
    return points[points["budget_flops"] < budgets[-1]], points[points["budget_flops"] == budgets[-1]]


def fit_all(points: pd.DataFrame, options: FitOptions, curves: list | None = None) -> FitResults:
    """Run the requested fits, bootstraps, L*(C), rollout, held-out checks and accuracy sigmoids on validated
    points; with the runs' loss curves (workbench.fit.envelope.run_curves), also Chinchilla approach 1. Small
    array work runs on one BLAS thread: measured fastest (more threads spin on the small products)."""
    with threadpool_limits(limits=1):
        return _fit_all(points, options, curves)


def _fit_all(points: pd.DataFrame, options: FitOptions, curves: list | None) -> FitResults:
    kwargs = options.parametric_kwargs()
    target = None
    if options.exclude_largest:
        points, target = split_largest(points)
    flops = FlopsPerToken.fit(points["params"], points["flops"] / points["tokens"])
    plan = design.choose(points, options.bootstrap_mode)
    mode = plan.bootstrap_mode
    iso = fit_isoflop(points, flops) if "isoflop" in options.methods else None
    par = (
        fit_parametric(points["params"], points["tokens"], points["loss"], **kwargs)
        if "parametric" in options.methods
        else None
    )
    iso_draws, par_draws, quality = _bootstraps(points, options, iso, par, mode, flops)
    loss_law = frontier.optimal_loss_law(points, options.bootstrap, options.seed, mode) if iso is not None else None
    score_kw = {"seed": options.seed, "mode": mode, "flops": flops}
    roll = _rollout(points, options, kwargs, score_kw)
    held, checks = None, None
    if target is not None:
        draws = {k: v for k, v in (("parametric", par_draws), ("isoflop", iso_draws)) if v is not None}
        fits = {k: v for k, v in (("parametric", par), ("isoflop", iso)) if v is not None}
        held = holdout.predict_budget(
            points, target, options.methods, kwargs, draws=draws, loss_law=loss_law, fits=fits, **score_kw
        )
        n_minima, n_excluded = (len(iso.minima), len(iso.excluded)) if iso is not None else (0, 0)
        checks = holdout.held_out_checks(held, n_minima, n_excluded, points["budget_flops"].nunique())
    elif options.holdout_largest:
        n_boot = min(options.bootstrap, options.rollout_bootstrap)
        held = (
            roll[-1]
            if roll
            else holdout.holdout_largest(points, options.methods, kwargs, n_bootstrap=n_boot, **score_kw)
        )
    results = FitResults(
        points=points,
        options=options,
        isoflop=iso,
        parametric=par,
        isoflop_draws=iso_draws,
        parametric_draws=par_draws,
        holdout=held,
        rollout=roll,
        accuracy=accuracy.fit_accuracy_columns(points) if par is not None else [],
        loss_law=loss_law,
        checks=checks,
        design=plan,
        flops=flops,
        bootstrap_quality=quality,
    )
    return _cross_checked(results, curves)


def _bootstraps(points: pd.DataFrame, options: FitOptions, iso, par, mode: str, flops: FlopsPerToken):
    """(isoFLOP draws, parametric draws, the parametric resamples' quality) with progress on the slow one."""
    if options.bootstrap <= 0:
        return None, None, None
    iso_draws = None
    if iso is not None:
        iso_draws = bootstrap.bootstrap_isoflop(points, options.bootstrap, options.seed, mode, flops)
    if par is None:
        return iso_draws, None, None
    with progress("bootstrap of the parametric law", options.bootstrap, "resamples") as advance:
        draws = bootstrap.bootstrap_parametric(
            points, par, options.bootstrap, options.seed, mode=mode, progress=advance
        )
    converged, degenerate = draws.pop("converged"), draws.pop("degenerate")
    quality = {"resamples": int(len(converged)), "converged": int(converged.sum()), "degenerate": int(degenerate.sum())}
    return iso_draws, draws, quality


def _rollout(points: pd.DataFrame, options: FitOptions, kwargs: dict, score_kw: dict) -> list | None:
    """Budgets 1..k predict k+1 for every k (3 budgets or more), with progress; None when off or too few."""
    if not options.rollout or points["budget_flops"].nunique() < 3:
        return None
    n_boot = min(options.bootstrap, options.rollout_bootstrap)
    steps = points["budget_flops"].nunique() - 2
    with progress("rollout (budgets 1..k predict k+1)", steps, "steps") as advance:
        return holdout.rollout(points, options.methods, kwargs, progress=advance, n_bootstrap=n_boot, **score_kw)


def _cross_checked(r: FitResults, curves: list | None) -> FitResults:
    """The results with approach 1 (given curves), the cross-method table, the diagnostics and the rollout's
    model error (calibration) of the intervals."""
    options, points = r.options, r.points
    target_flops = r.holdout["budget_flops"] if r.holdout else (options.at_flops[0] if options.at_flops else None)
    target_flops = target_flops or float(points["budget_flops"].max())
    env = _envelope(curves, min(options.bootstrap, options.rollout_bootstrap), options.seed, r.flops)
    draws = (r.isoflop, r.isoflop_draws, r.parametric, r.parametric_draws)
    kw = {"flops": r.flops, "inflate": isoflop_inflation(points)}
    cal = calibration.calibrate(r.rollout)
    if cal is not None:
        largest = float(points["budget_flops"].max())
        rows = {c: crosscheck.method_rows(*draws, c, env, **kw) for c in at_flops(points, options.at_flops)}
        cal["at"] = [x for c, row in rows.items() for x in calibration.calibrated_at(cal, row, c, largest)]
    return dataclasses.replace(
        r,
        diagnostics=diagnostics.diagnose(points, r.design, r.isoflop, r.parametric),
        crosscheck=crosscheck.cross_methods(*draws, target_flops, env, **kw),
        calibration=cal,
        envelope=env,
    )


def isoflop_inflation(points: pd.DataFrame) -> float:
    """The small-sample factor of the isoFLOP intervals: parabolas of the median number of runs per budget."""
    return small_sample_inflation(float(points.groupby("budget_flops").size().median()), t_quantile=False)


def _envelope(curves: list | None, n_bootstrap: int, seed: int, flops: FlopsPerToken) -> dict | None:
    """Approach 1 on the curves, or None (no curves, or too few sizes: the cross-check goes without it)."""
    if not curves:
        return None
    try:
        return envelope.fit_envelope(curves, n_bootstrap, seed, flops)
    except WorkbenchError:
        return None


def at_flops(points: pd.DataFrame, extra: tuple[float, ...] = ()) -> list[float]:
    """Budgets at which intervals are reported: the largest budget x 1, 10, 100, 1000, and any asked for."""
    largest = float(points["budget_flops"].max())
    return sorted({largest * f for f in (1.0, 10.0, 100.0, 1000.0)} | {float(c) for c in extra})


def _widen_ci(ci: dict | None, cal: dict | None, method: str, largest: float) -> None:
    """Add to each `at` row the extrapolation intervals: the bootstrap's widened by the rollout's model error
    at that distance (workbench.fit.calibration), as N_opt_extrapolation / L_opt_extrapolation."""
    if not ci:
        return
    for row in ci.get("at", []):
        distance = calibration.distance_decades(row["budget_flops"], largest)
        for key, quantity in (("N_opt", "N_opt"), ("L_opt", "loss")):
            block = row.get(key)
            if not block or not np.isfinite(block.get("median", np.nan)):
                continue
            tau = calibration.tau_of(cal, method, quantity)
            widened = calibration.widen(block["median"], [block["lo"], block["hi"]], distance, tau)
            row[f"{key}_extrapolation"] = {"lo": widened[0], "hi": widened[1], "tau": tau} if widened else None


def _draws(draws: dict | None) -> dict | None:
    return None if draws is None else {k: [float(v) for v in np.asarray(a)] for k, a in draws.items()}


def to_record(results: FitResults, name: str, source: str, sweep: str | None = None) -> dict:
    """The fits/NAME.json object (NaN left as NaN; the writer turns it into null)."""
    points, options = results.points, results.options
    cs = at_flops(points, options.at_flops)
    record: dict = {
        "name": name,
        "sweep": sweep,
        "source": source,
        "method": options.method,
        "data_hash": data_hash(points),
        "n_points": int(len(points)),
        "schema_version": FIT_SCHEMA_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "version": workbench.__version__,
        "settings": {
            "bootstrap": options.bootstrap,
            "huber_delta": options.huber_delta,
            "overestimate_penalty": options.overestimate_penalty,
            "starts": options.starts_per_axis**5,
            "seed": options.seed,
            "ci_quantiles": [LO_Q, HI_Q],
            "bootstrap_mode": results.design.bootstrap_mode if results.design else None,
        },
        "design": results.design.as_dict() if results.design else None,
        "flops_per_token": {
            **results.flops.as_dict(),
            "form": "6 N (1 + rho N^-kappa), fitted on the runs' FLOPs / tokens",
        },
        "diagnostics": results.diagnostics,
        "crosscheck": results.crosscheck,
        "calibration": results.calibration,
        "envelope": results.envelope,
        "isoflop": None,
        "parametric": None,
        "holdout": results.holdout,
        "rollout": results.rollout,
        "checks": results.checks,
        "accuracy": None,
        "points": {c: points[c].tolist() for c in ("params", "tokens", "flops", "budget_flops", "loss")},
    }
    largest = float(points["budget_flops"].max())
    if results.isoflop is not None:
        iso = results.isoflop.as_dict()
        inflate = isoflop_inflation(points)
        iso["ci"] = (
            bootstrap.isoflop_ci(results.isoflop_draws, cs, results.isoflop, inflate, results.flops)
            if results.isoflop_draws
            else None
        )
        _widen_ci(iso["ci"], results.calibration, "isoflop", largest)
        iso["draws"] = _draws(results.isoflop_draws)
        if results.loss_law is not None:
            tau = calibration.tau_of(results.calibration, "loss_law", "loss")
            at = [frontier.predict_at(results.loss_law, c, tau * calibration.distance_decades(c, largest)) for c in cs]
            iso["loss_law"] = {**results.loss_law, "at": at}
        record["isoflop"] = iso
    if results.parametric is not None:
        fit = results.parametric
        par = {**fit.as_dict(), "objective": fit.objective, "converged": fit.converged, "degenerate": fit.degenerate}
        par["ci"] = (
            bootstrap.parametric_ci(results.parametric_draws, cs, results.flops) if results.parametric_draws else None
        )
        _widen_ci(par["ci"], results.calibration, "parametric", largest)
        par["draws"] = _draws(results.parametric_draws)
        par["bootstrap"] = results.bootstrap_quality
        record["parametric"] = par
        if results.accuracy:
            law = results.parametric.as_dict()
            record["accuracy"] = {
                a.task: {**a.as_dict(), "at": accuracy.accuracy_at(a, law, cs)} for a in results.accuracy
            }
    return record
