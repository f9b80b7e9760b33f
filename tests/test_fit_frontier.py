"""L*(C) = K C^-gamma on the isoFLOP minima: recovered from generated parabolas with known minima."""

import numpy as np
import pandas as pd
import pytest

from workbench.core.errors import WorkbenchError
from workbench.fit.frontier import optimal_loss_law, predict


def parabolas(k=30.0, gamma=0.05, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for c in (1e18, 3e18, 1e19, 3e19):
        n_opt, l_opt = 0.1 * c**0.5, k * c**-gamma
        for n in n_opt * np.exp(np.linspace(-1.2, 1.2, 7)):
            loss = (l_opt + 0.05 * np.log(n / n_opt) ** 2) * np.exp(noise * rng.standard_normal())
            rows.append({"budget_flops": c, "params": n, "tokens": c / (6 * n), "loss": loss})
    return pd.DataFrame(rows)


def test_minima_without_a_floor_send_e_to_zero_and_say_so():
    """Minima on a pure power law: the fit finds no floor (E to 0, flagged) and recovers K and gamma."""
    law = optimal_loss_law(parabolas(), n_bootstrap=20)
    assert "E low" in law["degenerate"] and law["E"] < 1e-3
    assert law["K"] == pytest.approx(30.0, rel=1e-3) and law["gamma"] == pytest.approx(0.05, rel=1e-3)
    value, draws = predict(law, 1e20)
    assert value == pytest.approx(30.0 * 1e20**-0.05, rel=1e-4)
    assert np.allclose(draws, value, rtol=1e-3)  # every resample sees the same exact parabolas
    assert max(abs(r) for r in law["scatter_log"]) < 1e-9


def test_bootstrap_interval_covers_truth_and_scatter_matches_noise():
    law = optimal_loss_law(parabolas(noise=0.01, seed=3), n_bootstrap=400)
    _, draws = predict(law, 1e20)
    truth = 30.0 * 1e20**-0.05
    lo, hi = np.percentile(draws, [1, 99])
    assert lo < truth < hi
    assert 0.005 < np.std(law["scatter_log"]) < 0.02


def test_needs_two_budgets_with_interior_minima():
    one = parabolas()
    one = one[one["budget_flops"] == 1e18]
    with pytest.raises(WorkbenchError, match="the law needs 2"):
        optimal_loss_law(one, n_bootstrap=5)
