"""Honest uncertainty: the bootstrap matches the design, held-out scores against the held-out
budget's own parabola, the cross-method table and its flag, diagnostics, named laws, unique tokens."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import workbench.cli
from workbench.core.errors import WorkbenchError
from workbench.fit import diagnostics, envelope, holdout
from workbench.fit.crosscheck import cross_methods
from workbench.fit.design import choose
from workbench.fit.isoflop import fit_isoflop
from workbench.fit.laws import ParametricLaw
from workbench.fit.parametric import fit_parametric, start_grid
from workbench.fit.pipeline import FitOptions, fit_all
from workbench.fit.synthetic import CHINCHILLA, EPOCH, isoflop_sweep, scattered_sweep
from workbench.plan.data_constrained import effective_tokens

FIVE = np.geomspace(1e18, 1e20, 5)


def _cli(*args):
    return CliRunner().invoke(workbench.cli.app, [*map(str, args)])


def scattered(n: int = 60, seed: int = 0, noise: float = 0.02) -> pd.DataFrame:
    """Runs at scattered FLOPs, Chinchilla-style: grouping by FLOPs leaves mostly single-run groups."""
    return scattered_sweep(EPOCH, 1e18, 1e20, n=n, noise=noise, seed=seed)


def test_the_design_picks_the_bootstrap_and_the_json_names_it(tmp_path):
    iso = choose(isoflop_sweep(EPOCH, budgets_flops=FIVE))
    assert (iso.kind, iso.bootstrap_mode) == ("isoflop", "budget")
    scat = choose(scattered())
    assert (scat.kind, scat.bootstrap_mode) == ("scattered", "runs") and "auto" in scat.reason
    assert choose(scattered(), "budget").bootstrap_mode == "budget"
    path = tmp_path / "scattered.csv"
    scattered().drop(columns=["budget_flops"]).to_csv(path, index=False)
    result = _cli(
        "fit",
        "--from-csv",
        path,
        "--bootstrap",
        20,
        "--starts",
        2,
        "--no-plots",
        "--json",
        "--method",
        "parametric",
        "--out",
        tmp_path / "s.json",
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["settings"]["bootstrap_mode"] == "runs" and record["design"]["kind"] == "scattered"
    assert any("not isoFLOP curves" in w for w in record["diagnostics"]["warnings"])
    forced = _cli(
        "fit",
        "--from-csv",
        path,
        "--bootstrap",
        20,
        "--starts",
        2,
        "--no-plots",
        "--json",
        "--method",
        "parametric",
        "--bootstrap-mode",
        "budget",
        "--out",
        tmp_path / "b.json",
    )
    assert json.loads(forced.stdout)["settings"]["bootstrap_mode"] == "budget"
    bad = _cli("fit", "--from-csv", path, "--bootstrap-mode", "nope", "--no-plots", "--out", tmp_path / "c.json")
    assert bad.exit_code == 1 and "--bootstrap-mode" in bad.output


def test_noise_free_held_out_errors_are_below_the_issue_tolerances():
    """An exact fit scored against the held-out budget's own parabola reports (almost) no error."""
    sweep = isoflop_sweep(EPOCH, budgets_flops=np.geomspace(1e18, 1e20, 5), noise=0.0, seed=2)
    budgets = np.unique(sweep["budget_flops"])
    train, target = sweep[sweep.budget_flops < budgets[-1]], sweep[sweep.budget_flops == budgets[-1]]
    held = holdout.predict_budget(train, target, ("isoflop", "parametric"), {"starts": start_grid(3)})
    assert held["observed"]["scored"] and "parabola vertex" in held["observed"]["N_opt_source"]
    par, iso = held["parametric"], held["isoflop"]
    assert abs(par["loss_rel_err"]) < 0.002 and abs(par["N_opt_rel_err"]) < 0.02
    assert abs(iso["N_opt_rel_err"]) < 0.02
    assert par["loss"]["target_source"] == "minimum of the held-out budget's parabola"


def test_noisy_held_out_error_has_an_interval_and_says_whether_the_truth_is_in_the_prediction_interval():
    sweep = isoflop_sweep(EPOCH, budgets_flops=FIVE, noise=0.02, seed=5)
    budgets = np.unique(sweep["budget_flops"])
    train, target = sweep[sweep.budget_flops < budgets[-1]], sweep[sweep.budget_flops == budgets[-1]]
    held = holdout.predict_budget(train, target, ("isoflop",), n_bootstrap=100)
    scored = held["isoflop"]["N_opt"]
    lo, hi = scored["rel_err_interval"]
    assert lo < scored["rel_err"] < hi and scored["truth_in_interval"] in (True, False)
    assert scored["pred_interval"][0] < scored["pred"] < scored["pred_interval"][1]
    assert held["observed"]["N_opt_interval"][0] < held["observed"]["N_opt"] < held["observed"]["N_opt_interval"][1]
    assert "loss" in held["loss_law"]  # the L*(C) law is scored too


