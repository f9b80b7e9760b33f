"""The end-to-end job on a small grid: every stage runs for real, and a rerun reuses finished runs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from workbench.data.prepare import ensure_default_corpus

K = 1000
CLI = [sys.executable, "-m", "workbench.cli"]


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


@pytest.fixture(scope="module")
def mini_demo(tmp_path_factory):
    """The demo on the small grid, run once for the tests below: (its folder, spec, db, outcome)."""
    from workbench.demo.run import run_demo

    tmp_path = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        spec = small_spec(tmp_path)
        db = tmp_path / "w.duckdb"
        outcome = run_demo(spec, db, tmp_path / "reports" / "mini.html", bootstrap=50, lr_check=False)
    return tmp_path, spec, db, outcome


CHECKS = {
    "interior_minima",
    "best_loss_within_2pct",
    "n_opt_within_1.5x",
    "flagship_in_interval",
    "flagship_within_1pct_of_best",
}


@pytest.mark.slow
@pytest.mark.demo
def test_demo_runs_every_stage_and_its_checks_hold_their_numbers(mini_demo, monkeypatch):
    """Every stage runs; each check's flag is the comparison of the numbers it reports (so a check that
    fails shows as False, never hidden), the robust ones pass, and a rerun trains nothing again."""
    from workbench.demo.run import run_demo
    from workbench.demo.summary import summary

    tmp_path, spec, db, outcome = mini_demo
    assert outcome["held_out_budget"] == 4e11
    checks = outcome["checks"]
    assert set(checks) == CHECKS
    assert outcome["passed"] is all(ok is not False for ok in checks.values())
    assert set(outcome["fitted_budgets"]) <= {5e10, 1e11, 2e11}
    all_interior = outcome["fitted_budgets"] == [5e10, 1e11, 2e11] and outcome["excluded"] == []
    assert checks["interior_minima"] is all_interior
    # each flag from its own numbers
    best_err = outcome["best_loss_rel_err"]
    assert best_err == pytest.approx(outcome["predicted_best_loss"] / outcome["observed_best_loss"] - 1)
    if outcome["observed_n_opt"] is None:  # no minimum inside the sizes: its loss is no minimum to score against
        assert checks["best_loss_within_2pct"] is None and "best_loss_within_2pct" in outcome["not_scored"]
    else:
        assert checks["best_loss_within_2pct"] is (abs(best_err) <= 0.02)
    if outcome["observed_n_opt"] is None:  # the held-out vertex outside its sizes: nothing to score
        assert checks["n_opt_within_1.5x"] is None and "n_opt_within_1.5x" in outcome["not_scored"]
        assert "n_opt_within_1.5x: not scored (vertex outside the tested sizes)" in summary(outcome)
    else:
        ratio = outcome["predicted_n_opt_isoflop"] / outcome["observed_n_opt"]
        assert checks["n_opt_within_1.5x"] is (1 / 1.5 <= ratio <= 1.5)
    flagship = outcome["flagship"]
    lo, hi = flagship["interval"]
    assert checks["flagship_in_interval"] is (lo <= flagship["val_loss"] <= hi)
    assert checks["flagship_within_1pct_of_best"] is (abs(flagship["vs_best"]) <= 0.01)
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
    monkeypatch.chdir(tmp_path)
    again = run_demo(spec, db, tmp_path / "reports" / "mini.html", bootstrap=50, lr_check=False)
    assert [p.stat().st_mtime for p in runs] == stamps  # no run trained twice
    assert again["flagship"]["val_loss"] == flagship["val_loss"]


@pytest.mark.slow
@pytest.mark.demo
def test_demo_command_exits_1_exactly_when_an_end_to_end_check_fails(mini_demo):
    """`workbench demo` on the same folder (every run reused): exit 0 when the five checks pass, else a
    one-line error and exit 1, never a traceback."""
    tmp_path, spec, db, outcome = mini_demo
    command = [
        sys.executable,
        "-m",
        "workbench.cli",
        "demo",
        str(spec),
        "--db",
        str(db),
        "--out",
        str(tmp_path / "reports" / "mini.html"),
        "--bootstrap",
        "50",
        "--no-lr-check",
    ]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.returncode == (0 if outcome["passed"] else 1), result.stderr[-2000:]
    assert ("end-to-end check FAILED" in result.stderr) is (not outcome["passed"])
    assert "PASS interior_minima" in result.stdout


def test_prediction_interval_widens_the_law_interval_by_the_scatter():
    from workbench.fit.frontier import prediction_interval

    draws = [2.0] * 200
    lo, mid, hi = prediction_interval(draws, [-0.01, 0.0, 0.01])
    assert lo == pytest.approx(2 * 2.718281828**-0.01, rel=1e-6) and hi == pytest.approx(2 * 2.718281828**0.01)
    assert mid == pytest.approx(2.0)
    lo0, _, hi0 = prediction_interval(draws, [0.0])
    assert lo0 == hi0 == pytest.approx(2.0)


def demo_json(tmp_path: Path, name: str, budgets: list[float], min_sizes: int, eval_batches: int):
    """`workbench demo --json` in a subprocess on small_spec's sizes at seq_len 64 over `budgets` (at least
    `min_sizes` per budget), 20 resamples: (outcome, db, report). The exit code is 0 exactly when the outcome passed,
    and nothing prints a traceback."""
    spec = small_spec(tmp_path)
    doc = yaml.safe_load(spec.read_text())
    doc["name"] = name
    doc["data"]["seq_len"] = 64
    doc["grid"].update({"budgets_flops": budgets, "min_sizes_per_budget": min_sizes})
    doc["train"].update({"batch_tokens": 512, "eval": {"batches": eval_batches, "batch_seqs": 8}})
    spec.write_text(yaml.safe_dump(doc))
    db, report = tmp_path / "w.duckdb", tmp_path / "reports" / f"{name}.html"
    command = [*CLI, "demo", str(spec), "--db", str(db), "--out", str(report), "--bootstrap", "20", "--no-lr-check"]
    result = subprocess.run([*command, "--json"], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert "Traceback" not in result.stderr and result.stdout.strip(), result.stderr[-2000:]
    outcome = json.loads(result.stdout)
    assert result.returncode == (0 if outcome["passed"] else 1), result.stderr[-2000:]
    return outcome, db, report


@pytest.mark.slow
@pytest.mark.demo
def test_the_demo_command_runs_every_stage_with_json(tmp_path):
    """`workbench demo --json` end to end, the real CLI in a subprocess (about 2.5 minutes on one core): 4 budgets
    x 4 sizes of 8K-25K-parameter models. Every stage leaves its product (runs in the
    store, the fit, the flagship's final.json, the report) and the exit code is 0 exactly when the outcome
    passed; a grid this small may fail its science checks, which then show as False and exit 1."""
    outcome, db, report = demo_json(tmp_path, "tiny", [5e10, 1e11, 2e11, 4e11], min_sizes=4, eval_batches=2)
    assert outcome["held_out_budget"] == 4e11 and set(outcome["fitted_budgets"]) <= {5e10, 1e11, 2e11}
    assert set(outcome["checks"]) == CHECKS
    run_dir = Path(yaml.safe_load(Path(outcome["flagship_config"]).read_text())["run_dir"])
    flagship = json.loads((run_dir / "final.json").read_text())
    assert flagship["status"] == "completed" and flagship["val_loss"] == outcome["flagship"]["val_loss"]
    assert json.loads((tmp_path / "fits" / "tiny.json").read_text())["checks"]
    assert report.is_file() and "<html" in report.read_text()[:2000].lower()
    from workbench.store.database import Store

    points = Store(db, read_only=True).points("tiny", metric="val_loss")
    assert len(points) >= 16


def test_the_demo_command_runs_in_the_quick_set(tmp_path):
    """`workbench demo` itself in the quick set (the end-to-end tests above run with the slow ones): 3 budgets x
    4 sizes of 8K-25K-parameter models, 20 resamples. Every stage leaves its product and the exit code follows
    the outcome; a grid this small may fail its science checks (exit 1, a one-line error, no traceback)."""
    outcome, _, report = demo_json(tmp_path, "quick", [5e10, 1e11, 2e11], min_sizes=3, eval_batches=1)
    assert outcome["held_out_budget"] == 2e11 and set(outcome["checks"]) == CHECKS
    assert (tmp_path / "fits" / "quick.json").is_file() and report.is_file()
