"""Sweeps on a real single-node Slurm (.ci/slurm/start.sh): job arrays, preemption, requeue, cancel.

Run:  eval "$(bash .ci/slurm/start.sh)"; pytest -m slurm tests/test_slurm.py; bash .ci/slurm/stop.sh
Skipped unless SLURM_CONF is set and sinfo answers. The runs are the real trainer on ~10K-parameter models.
"""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from workbench.cli import app
from workbench.store.database import Store
from workbench.sweep.grid import plan_file

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(
        not (os.environ.get("SLURM_CONF") and shutil.which("sinfo"))
        or subprocess.run(["sinfo"], capture_output=True).returncode != 0,
        reason="needs a running Slurm (.ci/slurm/start.sh) and SLURM_CONF",
    ),
]

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def sweep_yaml(workdir: Path, name: str, budgets: list[float]) -> Path:
    data = yaml.safe_load((ROOT / "tests" / "data" / "tiny.yaml").read_text())
    data["name"] = name
    data["grid"]["budgets_flops"] = budgets
    data["launch"].update({"executor": "slurm", "timeout_min": 10, "slurm_signal_delay_s": 60})
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 0, result.output
    return result


def wait_for(predicate, timeout_s: float, what: str) -> None:
    end = time.time() + timeout_s
    while time.time() < end:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def rows(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def trained_steps(run_dir: Path) -> int:
    return max((r["step"] for r in rows(run_dir) if "loss" in r), default=0)


def jobs_of(root: Path) -> dict[str, str]:
    return {rid: j["job_id"] for rid, j in json.loads((root / "jobs.json").read_text())["runs"].items()}


def test_sweep_array_survives_usr2_preemption_and_scontrol_requeue(workdir):
    path = sweep_yaml(workdir, "tiny", [3e10, 6e10])
    plan = plan_file(path)
    db = str(workdir / "wb.duckdb")
    invoke("sweep", "launch", str(path), "--db", db)
    root = workdir / "runs" / "tiny"
    jobs = jobs_of(root)
    assert len({j.split("_")[0] for j in jobs.values()}) == 1  # one array
    requeued, preempted = plan.runs[0].run_id, plan.runs[2].run_id  # the two 10K runs: the longest
    wait_for(lambda: trained_steps(root / requeued) >= 100, 90, f"{requeued} to train")
    subprocess.run(["scontrol", "requeue", jobs[requeued]], check=True)  # SIGTERM: the trainer's checkpoint
    wait_for(lambda: trained_steps(root / preempted) >= 100, 90, f"{preempted} to train")
    subprocess.run(["scancel", "--signal=USR2", jobs[preempted]], check=True)  # submitit's checkpoint path
    finals = [root / r.run_id / "final.json" for r in plan.runs]
    wait_for(lambda: all(f.is_file() for f in finals), 150, "all four runs to finish")
    assert [json.loads(f.read_text())["status"] for f in finals] == ["completed"] * 4
    for rid, signal in ((requeued, "SIGTERM"), (preempted, "SIGUSR2")):
        events = [r for r in rows(root / rid) if "event" in r]
        assert any(e["event"] == "interrupted" and e.get("signal") == signal for e in events), events
        resumes = [e for e in events if e["event"] == "resume"]
        assert len(resumes) == 1 and resumes[0]["from_step"] >= 100, events  # not from step 0

    status = json.loads(invoke("sweep", "status", "tiny", "--json").stdout)
    assert status["state"] == "completed" and status["counts"] == {"completed": 4}
    invoke("db", "ingest", str(root), "--db", db)  # status only reads; ingest brings the finished runs in

    store = Store(db, read_only=True)
    assert len(store.runs("tiny")) == 4
    dupes = store.query("SELECT run_id, step, count(*) AS n FROM metrics GROUP BY run_id, step HAVING n > 1")
    assert len(dupes) == 0


def test_cancelled_sweep_shows_cancelled(workdir):
    path = sweep_yaml(workdir, "long", [1e12, 2e12])  # minutes of training: cancelled long before the end
    invoke("sweep", "launch", str(path))
    root = workdir / "runs" / "long"
    run_ids = [r.run_id for r in plan_file(path).runs]
    wait_for(lambda: any(trained_steps(root / rid) > 0 for rid in run_ids), 90, "a run to start training")
    out = invoke("sweep", "cancel", "long")
    assert "scancel" in out.output
    array = next(iter(jobs_of(root).values())).split("_")[0]

    def gone() -> bool:
        return not subprocess.run(["squeue", "-h", "-j", array], capture_output=True, text=True).stdout.strip()

    wait_for(gone, 60, "the array to leave the queue")
    status = json.loads(invoke("sweep", "status", "long", "--json").stdout)
    assert status["state"] == "cancelled"
    assert set(status["counts"]) <= {"cancelled", "interrupted"} and status["counts"].get("cancelled", 0) >= 2
