"""The end-to-end job on a small grid: every stage runs for real, and a rerun reuses finished runs."""

import json

import pytest
import yaml

from workbench.data import ensure_default_corpus

K = 1000


def small_spec(tmp_path):
    """4 budgets x 4 sizes of 8K-25K-parameter models around their optima (about a minute on 2 cores)."""
    spec = {
        "name": "mini",
        "runs_root": str(tmp_path / "runs"),
        "model": {"vocab_size": 256},
        "data": {"sources": [{"path": str(ensure_default_corpus())}], "seq_len": 128},
        "grid": {
            "kind": "isoflop",
            "budgets_flops": [5e10, 1e11, 2e11, 4e11],
            "sizes": [8 * K, 12 * K, 17 * K, 25 * K],
            "spread": None,
            "min_sizes_per_budget": 4,
        },
        "train": {
            "lr_peak": 0.015,
            "batch_tokens": 1024,
            "micro_batch": 8,
            "schedule": {"warmup_steps": 5, "floor": 0.1},
            "eval": {"batches": 2, "batch_seqs": 8},
            "runtime": {"device": "cpu", "threads": 1, "log_every_steps": 1000000},
        },
        "launch": {"executor": "local", "local_workers": 2},
    }
    path = tmp_path / "mini.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.slow
@pytest.mark.demo
def test_demo_runs_every_stage_and_reuses_runs(tmp_path, monkeypatch):
    from workbench.demo import run_demo, summary

    monkeypatch.chdir(tmp_path)
    spec = small_spec(tmp_path)
    db = tmp_path / "w.duckdb"
    outcome = run_demo(spec, db, tmp_path / "reports" / "mini.html", bootstrap=50, lr_check=False)
    assert outcome["held_out_budget"] == 4e11
    checks = outcome["checks"]
    assert set(checks) == {
        "interior_minima",
        "best_loss_within_2pct",
        "n_opt_within_1.5x",
        "flagship_in_interval",
        "flagship_within_1pct_of_best",
    }
    assert all(ok is True for ok in checks.values()), checks  # every end-to-end check passes
    assert outcome["passed"] is True
    # the values behind the flags, against the tolerances they state
    assert outcome["fitted_budgets"] == [5e10, 1e11, 2e11] and outcome["excluded"] == []
    assert abs(outcome["best_loss_rel_err"]) <= 0.02
    assert outcome["predicted_best_loss"] == pytest.approx(outcome["observed_best_loss"], rel=0.02)
    assert 1 / 1.5 <= outcome["predicted_n_opt_isoflop"] / outcome["observed_n_opt"] <= 1.5
    flagship = outcome["flagship"]
    lo, hi = flagship["interval"]
    assert lo <= flagship["val_loss"] <= hi
    assert abs(flagship["vs_best"]) <= 0.01
    assert flagship["val_loss"] == pytest.approx(outcome["observed_best_loss"] * (1 + flagship["vs_best"]))
    assert lo < hi and flagship["law_interval"][0] >= lo * 0.9
    # the fit record holds the same checks with their numbers
    fit = json.loads((tmp_path / "fits" / "mini.json").read_text())
    assert {k: v["passed"] for k, v in fit["checks"].items()} == {
        k: checks[k] for k in ("interior_minima", "best_loss_within_2pct", "n_opt_within_1.5x")
    }
    assert fit["checks"]["best_loss_within_2pct"]["predicted"] == pytest.approx(outcome["predicted_best_loss"])
    assert (tmp_path / "reports" / "mini.html").is_file()
    saved = json.loads((tmp_path / "fits" / "mini-demo.json").read_text())
    assert saved["flagship"]["val_loss"] == flagship["val_loss"]
    assert "report:" in summary(outcome)
    runs = sorted((tmp_path / "runs" / "mini").glob("c*/final.json"))
    assert len(runs) == 16
    stamps = [p.stat().st_mtime for p in runs]
    again = run_demo(spec, db, tmp_path / "reports" / "mini.html", bootstrap=50, lr_check=False)
    assert [p.stat().st_mtime for p in runs] == stamps  # no run trained twice
    assert again["flagship"]["val_loss"] == flagship["val_loss"]


def test_prediction_interval_widens_the_law_interval_by_the_scatter():
    from workbench.fit.frontier import prediction_interval

    draws = [2.0] * 200
    lo, mid, hi = prediction_interval(draws, [-0.01, 0.0, 0.01])
    assert lo == pytest.approx(2 * 2.718281828**-0.01, rel=1e-6) and hi == pytest.approx(2 * 2.718281828**0.01)
    assert mid == pytest.approx(2.0)
    lo0, _, hi0 = prediction_interval(draws, [0.0])
    assert lo0 == hi0 == pytest.approx(2.0)
