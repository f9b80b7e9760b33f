"""The trainer at scale, checked on CPU: FSDP2's bf16 mixed-precision policy (hooks read the dtypes),
torch.compile through activation checkpointing (dynamo's counters and the profiler's compiled regions),
bf16 layouts against one bf16 process, pipeline configs refused before they run (and never written by
`workbench plan`), checkpoints each rank hashes alone (sha256 calls counted per rank), and the host read
only at logging steps."""

import collections
import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from test_parallel import BATCH_TOKENS, env, free_port, losses, train, val_loss, write_config

from workbench.core.configfile import parse_model
from workbench.core.errors import WorkbenchError
from workbench.fit.laws import builtin_law
from workbench.plan.hardware import resolve_gpu
from workbench.plan.planner import flagship_config, make_plan
from workbench.train.config import TrainConfig, eval_pipeline_microbatches

CLI = [sys.executable, "-m", "workbench.cli"]


@pytest.fixture(scope="module")
def corpus():
    from workbench.data.prepare import ensure_default_corpus

    return str(ensure_default_corpus())


def torchrun(script: Path, nproc: int, *args: str) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1"]
    cmd += [f"--master_port={free_port()}", str(script), *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env())
    assert result.returncode == 0, result.stderr[-3000:]


# ------------------------------------------------------------------ mixed precision
PRECISION_PROBE = """
import json, os, sys
import torch
from torch.distributed.fsdp import FSDPModule
from torch.distributed.fsdp._fully_shard._fsdp_collectives import DefaultAllGather, DefaultReduceScatter
from workbench.model.config import ModelConfig
from workbench.train.config import LayoutConfig, RuntimeConfig
from workbench.cli import exit_now
from workbench.train.parallel import distributed, parallelize

seen = {"weights": set(), "blocks_out": set(), "all_gather": set(), "reduce_scatter": set()}

class Gather(DefaultAllGather):
    def __call__(self, output_tensor, input_tensor, group, async_op=False):
        seen["all_gather"].add(str(input_tensor.dtype))
        return super().__call__(output_tensor, input_tensor, group, async_op)

class Reduce(DefaultReduceScatter):
    def __call__(self, output_tensor, input_tensor, group, op, async_op=False):
        seen["reduce_scatter"].add(str(input_tensor.dtype))
        return super().__call__(output_tensor, input_tensor, group, op, async_op)

d = distributed.setup("cpu", group=True)
cfg = ModelConfig(n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, ffn_dim=64, vocab_size=256)
policy = distributed.mixed_precision_policy(RuntimeConfig(dtype=sys.argv[1]), "cpu")
par = parallelize.build(cfg, LayoutConfig(dp_shard=2), seq_len=16, device=d.device, seed=0, mp_policy=policy)
model = par.parts[0]
units = sorted(name for name, m in model.named_modules() if isinstance(m, FSDPModule))
for m in model.modules():
    if isinstance(m, FSDPModule):
        m.set_custom_all_gather(Gather())
        m.set_custom_reduce_scatter(Reduce())
    if list(m.parameters(recurse=False)):
        m.register_forward_pre_hook(lambda m, a: seen["weights"].update(str(p.dtype) for p in m.parameters(False)))
for layer in model.layers:
    layer.register_forward_hook(lambda m, a, out: seen["blocks_out"].add(str(out.dtype)))
tokens = torch.randint(0, 256, (2, 17), generator=torch.Generator().manual_seed(d.rank))
parallelize.forward_backward(par, [tokens], 0.5)
out = {k: sorted(v) for k, v in seen.items()} | {"units": units}
out["master"] = sorted({str(p.dtype) for p in model.parameters()} | {str(p.grad.dtype) for p in model.parameters()})
with open(os.path.join(sys.argv[2], f"rank{d.rank}.json"), "w") as f:
    json.dump(out, f)
distributed.teardown(d)
exit_now(0)  # as `workbench train` leaves a launched worker: no interpreter finalization (see workbench.cli)
"""


