"""Benchmark: parametric fit (1,024 starts) + 1,000 bootstrap resamples on 300 points, vs a naive scipy loop.

Ours: every start in one batched L-BFGS (workbench.fit.lbfgs), 4 polished with scipy; the bootstrap warm-starts
each resample from the full-data optima plus 2 grid points, all resamples in one batch.
Baseline: a Python loop of scipy.optimize.minimize(method="L-BFGS-B", analytic gradient) calls on the same
objective. Timing all of it would take hours, so the loop is timed on a random subset of its calls and
extrapolated linearly (per-call mean x number of calls), for two baselines:
  same work  - the naive loop doing exactly our starts: 1,024 on the data + 5 per resample;
  full grid  - the naive recipe: 1,024 starts on the data and on each of the 1,000 resamples.
Both sides are timed in CPU seconds of this process (time.process_time), so that the ratio measured in one
run holds on a machine shared with other jobs (wall seconds are printed too). The closing line gives the
ratio against the same-work loop, the figure issue 15 asks for (>= 10x, or replace the optimiser).
Run: .venv/bin/python benchmarks/fit.py [--resamples 1000] [--sample 40]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.optimize import minimize

from workbench.fit.bootstrap import bootstrap_parametric, resample_counts
from workbench.fit.parametric import LogHuberObjective, fit_parametric, start_grid
from workbench.fit.synthetic import CHINCHILLA, isoflop_sweep


def naive_call_s(points, starts: np.ndarray, weights: np.ndarray | None) -> float:
    """Mean wall seconds of one scipy L-BFGS-B call from each start (weights: one row per start or None)."""
    total = 0.0
    for i, start in enumerate(starts):
        w = None if weights is None else weights[i : i + 1]
        objective = LogHuberObjective(points.params, points.tokens, points.loss, weights=w, group=np.zeros(1, int))
        rows = np.zeros(1, int)
        x0 = objective.to_internal(start)[0]
        t0 = time.process_time()
        minimize(lambda t, o=objective, r=rows: tuple(v[0] for v in o(t[None], r)), x0, jac=True, method="L-BFGS-B")
        total += time.process_time() - t0
    return total / len(starts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--sample", type=int, default=40, help="naive calls timed per kind")
    args = parser.parse_args()
    points = isoflop_sweep(CHINCHILLA, budgets_flops=np.geomspace(1e18, 1e22, 12), sizes_per_budget=25, seed=0)
    grid = start_grid(4)
    rng = np.random.default_rng(0)

    t0, w0 = time.process_time(), time.perf_counter()
    fit = fit_parametric(points.params, points.tokens, points.loss, starts=grid)
    fit_s = time.process_time() - t0
    draws = bootstrap_parametric(points, fit, n_resamples=args.resamples, seed=0)
    boot_s = time.process_time() - t0 - fit_s
    ours_s, wall_s = fit_s + boot_s, time.perf_counter() - w0
    per_resample = 3 + 2  # warm optima + grid starts (bootstrap_parametric defaults)

    grid_call_s = naive_call_s(points, grid[rng.choice(len(grid), args.sample, replace=False)], None)
    counts = resample_counts(points["budget_flops"].to_numpy(), args.sample, 1)
    warm = np.concatenate([fit.optima[:3], grid[rng.integers(0, len(grid), 2)]])
    warm_call_s = naive_call_s(points, warm[rng.integers(0, len(warm), args.sample)], counts)
    grid_on_resample_s = naive_call_s(points, grid[rng.choice(len(grid), args.sample, replace=False)], counts)
    same_work_s = len(grid) * grid_call_s + args.resamples * per_resample * warm_call_s
    full_grid_s = len(grid) * grid_call_s + args.resamples * len(grid) * grid_on_resample_s

    print(f"points {len(points)}, starts {len(grid)}, resamples {args.resamples}")
    print(f"fit: E {fit.E:.4f} A {fit.A:.1f} B {fit.B:.1f} alpha {fit.alpha:.4f} beta {fit.beta:.4f}")
    print(f"alpha 5-95%: {np.percentile(draws['alpha'], 5):.4f}..{np.percentile(draws['alpha'], 95):.4f}")
    print(f"ours: fit {fit_s:.2f} s + bootstrap {boot_s:.2f} s = {ours_s:.2f} CPU s ({wall_s:.2f} s wall)")
    print(f"naive scipy call (timed on {args.sample} each): grid start {1e3 * grid_call_s:.1f} ms, "
          f"warm start on a resample {1e3 * warm_call_s:.1f} ms, grid start on a resample "
          f"{1e3 * grid_on_resample_s:.1f} ms")  # fmt: skip
    print(f"naive, same starts as ours ({len(grid) + args.resamples * per_resample} calls, extrapolated): "
          f"{same_work_s:.1f} s -> speed-up {same_work_s / ours_s:.1f}x")  # fmt: skip
    print(f"naive, full grid per resample ({len(grid) * (args.resamples + 1)} calls, extrapolated): "
          f"{full_grid_s:.0f} s -> speed-up {full_grid_s / ours_s:.0f}x")  # fmt: skip


if __name__ == "__main__":
    main()
