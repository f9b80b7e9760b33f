"""Prediction intervals calibrated by the rollout's track record. Pure numpy.

The bootstrap interval of a prediction says how much the law moves when the runs are resampled; it does
not grow with how far the law is extrapolated, and the rollout (fit budgets 1..k, predict k+1) shows
how wrong the extrapolations actually were. Per quantity (N* and L* of each method), with d the
extrapolation distance in decades of compute (log10 of the predicted budget over the largest fitted),
the log error of a prediction is modelled as normal with variance s_boot^2 + (tau d)^2: s_boot from the
bootstrap interval (its 5-95% half-width / 1.645), tau (per decade) by moments from the rollout's
errors: tau^2 = max(0, mean((log err^2 - s_boot^2) / d^2)). The calibrated 90% interval at distance d
adds 1.645 tau d in quadrature to each side of the bootstrap interval (in log space). The table shows
the nominal (90%) against the achieved coverage of the rollout's bootstrap intervals, and of the
calibrated ones (in-sample: with 3-5 rollout steps this is a sanity check, not a test).
"""

from __future__ import annotations

import math

import numpy as np

Z90 = 1.6449  # the 95% quantile of the normal: a 5-95% interval is +-Z90 sd
QUANTITIES = (
    ("N* (parametric)", "parametric", "N_opt"),
    ("L* (parametric)", "parametric", "loss"),
    ("N* (isoFLOP)", "isoflop", "N_opt"),
    ("L* (L*(C) law)", "loss_law", "loss"),
)


def _steps(rollout: list[dict], method: str, key: str) -> list[tuple[float, float, float]]:
    """(distance in decades, log error, bootstrap log sd) of every scored rollout prediction."""
    out = []
    for step in rollout:
        scored = (step.get(method) or {}).get(key)
        if not scored or scored.get("rel_err") is None or not scored.get("pred_interval"):
            continue
        lo, hi = scored["pred_interval"]
        if not (lo > 0 and hi > 0 and step.get("train_max_flops")):
            continue
        distance = math.log10(step["budget_flops"] / step["train_max_flops"])
        out.append((distance, math.log(scored["target"] / scored["pred"]), math.log(hi / lo) / (2 * Z90)))
    return out


def calibrate(rollout: list[dict] | None) -> dict | None:
    """{rows: [{quantity, nominal, achieved, achieved_calibrated, n, tau}], tau: {quantity: per decade}}."""
    if not rollout:
        return None
    rows = []
    for label, method, key in QUANTITIES:
        steps = _steps(rollout, method, key)
        if not steps:
            continue
        d, err, sd = (np.array(x) for x in zip(*steps, strict=True))
        tau = math.sqrt(max(0.0, float(np.mean((err**2 - sd**2) / np.maximum(d, 1e-6) ** 2))))
        total = np.sqrt(sd**2 + (tau * d) ** 2)
        rows.append(
            {
                "quantity": label,
                "method": method,
                "key": key,
                "nominal": 0.9,
                "achieved": float(np.mean(np.abs(err) <= Z90 * sd)),
                "achieved_calibrated": float(np.mean(np.abs(err) <= Z90 * total)),
                "n": int(len(steps)),
                "widen": tau,
            }
        )
    return {"rows": rows, "model": "log error ~ N(0, s_boot^2 + (tau d)^2), d in decades of compute"} if rows else None


def widen(pred: float, interval: list[float] | None, distance_decades: float, tau: float) -> list[float] | None:
    """The calibrated 90% interval of a prediction `distance_decades` beyond the fitted budgets: each side of
    the bootstrap interval (in log space about the prediction) combined in quadrature with Z90 tau d."""
    if not interval or not (interval[0] > 0 and interval[1] > 0 and pred > 0):
        return None
    extra = (Z90 * tau * distance_decades) ** 2
    below, above = math.log(pred / interval[0]), math.log(interval[1] / pred)
    return [pred * math.exp(-math.sqrt(below**2 + extra)), pred * math.exp(math.sqrt(above**2 + extra))]


def calibrated_at(calibration: dict | None, crosscheck_rows: list[dict], target_flops: float, max_flops: float) -> list:
    """The cross-check's N* intervals at target_flops widened by the rollout's tau of each method."""
    if not calibration:
        return []
    taus = {(r["method"], r["key"]): r["widen"] for r in calibration["rows"]}
    distance = max(0.0, math.log10(target_flops / max_flops))
    out = []
    for row in crosscheck_rows:
        method = row["method"].split(" ")[0]
        tau = taus.get((method, "N_opt"))
        if tau is None:
            continue
        out.append(
            {
                "method": row["method"],
                "budget_flops": float(target_flops),
                "N_opt": row["N_opt"],
                "N_opt_interval": row["N_opt_interval"],
                "N_opt_interval_calibrated": widen(row["N_opt"], row["N_opt_interval"], distance, tau),
            }
        )
    return out