@pytest.mark.parametrize("dtype, compute", [("bf16", "torch.bfloat16"), ("fp32", "torch.float32")])
def test_fsdp_units_compute_in_the_policy_dtype_and_reduce_in_fp32(tmp_path, dtype, compute):
    """The trainer's FSDP2 units (embedding, each block, norm + output, root) under its policy: weights and
    all-gathers in bf16 during forward, block outputs (the residual stream) bf16, gradients reduce-scattered
    in fp32 into fp32 master weights and gradients; fp32 mode casts nothing."""
    script = tmp_path / "probe.py"
    script.write_text(PRECISION_PROBE)
    torchrun(script, 2, dtype, str(tmp_path))
    for rank in (0, 1):
        seen = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert seen["units"] == ["", "layers.0", "layers.1", "norm", "output", "tok_embeddings"]
        assert seen["weights"] == seen["all_gather"] == seen["blocks_out"] == [compute]
        assert seen["reduce_scatter"] == seen["master"] == ["torch.float32"]


@pytest.mark.slow
def test_bf16_layouts_stay_near_one_bf16_process(tmp_path, corpus):
    """bf16 (FSDP2's policy) under FSDP 2 and TP 2 against one bf16 process, 20 steps: within 1e-2."""
    bf16 = {"runtime": {"threads": 1, "device": "cpu", "dtype": "bf16"}}
    train(write_config(tmp_path, corpus, "one", {}, **bf16), 1)
    one = losses(tmp_path / "one")
    for name, layout in [("fsdp", {"dp_shard": 2}), ("tp", {"tp": 2})]:
        train(write_config(tmp_path, corpus, name, layout, **bf16), 2)
        got = losses(tmp_path / name)
        assert sorted(got) == sorted(one) == list(range(1, 21))
        assert max(abs(got[s] - one[s]) for s in one) < 1e-2
        assert val_loss(tmp_path / name) == pytest.approx(val_loss(tmp_path / "one"), abs=1e-2)
    assert one[20] < one[1] - 0.5  # it learned in bf16


# ------------------------------------------------------------------ compile through activation checkpointing
@pytest.mark.parametrize("mode", ["selective", "full"])
def test_compile_traces_every_checkpointed_block(mode):
    """apply_checkpointing(compile=True) compiles the function that calls `checkpoint`: dynamo captures a
    frame without graph breaks, every block's forward and backward run compiled code, the recomputed
    region included, and the gradients are eager's."""
    from torch._dynamo.utils import counters
    from torch.profiler import profile

    from workbench.model.config import ModelConfig
    from workbench.model.transformer import Transformer
    from workbench.train.parallel.parallelize import apply_checkpointing

    cfg = ModelConfig(n_layers=3, d_model=32, n_heads=4, n_kv_heads=2, ffn_dim=64, vocab_size=256)
    torch.manual_seed(0)
    eager = Transformer(cfg, max_seq_len=16)
    tokens = torch.randint(0, 256, (2, 17))
    eager(tokens[:, :-1], tokens[:, 1:]).backward()
    model = copy.deepcopy(eager)
    model.zero_grad()
    apply_checkpointing(model, mode, compile=True)
    torch._dynamo.reset()
    counters.clear()
    with profile() as prof:
        model(tokens[:, :-1], tokens[:, 1:]).backward()
    assert counters["frames"]["ok"] >= 1 and counters["stats"]["unique_graphs"] >= 1
    assert not counters["graph_break"] and not counters["frames"].get("skipped")
    regions = collections.Counter(e.name for e in prof.events())
    compiled = sum(n for name, n in regions.items() if name.startswith("Torch-Compiled Region"))
    assert compiled == cfg.n_layers and regions["CompiledFunctionBackward"] == cfg.n_layers
    for a, b in zip(eager.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6)


