"""isoFLOP fits: parabola vertices, exclusions with reasons, power laws, bootstrap."""

import numpy as np
import pandas as pd
import pytest

from workbench.core.errors import WorkbenchError
from workbench.fit.bootstrap import bootstrap_isoflop, interval
from workbench.fit.isoflop import fit_isoflop
from workbench.fit.laws import optimal_allocation
from workbench.fit.synthetic import CHINCHILLA, isoflop_sweep

G_TRUE, A_TRUE = 0.3, 0.5


def parabola_sweep(budgets, offsets=None, n_sizes=7, noise=0.001, seed=0) -> pd.DataFrame:
    """Loss exactly a parabola in log N around N* = 0.3 C^0.5 (shifted by `offsets` decades), plus noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, budget in enumerate(budgets):
        n_star = G_TRUE * budget**A_TRUE
        grid = n_star * 10 ** np.linspace(-0.8, 0.8, n_sizes) * 10 ** (0 if offsets is None else offsets[i])
        loss = (3.0 - 0.1 * np.log10(budget / 1e18) + 0.1 * np.log(grid / n_star) ** 2) * (
            1 + noise * rng.standard_normal(n_sizes)
        )
        rows.append(pd.DataFrame({"params": grid, "tokens": budget / (6 * grid), "loss": loss, "budget_flops": budget}))
    return pd.concat(rows, ignore_index=True)


def test_vertices_of_generated_parabolas_within_2pct_and_power_law_recovered():
    budgets = np.geomspace(1e18, 1e21, 6)
    fit = fit_isoflop(parabola_sweep(budgets))
    assert not fit.excluded
    for m in fit.minima:
        assert m["params"] == pytest.approx(G_TRUE * m["budget_flops"] ** A_TRUE, rel=0.02)
        assert 6 * m["params"] * m["tokens"] == pytest.approx(m["budget_flops"], rel=1e-9)
    assert fit.a == pytest.approx(A_TRUE, abs=0.01)
    assert fit.b == pytest.approx(1 - A_TRUE, abs=0.01)
    assert pytest.approx(G_TRUE, rel=0.2) == fit.G


def test_vertices_of_a_chinchilla_sweep_within_2pct():
    fit = fit_isoflop(isoflop_sweep(CHINCHILLA, noise=0.0, seed=1))
    for m in fit.minima:
        assert m["params"] == pytest.approx(optimal_allocation(CHINCHILLA, m["budget_flops"])[0], rel=0.02)


def test_edge_minimum_and_too_few_sizes_are_excluded_with_reasons():
    budgets = np.geomspace(1e18, 1e21, 5)
    points = parabola_sweep(budgets, offsets=[0, 0, -1.0, 0, 0])  # budget 3: all sizes below its minimum
    points = points.drop(points.index[(points.budget_flops == budgets[4])][2:]).reset_index(drop=True)
    fit = fit_isoflop(points)
    reasons = {e["budget_flops"]: e["reason"] for e in fit.excluded}
    assert "above the largest tested size" in reasons[budgets[2]]
    assert reasons[budgets[4]] == "fewer than 3 sizes (2)"
    assert [m["budget_flops"] for m in fit.minima] == list(budgets[[0, 1, 3]])


def test_every_budget_excluded_names_the_budgets():
    budgets = np.geomspace(1e18, 1e20, 3)
    points = parabola_sweep(budgets, offsets=[1.0, 1.0, -1.0])
    with pytest.raises(WorkbenchError, match=r"every budget excluded.*budget 1e\+18: minimum at N=.*below") as err:
        fit_isoflop(points)
    assert "\n" not in str(err.value)


def test_bootstrap_intervals_bracket_the_estimate():
    points = parabola_sweep(np.geomspace(1e18, 1e21, 6), noise=0.003, seed=3)
    fit = fit_isoflop(points)
    draws = bootstrap_isoflop(points, n_resamples=300, seed=1)
    assert draws["a"].shape == (300,)
    ci = interval(draws["a"])
    assert ci["lo"] < fit.a < ci["hi"]
    assert ci["hi"] - ci["lo"] < 0.05
    assert ci["lo"] < A_TRUE < ci["hi"]
