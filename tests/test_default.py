"""The embedded default, end to end, exactly as `bash scripts/demo.sh` runs it (sweeps/cpu.yaml, 1,000
bootstrap resamples, the LR check): every check of its outcome record holds, asserted on its values.

About 14 minutes on 2 cores, so it is marked `default` as well as `slow`; CI runs it (`bash scripts/test.sh
--all` runs every marker)."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def outcome(tmp_path_factory):
    from workbench.demo.run import run_demo

    tmp_path = tmp_path_factory.mktemp("default")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        return run_demo(ROOT / "sweeps" / "cpu.yaml", tmp_path / "w.duckdb", tmp_path / "reports" / "cpu.html")


@pytest.mark.slow
@pytest.mark.default
def test_the_end_to_end_checks_pass_on_their_numbers(outcome):
    checks = outcome["checks"]
    assert all(ok is True for ok in checks.values()) and outcome["passed"] is True, checks
    assert outcome["fitted_budgets"] and outcome["held_out_budget"] > max(outcome["fitted_budgets"])
    assert abs(outcome["predicted_best_loss"] / outcome["observed_best_loss"] - 1) <= 0.02
    flagship = outcome["flagship"]
    lo, hi = flagship["interval"]
    assert lo <= flagship["val_loss"] <= hi and abs(flagship["vs_best"]) <= 0.01


@pytest.mark.slow
@pytest.mark.default
def test_the_experiment_meets_issue_18s_acceptance(outcome):
    """Span, seed scatter at every budget, the held-out budget predicted by both laws, N* by both, the
    interval's width, non-degenerate exponents, the WSD branch against the same run trained alone."""
    fitted = outcome["fitted_budgets"]
    assert max(fitted) / min(fitted) >= 10 and outcome["checks"]["interior_minima"] is True
    scatter = outcome["seed_scatter"]
    assert {s["budget_flops"] for s in scatter} == {*fitted, outcome["held_out_budget"]}
    for s in scatter:
        assert s["seeds"] >= 3 and s["scatter"] <= 0.01, s
    observed = outcome["observed_best_loss"]
    assert abs(outcome["predicted_best_loss"] / observed - 1) <= 0.01
    assert abs(outcome["parametric_predicted_best_loss"] / observed - 1) <= 0.02
    for key in ("predicted_n_opt_isoflop", "predicted_n_opt_parametric"):
        assert 1 / 1.3 <= outcome[key] / outcome["observed_n_opt"] <= 1.3, key
    flagship = outcome["flagship"]
    lo, hi = flagship["interval"]
    assert (hi - lo) / flagship["predicted"] <= 0.065 and lo <= flagship["val_loss"] <= hi
    exponents = outcome["experiment"]["parametric_exponents_0.1_1"]["value"]
    assert all(0.1 <= exponents[k] <= 1.0 for k in ("alpha", "beta")), exponents
    branch = outcome["branch_check"]
    assert branch is not None and abs(branch["rel_diff"]) <= branch["seed_scatter"]
    assert all(c["passed"] for c in outcome["experiment"].values()), outcome["experiment"]
    assert outcome["val_set_error"] <= 0.005  # the validation set's own sampling error, well below 1%
    identity = outcome["bit_identity"]
    assert identity["torch"] and identity["threads"] >= 1 and identity["cpu_capability"]