def test_selective_policy_saves_every_other_matmul_attention_and_collectives():
    """torchtitan's choice: the 1st, 3rd, ... matmul of a block's forward (counted apart in the recompute),
    the attention and the collectives' outputs are saved; the rest is recomputed."""
    from torch.utils.checkpoint import CheckpointPolicy

    from workbench.train.parallel.parallelize import selective_policy

    class Ctx:
        is_recompute = False

    policy, ctx, ops = selective_policy(), Ctx(), torch.ops
    mm = [policy(ctx, ops.aten.mm.default) for _ in range(7)]  # wq wk wv wo w1 w3 w2
    save, recompute = CheckpointPolicy.MUST_SAVE, CheckpointPolicy.PREFER_RECOMPUTE
    assert mm == [save, recompute, save, recompute, save, recompute, save]
    assert policy(ctx, ops.aten._scaled_dot_product_flash_attention_for_cpu.default) == save
    assert policy(ctx, ops._c10d_functional.reduce_scatter_tensor.default) == save
    assert policy(ctx, ops._c10d_functional.all_gather_into_tensor.default) == save
    assert policy(ctx, ops.aten.silu.default) == policy(ctx, ops.aten.mul.Tensor) == recompute
    ctx.is_recompute = True
    assert policy(ctx, ops.aten.mm.default) == save  # the recompute counts from 1 again


# ------------------------------------------------------------------ pipeline configs checked before they run
def config_dict(corpus: str, layout: dict, batch_tokens: int = BATCH_TOKENS, batch_seqs: int = 4, **more) -> dict:
    return {
        "run_dir": "/nonexistent/run",
        "model": {"n_layers": 4, "d_model": 32, "n_heads": 4, "n_kv_heads": 2, "ffn_dim": 64, "vocab_size": 256},
        "data": {"sources": [{"path": corpus}], "seq_len": 32},
        "optim": {"lr_peak": 3e-3},
        "batch": {"batch_tokens": batch_tokens, "micro_batch": 2, **more},
        "stop": {"tokens": 20 * batch_tokens},
        "eval": {"batches": 2, "batch_seqs": batch_seqs},
        "layout": layout,
    }


@pytest.mark.parametrize(
    "layout, batch_tokens, batch_seqs, ramp, words",
    [
        # 8 sequences / micro_batch 2 / 4 replicas = 1 micro-batch per replica, and 1F1B over pp 2 needs 2
        ({"pp": 2, "dp_shard": 4}, 256, 4, [], "batch.batch_tokens 256 gives each data-parallel replica 1 "),
        ({"pp": 2, "dp_shard": 4}, 256, 4, [], "needs at least 2; nearest valid batch.batch_tokens: 512."),
        ({"pp": 2}, 512, 4, [{"after_tokens": 0, "batch_tokens": 64}], "nearest valid batch.ramp.0.batch_tokens: 128"),
        # interleaved 1F1B over pp 2: 5 micro-batches are not a multiple of its 2 rounds
        (
            {"pp": 2, "pp_schedule": "interleaved_1f1b", "pp_stages_per_rank": 2},
            320,
            4,
            [],
            "valid batch.batch_tokens: 256 or 384",
        ),
        # an evaluation batch of 1 sequence cannot feed 2 pipeline stages
        ({"pp": 2}, 256, 1, [], "eval.batch_seqs 1 cannot be cut into equal pipeline micro-batches"),
        ({"pp": 4}, 512, 3, [], "nearest valid eval.batch_seqs: 4"),
    ],
)
def test_pipeline_configs_that_cannot_run_fail_at_config_time(corpus, layout, batch_tokens, batch_seqs, ramp, words):
    data = config_dict(corpus, layout, batch_tokens, batch_seqs, ramp=ramp)
    with pytest.raises(WorkbenchError) as err:
        parse_model(TrainConfig, data, "flagship.yaml")
    assert words in str(err.value) and "\n" not in str(err.value)


