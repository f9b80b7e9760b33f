"""Warnings about the models the fits assume, for the text output, the JSON and the report. Pure numpy.

- The parabola in log N is a model of an isoFLOP curve, not the curve: its vertex is biased by the
  curve's asymmetry, more the wider the grid (a symmetric +-10x grid: about +4% in N* under Hoffmann's
  law, -1% under the Besiroglu refit). The bias for each budget's own grid is estimated from the fitted
  parametric law: its noise-free losses at the budget's runs, fitted by the same parabola, against the
  law's exact optimum. It is reported, not corrected: the correction would inherit the parametric
  law's own errors (which the cross-method table shows).
- A 3-point parabola fits exactly: nothing checks it. A power law through 2 budgets has no residual
  freedom either.
- Budgets excluded from the isoFLOP fit, and why; data that are not isoFLOP curves.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from workbench.fit.isoflop import budget_vertices
from workbench.fit.laws import ParametricLaw, degenerate_reasons

BIAS_WARN = 0.02  # warn when the parabola's estimated N* bias exceeds 2%


def parabola_bias(points: pd.DataFrame, law: ParametricLaw) -> list[dict]:
    """Per budget with 3+ sizes: the parabola vertex's relative bias in N* and L* under `law`."""
    rows = []
    for budget_flops, group in points.groupby("budget_flops", sort=True):
        if group["params"].nunique() < 3:
            continue
        params, tokens = group["params"].to_numpy(float), group["tokens"].to_numpy(float)
        clean = np.asarray(law.loss(params, tokens), dtype=float)
        vertex = budget_vertices(params, tokens, clean, np.ones((1, len(group))))
        if vertex.code[0] != 0:
            continue
        c_eff = float(np.exp(np.mean(np.log(6.0 * params * tokens))))  # the curve's C = 6 N D
        n_opt = float(law.optimum(c_eff)[0])
        rows.append(
            {
                "budget_flops": float(budget_flops),
                "N_opt_bias": float(np.exp(vertex.log_n[0]) / n_opt - 1.0),
                "loss_bias": float(vertex.loss[0] / law.optimal_loss(c_eff) - 1.0),
                "span_decades": float(np.log10(params.max() / params.min())),
            }
        )
    return rows


def diagnose(points: pd.DataFrame, design, iso, par) -> dict:
    """{warnings: [text], parabola_bias: [...], points_per_parabola: {budget: n}, budgets_per_power_law, excluded}."""
    warnings: list[str] = []
    sizes = points.groupby("budget_flops")["params"].nunique()
    out: dict = {
        "points_per_parabola": {f"{b:.6g}": int(n) for b, n in sizes.items()},
        "budgets_per_power_law": None,
        "excluded": [],
        "parabola_bias": [],
        "warnings": warnings,
    }
    if design is not None and design.kind == "scattered":
        warnings.append(
            f"the data are not isoFLOP curves ({design.reason.split('(', 1)[-1].rstrip(')')}): the isoFLOP "
            "parabolas and the L*(C) law are fitted to whatever groups of FLOPs there are; trust the parametric law"
        )
    exact = [b for b, n in sizes.items() if n == 3]
    if iso is not None and exact:
        warnings.append(
            f"{len(exact)} budget(s) with exactly 3 sizes ({', '.join(f'{b:.3g}' for b in exact)}): a 3-point "
            "parabola fits exactly, nothing checks it; use 5 or more sizes per budget"
        )
    if iso is not None:
        out["budgets_per_power_law"] = len(iso.minima)
        out["excluded"] = [dict(e) for e in iso.excluded]
        if len(iso.minima) == 2:
            warnings.append(
                "the isoFLOP power laws go through 2 budgets: no residual freedom, the exponent is unchecked"
            )
        for e in iso.excluded:
            warnings.append(f"budget {e['budget_flops']:.3g} excluded from the isoFLOP fit: {e['reason']}")
    if par is not None:
        reasons = degenerate_reasons(
            par.as_dict(), (float(points["params"].min()), float(points["params"].max())), sorted(sizes.index)
        )
        if par.degenerate:
            reasons.insert(0, f"the fit ran away ({par.degenerate})")
        out["degenerate"] = reasons
        if reasons:
            warnings.append(
                f"the parametric law is degenerate: {'; '.join(reasons)}: the runs do not determine it; add sizes "
                "on both sides of each budget's optimum and budgets over a wider range, or fit --method isoflop"
            )
    if iso is not None and par is not None:
        law = ParametricLaw(par.E, par.A, par.B, par.alpha, par.beta)
        bias = parabola_bias(points, law)
        out["parabola_bias"] = bias
        big = [b for b in bias if abs(b["N_opt_bias"]) > BIAS_WARN]
        if big:
            worst = max(big, key=lambda b: abs(b["N_opt_bias"]))
            warnings.append(
                f"the parabola in log N is biased on this grid: estimated from the parametric law, N* is off by "
                f"{100 * worst['N_opt_bias']:+.1f}% at {worst['budget_flops']:.3g} FLOPs "
                f"({len(big)} of {len(bias)} budgets beyond {100 * BIAS_WARN:.0f}%); narrow or centre the grid"
            )
    return out
