"""`sweep launch/status/cancel` with the local executor and the real trainer; the sbatch file submitit writes."""

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from workbench.cli import app
from workbench.sweep.executors import sbatch_script
from workbench.sweep.grid import plan_file
from workbench.sweep.launch import launch

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny.yaml"
runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def test_sbatch_script_matches_saved_copy():
    plan = plan_file(ROOT / "sweeps" / "isoflop.yaml")
    text = sbatch_script(plan.spec.launch, "/cluster/runs/isoflop/.submitit/%j", array_size=len(plan.runs))
    assert text == (ROOT / "tests" / "data" / "isoflop.sbatch").read_text()
    assert "#SBATCH --signal=USR2@300" in text and "#SBATCH --array=0-74%16" in text


def test_local_sweep_runs_skips_done_refuses_changed(workdir, corpus_home):
    db = str(workdir / "wb.duckdb")
    result = invoke("sweep", "launch", str(TINY), "--executor", "local", "--db", db)
    assert result.exit_code == 0, result.output
    assert "ran 4 of 4 runs (local)" in result.output
    plan = plan_file(TINY)
    root = workdir / "runs" / "tiny"
    for run in plan.runs:
        final = json.loads((root / run.run_id / "final.json").read_text())
        assert final["status"] == "completed" and final["tokens"] == run.tokens
        written = yaml.safe_load((root / run.run_id / "config.yaml").read_text())
        assert written["run_dir"] == str(root / run.run_id)  # absolute: jobs may start elsewhere
        assert written["data"]["sources"][0]["path"] == str(corpus_home / "shakespeare-bytes")  # `@default`
    assert set(json.loads((root / "jobs.json").read_text())["runs"]) == {r.run_id for r in plan.runs}

    status = json.loads(invoke("sweep", "status", "tiny", "--json").stdout)
    assert status["state"] == "completed" and status["counts"] == {"completed": 4}

    again = invoke("sweep", "launch", str(TINY), "--executor", "local", "--db", db)
    assert again.exit_code == 0 and "ran 0 of 4 runs (local): 0 completed, 0 failed, 4 skipped" in again.output
    assert ": job " not in again.output  # nothing submitted: no job lines

    changed = workdir / "tiny.yaml"
    changed.write_text(TINY.read_text().replace("lr_peak: 3e-3", "lr_peak: 2e-3"))
    refused = invoke("sweep", "launch", str(changed), "--executor", "local")
    assert refused.exit_code == 1
    assert refused.output.startswith("Error: sweep tiny changed since version 1 was launched: train.lr_peak.")
    assert "--new-version" in refused.output and "--force" in refused.output
    assert len(refused.output.strip().split("\n")) == 1
    # a run whose config.yaml was edited by hand is refused as before (same spec, same version)
    edited = root / plan.runs[0].run_id / "config.yaml"
    edited.write_text(edited.read_text().replace("seed: 0", "seed: 7"))
    hand = invoke("sweep", "launch", str(TINY), "--executor", "local")
    assert hand.exit_code == 1 and hand.output.startswith(f"Error: run {plan.runs[0].run_id} of sweep tiny changed")
    edited.write_text(edited.read_text().replace("seed: 7", "seed: 0"))

    dry = launch(plan_file(changed), executor="local", dry_run=True, force=True)
    assert sorted(dry.replaced) == sorted(r.run_id for r in plan.runs) and len(dry.submit) == 4
    assert all((root / r.run_id).is_dir() for r in plan.runs)  # a dry run moves nothing

    from workbench.store.database import Store

    store = Store(db, read_only=True)
    assert len(store.runs("tiny")) == 4
    dupes = store.query("SELECT run_id, step, count(*) AS n FROM metrics GROUP BY run_id, step HAVING n > 1")
    assert len(dupes) == 0


def test_local_wsd_branch_starts_from_trunk_checkpoint(workdir):
    data = yaml.safe_load(TINY.read_text())
    data["name"] = "wsd"
    data["grid"].update({"schedule": "wsd", "sizes": ["10K"], "budgets_flops": [3e9, 6e9], "min_sizes_per_budget": 1})
    path = workdir / "wsd.yaml"
    path.write_text(yaml.safe_dump(data))
    plan = plan_file(path)
    trunk, branch = plan.runs
    assert (trunk.kind, branch.kind) == ("trunk", "branch")
    report = launch(plan, executor="local")
    assert report.results == {trunk.run_id: "completed", branch.run_id: "completed"}
    rows = [json.loads(line) for line in (workdir / "runs/wsd" / branch.run_id / "metrics.jsonl").open()]
    start_step = branch.start_tokens // branch.batch_tokens
    assert rows[0]["event"] == "init_from" and rows[0]["from_step"] == start_step
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps[0] == start_step + 1 and rows[-1]["tokens"] == branch.tokens
    # the branch's LR is the trunk's stable LR at the branch point, then decays to the floor
    lrs = [r["lr"] for r in rows if "lr" in r]
    assert lrs[0] == pytest.approx(3e-3, rel=0.05) and lrs[-1] < 0.2 * 3e-3


def test_status_and_cancel_of_a_local_sweep_folder(workdir):
    root = workdir / "runs" / "nothing"
    assert invoke("sweep", "cancel", "nothing").exit_code == 1  # no such sweep: one-line error
    (root / "r1").mkdir(parents=True)
    (root / "r1" / "config.yaml").write_text("{}")  # a run dir holds its config.yaml
    (root / "tune").mkdir()  # the Optuna trials' folder is not a run of the sweep
    out = invoke("sweep", "cancel", "nothing")
    assert out.exit_code == 0 and "cancelled (no live jobs)" in out.output
    status = invoke("sweep", "status", "nothing", "--json")
    record = json.loads(status.stdout)
    assert record["state"] == "cancelled" and record["counts"] == {"missing": 1}


def test_unknown_executor_is_a_one_line_error():
    result = invoke("sweep", "launch", str(TINY), "--executor", "kubernetes")
    assert result.exit_code == 1 and result.output.startswith("Error: --executor 'kubernetes' is not known")