def test_a_pipeline_config_is_one_line_from_the_cli(tmp_path, corpus):
    path = tmp_path / "pp.yaml"
    path.write_text(yaml.safe_dump(config_dict(corpus, {"pp": 2}, 256, 1)))
    result = subprocess.run([*CLI, "train", str(path)], capture_output=True, text=True, env=env(), timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "eval.batch_seqs 1 cannot be cut" in lines[0] and "pp.yaml" in lines[0]


def test_evaluation_micro_batches_follow_the_schedule(corpus):
    layout = parse_model(TrainConfig, config_dict(corpus, {"pp": 2}), "x").layout
    assert eval_pipeline_microbatches(3, 2, layout) == 3  # the odd batch that crashed after training: 3 of 1
    assert eval_pipeline_microbatches(16, 2, layout) == 8  # micro-batches no bigger than batch.micro_batch
    assert eval_pipeline_microbatches(1, 2, layout) is None
    interleaved = {"pp": 4, "pp_schedule": "interleaved_1f1b", "pp_stages_per_rank": 1}
    layout = parse_model(TrainConfig, config_dict(corpus, interleaved, 512, 16), "x").layout
    assert eval_pipeline_microbatches(9, 1, layout) == 3  # 9 of 1: not a multiple of its 2 rounds; 3 of 3 run
    assert eval_pipeline_microbatches(10, 1, layout) == 10


def test_pp2_with_an_odd_evaluation_batch_finishes(tmp_path, corpus):
    """The issue's run: PP 2 and eval.batch_seqs 3 crashed in the final evaluation after training; now its
    evaluations run 3 micro-batches of one sequence."""
    short = {
        "stop": {"tokens": 3 * BATCH_TOKENS},
        "eval": {"every_tokens": 2 * BATCH_TOKENS, "batches": 1, "batch_seqs": 3},
    }
    train(write_config(tmp_path, corpus, "pp", {"pp": 2}, **short), 2)
    final = json.loads((tmp_path / "pp" / "final.json").read_text())
    assert final["status"] == "completed" and final["steps"] == 3 and final["val_loss"] < 6


def test_interleaved_1f1b_runs_fewer_micro_batches_than_stages(tmp_path, corpus):
    """Why the check lets interleaved 1F1B through with fewer micro-batches than stages (Llama 3's first
    batches need it): PP 2 x 2 stages a rank on one micro-batch a step trains one process's losses."""
    short = {"batch": {"batch_tokens": 64, "micro_batch": 2}, "stop": {"tokens": 6 * 64}}
    short["eval"] = {"batches": 1, "batch_seqs": 2}
    short["schedule"] = {"kind": "cosine", "warmup_tokens": 2 * 64}  # within the run's 6 steps
    train(write_config(tmp_path, corpus, "one", {}, **short), 1)
    interleaved = {"pp": 2, "pp_schedule": "interleaved_1f1b", "pp_stages_per_rank": 2}
    train(write_config(tmp_path, corpus, "pp", interleaved, **short), 2)
    one, pp = losses(tmp_path / "one"), losses(tmp_path / "pp")
    assert sorted(pp) == sorted(one) == list(range(1, 7))
    assert max(abs(pp[s] - one[s]) for s in one) < 1e-5


def plan_for(budget: float, gpus: int | None, seq_len: int = 8192, gpu_memory_gb: float | None = None):
    law = builtin_law("chinchilla", budget)
    gpu = resolve_gpu("h100", gpu_memory_gb)
    return make_plan(law, budget, gpu=gpu, mfu=0.4, seq_len=seq_len, vocab_size=128256, gpus=gpus)


@pytest.mark.parametrize(
    "budget, gpus, seq_len",
    [
        *((1e24, gpus, 8192) for gpus in (16, 256, 1024, 16384, None)),
        *((3.8e25, gpus, 8192) for gpus in (256, 1024, 16384, None)),
        (3.8e25, None, 2048),  # was TP 8 x PP 25 x DP 512 with 1F1B: 16 micro-batches a replica for 25 stages
        (1e26, None, 8192),  # was PP 23 with 1F1B and 4 micro-batches a replica in the ramp's first batch
    ],
)
def test_plan_never_writes_a_pipeline_config_that_fails_the_check(budget, gpus, seq_len):
    """Every batch of the planned ramp gives each replica micro-batches its schedule runs, and the evaluation
    batch can be cut for the pipeline: the written config loads."""
    from workbench.train.microbatches import pipeline_microbatches_ok

    plan = plan_for(budget, gpus, seq_len)
    config = flagship_config(plan, "/data", "/runs/flagship", "flagship")  # TrainConfig validates
    again = parse_model(TrainConfig, config.model_dump(mode="json"), "flagship.yaml")
    lay, micro = again.layout, again.batch.micro_batch
    replicas, interleaved = lay.dp_shard * lay.dp_replicate, lay.pp_schedule != "1f1b"
    for _, tokens in again.batch.all_batches():
        assert pipeline_microbatches_ok(tokens // seq_len // micro // replicas, lay.pp, interleaved)
    assert eval_pipeline_microbatches(again.eval.batch_seqs, micro, lay) is not None


def test_a_1f1b_plan_keeps_a_micro_batch_per_stage_in_the_first_batch_of_the_ramp():
    """1e24 FLOPs on 512 H100s cut to 60 GB (`--gpu-memory-gb 60`): TP 8 x PP 4 with 1F1B (on 16 full H100s the
    plan is FSDP without a pipeline now); the ramp's first batch still gives each replica at least PP
    micro-batches."""
    plan = plan_for(1e24, 512, gpu_memory_gb=60)
    assert plan.layout.pp > 1 and plan.layout.virtual_stages == 1  # so the test above checks a 1F1B pipeline
    first = min(tokens for _, tokens in plan.schedule.ramp) // 8192 // plan.layout.micro_batch // plan.layout.dp
    assert first >= plan.layout.pp


# ------------------------------------------------------------------ checkpoints each rank hashes alone
HASH_PROBE = """
import json, os, sys
from pathlib import Path
import torch.distributed.checkpoint as dcp
from workbench.cli import exit_now
from workbench.train import checkpoint, trainer

log = open(Path(sys.argv[2]) / f"rank{os.environ['RANK']}.jsonl", "a")
real_sha256, real_read = checkpoint._sha256, dcp.FileSystemReader.read_data

def sha256(path):
    log.write(json.dumps({"hash": str(path)}) + "\\n")
    log.flush()
    return real_sha256(path)

def read_data(self, plan, planner):
    for name in sorted({self.storage_data[item.storage_index].relative_path for item in plan.items}):
        log.write(json.dumps({"read": str(Path(self.path) / name)}) + "\\n")
    return real_read(self, plan, planner)

checkpoint._sha256, dcp.FileSystemReader.read_data = sha256, read_data
trainer.main(sys.argv[1])
log.close()
exit_now(0)
"""


def in_checkpoint(path: str) -> str:
    """A file's name inside its checkpoint folder (step_N or its temp folder .tmp-step_N-...)."""
    parts = Path(path).parts
    top = max(i for i, part in enumerate(parts) if part.startswith(("step_", ".tmp-step_")))
    return "/".join(parts[top + 1 :])


def hashes_by_rank(logs: Path, world: int, kind: str = "hash") -> list[list[str]]:
    out = []
    for rank in range(world):
        rows = [json.loads(x) for x in (logs / f"rank{rank}.jsonl").read_text().splitlines()]
        out.append([r[kind] for r in rows if kind in r])
    return out


def test_tp2_dp2_ranks_hash_only_what_they_wrote_or_read(tmp_path, corpus):
    """TP 2 x DP 2, 4 processes: on save each rank hashes its own shard file (rank 0 also .metadata and the
    trainer's files), once, and the last step is written once; on resume each rank hashes the small files,
    .metadata and exactly the shard files its DCP load plan reads (its own, and those of the lowest ranks
    holding the replicated entries), each once; rank 0 hashes nothing more."""
    script = tmp_path / "probe.py"
    script.write_text(HASH_PROBE)
    layout, ckpt = {"tp": 2, "dp_shard": 2}, {"checkpoint": {"every_tokens": 2 * BATCH_TOKENS, "keep": 2}}
    first = write_config(tmp_path, corpus, "first", layout, stop={"tokens": 2 * BATCH_TOKENS}, **ckpt)
    (tmp_path / "save").mkdir()
    torchrun(script, 4, str(first), str(tmp_path / "save"))
    small = {"state.pt", "trainer.json", "meta.json", "sharded/.metadata"}
    for rank, hashed in enumerate(hashes_by_rank(tmp_path / "save", 4)):
        assert all(".tmp-step_00000002-" in p for p in hashed), hashed  # one save: step 2, written once
        mine = {f"sharded/__{rank}_0.distcp"} | (small if rank == 0 else set())
        assert sorted(map(in_checkpoint, hashed)) == sorted(mine), (rank, hashed)
    # resume the finished step-2 checkpoint in a new run of 3 steps
    run = tmp_path / "second"
    shutil.copytree(tmp_path / "first" / "ckpt", run / "ckpt")
    second = write_config(tmp_path, corpus, "second", layout, stop={"tokens": 3 * BATCH_TOKENS}, **ckpt)
    (tmp_path / "load").mkdir()
    torchrun(script, 4, str(second), str(tmp_path / "load"))
    step2 = str(run / "ckpt" / "step_00000002")
    reads = hashes_by_rank(tmp_path / "load", 4, "read")
    for rank, hashed in enumerate(hashes_by_rank(tmp_path / "load", 4)):
        loaded = [p for p in hashed if p.startswith(step2)]
        assert len(loaded) == len(set(loaded)), loaded  # nothing hashed twice
        names = set(map(in_checkpoint, loaded))
        shards = {n for n in names if n.endswith(".distcp")}
        assert names - shards == small
        assert shards == set(map(in_checkpoint, reads[rank]))  # what its load plan reads
        # its own file, and for the entries replicated over TP (stored once, by the lowest rank holding them) its
        # TP group's first rank's file and rank 0's
        holders = {rank, rank - rank % 2, 0}
        assert f"sharded/__{rank}_0.distcp" in shards <= {f"sharded/__{r}_0.distcp" for r in holders}
    assert sorted(losses(run)) == [3]


# ------------------------------------------------------------------ the host reads only at logging steps
def test_the_host_reads_losses_only_at_logging_steps(tmp_path, corpus, monkeypatch):
    """20 steps, a line every 6, an evaluation every 10: the host syncs at steps 6, 10, 12, 18 and the last
    (20), and the metrics still hold every step's loss and gradient norm."""
    from workbench.train import trainer

    synced = []
    real = trainer.Trainer._read

    def read(self, steps):
        synced.append(steps[-1].row["step"])
        return real(self, steps)

    monkeypatch.setattr(trainer.Trainer, "_read", read)
    sections = {"runtime": {"threads": 1, "device": "cpu", "dtype": "fp32", "log_every_steps": 6}}
    sections["eval"] = {"every_tokens": 10 * BATCH_TOKENS, "batches": 1, "batch_seqs": 4}
    trainer.main(write_config(tmp_path, corpus, "run", None, **sections))
    assert synced == [6, 10, 12, 18, 20]
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "event" not in r]
    assert [r["step"] for r in steps] == list(range(1, 21))
    assert all(r["loss"] > 0 and r["grad_norm"] > 0 for r in steps)
    assert [r["step"] for r in steps if "val_loss" in r] == [10, 20]


def test_the_micro_batch_rule_of_each_schedule():
    """1F1B: at least one micro-batch per pipeline rank; interleaved 1F1B a multiple of its n // pp rounds."""
    from workbench.train.microbatches import pipeline_microbatches_ok

    assert [n for n in range(1, 13) if pipeline_microbatches_ok(n, 4, True)] == [1, 2, 3, 4, 5, 6, 7, 8, 10, 12]
    assert [n for n in range(1, 7) if pipeline_microbatches_ok(n, 4, False)] == [4, 5, 6]
    assert all(pipeline_microbatches_ok(n, 1, False) for n in range(1, 9))
