"""`workbench fit` end to end on CSV files (and on the store)."""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import workbench.cli
from workbench.fit import figures, fitfile
from workbench.fit.accuracy import sigmoid
from workbench.fit.laws import optimal_allocation, predict_loss
from workbench.fit.synthetic import CHINCHILLA, isoflop_sweep
from workbench.records import read_fit

FAST = ["--starts", "3", "--no-plots"]


def _invoke(*args):
    return CliRunner().invoke(workbench.cli.app, ["fit", *map(str, args)])


@pytest.fixture
def sweep_csv(tmp_path):
    points = isoflop_sweep(seed=0, budgets_flops=np.geomspace(1e17, 1e21, 5), sizes_per_budget=9)
    points["acc_toy"] = sigmoid(points["loss"], 0.25, 0.8, 5.0, 3.2)
    path = tmp_path / "toy.csv"
    points.drop(columns=["budget_flops", "flops"]).to_csv(path, index=False)
    return path


def test_csv_fit_writes_json_plots_and_prints_the_same_object(sweep_csv, tmp_path):
    out = tmp_path / "fits" / "toy.json"
    result = _invoke(
        "--from-csv",
        sweep_csv,
        "--bootstrap",
        40,
        "--starts",
        3,
        "--holdout-largest",
        "--out",
        out,
        "--at",
        "1e24",
        "--json",
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed == json.loads(out.read_text())
    assert printed["name"] == "toy" and printed["sweep"] is None and printed["n_points"] == 45
    par, iso = printed["parametric"], printed["isoflop"]
    assert set(par) >= {"E", "A", "B", "alpha", "beta", "a", "ci", "draws"}
    assert {k: len(v) for k, v in par["draws"].items()} == dict.fromkeys(["E", "A", "B", "alpha", "beta"], 40)
    assert {k: len(v) for k, v in iso["draws"].items()} == dict.fromkeys(["G", "a", "H", "b"], 40)
    assert len(iso["minima"]) + len(iso["excluded"]) == len(iso["budgets"]) == 5
    assert abs(par["alpha"] - CHINCHILLA["alpha"]) < 0.05
    assert par["ci"]["alpha"]["lo"] < par["alpha"] < par["ci"]["alpha"]["hi"]
    assert 1e24 in [row["budget_flops"] for row in par["ci"]["at"]]
    assert printed["holdout"]["budget_flops"] == pytest.approx(1e21, rel=0.01)
    assert printed["accuracy"]["toy"]["ceiling"] == pytest.approx(0.8, abs=0.02)
    names = sorted(p.split("/")[-1] for p in printed["plots"])  # the rollout runs by default: its figure too
    assert [n.split(".", 1)[1] for n in names] == [
        f"{k}.{e}" for k in ("isoflop", "parametric", "rollout") for e in ("png", "svg")
    ]
    assert all((tmp_path / "fits" / name).is_file() for name in names)
    # the planner's functions work on the loaded draws
    n_opt, d_opt = optimal_allocation(par["draws"], 1e24)
    assert n_opt.shape == (40,) and np.allclose(6 * n_opt * d_opt, 1e24)
    assert predict_loss(par, 1e9, 2e10) > par["E"]
    # the report rebuilds figures from the saved record
    record = read_fit(out)
    fig = figures.isoflop_figure(fitfile.points_from_record(record), fitfile.isoflop_from_record(record))
    assert len(fig.axes) == 2
    assert figures.parametric_figure(fitfile.points_from_record(record), fitfile.parametric_from_record(record)).axes


def test_terminal_tables_and_rollout(sweep_csv, tmp_path):
    result = _invoke("--from-csv", sweep_csv, "--bootstrap", 0, "--rollout", "--out", tmp_path / "t.json", *FAST)
    assert result.exit_code == 0, result.output
    assert "L = E + A/N^alpha + B/D^beta" in result.stdout
    assert "isoFLOP minima" in result.stdout and "rollout" in result.stdout
    record = json.loads((tmp_path / "t.json").read_text())
    assert record["parametric"]["ci"] is None and record["parametric"]["draws"] is None
    assert len(record["rollout"]) == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "toy.csv: the file is empty"),
        ("params,loss\n1e8,3\n", "missing column 'tokens'"),
        ("params,tokens,loss\n1e8,1e9,-3\n1e8,1e10,3\n", "column 'loss' row 1 has -3,"),
        ("params,tokens,loss\n1e8,1e9,nan\n1e8,1e10,3\n", "column 'loss' row 1 has nan"),
        ("params,tokens,loss\n1e8,1e9,3\n2e8,5e8,3\n", "one budget only"),
        ("params,tokens,loss\n1e8,1e9,3\n2e8,5e8,3.1\n1e8,1e10,3\n2e8,5e9,3.1\n", "every budget excluded"),
    ],
)
def test_bad_input_exits_1_with_one_line(tmp_path, text, message):
    path = tmp_path / "toy.csv"
    path.write_text(text)
    result = _invoke("--from-csv", path, "--out", tmp_path / "x.json", *FAST)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.stderr
    assert not (tmp_path / "x.json").exists()


