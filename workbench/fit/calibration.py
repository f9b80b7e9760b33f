"""Model error measured on the sweep itself: how wrong extrapolations were when the laws were fitted on
budgets 1..k and asked for budget k+1 (the rollout, workbench.fit.holdout). Pure numpy.

The bootstrap interval of a prediction says how much a law moves when the runs are resampled; it does not
grow with how far the law is extrapolated, and it knows nothing of a law whose form is wrong (a sweep that
bends into another regime). Per quantity (N* and L* of each method), with d the extrapolation distance in
decades of compute (log10 of the predicted budget over the largest fitted), the log error of a prediction is
modelled as normal with variance s_boot^2 + (tau d)^2: s_boot from the prediction's bootstrap interval (its
5-95% half-width / 1.645) and the held-out target's own, tau the model error per decade, estimated by
maximum likelihood from the rollout's errors over the steps fitted on at least MIN_TRAIN_BUDGETS budgets, and
kept only past a 5% likelihood-ratio test against tau = 0 (a moment estimate, or a maximum-likelihood one
kept whenever it is positive, would widen every law that does not bend on a few unlucky errors). An
extrapolation interval adds Z90 tau d in quadrature to each side of the bootstrap interval (in log space).
The table shows the nominal (90%) against the achieved coverage of the rollout's bootstrap intervals and of
the widened ones (in-sample: with 3-8 rollout steps this is a sanity check; tests/test_fit_extrapolation.py
measures coverage on generated sweeps).

What it can see: model error that the rollout's own steps show beyond their sampling error. A law that bends
shows it in L* (its held-out minima are known to a fraction of a percent); N* is scored against held-out
vertices uncertain by 10-20% at 1% noise per run, so a bend of N* by less than that over a few steps is not
detected, and its interval stays the bootstrap's.
"""

from __future__ import annotations

import math

import numpy as np

Z90 = 1.6449  # the 95% quantile of the normal: a 5-95% interval is +-Z90 sd
# a rollout step fitted on fewer budgets is not the law being extrapolated (a 3-parameter L*(C) through 2 or 3
# minima is a pure power law, or exactly determined): its errors would count that as model error
MIN_TRAIN_BUDGETS = 4
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
        if step.get("train_budgets", MIN_TRAIN_BUDGETS) < MIN_TRAIN_BUDGETS:
            continue
        scored = (step.get(method) or {}).get(key)
        if not scored or scored.get("rel_err") is None or not scored.get("pred_interval"):
            continue
        lo, hi = scored["pred_interval"]
        if not (lo > 0 and hi > 0 and step.get("train_max_flops") and scored["target"] > 0):
            continue
        distance = math.log10(step["budget_flops"] / step["train_max_flops"])
        sd = math.log(hi / lo) / (2 * Z90)
        target_sd = _target_log_sd(scored)
        out.append((distance, math.log(scored["target"] / scored["pred"]), math.hypot(sd, target_sd)))
    return out


def _target_log_sd(scored: dict) -> float:
    """The held-out target's own log sd (its interval, workbench.fit.scoring), 0 when it has none."""
    span = scored.get("target_interval")
    if not span or not (span[0] > 0 and span[1] > 0):
        return 0.0
    return math.log(span[1] / span[0]) / (2 * Z90)


LR_CRITICAL = 2.71  # tau > 0 only past a 5% likelihood-ratio test (chi-square with the boundary's half mass)


def tau_mle(distance: np.ndarray, error: np.ndarray, sd: np.ndarray) -> float:
    """Maximum-likelihood tau >= 0 of error ~ N(0, sd^2 + (tau d)^2) (the root of the score in tau^2, by
    bisection), kept only when the likelihood ratio against tau = 0 passes a 5% test: a few rollout errors
    larger than their bootstrap sd by chance do not widen every extrapolation of a law that does not bend."""
    d2, e2, s2 = distance**2, error**2, np.maximum(sd**2, 1e-12)

    def score(t2: float) -> float:
        v = s2 + t2 * d2
        return float(np.sum(d2 * (e2 - v) / v**2))

    def loglik(t2: float) -> float:
        v = s2 + t2 * d2
        return float(-0.5 * np.sum(np.log(v) + e2 / v))

    if score(0.0) <= 0:
        return 0.0
    lo, hi = 0.0, 1.0
    while score(hi) > 0 and hi < 1e6:
        lo, hi = hi, hi * 10
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if score(mid) > 0 else (lo, mid)
    t2 = 0.5 * (lo + hi)
    return math.sqrt(t2) if 2 * (loglik(t2) - loglik(0.0)) >= LR_CRITICAL else 0.0


def calibrate(rollout: list[dict] | None) -> dict | None:
    """{rows: [{quantity, method, key, nominal, achieved, achieved_calibrated, n, widen}], model}: `widen` is
    tau, the model error per decade of extrapolation (log sd), for each quantity the rollout scored."""
    if not rollout:
        return None
    rows = []
    for label, method, key in QUANTITIES:
        steps = _steps(rollout, method, key)
        if not steps:
            continue
        d, err, sd = (np.array(x) for x in zip(*steps, strict=True))
        tau = tau_mle(np.maximum(d, 1e-6), err, sd)
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
    model = "log error ~ N(0, s_boot^2 + (tau d)^2), d in decades of compute, tau by maximum likelihood"
    return {"rows": rows, "model": model} if rows else None


def tau_of(calibration: dict | None, method: str, key: str) -> float:
    """The rollout's model error per decade for one quantity (0 without a calibration row)."""
    for row in (calibration or {}).get("rows", []):
        if row["method"] == method and row["key"] == key:
            return float(row["widen"])
    return 0.0


def distance_decades(target_flops: float, max_flops: float) -> float:
    """Decades of compute past the largest fitted budget (0 inside the fitted range)."""
    return max(0.0, math.log10(target_flops / max_flops))


def widen(pred: float, interval: list[float] | None, distance_decades: float, tau: float) -> list[float] | None:
    """The extrapolation interval of a prediction `distance_decades` beyond the fitted budgets: each side of
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
    distance = distance_decades(target_flops, max_flops)
    out = []
    for row in crosscheck_rows:
        method = row["method"].split(" ")[0]
        if not any(r["method"] == method and r["key"] == "N_opt" for r in calibration["rows"]):
            continue
        tau = tau_of(calibration, method, "N_opt")
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
