"""Synthetic sweeps drawn from a known law (isoFLOP curves or scattered runs), for tests and benchmarks.
Pure numpy, no I/O."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from workbench.fit.laws import CHINCHILLA_LAW, EPOCH_LAW, ParametricLaw, optimal_allocation, predict_loss
from workbench.fit.points import group_budgets

CHINCHILLA = CHINCHILLA_LAW.as_dict()  # the published constants, defined in workbench.fit.laws
EPOCH = EPOCH_LAW.as_dict()


def isoflop_sweep(
    law: Mapping[str, float] = CHINCHILLA,
    budgets_flops: np.ndarray | None = None,
    sizes_per_budget: int = 9,
    span_decades: float = 1.0,
    noise: float = 0.005,
    seed: int = 0,
) -> pd.DataFrame:
    """Runs on isoFLOP curves (C = 6 N D) centred on the law's optimum, loss x (1 + noise * normal).

    Each budget tests sizes N_opt(C) x 10^[-span/2 .. span/2] (shifted by a random offset of up to a
    tenth of the span, like a real grid not centred on the unknown optimum). Default budgets are Llama 3's
    6e18..1e22 FLOPs in 8 steps.
    """
    rng = np.random.default_rng(seed)
    budgets = np.geomspace(6e18, 1e22, 8) if budgets_flops is None else np.asarray(budgets_flops, float)
    rows = []
    for budget in budgets:
        n_opt, _ = optimal_allocation(law, budget)
        offset = rng.uniform(-0.1, 0.1) * span_decades
        params = n_opt * 10.0 ** (np.linspace(-span_decades / 2, span_decades / 2, sizes_per_budget) + offset)
        tokens = budget / (6.0 * params)
        loss = predict_loss(law, params, tokens) * (1.0 + noise * rng.standard_normal(sizes_per_budget))
        rows.append(pd.DataFrame({"params": params, "tokens": tokens, "loss": loss, "budget_flops": budget}))
    frame = pd.concat(rows, ignore_index=True)
    frame["flops"] = 6.0 * frame["params"] * frame["tokens"]
    return frame


def scattered_sweep(
    law: Mapping[str, float] = EPOCH,
    low_flops: float = 1e18,
    high_flops: float = 1e20,
    n: int = 60,
    noise: float = 0.02,
    seed: int = 0,
) -> pd.DataFrame:
    """Runs at scattered FLOPs, Chinchilla-style: C log-uniform in [low, high], N within half a decade of
    the law's N*(C), loss x (1 + noise * normal); budget_flops groups FLOPs within 5% (mostly single runs)."""

    rng = np.random.default_rng(seed)
    known = ParametricLaw.of(law)
    flops = np.exp(rng.uniform(np.log(low_flops), np.log(high_flops), n))
    params = known.optimum(flops)[0] * 10.0 ** rng.uniform(-0.5, 0.5, n)
    tokens = flops / (6.0 * params)
    loss = known.loss(params, tokens) * (1.0 + noise * rng.standard_normal(n))
    frame = pd.DataFrame({"params": params, "tokens": tokens, "loss": loss, "flops": flops})
    frame["budget_flops"] = group_budgets(flops)
    return frame
