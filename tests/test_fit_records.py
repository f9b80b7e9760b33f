"""The fit stage's record: typed and versioned, with L*(C), its prediction interval and the held-out checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from workbench.cli import app
from workbench.core.errors import WorkbenchError
from workbench.fit.holdout import BEST_LOSS_TOLERANCE, N_OPT_FACTOR
from workbench.fit.laws import optimal_loss
from workbench.fit.pipeline import FitOptions
from workbench.fit.stage import fit_stage
from workbench.fit.synthetic import CHINCHILLA, isoflop_sweep
from workbench.records import FIT_SCHEMA_VERSION, parse_fit, parse_plan, read_fit

BUDGETS = np.geomspace(1e18, 8e18, 4)


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    """A Chinchilla sweep of 4 budgets fitted without the largest, as the demo does."""
    points = isoflop_sweep(CHINCHILLA, BUDGETS, sizes_per_budget=7, noise=0.002, seed=1)
    out = tmp_path_factory.mktemp("fits") / "syn.json"
    options = FitOptions(bootstrap=30, starts_per_axis=3, exclude_largest=True, at_flops=(BUDGETS[-1],))
    return fit_stage(points, options, name="syn", source="synthetic", out=out, plots=False), points, out


def test_exclude_largest_fits_the_smaller_budgets_and_checks_the_largest(held_out):
    record, points, out = held_out
    assert record.schema_version == FIT_SCHEMA_VERSION and read_fit(out) == record
    assert sorted(set(record.points["budget_flops"])) == pytest.approx(BUDGETS[:3].tolist())
    checks = record.checks
    assert set(checks) == {"interior_minima", "best_loss_within_2pct", "n_opt_within_1.5x"}
    # the values behind each flag, and each flag says what its values say
    assert checks["interior_minima"]["predicted"] == checks["interior_minima"]["observed"] == 3
    loss = checks["best_loss_within_2pct"]
    best = points[points["budget_flops"] == BUDGETS[-1]]["loss"].min()
    # scored against the held-out budget's own parabola minimum, which the best run sits near
    assert loss["observed"] == pytest.approx(record.holdout["observed"]["loss_opt"])
    assert loss["observed"] == pytest.approx(best, rel=0.01)
    assert abs(loss["predicted"] / loss["observed"] - 1) <= BEST_LOSS_TOLERANCE
    n_opt = checks["n_opt_within_1.5x"]
    assert 1 / N_OPT_FACTOR <= n_opt["predicted"] / n_opt["observed"] <= N_OPT_FACTOR
    assert all(c["passed"] is True for c in checks.values())


def test_loss_law_and_its_prediction_interval_at_the_held_out_budget(held_out):
    record, _, _ = held_out
    law = record.isoflop.loss_law
    assert (
        0 < law.gamma < 1
        and 0 < law.E < min(m["loss"] for m in record.isoflop.minima)
        and len(law.draws["K"]) > 20
        and law.scatter_log
    )
    at = next(a for a in law.at if a["budget_flops"] == pytest.approx(BUDGETS[-1]))
    assert at["loss_pred"] == pytest.approx(law.E + law.K * BUDGETS[-1] ** -law.gamma)
    assert record.holdout["loss_law"]["loss_pred"] == pytest.approx(at["loss_pred"])
    lo, hi = at["prediction_interval"]
    law_lo, law_hi = at["law_interval"]
    assert lo < law_lo <= at["loss_pred"] <= law_hi < hi  # one new run scatters more than the law's mean
    # the law with a floor: within 1% one budget step out
    assert at["loss_pred"] == pytest.approx(float(optimal_loss(CHINCHILLA, BUDGETS[-1])), rel=0.01)


def test_a_failing_check_is_reported_as_failed(held_out):
    record, _, _ = held_out
    from workbench.fit.holdout import held_out_checks

    hold = json.loads(json.dumps(record.holdout))
    hold["loss_law"]["loss_pred"] = hold["observed"]["best_run"]["loss"] * 1.05  # 5% off
    hold["isoflop"]["N_opt_pred"] = hold["observed"]["N_opt"] * 2
    checks = held_out_checks(hold, minima=2, excluded=1, fitted_budgets=3)
    assert [c["passed"] for c in checks.values()] == [False, False, False]


def test_versions_v1_is_read_and_a_newer_one_is_a_clear_error(held_out):
    _, _, out = held_out
    data = json.loads(out.read_text())
    v1 = {k: v for k, v in data.items() if k != "schema_version"}
    assert parse_fit(v1, "old.json").schema_version == FIT_SCHEMA_VERSION
    newer = FIT_SCHEMA_VERSION + 1
    with pytest.raises(WorkbenchError, match=f"new.json: schema_version {newer} is newer than this workbench reads"):
        parse_fit({**data, "schema_version": newer}, "new.json")
    with pytest.raises(WorkbenchError, match="plan.json: missing required key 'params'"):
        parse_plan({"compute_flops": 1e21}, "plan.json")


def test_plan_reads_the_fit_and_a_newer_fit_is_one_line(held_out, tmp_path):
    _, _, out = held_out
    data = json.loads(out.read_text())
    (tmp_path / "new.json").write_text(json.dumps({**data, "schema_version": 9}))
    result = CliRunner().invoke(app, ["plan", "--compute", "1e20", "--law", str(tmp_path / "new.json")])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and "schema_version 9 is newer" in lines[0]
    ok = CliRunner().invoke(app, ["plan", "--compute", "1e20", "--law", str(out), "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["ci"]["draws"] > 20


def test_the_rollout_figure_leaves_out_steps_whose_target_was_not_scored():
    """A held-out vertex outside its sizes scores nothing (rel_err None): the figure draws the other steps."""
    from workbench.fit.figures import rollout_figure

    rollout = [
        {"budget_flops": 1e19, "isoflop": {"N_opt_rel_err": 0.05}, "parametric": {"N_opt_rel_err": None}},
        {"budget_flops": 1e20, "isoflop": {"N_opt_rel_err": None}, "parametric": {"loss_rel_err": -0.01}},
        {"budget_flops": 1e21, "isoflop": {"N_opt_rel_err": -0.1}},
    ]
    lines = {line.get_label(): list(line.get_ydata()) for line in rollout_figure(rollout).axes[0].lines}
    assert lines["isoflop N_opt"] == pytest.approx([5.0, -10.0]) and lines["parametric loss"] == pytest.approx([-1.0])
    assert "parametric N_opt" not in lines
