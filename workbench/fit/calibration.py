"""Model error measured on the sweep itself: how wrong extrapolations were when the laws were fitted on
budgets 1..k and asked for budget k+1 (the rollout, workbench.fit.holdout). Pure numpy.

The bootstrap interval of a prediction says how much a law moves when the runs are resampled; it does not
grow with how far the law is extrapolated, and it knows nothing of a law whose form is wrong (a sweep that
bends into another regime). Per quantity (N* and L* of each method), with d the extrapolation distance in
decades of compute (log10 of the predicted budget over the largest fitted), the log error of a prediction is
modelled as normal with variance s_boot^2 + (tau d)^2: s_boot from the prediction's bootstrap interval (its
5-95% half-width / 1.645) and the held-out target's own sd, tau the model error per decade, estimated from
the rollout's errors over the steps fitted on at least MIN_TRAIN_BUDGETS budgets.

Whether there is model error at all is one question for the whole law: tau is 0 for every quantity unless the
maximum-likelihood tau of at least one quantity passes a likelihood-ratio test against tau = 0, at 5% for the
law as a whole (Bonferroni over the quantities; a moment estimate, or a maximum-likelihood one kept whenever
it is positive, would widen every law that does not bend on a few unlucky errors). A bend shows first in L*,
whose held-out minima are known to a fraction of a percent; N* is scored against held-out vertices uncertain
by 5-20%, and its own test rarely passes over a few steps. Once model error is established, each quantity's
tau is the larger of its maximum-likelihood estimate over all steps and the estimate from its RECENT_STEPS
latest errors (`tau_recent`: the steps fitted on the most budgets, most like the extrapolation; where a law
bends, the earlier steps have no error and would dilute it), the latter scaled by t(0.95, RECENT_STEPS) / Z90
because it rests on so few errors. An extrapolation interval adds Z90 tau d in quadrature to each side of the
bootstrap interval (in log space). The table shows the nominal (90%) against the achieved coverage of the
rollout's bootstrap intervals and of the widened ones (in-sample: with 3-8 rollout steps this is a sanity
check; tests/test_fit_extrapolation.py measures coverage on generated sweeps).
"""

from __future__ import annotations

import math

import numpy as np

from workbench.fit.stats import t95

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
    """The held-out target's own log sd (workbench.fit.scoring: its bootstrap sd, corrected for the bootstrap's
    shrinkage), or from its 90% interval in a record written before it was stored; 0 when it has neither. The
    interval's Student-t widening is a quantile's, not the sd's: it would count the target's noise 1.2x."""
    sd = scored.get("target_log_sd")
    if sd is not None and math.isfinite(sd):
        return float(sd)
    span = scored.get("target_interval")
    if not span or not (span[0] > 0 and span[1] > 0):
        return 0.0
    return math.log(span[1] / span[0]) / (2 * Z90)


RECENT_STEPS = 3  # the latest rollout steps, whose errors set tau where the law bends (tau_recent)
# tau > 0 only past a likelihood-ratio test at 5% for the law as a whole: Bonferroni over the 4 quantities,
# 1.25% each (chi-square with 1 degree of freedom and the boundary's half mass: P(chi2_1 >= 5.02) = 2.5%)
LR_CRITICAL = 5.02


def tau_mle(distance: np.ndarray, error: np.ndarray, sd: np.ndarray) -> tuple[float, bool]:
    """(tau, significant): the maximum-likelihood tau >= 0 of error ~ N(0, sd^2 + (tau d)^2) (the root of the
    score in tau^2, by bisection), and whether the likelihood ratio against tau = 0 passes a 5% test."""
    d2, e2, s2 = distance**2, error**2, np.maximum(sd**2, 1e-12)

    def score(t2: float) -> float:
        v = s2 + t2 * d2
        return float(np.sum(d2 * (e2 - v) / v**2))

    def loglik(t2: float) -> float:
        v = s2 + t2 * d2
        return float(-0.5 * np.sum(np.log(v) + e2 / v))

    if score(0.0) <= 0:
        return 0.0, False
    lo, hi = 0.0, 1.0
    while score(hi) > 0 and hi < 1e6:
        lo, hi = hi, hi * 10
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if score(mid) > 0 else (lo, mid)
    t2 = 0.5 * (lo + hi)
    return math.sqrt(t2), 2 * (loglik(t2) - loglik(0.0)) >= LR_CRITICAL


def tau_recent(distance: np.ndarray, error: np.ndarray, sd: np.ndarray, steps: int = RECENT_STEPS) -> float:
    """tau from the latest `steps` rollout errors' excess over their sampling variance, each weighted alike:
    sqrt(mean(max(0, e^2 - sd^2) / d^2)), times t(0.95, steps) / Z90. The latest steps were fitted on the
    most budgets, so they are the most like the extrapolation being widened; where a law bends, they carry
    its error."""
    excess = np.maximum(0.0, error[-steps:] ** 2 - sd[-steps:] ** 2) / np.maximum(distance[-steps:], 1e-6) ** 2
    return float(np.sqrt(excess.mean())) * t95(len(excess)) / Z90  # so few errors: Student's t, not the normal


def calibrate(rollout: list[dict] | None) -> dict | None:
    """{rows: [{quantity, method, key, nominal, achieved, achieved_calibrated, n, widen}], model}: `widen` is
    tau, the model error per decade of extrapolation (log sd), for each quantity the rollout scored."""
    if not rollout:
        return None
    scored = []
    for label, method, key in QUANTITIES:
        steps = _steps(rollout, method, key)
        if not steps:
            continue
        d, err, sd = (np.array(x) for x in zip(*steps, strict=True))
        scored.append((label, method, key, d, err, sd, *tau_mle(np.maximum(d, 1e-6), err, sd)))
    established = any(row[-1] for row in scored)  # model error shown by any quantity: the law's form is wrong
    rows = []
    for label, method, key, d, err, sd, mle, _ in scored:
        tau = max(mle, tau_recent(d, err, sd)) if established else 0.0
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
    model = (
        "log error ~ N(0, s_boot^2 + (tau d)^2), d in decades of compute; tau > 0 once a likelihood-ratio test "
        "finds model error in any quantity, then the larger of the maximum-likelihood and the latest steps' estimate"
    )
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
