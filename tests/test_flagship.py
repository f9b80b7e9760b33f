"""`flagship launch`: a planned CPU flagship trained through the sweep launcher; the sbatch of a 405B-sized plan."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from workbench.cli import app
from workbench.commands.flagship import resources

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def _plan(compute: str, out: Path, *extra: str) -> dict:
    result = invoke("plan", "--compute", compute, "--law", "chinchilla", "--out", out, "--json", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_local_flagship_trains_to_completion_and_relaunch_skips(workdir):
    plan = _plan("3e11", workdir / "flagship.yaml")  # a ~90K-parameter model, seconds on one core
    config = yaml.safe_load((workdir / "flagship.yaml").read_text())
    assert (config["meta"]["nodes"], config["meta"]["gpus_per_node"], config["meta"]["gpus"]) == (1, 1, 1)
    # one torch thread: two threads on a 2-core machine shared with other work run this model ~100x slower
    config["runtime"]["threads"] = 1
    (workdir / "flagship.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    db = workdir / "wb.duckdb"
    result = invoke("flagship", "launch", workdir / "flagship.yaml", "--executor", "local", "--db", db)
    assert result.exit_code == 0, result.output
    run_dir = workdir / "runs" / "flagship" / "flagship-chinchilla-3e11"
    final = json.loads((run_dir / "final.json").read_text())
    assert final["status"] == "completed" and final["tokens"] >= plan["shape"]["tokens"] * 0.99
    assert final["params"] == plan["shape"]["params"]
    jobs = json.loads((run_dir.parent / "jobs.json").read_text())
    assert jobs["runs"]["flagship-chinchilla-3e11"]["executor"] == "local"

    from workbench.store import Store

    runs = Store(db, read_only=True).runs()
    assert list(runs["run_id"]) == ["flagship-chinchilla-3e11"] and runs["status"][0] == "completed"

    again = invoke("flagship", "launch", workdir / "flagship.yaml", "--executor", "local")
    assert again.exit_code == 0 and "already completed: nothing to launch" in again.output
    status = json.loads(invoke("sweep", "status", "flagship", "--json", "--db", db).stdout)
    assert status["counts"] == {"completed": 1}


def test_dry_run_of_a_405b_plan_prints_sbatch_with_the_layout_nodes(workdir):
    plan = _plan("3.8e25", workdir / "big.yaml")
    layout = plan["layout"]
    assert layout["nodes"] > 1000 and layout["gpus"] == layout["tp"] * layout["pp"] * layout["dp"]
    result = invoke("flagship", "launch", workdir / "big.yaml", "--dry-run", "--partition", "h100")
    assert result.exit_code == 0, result.output
    assert f"#SBATCH --nodes={layout['nodes']}\n" in result.output
    assert "#SBATCH --gpus-per-node=8\n" in result.output and "#SBATCH --ntasks-per-node=8\n" in result.output
    assert "#SBATCH --partition=h100\n" in result.output and "#SBATCH --signal=USR2@90\n" in result.output
    assert "#SBATCH --array" not in result.output and "submitit.core._submit" in result.output
    assert f"{layout['nodes']} nodes x 8 GPUs" in result.output
    assert not (workdir / "runs").exists()  # a dry run writes nothing

    # a config without the node count (an older plan): nodes from the layout's TP x PP x DP / GPUs per node
    data = yaml.safe_load((workdir / "big.yaml").read_text())
    for key in ("nodes", "gpus", "gpus_per_node"):
        del data["meta"][key]
    (workdir / "old.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    old = invoke("flagship", "launch", workdir / "old.yaml", "--dry-run")
    assert f"#SBATCH --nodes={layout['nodes']}\n" in old.output
    override = invoke("flagship", "launch", workdir / "old.yaml", "--dry-run", "--nodes", 2, "--gpus-per-node", 4)
    assert "#SBATCH --nodes=2\n" in override.output and "#SBATCH --gpus-per-node=4\n" in override.output


def test_resources_from_meta_and_options():
    assert resources({"layout": "TP 4 x PP 4 x DP 2317"}, None, None) == (4634, 8, 37072)
    assert resources({"layout": "TP 2 x PP 1 x DP 1"}, None, None) == (1, 2, 2)
    assert resources({"nodes": 3, "gpus_per_node": 8, "gpus": 24}, None, None) == (3, 8, 24)
    assert resources({"layout": "TP 8 x PP 1 x DP 4"}, None, 4) == (8, 4, 32)
    assert resources({}, None, None) == (1, 1, 1)
    # --gpus-per-node 0: a CPU partition, no GPUs asked for
    assert resources({"nodes": 2, "gpus_per_node": 8, "gpus": 16}, None, 0) == (2, 0, 16)


@pytest.mark.parametrize(
    "args, message",
    [
        (["nothere.yaml"], "Error: flagship config nothere.yaml not found"),
        ([ROOT / "sweeps" / "tiny.yaml"], "is not a train config"),
        (["PLAN", "--executor", "kubernetes"], "Error: --executor 'kubernetes' is not known"),
        (["PLAN", "--timeout-min", "1", "--dry-run"], "timeout_min x 60 - slurm_signal_delay_s must be at least 35 s"),
    ],
)
def test_bad_input_is_a_one_line_error(workdir, args, message):
    plan_path = workdir / "flagship.yaml"
    _plan("1e11", plan_path)
    result = invoke("flagship", "launch", *[plan_path if a == "PLAN" else a for a in args])
    assert result.exit_code == 1 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.slurm
@pytest.mark.skipif(not (os.environ.get("SLURM_CONF") and shutil.which("sbatch")), reason="needs a running Slurm")
def test_flagship_on_real_slurm(workdir):
    _plan("1e11", workdir / "flagship.yaml")
    config = yaml.safe_load((workdir / "flagship.yaml").read_text())
    config["runtime"]["threads"] = 1
    (workdir / "flagship.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    result = invoke("flagship", "launch", workdir / "flagship.yaml", "--gpus-per-node", 0, "--timeout-min", 10)
    assert result.exit_code == 0 and "as Slurm job" in result.output, result.output
    job = result.output.split("Slurm job ")[1].split(";")[0]
    import time

    deadline = time.time() + 300
    final = workdir / "runs" / "flagship" / "flagship-chinchilla-1e11" / "final.json"
    while not final.is_file() and time.time() < deadline:
        time.sleep(5)
    assert json.loads(final.read_text())["status"] == "completed", subprocess.run(["sacct", "-j", job]).stdout
