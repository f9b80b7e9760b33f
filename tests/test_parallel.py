"""Parallel layouts on CPU (gloo): TP, PP (1F1B, interleaved), FSDP2, HSDP and their products (TP x PP
too) give one process's losses; sharded DCP checkpoints reshard between layouts, resume bit-identically
after kill -9, and no rank writes the full optimizer state; a planned flagship with TP 2 trains with
`workbench train`."""

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from workbench.core.errors import WorkbenchError

CLI = [sys.executable, "-m", "workbench.cli"]
ROOT = Path(__file__).resolve().parents[1]
STEPS = 20
BATCH_TOKENS = 256  # 8 sequences of 32: 4 micro-batches of 2


@pytest.fixture(scope="module")
def corpus():
    from workbench.data.prepare import ensure_default_corpus

    return str(ensure_default_corpus())


def write_config(tmp_path: Path, corpus: str, name: str, layout: dict | None, **sections) -> Path:
    cfg = {
        "name": name,
        "run_dir": str(tmp_path / name),
        "seed": 0,
        "model": {"n_layers": 4, "d_model": 32, "n_heads": 4, "n_kv_heads": 2, "ffn_dim": 64, "vocab_size": 256},
        "data": {"sources": [{"path": corpus}], "seq_len": 32},
        "optim": {"lr_peak": 3e-3},
        "schedule": {"kind": "cosine", "warmup_tokens": 512},
        "batch": {"batch_tokens": BATCH_TOKENS, "micro_batch": 2},
        "stop": {"tokens": STEPS * BATCH_TOKENS},
        "eval": {"batches": 2, "batch_seqs": 4},
        "checkpoint": {"every_tokens": 0, "keep": 1},
        "faults": {"max_rollbacks": 0},
        "runtime": {"threads": 1, "device": "cpu", "dtype": "fp32"},
        **sections,
    }
    if layout is not None:
        cfg["layout"] = layout
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def env() -> dict:
    # faulthandler: a worker that aborts prints where (Python stacks) in the failure message
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "PYTHONFAULTHANDLER": "1"}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_cmd(config: Path, nproc: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
        "-m",
        "workbench.cli",
        "train",
        str(config),
    ]


def train(config: Path, nproc: int) -> None:
    cmd = torchrun_cmd(config, nproc) if nproc > 1 else [*CLI, "train", str(config)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env())
    assert result.returncode == 0, result.stderr[-3000:]


def losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "event" not in r}


def val_loss(run_dir: Path) -> float:
    return json.loads((run_dir / "final.json").read_text())["val_loss"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, corpus):
    """One process with an all-ones layout: the per-name initialisation every layout shares."""
    tmp = tmp_path_factory.mktemp("reference")
    train(write_config(tmp, corpus, "one", {}), 1)
    return tmp / "one"


