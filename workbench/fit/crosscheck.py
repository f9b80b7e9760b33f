"""The methods side by side: the allocation exponent a (N* proportional to C^a) and N* at a target budget,
each with its 5-95% bootstrap interval, from Chinchilla approach 1 (the envelope of loss curves, when
the curves are at hand), approach 2 (isoFLOP parabolas) and approach 3 (the parametric law, whose
a = beta / (alpha + beta)). Two methods disagree when their intervals do not overlap: the data (or a
model: the parabola, the law's form) are not consistent with one allocation rule. Pure numpy.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

from workbench.fit.laws import SIX_N, FlopsPerToken, isoflop_allocation, optimal_allocation
from workbench.fit.stats import interval, robust_interval


def _row(method: str, a: float, a_draws, n_opt: float, n_draws, robust: bool = False, inflate: float = 1.0) -> dict:
    return {
        "method": method,
        "a": float(a),
        "a_interval": _span(a_draws, a if robust else None, inflate=inflate),
        "N_opt": float(n_opt),
        "N_opt_interval": _span(n_draws, n_opt if robust else None, log=True, inflate=inflate),
    }


def _span(draws, point: float | None = None, log: bool = False, inflate: float = 1.0) -> list[float] | None:
    """5-95% percentiles of the draws, or with `point` the robust normal interval about it (isoFLOP)."""
    if draws is None:
        return None
    draws = np.asarray(draws, dtype=float)
    ci = interval(draws) if point is None else robust_interval(point, draws, log, inflate)
    return None if not np.isfinite(ci["lo"]) else [ci["lo"], ci["hi"]]


def method_rows(
    iso,
    iso_draws,
    par,
    par_draws,
    target_flops: float,
    envelope: dict | None = None,
    flops: FlopsPerToken = SIX_N,
    inflate: float = 1.0,
) -> list[dict]:
    """One row per method available: a and N* at target_flops (counted by `flops`) with intervals (None
    without draws); `inflate` widens the isoFLOP intervals for small parabolas (workbench.fit.stats)."""
    rows = []
    if envelope is not None:
        rows.append(envelope_row(envelope, target_flops))
    if iso is not None:
        n_draws = None if iso_draws is None else isoflop_allocation(iso_draws, target_flops)[0]
        a_draws = None if iso_draws is None else iso_draws["a"]
        n_iso = iso.G * target_flops**iso.a
        rows.append(_row("isoflop (approach 2)", iso.a, a_draws, n_iso, n_draws, robust=True, inflate=inflate))
    if par is not None:
        law = par.as_dict()
        n_opt = float(optimal_allocation(law, target_flops, flops)[0])
        a_draws = n_draws = None
        if par_draws is not None:
            with np.errstate(invalid="ignore", divide="ignore"):
                a_draws = par_draws["beta"] / (par_draws["alpha"] + par_draws["beta"])
            n_draws = optimal_allocation(par_draws, target_flops, flops)[0]
        rows.append(_row("parametric (approach 3)", par.a, a_draws, n_opt, n_draws))
    return rows


def envelope_row(envelope: dict, target_flops: float) -> dict:
    """The approach-1 row from workbench.fit.envelope's result."""
    g, a = envelope["G"], envelope["a"]
    draws = envelope.get("draws")
    n_draws = None if not draws else np.asarray(draws["G"]) * target_flops ** np.asarray(draws["a"])
    return _row("envelope (approach 1)", a, None if not draws else draws["a"], g * target_flops**a, n_draws)


def _apart(x: list[float] | None, y: list[float] | None) -> bool | None:
    if x is None or y is None:
        return None
    return bool(x[1] < y[0] or y[1] < x[0])


def cross_methods(
    iso, iso_draws, par, par_draws, target_flops: float, envelope: dict | None = None, **kw
) -> dict | None:
    """{target_flops, rows, disagreements: [text], flag}: flag is True when any two methods' intervals of a
    or of N* do not overlap, None when fewer than two methods or no intervals (kw: method_rows' flops, inflate)."""
    rows = method_rows(iso, iso_draws, par, par_draws, target_flops, envelope, **kw)
    if not rows:
        return None
    notes, flags = [], []
    for x, y in combinations(rows, 2):
        for key, label in (("a_interval", "exponent a"), ("N_opt_interval", "N* at the target")):
            apart = _apart(x[key], y[key])
            flags.append(apart)
            if apart:
                notes.append(f"{label}: {x['method']} {_text(x, key)} vs {y['method']} {_text(y, key)} do not overlap")
    known = [f for f in flags if f is not None]
    return {
        "target_flops": float(target_flops),
        "rows": rows,
        "flag": (any(known) if known else None),
        "disagreements": notes,
    }


def _text(row: dict, key: str) -> str:
    lo, hi = row[key]
    return f"[{lo:.4g}, {hi:.4g}]"
