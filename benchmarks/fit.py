"""Benchmark: the parametric fit and 1,000 bootstrap resamples on 300 points, three ways, in one run.

  batched     - what `workbench fit` runs: the grid of 1,024 starts scored in one pass, the best 32 solved by
                the batched Newton solver (workbench.fit.newton), then every resample warm-started from the
                full fit's distinct optima, all resamples as one array problem;
  scipy loop  - the same work with the reference solver: the same grid scoring and resample counts, then
                scipy's L-BFGS-B (analytic gradient) from exactly the same starts, one call per start, run to
                the same convergence (ftol 0, gtol 1e-14: scipy's ftol is absolute, so its default stops at
                about 1e-7 of an objective of ~1e-5);
  dbfd35e     - the `workbench fit` parametric path of commit dbfd35e (a scipy loop over 1,024 starts, then
                3 warm + 2 random grid starts per resample), run from `git archive` of that commit in a
                subprocess; skipped without the git history (docs/FITTING.md, "The fitter", says what it replaced).

It also checks agreement on 50 resamples (each batched optimum's objective at most scipy's + 1e-12, its
parameters within 1e-4 relative of scipy's) and times the batched work with 1 and 2 BLAS threads.
Times are CPU seconds of the process (time.process_time: the same on a shared machine) and wall seconds. The
batched work (a fraction of a second) is timed after one warm-up call, so that numpy's one-time costs do not
count; --scipy-repeats rounds of --repeats batched runs and one scipy loop (seconds), interleaved so that a
shared machine's slow spells fall on both, and the medians compared; the dbfd35e path runs once.
Run: .venv/bin/python benchmarks/fit.py [--resamples 1000] [--scipy-resamples 1000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from workbench.fit.bootstrap import bootstrap_parametric, resample_counts, solve_warm
from workbench.fit.newton import grid_objectives
from workbench.fit.parametric import LawPoints, fit_parametric, start_grid
from workbench.fit.reference import LogHuberObjective, minimize_starts
from workbench.fit.synthetic import CHINCHILLA, isoflop_sweep

ROOT = Path(__file__).resolve().parents[1]
OLD_COMMIT = "dbfd35e"
OLD_CODE = """
import json, time, numpy as np
from workbench.fit.synthetic import CHINCHILLA, isoflop_sweep
from workbench.fit.parametric import fit_parametric, start_grid
from workbench.fit.bootstrap import bootstrap_parametric
pts = isoflop_sweep(CHINCHILLA, budgets_flops=np.geomspace(1e18, 1e22, 12), sizes_per_budget=25, noise=0.015, seed=0)
t0, w0 = time.process_time(), time.perf_counter()
fit = fit_parametric(pts.params, pts.tokens, pts.loss, starts=start_grid(4))
draws = bootstrap_parametric(pts, fit, n_resamples=RESAMPLES, seed=0)
print(json.dumps({"cpu_s": time.process_time() - t0, "wall_s": time.perf_counter() - w0, "alpha": fit.alpha}))
"""


def points():
    return isoflop_sweep(CHINCHILLA, budgets_flops=np.geomspace(1e18, 1e22, 12), sizes_per_budget=25, noise=0.015)


def timed(fn):
    t0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - t0, time.perf_counter() - w0


def batched(pts, resamples: int, threads: int = 1):
    with threadpool_limits(limits=threads):
        fit = fit_parametric(pts.params, pts.tokens, pts.loss)
        draws = bootstrap_parametric(pts, fit, resamples, seed=0)
    return fit, draws


def scipy_same_work(pts, fit, resamples: int, scale: float, timed_resamples: int) -> tuple[float, float]:
    """The batched path's work with scipy as the solver: the grid scored, the 32 grid starts it solved each one
    scipy call, the resample counts drawn, and per resample one call from each of the fit's distinct optima;
    returns (CPU s, wall s), the resamples' solves scaled by `scale` (timed_resamples of them timed)."""
    law = LawPoints(pts.params, pts.tokens, pts.loss)
    objective = LogHuberObjective(pts.params, pts.tokens, pts.loss)

    def screen():
        grid = law.to_internal(start_grid())
        screened = grid_objectives(law.points, grid, np.ones((1, law.points.n)))[0]
        return grid[np.argsort(screened)[:32]]

    with threadpool_limits(limits=1):
        polished, screen_cpu, screen_wall = timed(screen)
        _, fit_cpu, fit_wall = timed(lambda: minimize_starts(objective, polished))
        counts, count_cpu, count_wall = timed(lambda: resample_counts(pts["budget_flops"].to_numpy(), resamples, 0))
        counts = counts[:timed_resamples]
        warm = law.to_internal(fit.optima[:3])
        weights = np.repeat(counts, len(warm), axis=0)
        boot = LogHuberObjective(pts.params, pts.tokens, pts.loss, weights=weights, group=np.arange(len(weights)))
        _, boot_cpu, boot_wall = timed(lambda: minimize_starts(boot, np.tile(warm, (timed_resamples, 1))))
    cpu = screen_cpu + fit_cpu + count_cpu + scale * boot_cpu
    return cpu, screen_wall + fit_wall + count_wall + scale * boot_wall