LAYOUTS = [
    pytest.param({"tp": 2}, 2, id="tp2"),
    pytest.param({"pp": 2}, 2, id="pp2-1f1b", marks=pytest.mark.slow),
    pytest.param(
        {"pp": 2, "pp_schedule": "interleaved_1f1b", "pp_stages_per_rank": 2},
        2,
        id="pp2-interleaved",
        marks=pytest.mark.slow,
    ),
    pytest.param({"dp_shard": 2}, 2, id="fsdp2", marks=pytest.mark.slow),
    pytest.param({"tp": 2, "dp_shard": 2}, 4, id="tp2-fsdp2", marks=pytest.mark.slow),
    pytest.param({"pp": 2, "dp_shard": 2}, 4, id="pp2-fsdp2", marks=pytest.mark.slow),
    pytest.param({"tp": 2, "pp": 2}, 4, id="tp2-pp2", marks=pytest.mark.slow),
    pytest.param(
        {"tp": 2, "pp": 2, "pp_schedule": "interleaved_1f1b", "pp_stages_per_rank": 2},
        4,
        id="tp2-pp2-interleaved",
        marks=pytest.mark.slow,
    ),
    pytest.param({"dp_replicate": 2}, 2, id="hsdp2x1", marks=pytest.mark.slow),
    pytest.param({"dp_replicate": 2, "dp_shard": 2}, 4, id="hsdp2x2", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("layout, nproc", LAYOUTS)
def test_layout_matches_one_process(tmp_path, corpus, reference, layout, nproc):
    train(write_config(tmp_path, corpus, "par", layout), nproc)
    one, par = losses(reference), losses(tmp_path / "par")
    assert sorted(par) == sorted(one) == list(range(1, STEPS + 1))
    for step in one:
        assert par[step] == pytest.approx(one[step], abs=1e-4)
    assert one[STEPS] < one[1] - 0.5  # it learned
    assert val_loss(tmp_path / "par") == pytest.approx(val_loss(reference), abs=1e-4)


def test_recompute_does_not_change_the_losses(tmp_path, corpus, reference):
    """Selective and full activation checkpointing recompute the same numbers (one process, in-process)."""
    from workbench.train import trainer

    for mode in ("selective", "full"):
        short = {"stop": {"tokens": 3 * BATCH_TOKENS}, "schedule": {"kind": "constant"}}
        trainer.main(write_config(tmp_path, corpus, mode, {"recompute": mode}, **short))
    trainer.main(write_config(tmp_path, corpus, "none", {"recompute": "none"}, **short))
    base = losses(tmp_path / "none")
    for mode in ("selective", "full"):
        assert losses(tmp_path / mode) == pytest.approx(base, abs=1e-6)


def test_sharded_initialisation_is_the_full_one_sliced():
    """A shard's values depend on (seed, name, position) only, not on how the tensor is cut."""
    from workbench.train.parallel.weights_init import TILE_COLS, TILE_ROWS, normal_region

    full_shape = (TILE_ROWS + 5, TILE_COLS + 3)
    full = normal_region(7, "layers.0.ffn.w1.weight", 0.02, full_shape, full_shape, (0, 0))
    assert full.std().item() == pytest.approx(0.02, rel=0.01)
    for offset, shape in [((0, 0), (10, 20)), ((TILE_ROWS - 3, TILE_COLS - 2), (8, 5)), ((517, 0), (500, TILE_COLS))]:
        part = normal_region(7, "layers.0.ffn.w1.weight", 0.02, full_shape, shape, offset)
        assert torch.equal(part, full[offset[0] : offset[0] + shape[0], offset[1] : offset[1] + shape[1]])
    other = normal_region(7, "layers.0.ffn.w3.weight", 0.02, full_shape, (4, 4), (0, 0))
    assert not torch.equal(other, full[:4, :4])


def test_layout_errors_are_one_line(tmp_path, corpus):
    from workbench.train import trainer

    bad_cp = write_config(tmp_path, corpus, "cp", {"cp": 2})
    result = subprocess.run([*CLI, "train", str(bad_cp)], capture_output=True, text=True, env=env(), timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "context parallelism" in result.stderr and "layout.cp" in result.stderr
    with pytest.raises(WorkbenchError, match="= 2 GPUs .*, but the run has 1 processes"):
        trainer.main(write_config(tmp_path, corpus, "world", {"tp": 2}))
    odd_tp = write_config(tmp_path, corpus, "odd", {"tp": 4})
    result = subprocess.run([*CLI, "train", str(odd_tp)], capture_output=True, text=True, env=env(), timeout=120)
    assert result.returncode == 1 and "layout.tp 4 must divide" in result.stderr


def ckpt_sections(every_steps: int, keep: int = 2, save_at: tuple = ()) -> dict:
    return {"checkpoint": {"every_tokens": every_steps * BATCH_TOKENS, "keep": keep, "save_at_tokens": list(save_at)}}


def resume_elsewhere(tmp_path, corpus, source: Path, name: str, layout: dict, step: int) -> Path:
    """A new run dir holding only `source`'s checkpoint at `step`, trained to the end under `layout`."""
    import shutil

    run_dir = tmp_path / name
    (run_dir / "ckpt").mkdir(parents=True)
    shutil.copytree(source / "ckpt" / f"step_{step:08d}", run_dir / "ckpt" / f"step_{step:08d}")
    train(write_config(tmp_path, corpus, name, layout), 2)
    return run_dir


def test_async_checkpoints_are_intact_and_resume_exactly(tmp_path, corpus, reference):
    """checkpoint.async_save (DCP's async_save, published at the next logging step): the losses are one
    process's exactly, every checkpoint verifies in full, and resuming one reproduces the rest."""
    import shutil

    from workbench.train import checkpoint, trainer

    sections = ckpt_sections(5, keep=4)
    sections["checkpoint"]["async_save"] = True
    trainer.main(write_config(tmp_path, corpus, "async", {}, **sections))
    assert losses(tmp_path / "async") == losses(reference)
    saved = checkpoint.run_checkpoints(tmp_path / "async")
    assert [p.name for p in saved] == [f"step_{s:08d}" for s in (5, 10, 15, 20)]  # the last one once
    for path in saved:
        checkpoint.verify(path)  # every file against its sha256
    shutil.copytree(saved[1], tmp_path / "resumed" / "ckpt" / saved[1].name)
    trainer.main(write_config(tmp_path, corpus, "resumed", {}, **sections))
    got = losses(tmp_path / "resumed")
    assert sorted(got) == list(range(11, STEPS + 1)) and all(got[s] == losses(reference)[s] for s in got)


@pytest.mark.slow
def test_checkpoint_reshards_between_tp2_and_dp2(tmp_path, corpus):
    half = STEPS // 2
    sections = ckpt_sections(half, keep=1, save_at=(half * BATCH_TOKENS,))
    train(write_config(tmp_path, corpus, "tp", {"tp": 2}, **sections), 2)
    train(write_config(tmp_path, corpus, "dp", {"dp_shard": 2}, **sections), 2)
    to_dp = resume_elsewhere(tmp_path, corpus, tmp_path / "tp", "tp-to-dp", {"dp_shard": 2}, half)
    to_tp = resume_elsewhere(tmp_path, corpus, tmp_path / "dp", "dp-to-tp", {"tp": 2}, half)
    for resumed, uninterrupted in [(to_dp, tmp_path / "tp"), (to_tp, tmp_path / "dp")]:
        got, want = losses(resumed), losses(uninterrupted)
        assert sorted(got) == list(range(half + 1, STEPS + 1))
        assert got[half + 1] == pytest.approx(want[half + 1], abs=1e-4)
        assert got[STEPS] == pytest.approx(want[STEPS], abs=1e-4)


def optimizer_elements_by_file(step_dir: Path) -> tuple[dict[str, int], int]:
    """Elements of optimizer state in each rank's file (from DCP's metadata), and in the full state."""
    from torch.distributed.checkpoint import FileSystemReader

    meta = FileSystemReader(str(step_dir / "sharded")).read_metadata()
    where = {(index.fqn, tuple(index.offset or ())): info.relative_path for index, info in meta.storage_data.items()}
    per_file: dict[str, int] = {}
    full = 0
    for fqn, item in meta.state_dict_metadata.items():
        if not fqn.startswith("optimizer.") or not hasattr(item, "chunks"):
            continue
        full += item.size.numel()
        for chunk in item.chunks:
            file = where[(fqn, tuple(chunk.offsets))]
            per_file[file] = per_file.get(file, 0) + math.prod(chunk.sizes)
    return per_file, full


def kill9_tree(proc: subprocess.Popen) -> None:
    """SIGKILL torchrun and its workers (which run in sessions of their own, out of reach of killpg), and
    wait until every one is gone."""

    def tree(pid: int) -> list[int]:
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return [pid]
        return [pid] + [p for child in children for p in tree(int(child))]

    pids = tree(proc.pid)
    assert len(pids) >= 3, pids  # the launcher and two ranks
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()

    def gone(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
        except OSError:
            return True

    deadline = time.time() + 60
    while not all(gone(pid) for pid in pids) and time.time() < deadline:
        time.sleep(0.1)


@pytest.mark.slow
def test_kill9_resume_under_tp2_is_bit_identical(tmp_path, corpus):
    sections = ckpt_sections(5)
    train(write_config(tmp_path, corpus, "whole", {"tp": 2}, **sections), 2)
    config = write_config(tmp_path, corpus, "killed", {"tp": 2}, **sections)
    proc = subprocess.Popen(
        torchrun_cmd(config, 2), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    ckpt = tmp_path / "killed" / "ckpt"
    deadline = time.time() + 300
    while not (ckpt / "step_00000010" / "manifest.json").is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    kill9_tree(proc)  # the launcher and both ranks, mid-run
    assert not (tmp_path / "killed" / "final.json").exists()
    train(config, 2)
    events = [json.loads(x) for x in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines() if '"event"' in x]
    assert [e["event"] for e in events] == ["resume"] and events[0]["from_step"] >= 10  # it did resume
    assert losses(tmp_path / "killed") == losses(tmp_path / "whole")  # exactly
    assert val_loss(tmp_path / "killed") == val_loss(tmp_path / "whole")
    # every rank wrote its own shards, and none the whole optimizer state
    step_dir = ckpt / f"step_{STEPS:08d}"
    per_file, full = optimizer_elements_by_file(step_dir)
    assert sorted(per_file) == ["__0_0.distcp", "__1_0.distcp"]
    assert all(size < 0.75 * full for size in per_file.values()), (per_file, full)
    assert sum(per_file.values()) >= full
    assert torch.load(step_dir / "state.pt", weights_only=False)["model"] is None  # nothing gathered


def plan_cli(*args: str) -> str:
    from typer.testing import CliRunner

    from workbench.cli import app

    result = CliRunner().invoke(app, ["plan", "--compute", "1e14", "--law", "chinchilla", "--gpus", "2", *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def plan_tp2_flagship(out: Path, corpus: str, run_dir: Path) -> dict:
    """`workbench plan` of a tiny shape on 2 GPUs too small for one replica: --gpu-memory-gb is lowered
    below each chosen layout's need (DP 2 at smaller micro-batches, more recompute) until the plan
    picks TP 2; that config is written to `out` and returned (loaded)."""
    memory: list[str] = []
    for _ in range(40):
        layout = json.loads(plan_cli("--json", *memory))["layout"]
        if layout["tp"] > 1:
            break
        need, limit = layout["memory_per_gpu_gb"]["total"], layout["memory_per_gpu_gb"]["limit"]
        gpu_gb = float(memory[1]) if memory else layout["memory_gb"]
        # just under this layout's need (0.5%: the window where TP 2 fits with its larger headroom is ~2% wide)
        memory = ["--gpu-memory-gb", f"{gpu_gb * 0.995 * need / limit:.9f}"]
    plan_cli(*memory, "--data", corpus, "--run-dir", str(run_dir), "--out", str(out))
    written = yaml.safe_load(out.read_text())
    assert written["layout"]["tp"] == 2 and written["layout"]["pp"] == 1 and written["layout"]["dp_shard"] == 1
    return written


def shorten(written: dict, out: Path, tokens: int) -> None:
    """A few steps of the planned run (its warmup and anneal cut to fit), one thread a process, one small
    validation batch."""
    written["stop"] = {"tokens": tokens}
    for key in ("warmup_tokens", "anneal_tokens"):
        written["schedule"][key] = min(written["schedule"].get(key, 0), tokens)
    written["eval"] = {"every_tokens": 0, "batches": 1, "batch_seqs": 2}
    written["runtime"]["threads"] = 1
    out.write_text(yaml.safe_dump(written))


@pytest.mark.slow
def test_planned_flagship_with_tp2_trains(tmp_path, corpus):
    """`workbench plan` for a tiny shape on GPUs too small for one: TP 2; `workbench train` runs it."""
    out = tmp_path / "flagship.yaml"
    written = plan_tp2_flagship(out, corpus, tmp_path / "flagship")
    batch = written["batch"]["batch_tokens"]
    shorten(written, out, 3 * batch)
    train(out, 2)
    final = json.loads((tmp_path / "flagship" / "final.json").read_text())
    assert final["status"] == "completed" and 2 * batch < final["tokens"] <= 3 * batch  # steps of the batch ramp
    assert final["val_loss"] < math.log(256) + 0.05


def test_flagship_launch_on_cpu_nodes_starts_one_task_per_layout_process(tmp_path, corpus):
    """--gpus-per-node 0 (a CPU partition): no GPUs asked for, still the layout's 2 tasks on one node."""
    from typer.testing import CliRunner

    from workbench.cli import app

    out = tmp_path / "flagship.yaml"
    plan_tp2_flagship(out, corpus, tmp_path / "runs" / "flagship" / "tp2")
    args = ["flagship", "launch", str(out), "--gpus-per-node", "0", "--dry-run"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "#SBATCH --nodes=1\n" in result.output and "#SBATCH --ntasks-per-node=2\n" in result.output
    assert "--gpus-per-node" not in result.output.split("#!/bin/bash")[1]
    assert not (tmp_path / "runs").exists()


def slurm_is_up() -> bool:
    import shutil

    if not (os.environ.get("SLURM_CONF") and shutil.which("sbatch")):
        return False
    return subprocess.run(["sinfo"], capture_output=True, timeout=30).returncode == 0


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.skipif(not slurm_is_up(), reason="needs a running Slurm (.ci/slurm/start.sh) and SLURM_CONF")
def test_planned_tp2_flagship_through_slurm_with_two_tasks(workdir, corpus):
    """The planned TP 2 flagship, launched with `workbench flagship launch --executor slurm` as one job of
    two tasks (submitit exports the process group), trains the losses of the same config under torchrun."""
    from typer.testing import CliRunner

    from workbench.cli import app

    out = workdir / "flagship.yaml"
    run_dir = workdir / "runs" / "flagship" / "tp2"
    written = plan_tp2_flagship(out, corpus, run_dir)
    ramp = [step["batch_tokens"] for step in written["batch"]["ramp"]]
    shorten(written, out, ramp[0] + ramp[1])  # two steps of the batch ramp
    args = ["flagship", "launch", str(out), "--executor", "slurm", "--gpus-per-node", "0", "--timeout-min", "10"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and "as Slurm job" in result.output, result.output
    assert "(2 tasks per node" in result.output
    job = result.output.split("Slurm job ")[1].split(";")[0]
    logs = run_dir.parent / ".submitit" / job
    deadline = time.time() + 400
    while not (run_dir / "final.json").is_file() and time.time() < deadline:
        time.sleep(2)
    why = subprocess.run(["sacct", "-j", job], capture_output=True, text=True).stdout
    why += "".join(f.read_text()[-2000:] for f in sorted(logs.glob("*_log.err")))
    final = json.loads((run_dir / "final.json").read_text())
    assert final["status"] == "completed", why
    assert sorted(f.name for f in logs.glob("*_log.out")) == [f"{job}_0_log.out", f"{job}_1_log.out"], why
    # the same config trained here by torchrun, 2 processes
    written["run_dir"] = str(workdir / "local")
    local = workdir / "local.yaml"
    local.write_text(yaml.safe_dump(written))
    train(local, 2)
    got, want = losses(run_dir), losses(workdir / "local")
    assert sorted(got) == sorted(want) == [1, 2]
    for step in want:
        assert got[step] == pytest.approx(want[step], abs=1e-4)
    assert final["val_loss"] == pytest.approx(val_loss(workdir / "local"), abs=1e-4)
