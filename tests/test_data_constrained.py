"""Data-constrained planning against an independent implementation of Muennighoff et al. 2023 ("Scaling
Data-Constrained Language Models", NeurIPS 2023, Sec. 3; the equations and constants of the authors'
released code, huggingface/datablations, README "Parametric Fit": R*_D = 15.387756, R*_N = 5.309743),
written here from the paper without the package's code."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from typer.testing import CliRunner

from workbench.cli import app

R_D, R_N = 15.387756, 5.309743
EPOCH = {"E": 1.82, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}


def paper_loss(law: dict, n: float, d: float, unique: float) -> float:
    """L = E + A / N'^alpha + B / D'^beta with the effective data D' and effective parameters N'."""
    e, a, b, alpha, beta = (law[k] for k in ("E", "A", "B", "alpha", "beta"))
    u_d = min(unique, d)
    d_eff = u_d + u_d * R_D * (1 - math.exp(-(d / u_d - 1) / R_D))
    g = (alpha * a / (beta * b)) ** (1 / (alpha + beta))
    u_n = min(n, g * (u_d * g) ** (beta / alpha))  # the compute-optimal N whose compute-optimal D is U
    n_eff = u_n + u_n * R_N * (1 - math.exp(-(n / u_n - 1) / R_N))
    return e + a / n_eff**alpha + b / d_eff**beta


def paper_allocation(law: dict, budget: float, unique: float) -> tuple[float, float]:
    """argmin over N of the loss at C = 6 N D (a bounded scalar search in log N)."""
    result = minimize_scalar(
        lambda x: paper_loss(law, math.exp(x), budget / (6 * math.exp(x)), unique),
        bounds=(math.log(1e7), math.log(1e13)),
        method="bounded",
        options={"xatol": 1e-9},
    )
    n = math.exp(result.x)
    return n, budget / (6 * n)


@pytest.mark.parametrize("budget", [1e21, 1e22, 1e23])
def test_plan_with_unique_tokens_follows_the_papers_full_model(budget):
    unique = 1e10
    result = CliRunner().invoke(app, ["plan", "--compute", str(budget), "--unique-tokens", "1e10", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    n, d = paper_allocation(EPOCH, budget, unique)
    assert d / unique > 5  # repetition matters at these budgets
    assert plan["params"] == pytest.approx(n, rel=0.10) and plan["tokens"] == pytest.approx(d, rel=0.10)
    assert plan["data_constrained"]["epochs"] > 4 and plan["data_constrained"]["warnings"]


def test_a_plan_from_a_fit_with_unique_tokens_carries_its_interval(tmp_path):
    rng = np.random.default_rng(0)
    draws = {k: (v * (1 + 0.02 * rng.standard_normal(200))).tolist() for k, v in EPOCH.items()}
    fit = {"name": "epochish", "parametric": {**EPOCH, "draws": draws}}
    (tmp_path / "fit.json").write_text(json.dumps(fit))
    args = ["plan", "--compute", "1e22", "--unique-tokens", "1e10", "--law", str(tmp_path / "fit.json"), "--json"]
    plan = json.loads(CliRunner().invoke(app, args).stdout)
    ci = plan["ci"]
    assert ci["draws"] > 100
    n, _ = paper_allocation(EPOCH, 1e22, 1e10)
    assert ci["params"]["p5"] < n < ci["params"]["p95"] and ci["params"]["p5"] < ci["params"]["p95"]
