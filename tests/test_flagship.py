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
from workbench.sweep.launch import resources
from workbench.train.config import LayoutConfig

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
    assert config.get("layout") is None  # one CPU process: nothing to lay out, one task on one node
    assert resources(None, None, None) == (1, 1, 1)
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

    from workbench.store.database import Store

    runs = Store(db, read_only=True).runs()
    assert list(runs["run_id"]) == ["flagship-chinchilla-3e11"] and runs["status"][0] == "completed"

    again = invoke("flagship", "launch", workdir / "flagship.yaml", "--executor", "local")
    assert again.exit_code == 0 and "already completed: nothing to launch" in again.output
    status = json.loads(invoke("sweep", "status", "flagship", "--json").stdout)
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

    # the config's layout block is what the launcher reads: the plan's TP x PP x DP, sharded over FSDP
    data = yaml.safe_load((workdir / "big.yaml").read_text())
    block = LayoutConfig(**data["layout"])
    assert (block.tp, block.pp, block.dp_shard, block.dp_replicate) == (layout["tp"], layout["pp"], layout["dp"], 1)
    assert block.gpus == layout["gpus"] and block.nodes == layout["nodes"] and "layout" not in data["meta"]
    # without gpus_per_node the block's default (8 a node) gives the same nodes
    del data["layout"]["gpus_per_node"]
    (workdir / "old.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    old = invoke("flagship", "launch", workdir / "old.yaml", "--dry-run")
    assert f"#SBATCH --nodes={layout['nodes']}\n" in old.output
    override = invoke("flagship", "launch", workdir / "old.yaml", "--dry-run", "--nodes", 2, "--gpus-per-node", 4)
    assert "#SBATCH --nodes=2\n" in override.output and "#SBATCH --gpus-per-node=4\n" in override.output


def test_resources_from_the_layout_block_and_options():
    assert resources(LayoutConfig(tp=4, pp=4, dp_shard=2317), None, None) == (4634, 8, 37072)
    assert resources(LayoutConfig(tp=2, gpus_per_node=2), None, None) == (1, 2, 2)
    assert resources(LayoutConfig(tp=8, dp_shard=3), None, None) == (3, 8, 24)
    assert resources(LayoutConfig(tp=8, dp_replicate=4), None, 4) == (8, 4, 32)
    assert resources(None, None, None) == (1, 1, 1)
    # --gpus-per-node 0: a CPU partition, no GPUs asked for
    assert resources(LayoutConfig(tp=8, dp_shard=2), None, 0) == (2, 0, 16)


def test_a_config_with_the_old_layout_string_is_a_one_line_error(workdir):
    _plan("3.8e25", workdir / "big.yaml")
    data = yaml.safe_load((workdir / "big.yaml").read_text())
    del data["layout"]
    data["meta"]["layout"] = "TP 8 x PP 16 x DP 32"
    (workdir / "old.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    result = invoke("flagship", "launch", workdir / "old.yaml", "--dry-run")
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and "meta string of an older plan" in lines[0]


@pytest.mark.parametrize(
    "args, message",
    [
        (["nothere.yaml"], "Error: flagship config nothere.yaml not found"),
        ([ROOT / "tests" / "data" / "tiny.yaml"], "is not a train config"),
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


def test_trainer_checks_the_layout_against_its_world_size():
    from workbench.core.errors import WorkbenchError
    from workbench.train.parallel.distributed import check_layout

    check_layout(None, 4, 16)  # no layout block: any world size
    check_layout(LayoutConfig(dp_replicate=2, micro_batch=4), 2, 4)
    with pytest.raises(WorkbenchError, match="2 GPUs .* but the run has 1 processes"):
        check_layout(LayoutConfig(dp_shard=2), 1, 1)
    with pytest.raises(ValueError, match="context parallelism .*is not supported"):
        LayoutConfig(cp=2)  # refused where the block is read, before any process starts
    with pytest.raises(WorkbenchError, match="differs from batch.micro_batch 8"):
        check_layout(LayoutConfig(micro_batch=4), 1, 8)
