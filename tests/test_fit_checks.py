"""Held-out checks, rollout, and the loss-to-accuracy sigmoid composed with the law."""

import numpy as np
import pandas as pd
import pytest

from workbench.core.errors import WorkbenchError
from workbench.fit.accuracy import accuracy_at, fit_accuracy, sigmoid
from workbench.fit.holdout import holdout_largest, rollout
from workbench.fit.laws import optimal_allocation, optimal_loss, predict_loss
from workbench.fit.parametric import start_grid
from workbench.fit.synthetic import CHINCHILLA, isoflop_sweep

DESIGN = {"budgets_flops": np.geomspace(1e17, 1e22, 6), "sizes_per_budget": 9}
FAST = {"starts": start_grid(3)}


def test_holdout_largest_predicts_the_held_out_budget():
    points = isoflop_sweep(CHINCHILLA, noise=0.001, seed=0, **DESIGN)
    out = holdout_largest(points, ("isoflop", "parametric"), FAST)
    assert out["budget_flops"] == pytest.approx(1e22)
    assert out["train_budgets"] == 5
    best = points[points.budget_flops == points.budget_flops.max()].loss.min()
    assert out["observed"]["best_run"]["loss"] == best
    assert abs(out["parametric"]["loss_rel_err"]) < 0.01
    assert abs(out["parametric"]["N_opt_rel_err"]) < 0.15
    assert abs(out["isoflop"]["N_opt_rel_err"]) < 0.15


def test_rollout_has_one_step_per_budget_after_the_second():
    points = isoflop_sweep(CHINCHILLA, noise=0.001, seed=1, **DESIGN)
    steps = rollout(points, ("parametric",), FAST)
    assert [s["train_budgets"] for s in steps] == [2, 3, 4, 5]
    assert [s["budget_flops"] for s in steps] == pytest.approx(list(DESIGN["budgets_flops"][2:]))
    assert all(abs(s["parametric"]["loss_rel_err"]) < 0.03 for s in steps)


def test_holdout_needs_three_budgets():
    points = isoflop_sweep(budgets_flops=[1e18, 1e19])
    with pytest.raises(WorkbenchError, match="--holdout-largest: 2 budgets"):
        holdout_largest(points, ("parametric",))


def test_sigmoid_recovered_from_generated_accuracy_and_composed_with_the_law():
    rng = np.random.default_rng(0)
    loss = rng.uniform(2.0, 4.0, 80)
    truth = (0.25, 0.85, 4.0, 2.8)  # floor (chance on 4 choices), ceiling, slope, midpoint
    acc = sigmoid(loss, *truth) + 0.005 * rng.standard_normal(80)
    fit = fit_accuracy(loss, acc, "hellaswag")
    assert (fit.floor, fit.ceiling, fit.slope, fit.midpoint_loss) == pytest.approx(truth, rel=0.05)
    assert fit.rmse < 0.007
    (row,) = accuracy_at(fit, CHINCHILLA, [1e24])
    assert row["loss_opt"] == pytest.approx(float(optimal_loss(CHINCHILLA, 1e24)))
    assert row["accuracy"] == pytest.approx(float(sigmoid(row["loss_opt"], *truth)), abs=0.01)


def test_accuracy_as_percent_is_refused():
    with pytest.raises(WorkbenchError, match="column 'acc_mmlu': values outside 0..1"):
        fit_accuracy(np.linspace(2, 3, 10), np.linspace(30, 60, 10), "mmlu")


def test_a_held_out_vertex_outside_its_sizes_is_not_scored_in_flag_numbers_and_printed_line(tmp_path):
    """Force the not-scored case: the held-out budget's sizes all lie above its optimum, so its parabola's
    vertex is outside them. The N* check says so (scored False, passed None, no observed number), the demo's
    outcome reports no observed N* and no ratio, and the printed line says why instead of showing a ratio."""
    from workbench.demo.checks import flagship_outcome
    from workbench.demo.summary import summary
    from workbench.fit.holdout import NOT_SCORED
    from workbench.fit.pipeline import FitOptions
    from workbench.fit.stage import fit_stage

    held = 1e21
    fitted = isoflop_sweep(budgets_flops=np.geomspace(1e18, 1e20, 5), noise=0.002, seed=3)
    params = float(optimal_allocation(CHINCHILLA, held)[0]) * np.geomspace(3.0, 30.0, 7)  # all above N*
    tokens = held / (6 * params)
    top = pd.DataFrame({"params": params, "tokens": tokens, "loss": predict_loss(CHINCHILLA, params, tokens)})
    points = pd.concat([fitted, top.assign(budget_flops=held, flops=held)], ignore_index=True)
    options = FitOptions(bootstrap=40, exclude_largest=True, at_flops=(held,), starts_per_axis=3)
    record = fit_stage(points, options, name="edge", source="synthetic", out=tmp_path / "edge.json", plots=False)
    check = record.checks["n_opt_within_1.5x"]
    assert record.holdout["observed"]["scored"] is False
    assert check["scored"] is False and check["passed"] is None and check["observed"] is None
    assert check["reason"] == NOT_SCORED and check["ratio"] is None
    outcome = flagship_outcome(record, {"val_loss": 2.0, "wall_s": 1.0}, {"params": 1, "tokens": 1})
    outcome.update(report="r.html", wall_s=60.0)
    assert outcome["checks"]["n_opt_within_1.5x"] is None and outcome["observed_n_opt"] is None
    # the held-out budget has no interior minimum: neither its N* nor a compute-optimal L* to score against
    assert outcome["not_scored"] == {"best_loss_within_2pct": NOT_SCORED, "n_opt_within_1.5x": NOT_SCORED}
    assert outcome["passed"] is all(ok is not False for ok in outcome["checks"].values())
    text = summary(outcome)
    assert f"  n_opt_within_1.5x: {NOT_SCORED}\n" in text
    assert f"N*: {NOT_SCORED}; predicted" in text and "N*: observed" not in text
