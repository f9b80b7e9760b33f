"""Coverage of the bootstrap intervals on noisy synthetic sweeps from a known law.

100 repeats per design (fixed seeds), 2% multiplicative noise, 5 budgets fitted; N* is predicted at the
next budget up (the held-out budget), whose own parabola scores the held-out errors.
For each estimate the 90% interval must cover the truth in 84-96% of repeats, and its mean width must be
within 1.5x of the true sampling spread (the 5-95% range of the estimates across repeats). Cheap on
purpose: 32 starts, one warm start per resample, 100 resamples.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workbench.fit import frontier, scoring, synthetic
from workbench.fit.bootstrap import bootstrap_isoflop, bootstrap_parametric
from workbench.fit.design import choose
from workbench.fit.isoflop import fit_isoflop
from workbench.fit.laws import ParametricLaw, isoflop_allocation, optimal_allocation, optimal_loss
from workbench.fit.parametric import fit_parametric, start_grid
from workbench.fit.stats import robust_interval
from workbench.fit.synthetic import EPOCH, isoflop_sweep

pytestmark = pytest.mark.slow

REPEATS = 100
RESAMPLES = 100
NOISE = 0.02
BUDGETS = np.geomspace(1e18, 1e20, 5)
HELD_OUT = BUDGETS[-1] * (BUDGETS[1] / BUDGETS[0])  # the next budget up
LAW = ParametricLaw.of(EPOCH)
TRUTH = {
    "alpha": EPOCH["alpha"],
    "beta": EPOCH["beta"],
    "a": EPOCH["beta"] / (EPOCH["alpha"] + EPOCH["beta"]),
    "N_opt": float(LAW.optimum(HELD_OUT)[0]),
}


def scattered_sweep(seed: int) -> pd.DataFrame:
    """Runs at scattered FLOPs (log-uniform over the budgets' range) and sizes within 0.5 decade of N*."""
    return synthetic.scattered_sweep(EPOCH, BUDGETS[0], BUDGETS[-1], n=45, noise=NOISE, seed=seed)


def _q(draws) -> tuple[float, float]:
    d = np.asarray(draws, float)
    d = d[np.isfinite(d)]
    return float(np.percentile(d, 5)), float(np.percentile(d, 95))


def one_repeat(points: pd.DataFrame, seed: int, isoflop: bool) -> dict:
    """Estimates and 90% intervals of alpha, beta, a (isoFLOP) and N* at the held-out budget."""
    mode = choose(points).bootstrap_mode
    fit = fit_parametric(points["params"], points["tokens"], points["loss"], starts=start_grid(2), n_polish=1)
    draws = bootstrap_parametric(points, fit, RESAMPLES, seed, n_optima=1, mode=mode)
    out = {
        "alpha": (fit.alpha, *_q(draws["alpha"])),
        "beta": (fit.beta, *_q(draws["beta"])),
        "N_opt_parametric": (
            float(optimal_allocation(fit.as_dict(), HELD_OUT)[0]),
            *_q(optimal_allocation(draws, HELD_OUT)[0]),
        ),
        "loss_pred": float(optimal_loss(fit.as_dict(), HELD_OUT)),
        "mode": mode,
    }
    if isoflop:
        iso = fit_isoflop(points)
        iso_draws = bootstrap_isoflop(points, RESAMPLES * 2, seed, mode=mode)
        n_opt = iso.G * HELD_OUT**iso.a
        a_ci = robust_interval(iso.a, iso_draws["a"])
        n_ci = robust_interval(n_opt, isoflop_allocation(iso_draws, HELD_OUT)[0], log=True)
        out["a"] = (iso.a, a_ci["lo"], a_ci["hi"])
        out["N_opt_isoflop"] = (n_opt, n_ci["lo"], n_ci["hi"])
    return out


def check(results: list[dict], key: str, truth: float) -> list[str]:
    """Failures of coverage in 84-96% and mean width / true 5-95% spread within 1.5x (printed either way)."""
    est, lo, hi = (np.array([r[key][i] for r in results]) for i in range(3))
    coverage = float(np.mean((lo <= truth) & (truth <= hi)))
    spread = float(np.percentile(est, 95) - np.percentile(est, 5))
    ratio = float(np.mean(hi - lo) / spread)
    print(f"{key}: coverage {coverage:.2f}, width/spread {ratio:.2f}")
    failed = [] if 0.84 <= coverage <= 0.96 else [f"{key} coverage {coverage:.2f}"]
    return failed + ([] if 1 / 1.5 <= ratio <= 1.5 else [f"{key} width/spread {ratio:.2f}"])


def test_isoflop_design_intervals_cover_the_truth():
    results = []
    for seed in range(REPEATS):
        sweep = isoflop_sweep(EPOCH, budgets_flops=BUDGETS, noise=NOISE, seed=1000 + seed)
        out = one_repeat(sweep, seed, isoflop=True)
        assert out["mode"] == "budget"
        results.append(out)
    failed = [f for key in ("alpha", "beta", "a") for f in check(results, key, TRUTH[key])]
    failed += check(results, "N_opt_parametric", TRUTH["N_opt"])
    failed += check(results, "N_opt_isoflop", TRUTH["N_opt"])
    assert not failed, failed


def test_held_out_errors_lie_within_their_stated_intervals_of_the_true_errors():
    """The reported error (predicted / the held-out parabola's estimate - 1) has a 90% interval; the true
    error (predicted / the law's value - 1) lies in it in 84-96% of the scored repeats (>= 100 of them:
    a held-out parabola whose vertex falls outside its sizes is not scored)."""
    held: dict[str, list[bool]] = {"N_opt": [], "loss_opt": []}
    seed = 0
    while min(len(v) for v in held.values()) < 120:
        sweep = isoflop_sweep(EPOCH, budgets_flops=np.append(BUDGETS, HELD_OUT), noise=NOISE, seed=3000 + seed)
        points, target = sweep[sweep.budget_flops < HELD_OUT], sweep[sweep.budget_flops == HELD_OUT]
        iso = fit_isoflop(points)
        law = frontier.optimal_loss_law(points, 0)
        goal = scoring.budget_target(target, n_bootstrap=200, seed=seed)
        for key, pred, truth in (
            ("N_opt", iso.G * HELD_OUT**iso.a, TRUTH["N_opt"]),
            ("loss_opt", float(frontier.predict(law, HELD_OUT)[0]), float(LAW.optimal_loss(HELD_OUT))),
        ):
            scored = scoring.score(pred, goal, key)
            if scored["rel_err_interval"] is not None:
                lo, hi = scored["rel_err_interval"]
                held[key].append(lo <= pred / truth - 1 <= hi)
        seed += 1
        assert seed < 400
    rates = {key: float(np.mean(hits)) for key, hits in held.items()}
    print(f"held-out: true error within the reported interval {rates} ({seed} repeats)")
    assert all(0.84 <= r <= 0.96 for r in rates.values()), rates


def test_scattered_design_intervals_cover_the_truth():
    results = []
    for seed in range(REPEATS):
        points = scattered_sweep(2000 + seed)
        out = one_repeat(points, seed, isoflop=False)
        assert out["mode"] == "runs"
        results.append(out)
    failed = [f for key in ("alpha", "beta") for f in check(results, key, TRUTH[key])]
    failed += check(results, "N_opt_parametric", TRUTH["N_opt"])
    assert not failed, failed


def test_scattered_bootstrap_errors_match_a_plain_run_resampling_bootstrap():
    """The warm-started batched bootstrap (mode runs, chosen automatically) against the textbook one: rows
    drawn with replacement and each resample refitted from the start grid, same optimiser."""
    points = scattered_sweep(7)
    fit = fit_parametric(points["params"], points["tokens"], points["loss"], starts=start_grid(2), n_polish=1)
    mode = choose(points).bootstrap_mode
    ours = bootstrap_parametric(points, fit, 200, 0, mode=mode)
    rng = np.random.default_rng(1)
    plain = []
    for _ in range(100):
        rows = points.iloc[rng.integers(0, len(points), len(points))]
        refit = fit_parametric(rows["params"], rows["tokens"], rows["loss"], starts=start_grid(2), n_polish=1)
        plain.append([refit.alpha, refit.beta, refit.E])
    plain = np.array(plain)
    for i, key in enumerate(("alpha", "beta", "E")):
        ratio = float(np.std(ours[key]) / np.std(plain[:, i]))
        print(f"{key}: bootstrap SE {np.std(ours[key]):.4g} vs plain {np.std(plain[:, i]):.4g} ({ratio:.2f})")
        assert 0.75 <= ratio <= 1.25, (key, ratio)