def test_needs_exactly_one_source(sweep_csv):
    assert _invoke("--bootstrap", "0").exit_code == 1
    result = _invoke("a", "--from-csv", sweep_csv)
    assert result.exit_code == 1 and "give a SWEEP or --from-csv PATH, not both" in result.stderr
    result = _invoke("--from-csv", sweep_csv, "--method", "chinchilla")
    assert result.exit_code == 1 and "isoflop, parametric, all" in result.stderr


def test_sweep_from_the_store_is_fitted_and_recorded(tmp_path):
    from workbench.store.database import Store

    points = isoflop_sweep(seed=2, budgets_flops=np.geomspace(1e18, 1e20, 3), sizes_per_budget=7)
    for i, row in points.iterrows():
        run_dir = tmp_path / "runs" / "toy" / f"run{i:02d}"
        run_dir.mkdir(parents=True)
        (run_dir / "config.yaml").write_text(f"meta:\n  sweep: toy\n  budget_flops: {row.budget_flops:.6e}\n")
        final = {
            "status": "completed",
            "params": int(row.params),
            "params_total": int(row.params * 1.2),
            "tokens": int(row.tokens),
            "flops": row.flops,
            "val_loss": row.loss,
        }
        (run_dir / "final.json").write_text(json.dumps(final))
    db = tmp_path / "wb.duckdb"
    with Store(db) as store:
        assert store.ingest(tmp_path / "runs").runs == len(points)
    result = _invoke("toy", "--db", db, "--bootstrap", 20, "--out", tmp_path / "toy.json", *FAST)
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "toy.json").read_text())
    assert record["sweep"] == "toy" and record["n_points"] == len(points)
    assert sorted(record["isoflop"]["budgets"]) == pytest.approx([1e18, 1e19, 1e20])
    with Store(db) as store:
        fits = store.fits("toy")
    assert list(fits["name"]) == ["toy"] and json.loads(fits["fit"][0])["data_hash"] == record["data_hash"]
    only = _invoke("--db", db, "--bootstrap", 0, "--out", tmp_path / "only.json", *FAST)  # the store's only sweep
    assert only.exit_code == 0 and json.loads((tmp_path / "only.json").read_text())["sweep"] == "toy", only.output
    missing = _invoke("nosuch", "--db", db, "--out", tmp_path / "x.json", *FAST)
    assert missing.exit_code == 1 and "sweep 'nosuch' has no completed runs" in missing.stderr


def test_a_degenerate_sweep_fits_quickly_and_says_what_to_add(tmp_path):
    """tests/data/degenerate_sweep.csv: 12 runs at 2 budgets whose every size lies above the optimum (no
    interior minimum, as in a first sweep of a small corpus). The parametric fit with default options ends
    (no start runs to an iteration cap of a thousand) and prints one warning naming the problem and the fix."""
    csv = Path(__file__).parent / "data" / "degenerate_sweep.csv"
    result = _invoke("--from-csv", csv, "--method", "parametric", "--no-plots", "--out", tmp_path / "d.json")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "d.json").read_text())
    warnings = record["diagnostics"]["warnings"]
    degenerate = [w for w in warnings if w.startswith("the parametric law is degenerate")]
    assert len(degenerate) == 1 and "add sizes on both sides of each budget's optimum" in degenerate[0]
    assert record["parametric"]["bootstrap"]["resamples"] == 1000
