"""Everything `workbench fit` computes, from validated points to the fits/NAME.json record. No I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd

import workbench
from workbench.fit import accuracy, bootstrap, holdout
from workbench.fit.data import data_hash
from workbench.fit.isoflop import IsoflopFit, fit_isoflop
from workbench.fit.parametric import ParametricFit, fit_parametric, start_grid

METHODS = ("isoflop", "parametric")


@dataclass(frozen=True)
class FitOptions:
    """Settings of one fit (bootstrap 0 turns the intervals off)."""

    method: str = "all"
    bootstrap: int = 1000
    huber_delta: float = 1e-3
    overestimate_penalty: float = 1.0
    starts_per_axis: int = 4
    holdout_largest: bool = False
    rollout: bool = False
    seed: int = 0
    at_flops: tuple[float, ...] = ()

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


def fit_all(points: pd.DataFrame, options: FitOptions) -> FitResults:
    """Run the requested fits, bootstraps, held-out checks and accuracy sigmoids on validated points."""
    iso = fit_isoflop(points) if "isoflop" in options.methods else None
    par = None
    if "parametric" in options.methods:
        par = fit_parametric(points["params"], points["tokens"], points["loss"], **options.parametric_kwargs())
    iso_draws = par_draws = None
    if options.bootstrap > 0:
        if iso is not None:
            iso_draws = bootstrap.bootstrap_isoflop(points, options.bootstrap, options.seed)
        if par is not None:
            par_draws = bootstrap.bootstrap_parametric(points, par, options.bootstrap, options.seed)
    kwargs = options.parametric_kwargs()
    return FitResults(
        points=points,
        options=options,
        isoflop=iso,
        parametric=par,
        isoflop_draws=iso_draws,
        parametric_draws=par_draws,
        holdout=holdout.holdout_largest(points, options.methods, kwargs) if options.holdout_largest else None,
        rollout=holdout.rollout(points, options.methods, kwargs) if options.rollout else None,
        accuracy=accuracy.fit_accuracy_columns(points) if par is not None else [],
    )


def at_flops(points: pd.DataFrame, extra: tuple[float, ...] = ()) -> list[float]:
    """Budgets at which intervals are reported: the largest budget x 1, 10, 100, 1000, and any asked for."""
    largest = float(points["budget_flops"].max())
    return sorted({largest * f for f in (1.0, 10.0, 100.0, 1000.0)} | {float(c) for c in extra})


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
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "version": workbench.__version__,
        "settings": {
            "bootstrap": options.bootstrap,
            "huber_delta": options.huber_delta,
            "overestimate_penalty": options.overestimate_penalty,
            "starts": options.starts_per_axis**5,
            "seed": options.seed,
            "ci_quantiles": [bootstrap.LO_Q, bootstrap.HI_Q],
        },
        "isoflop": None,
        "parametric": None,
        "holdout": results.holdout,
        "rollout": results.rollout,
        "accuracy": None,
        "points": {c: points[c].tolist() for c in ("params", "tokens", "flops", "budget_flops", "loss")},
    }
    if results.isoflop is not None:
        iso = results.isoflop.as_dict()
        iso["ci"] = bootstrap.isoflop_ci(results.isoflop_draws, cs) if results.isoflop_draws else None
        iso["draws"] = _draws(results.isoflop_draws)
        record["isoflop"] = iso
    if results.parametric is not None:
        par = {**results.parametric.as_dict(), "objective": results.parametric.objective}
        par["ci"] = bootstrap.parametric_ci(results.parametric_draws, cs) if results.parametric_draws else None
        par["draws"] = _draws(results.parametric_draws)
        record["parametric"] = par
        if results.accuracy:
            law = results.parametric.as_dict()
            record["accuracy"] = {
                a.task: {**a.as_dict(), "at": accuracy.accuracy_at(a, law, cs)} for a in results.accuracy
            }
    return record