def test_a_vertex_outside_the_tested_sizes_is_not_scored():
    sweep = isoflop_sweep(EPOCH, budgets_flops=FIVE, noise=0.0, seed=1)
    budgets = np.unique(sweep["budget_flops"])
    target = sweep[sweep.budget_flops == budgets[-1]].sort_values("params").iloc[:4]  # all below N*
    held = holdout.predict_budget(sweep[sweep.budget_flops < budgets[-1]], target, ("isoflop",))
    assert held["observed"]["scored"] is False and held["isoflop"]["N_opt_rel_err"] is None
    assert "not scored" in held["observed"]["N_opt_source"]


def test_cross_methods_agree_on_a_known_law_and_flag_an_asymmetric_grid():
    points = isoflop_sweep(EPOCH, budgets_flops=FIVE, noise=0.01, seed=3)
    results = fit_all(points, FitOptions(bootstrap=60, starts_per_axis=2))
    cross = results.crosscheck
    assert [r["method"] for r in cross["rows"]] == ["isoflop (approach 2)", "parametric (approach 3)"]
    assert cross["flag"] is False and cross["disagreements"] == []
    # a grid of sizes from N*/300 to N*x2 under Hoffmann's law: the parabola's vertex is biased, the law is not
    rows = []
    law = ParametricLaw.of(CHINCHILLA)
    rng = np.random.default_rng(0)
    for c in FIVE:
        params = law.optimum(c)[0] * np.geomspace(1 / 300, 2, 9)
        tokens = c / (6 * params)
        loss = law.loss(params, tokens) * (1 + 0.001 * rng.standard_normal(9))
        rows.append(pd.DataFrame({"params": params, "tokens": tokens, "loss": loss, "budget_flops": c}))
    skewed = pd.concat(rows, ignore_index=True)
    skewed["flops"] = 6 * skewed.params * skewed.tokens
    bad = fit_all(skewed, FitOptions(bootstrap=60, starts_per_axis=2))
    assert bad.crosscheck["flag"] is True and any("N* at the target" in d for d in bad.crosscheck["disagreements"])
    bias = bad.diagnostics["parabola_bias"]
    assert len(bias) == 5 and all(abs(b["N_opt_bias"]) > 0.02 for b in bias)
    assert any("parabola in log N is biased" in w for w in bad.diagnostics["warnings"])


def test_parabola_bias_matches_the_issue_figures_for_a_symmetric_ten_x_grid():
    """A symmetric +-10x grid biases N* by about +4% under Hoffmann's law and -1% under the refit."""
    for law, lo, hi in ((CHINCHILLA, 0.025, 0.05), (EPOCH, -0.02, -0.003)):
        points = isoflop_sweep(law, budgets_flops=FIVE, span_decades=2.0, noise=0.0, seed=1)
        bias = diagnostics.parabola_bias(points, ParametricLaw.of(law))
        assert all(lo < b["N_opt_bias"] < hi for b in bias), bias


def test_diagnostics_warn_of_three_point_parabolas_and_two_budget_power_laws():
    points = isoflop_sweep(EPOCH, budgets_flops=FIVE[:2], sizes_per_budget=3, noise=0.0)
    iso = fit_isoflop(points)
    par = fit_parametric(points.params, points.tokens, points.loss, starts=start_grid(2))
    diag = diagnostics.diagnose(points, choose(points), iso, par)
    text = " ".join(diag["warnings"])
    assert "exactly 3 sizes" in text and "through 2 budgets" in text and diag["budgets_per_power_law"] == 2
    assert cross_methods(iso, None, par, None, 1e20)["flag"] is None  # no intervals, nothing to compare


@pytest.mark.parametrize(
    ("law", "source", "tokens_per_param"),
    [
        ("chinchilla", "Hoffmann et al. 2022", 50.1),
        ("hoffmann", "Hoffmann et al. 2022", 50.1),
        ("epoch", "Besiroglu et al. 2024", 21.6),
        ("besiroglu", "Besiroglu et al. 2024", 21.6),
        ("llama3", "Llama 3 Herd of Models", 19.2),
    ],
)
def test_plan_names_each_law_its_source_and_tokens_per_parameter(law, source, tokens_per_param):
    result = _cli("plan", "--compute", "1e21", "--law", law)
    assert result.exit_code == 0, result.output
    assert source in result.output and f"{tokens_per_param} tokens/param" in result.output
    assert "law's N" in result.output


def test_the_default_law_is_the_refit_and_says_why():
    result = _cli("plan", "--compute", "1e21", "--json")
    record = json.loads(result.stdout)
    assert record["law"]["name"] == "epoch" and record["tokens_per_param"] == pytest.approx(21.6, abs=0.1)
    assert record["law"]["notes"][0].startswith("default law epoch")