def agreement(pts, fit, n: int = 50) -> dict:
    """Per resample from the same warm start: batched vs scipy objective and parameters."""
    law = LawPoints(pts.params, pts.tokens, pts.loss)
    counts = resample_counts(pts["budget_flops"].to_numpy(), n, 1)
    start = np.repeat(law.to_internal(fit.optima[:1]), n, axis=0)
    ours = solve_warm(law, start, counts)  # as the bootstrap solves each resample
    reference = LogHuberObjective(pts.params, pts.tokens, pts.loss, weights=counts, group=np.arange(n))
    x, f = minimize_starts(reference, start)
    rel = np.abs(law.to_external(ours.theta) / law.to_external(x) - 1).max(axis=1)
    return {
        "objective_at_most_scipy_plus_1e-12": int((ours.f <= f + 1e-12).sum()),
        "max_objective_excess": float((ours.f - f).max()),
        "params_within_1e-4": int((rel < 1e-4).sum()),
        "max_param_rel_diff": float(rel.max()),
        "n": n,
    }


def old_path(resamples: int) -> dict | None:
    """The dbfd35e `workbench fit` parametric path, from `git archive` in a subprocess; None without history."""
    try:
        blob = subprocess.run(
            ["git", "archive", OLD_COMMIT, "workbench"], cwd=ROOT, capture_output=True, check=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(fileobj=BytesIO(blob)) as archive:
            archive.extractall(tmp, filter="data")
        code = OLD_CODE.replace("RESAMPLES", str(resamples))
        env = {"PYTHONPATH": tmp, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
        done = subprocess.run(  # in the archive's folder: `-c` puts the working folder first on sys.path
            [sys.executable, "-c", code], env=env, cwd=tmp, capture_output=True, text=True, timeout=3600
        )
    if done.returncode != 0:
        print(done.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--scipy-resamples", type=int, default=1000, help="timed, then scaled to --resamples")
    parser.add_argument("--skip-old", action="store_true", help="do not run the dbfd35e path")
    parser.add_argument("--repeats", type=int, default=5, help="batched runs timed per round (after one warm-up)")
    parser.add_argument("--scipy-repeats", type=int, default=3, help="rounds: --repeats batched runs, one scipy loop")
    args = parser.parse_args()
    pts = points()
    batched(pts, args.resamples)  # a warm-up: the first call pays numpy's and the modules' one-time costs
    scale = args.resamples / args.scipy_resamples
    runs, loops = [], []
    for _ in range(args.scipy_repeats):  # interleaved, so that both see the same states of a shared machine
        runs += [timed(lambda: batched(pts, args.resamples)) for _ in range(args.repeats)]
        fit = runs[-1][0][0]
        loops.append(scipy_same_work(pts, fit, args.resamples, scale, args.scipy_resamples))
    (fit, draws), cpu, wall = sorted(runs, key=lambda run: run[1])[len(runs) // 2]  # the median by CPU time
    scipy_cpu, scipy_wall = sorted(loops)[len(loops) // 2]
    print(f"points {len(pts)}, resamples {args.resamples}; fit alpha {fit.alpha:.4f} beta {fit.beta:.4f}")
    print(f"batched: {cpu:.3f} CPU s ({wall:.3f} s wall), median of {len(runs)}; optima {len(fit.optima)}")
    ratio_cpu, ratio_wall = scipy_cpu / cpu, scipy_wall / wall
    print(f"scipy loop, same work: {scipy_cpu:.2f} CPU s ({scipy_wall:.2f} s wall), median of {len(loops)}")
    print(f"  -> batched is {ratio_cpu:.1f}x faster (CPU), {ratio_wall:.1f}x (wall)")
    print("agreement on 50 resamples:", json.dumps(agreement(pts, fit)))
    for threads in (1, 2):
        times = sorted(timed(lambda t=threads: batched(pts, args.resamples, t))[1:] for _ in range(args.repeats))
        t_cpu, t_wall = times[len(times) // 2]
        print(f"batched with {threads} BLAS thread(s): {t_cpu:.3f} CPU s, {t_wall:.3f} s wall (median of {len(times)})")
    old = None if args.skip_old else old_path(args.resamples)
    if old is None:
        print(f"{OLD_COMMIT} path: not run (no git history here, or --skip-old); see docs/FITTING.md, 'The fitter'")
    else:
        print(f"{OLD_COMMIT} `workbench fit` path: {old['cpu_s']:.1f} CPU s ({old['wall_s']:.1f} s wall)")
        print(f"  -> batched is {old['cpu_s'] / cpu:.0f}x faster (CPU), {old['wall_s'] / wall:.0f}x (wall)")


if __name__ == "__main__":
    main()
