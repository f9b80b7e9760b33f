"""The analytical memory model (workbench.plan.memory_model) against the trainer's own step measured on fake tensors
(workbench.train.parallel.memory_scale), and the flagship plan's layout measured against its headroom."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from workbench.model.shapes import PRESETS, ModelShape
from workbench.plan import interleaved
from workbench.plan.hardware import resolve_gpu
from workbench.plan.layout_cost import headroom
from workbench.plan.memory_model import MODEL_ERROR, Step, block_activations, layout_family, peak_memory, rank_peak
from workbench.train.parallel.memory_probe import measure
from workbench.train.parallel.memory_scale import MeasureRequest, combine, measure_layout, specs

SEQ = 8192
# (shape, tp, pp, dp, recompute, chunks a rank, micro-batches a replica, blocks per chunk measured): FSDP only;
# TP 8 x FSDP; TP 4 and 8 x PP x FSDP; none, selective and full recompute; 1F1B and interleaved (m = PP and 2 PP)
LAYOUTS = [
    ("8b", 1, 1, 8, "none", 1, 2, (2, 4)),
    ("8b", 1, 1, 8, "selective", 1, 2, (2, 4)),
    ("8b", 1, 1, 8, "full", 1, 2, (2, 4)),
    ("8b", 1, 1, 64, "full", 1, 1, (2, 4)),
    ("8b", 8, 1, 4, "selective", 1, 2, (2, 4)),
    ("70b", 8, 1, 4, "none", 1, 2, (2, 4)),
    ("70b", 8, 1, 4, "selective", 1, 2, (2, 4)),
    ("70b", 8, 1, 16, "full", 1, 2, (2, 4)),
    ("70b", 8, 4, 4, "full", 1, 8, (1, 2)),
    ("70b", 8, 4, 4, "full", 2, 8, (1, 2)),
    ("70b", 8, 4, 4, "full", 4, 4, (1, 2)),  # interleaved, one round (m = PP): chunks gathered and reduced in turn
    ("70b", 4, 4, 4, "full", 2, 4, (1, 2)),  # TP 4: the embedding's whole-vocabulary gradient
    ("405b", 8, 16, 4, "none", 1, 16, (1, 2)),
    ("405b", 8, 16, 4, "full", 1, 16, (1, 2)),
]


def _request(shape, tp, pp, dp, recompute, virtual, m, depths) -> MeasureRequest:
    return MeasureRequest(PRESETS[shape], SEQ, 1, tp, pp, dp, recompute, virtual, m, depths)


@pytest.mark.slow
def test_model_agrees_with_the_measured_step_within_10_percent():
    """Every measured rank of 14 layouts (8B, 70B, 405B at sequence 8192): the model within 10% of the measured
    peak, and within the error the plan's headroom allows for the family. One child process measures all
    (about 4 minutes on 2 cores)."""
    requests = [_request(*row) for row in LAYOUTS]
    pairs = [(req, rank, spec) for req in requests for rank, spec in specs(req)]
    probes = measure([spec for _, _, spec in pairs])
    worst = {}
    for req in requests:
        step = Step(req.shape, SEQ, 1, req.tp, req.pp, req.dp, req.recompute, req.virtual, req.micro_batches)
        for rank in req.ranks():
            mine = [p for (r, k, _), p in zip(pairs, probes, strict=True) if r is req and k == rank]
            measured = combine(req, rank, mine)
            error = rank_peak(step, rank).total / measured.peak_bytes - 1
            assert abs(error) < 0.10, (req, rank, error)
            family = layout_family(req.tp, req.pp)
            worst[family] = max(worst.get(family, 0.0), abs(error))
    assert set(worst) == set(MODEL_ERROR)
    for family, error in worst.items():
        assert error <= MODEL_ERROR[family], (family, error)


@pytest.mark.slow
def test_the_flagship_plan_fits_its_headroom_when_measured(tmp_path):
    """The plan at 3.8e25 FLOPs on 16384 H100s: its layout, measured from the trainer's code (reduced depth,
    scaled per window), peaks under 90% of the card and within the model error the plan allowed for."""
    args = ["--compute", "3.8e25", "--law", "llama3", "--gpus", "16384", "--gpu", "h100", "--seq-len", "8192"]
    done = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "plan", *args, "--json"], capture_output=True, text=True, check=True
    )
    plan = json.loads(done.stdout)
    lay, s = plan["layout"], plan["shape"]
    shape = ModelShape(
        s["name"], s["n_layers"], s["d_model"], s["n_heads"], s["n_kv_heads"], s["ffn_dim"], s["vocab_size"]
    )
    virtual = lay["virtual_stages"]
    req = MeasureRequest(
        shape, SEQ, lay["micro_batch"], lay["tp"], lay["pp"], lay["dp"], lay["recompute"], virtual, lay["grad_accum"]
    )
    measured = max(r.peak_bytes for r in measure_layout(req))
    card = resolve_gpu("h100").memory_bytes
    spare = headroom(layout_family(req.tp, req.pp))
    assert lay["memory_per_gpu_gb"]["headroom"] == pytest.approx(spare)
    assert lay["memory_per_gpu_gb"]["limit"] == pytest.approx((1 - spare) * card / 1e9)
    modelled = lay["memory_per_gpu_gb"]["total"] * 1e9
    assert abs(modelled / measured - 1) <= MODEL_ERROR[layout_family(req.tp, req.pp)]
    assert measured <= 0.9 * card


def test_interleaved_order_is_torchs():
    """The model's interleaved 1F1B order (workbench.plan.interleaved.actions) is the one torch's schedule builds,
    for every rank of PP 2-8, 2-15 chunks and 1-4 rounds of micro-batches (and fewer than PP)."""
    from types import SimpleNamespace

    from torch.distributed.pipelining.schedules import ScheduleInterleaved1F1B

    for pp, virtual, m in [(2, 2, 2), (4, 4, 4), (4, 2, 8), (4, 3, 16), (8, 15, 8), (8, 15, 4), (8, 4, 24)]:
        for rank in range(pp):
            fake = SimpleNamespace(
                n_local_stages=virtual, microbatches_per_round=interleaved.round_size(pp, m), pp_group_size=pp
            )
            fake._n_microbatches = m
            ops = [a for a in ScheduleInterleaved1F1B._calculate_single_rank_operations(fake, rank) if a is not None]
            torch_order = [("F" if a.computation_type.value == "F" else "B", a.stage_index // pp) for a in ops]
            assert torch_order == interleaved.actions(pp, virtual, m, rank), (pp, virtual, m, rank)


def test_interleaved_one_round_gathers_three_chunks_and_reduces_each_in_turn():
    """PP 8 x 15 chunks, m = 8 (the 3.8e25 plan's shape of schedule): rank 0 runs all 120 forwards first; at
    its first backward three chunks are gathered and none has gradients; at chunk 13's first backward chunk 14
    is done (reduced) and 8 micro-batches of it are no longer held."""
    moments = interleaved.backward_moments(8, 15, 8, 0)
    assert interleaved.warmup_forwards(8, 15, 8, 0) == 120 and len(moments) == 120
    first = moments[0]
    assert first.chunk == 14 and first.gathered == {14, 13, 12} and sum(first.done) == 0 and sum(first.held) == 120
    later = moments[8]
    assert later.chunk == 13 and later.done[14] == 8 and later.held[14] == 0 and later.gathered == {13, 12, 11}


def _states(pp: int, virtual: int, m: int, rank: int) -> set:
    """A rank's distinct backward states: chunk, first micro-batch, chunks gathered, each chunk's accumulators
    (none, unsharded, reduced) and micro-batches held: everything a moment's memory is made of."""
    chunk, first, gathered, done, held = interleaved.moment_arrays(pp, virtual, m, rank)
    grads = np.where(done == m, 2, np.where(done > 0, 1, 0))
    rows = zip(chunk.tolist(), first.tolist(), gathered.tolist(), grads.tolist(), held.tolist(), strict=True)
    return {(c, f, tuple(g), tuple(a), tuple(h)) for c, f, g, a, h in rows}


def test_a_long_interleaved_step_is_costed_on_four_rounds_with_the_same_states():
    """The plan's search costs interleaved steps of many rounds on 4 of them (a CPU sweep's flagship at seq_len
    64 has thousands of micro-batches: the full schedule took 8 minutes and 8 GB): every state recurs."""
    checked = 0
    for pp in (2, 3, 4, 8):
        for virtual in (2, 3, 4, 6, 15):
            for m in range(pp, 14 * pp + 1):
                short = interleaved.simulated_micro_batches(pp, m)
                if short == m:
                    continue
                assert short < m and interleaved.round_size(pp, short) == interleaved.round_size(pp, m)
                for rank in range(pp):
                    assert _states(pp, virtual, m, rank) == _states(pp, virtual, short, rank), (pp, virtual, m, rank)
                    checked += 1
    assert checked > 500
    assert interleaved.simulated_micro_batches(4, 16384) == 16


def test_activation_terms_by_hand():
    """Per token and block, 8B without TP: everything autograd keeps (178312 B), the selective policy's saves
    (63616 B), the block input under full recompute (8192 B)."""
    s = PRESETS["8b"]
    assert block_activations(s, 1, "none") == 178312
    assert block_activations(s, 1, "selective") == 63616
    assert block_activations(s, 1, "full") == 2 * 4096


def test_pipeline_ranks_hold_unsharded_stages_and_receive_buffers():
    """Under PP each rank keeps its bf16 weights and fp32 gradients unsharded (6 B/param) whatever the DP; the
    middle ranks' receive buffers grow with the micro-batches (2 x T x 2d / TP each)."""
    shape = PRESETS["405b"]
    small = rank_peak(Step(shape, SEQ, 1, 8, 16, 4, "full", 1, 16), 8)
    large = rank_peak(Step(shape, SEQ, 1, 8, 16, 64, "full", 1, 16), 8)
    assert small.weights - large.weights == pytest.approx(4 * (small.weights / (4 / 4 + 2)) * (1 / 4 - 1 / 64))
    more = rank_peak(Step(shape, SEQ, 1, 8, 16, 4, "full", 1, 32), 8)
    assert more.buffers - small.buffers == pytest.approx(16 * 2 * SEQ * 2 * shape.d_model / 8)
    flat = peak_memory(Step(shape, SEQ, 1, 8, 1, 512, "full", 1, 4))
    assert flat.grads == pytest.approx(4 * flat.optimizer / 8)  # sharded fp32 gradients, from micro-batch 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shape", "8b", "--tp", "3"], "TP 3 does not divide the 32 heads"),
        (["--shape", "8b", "--pp", "40"], "more pipeline stages than the 32 layers"),
        (["--shape", "8b", "--dp", "4", "--micro-batch", "2", "--batch", "12"], "--batch 12 is not --dp 4"),
        (["--shape", "70b", "--pp", "8", "--micro-batches", "4"], "cannot run 1f1b over PP 8"),
    ],
)
def test_impossible_layouts_are_one_line_errors(args, message):
    done = subprocess.run([sys.executable, "-m", "workbench.cli", "memory", *args], capture_output=True, text=True)
    assert done.returncode == 1
    assert message in done.stderr and "Traceback" not in done.stderr


def test_memory_command_json_breakdown_and_step_time():
    done = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "memory", "--shape", "70b", "--tp", "8", "--dp", "32", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    out = json.loads(done.stdout)
    model = out["model"]
    parts = ("weights", "gradients", "optimizer", "activations", "logits", "buffers")
    assert model["total"] == pytest.approx(sum(model[k] for k in parts))
    assert model["logits"] == pytest.approx(16 * SEQ * 128256 / 8)
    assert out["step_time_s"] > 0 and out["headroom"]["family"] == "TP x FSDP"