def test_unique_tokens_count_repeats_as_less_data_and_warn_past_four_epochs():
    assert effective_tokens(5e9, 1e10) == 5e9  # under one epoch: every token is fresh
    four = float(effective_tokens(4e10, 1e10))
    assert four / 1e10 == pytest.approx(3.7257, abs=1e-3) and effective_tokens(1e15, 1e10) <= 1e10 * 16.39
    plain = json.loads(_cli("plan", "--compute", "1e21", "--json").stdout)
    scarce = _cli("plan", "--compute", "1e21", "--unique-tokens", "10B", "--json")
    record = json.loads(scarce.stdout)
    # both terms of the law: compute moves to more epochs of a smaller model
    assert record["params"] < plain["params"] and record["tokens"] > plain["tokens"]
    assert record["data_constrained"]["warnings"] and record["data_constrained"]["epochs"] > 4
    assert any("WARNING: past about 4 epochs" in n for n in record["law"]["notes"])
    ample = json.loads(_cli("plan", "--compute", "1e21", "--unique-tokens", "1T", "--json").stdout)
    assert ample["params"] == pytest.approx(plain["params"], rel=0.01) and not ample["data_constrained"]["warnings"]
    token_law = _cli("plan", "--compute", "1e21", "--unique-tokens", "10B", "--law", "llama3")
    assert token_law.exit_code == 1 and "needs a loss law" in token_law.output


def test_rollout_calibrates_the_intervals_by_extrapolation_distance():
    # seven budgets: the rollout's steps fitted on 4, 5 and 6 of them are the ones calibration reads
    points = isoflop_sweep(EPOCH, budgets_flops=np.geomspace(1e18, 1e20, 7), noise=0.01, seed=4)
    results = fit_all(points, FitOptions(bootstrap=40, rollout=True, rollout_bootstrap=40, starts_per_axis=2))
    cal = results.calibration
    rows = {r["quantity"]: r for r in cal["rows"]}
    assert set(rows) >= {"N* (parametric)", "N* (isoFLOP)", "L* (parametric)"}
    assert all(r["n"] == 3 and 0 <= r["achieved"] <= r["achieved_calibrated"] <= 1 for r in rows.values())
    for row in cal["at"]:  # the calibrated interval contains the bootstrap one, and widens with distance
        lo, hi = row["N_opt_interval"]
        clo, chi = row["N_opt_interval_calibrated"]
        assert clo <= lo * (1 + 1e-9) and chi >= hi * (1 - 1e-9)
    far = [r for r in cal["at"] if r["method"].startswith("isoflop")]
    widths = [np.log(r["N_opt_interval_calibrated"][1] / r["N_opt_interval_calibrated"][0]) for r in far]
    assert widths == sorted(widths)
    step = results.rollout[-1]
    assert step["train_max_flops"] < step["budget_flops"] and step["isoflop"]["N_opt"]["pred_interval"]


def test_approach_one_envelope_recovers_the_allocation_exponent_and_joins_the_cross_check():
    """Idealised curves (each prefix of a run is the law's loss at that many tokens) of 24 sizes: the
    envelope's N*(C) has the law's exponent beta / (alpha + beta)."""
    law = ParametricLaw.of(EPOCH)
    sizes = np.geomspace(2e7, 2e9, 24)
    metrics, runs = [], []
    for i, n in enumerate(sizes):
        tokens = np.geomspace(1e8, 4e11, 60)
        flops = 6 * n * tokens
        loss = law.loss(n, tokens)
        metrics.append(
            pd.DataFrame({"run_id": f"r{i}", "step": np.arange(60), "flops": flops, "loss": loss, "val_loss": loss})
        )
        runs.append({"run_id": f"r{i}", "params": n})
    curves = envelope.run_curves(pd.concat(metrics, ignore_index=True), pd.DataFrame(runs))
    env = envelope.fit_envelope(curves, n_bootstrap=30)
    truth = EPOCH["beta"] / (EPOCH["alpha"] + EPOCH["beta"])
    assert env["a"] == pytest.approx(truth, abs=0.03) and env["b"] == pytest.approx(1 - env["a"])
    points = isoflop_sweep(EPOCH, budgets_flops=FIVE, noise=0.0, seed=0)
    results = fit_all(points, FitOptions(bootstrap=30, starts_per_axis=2), curves)
    rows = {r["method"]: r for r in results.crosscheck["rows"]}
    assert rows["envelope (approach 1)"]["a"] == pytest.approx(env["a"]) and results.envelope["n_runs"] == 24
    with pytest.raises(WorkbenchError, match="3 or more"):
        envelope.fit_envelope(curves[:2])
