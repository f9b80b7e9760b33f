"""The costed layout model: its rules, and the 405B preset's layout table in docs/throughput.md. How well it
predicts published runs is tests/test_throughput.py."""

from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path

import pytest

from workbench.model import flops
from workbench.model.shapes import PRESETS
from workbench.plan.hardware import GPUS
from workbench.plan.layout_cost import best_at, candidates, choose_layout, evaluate, virtual_stages
from workbench.plan.record import candidates_table
from workbench.plan.step_time import OPTIMIZER_BYTES

SHAPE, SEQ, BATCH_SEQS = PRESETS["405b"], 8192, 2048  # Llama 3's Table 4: seq 8,192, 16M tokens per batch
H100 = GPUS["h100"]
DOCS = Path(__file__).resolve().parents[1] / "docs" / "throughput.md"


def test_the_405b_preset_layout_gives_every_chunk_a_layer_and_the_docs_table_is_current():
    layout = choose_layout(SHAPE, SEQ, 1, BATCH_SEQS, H100, 16384, fixed_gpus=True)
    assert layout.tp == 8 and layout.cp == 1 and layout.gpus <= 16384
    assert BATCH_SEQS % (layout.dp * layout.micro_batch) == 0
    if layout.schedule == "interleaved":  # the trainer gives every chunk a layer: 126 layers are not 16 x 8 chunks
        assert _trainer_runs(SHAPE.n_layers, layout.pp, layout.virtual_stages)
    # the published layout, with Meta's unbalanced chunks, is within the interval of Table 4's 41%
    published = best_at(SHAPE, SEQ, BATCH_SEQS, H100, 8, 16, 128)
    assert published.mfu == pytest.approx(0.41, rel=0.1)
    block = re.search(r"<!-- layout-table:start -->\n(.*?)\n<!-- layout-table:end -->", DOCS.read_text(), re.S)
    assert block and block.group(1) == candidates_table(layout)


def _trainer_runs(layers: int, pp: int, virtual: int) -> bool:
    """The trainer's interleaved split: v divides the fullest stage's layers, every one of PP x v chunks a layer."""
    return -(-layers // pp) % virtual == 0 and pp * virtual <= layers


def test_interleaving_gives_every_chunk_a_layer_in_a_plan():
    assert virtual_stages(126, 16, 16) == [1, 2, 4]  # 8 layers on the fullest stage; 16 x 8 chunks exceed 126
    assert virtual_stages(97, 4, 4) == [1, 5]  # 25 layers on the fullest: 4 x 5 chunks of 4 or 5; 4 x 25 > 97
    assert virtual_stages(126, 16, 16, balanced=False) == [1, 2, 4, 8]  # a published run's unbalanced chunks
    assert virtual_stages(120, 8, 8) == [1, 3, 5, 15]
    assert virtual_stages(120, 8, 25) == [1]  # torch's interleaved 1F1B: 25 micro-batches are not 3 equal rounds
    assert virtual_stages(120, 8, 12) == [1, 3, 5, 15]  # one round of 12
    for c in candidates(SHAPE, SEQ, 1, BATCH_SEQS, H100, 16384, True, [7, 9, 14, 16]):
        assert c.virtual_stages == 1 or _trainer_runs(SHAPE.n_layers, c.pp, c.virtual_stages)


def test_pipeline_bubble_and_costs():
    gpu = replace(H100, nvlink_bytes_s=1e30, network_bytes_s=1e30, hbm_bytes_s=1e30)  # compute and bubble only
    one = evaluate(SHAPE, SEQ, BATCH_SEQS, gpu, 8, 14, 128, 1, "selective", 1)
    assert one.grad_accum == 16 and one.schedule == "1f1b"
    assert one.bubble_fraction == pytest.approx(13 / (16 + 13), rel=0.01)
    interleaved = evaluate(SHAPE, SEQ, BATCH_SEQS, gpu, 8, 14, 128, 1, "selective", 9)
    assert interleaved.bubble_fraction == pytest.approx(13 / 9 / (16 + 13 / 9), rel=0.01)
    full = evaluate(SHAPE, SEQ, BATCH_SEQS, gpu, 8, 14, 128, 1, "full", 9)
    assert full.compute_s > 1.25 * interleaved.compute_s  # one more forward of every block
    assert full.memory.activations < interleaved.memory.activations
    flat = evaluate(PRESETS["8b"], SEQ, 512, gpu, 1, 1, 64, 1, "none", 1)
    step_flops = flops.flops_per_token(PRESETS["8b"], SEQ) * 512 * SEQ
    assert flat.bubble_fraction == 0 and flat.step_time_s == pytest.approx(flat.compute_s, rel=1e-6)
    assert flat.mfu == pytest.approx(step_flops / (flat.step_time_s * 64 * H100.peak_flops))
    # the matmuls run at the calibrated share of the peak for this width
    matmul_s = flat.compute_s / flat.grad_accum
    assert flat.parts.matmul_flops / matmul_s == pytest.approx(H100.achievable_flops(4096), rel=1e-6)


def test_data_parallel_communication_and_the_optimizer_step():
    h100 = GPUS["h100"]
    # FSDP without a pipeline regathers every micro-batch under its compute; with one, once per step
    flat = evaluate(PRESETS["70b"], SEQ, 512, h100, 8, 1, 64, 1, "full", 1)
    assert flat.parts.dp_micro_s > 0 and flat.parts.gather_s == 0
    piped = evaluate(PRESETS["70b"], SEQ, 512, h100, 8, 2, 32, 1, "full", 1)
    assert piped.parts.dp_micro_s == 0 and piped.parts.gather_s > 0 and piped.parts.dp_overlap
    ddp = evaluate(PRESETS["70b"], SEQ, 512, h100, 8, 2, 32, 1, "full", 1, sharding="none")
    assert not ddp.parts.dp_overlap and ddp.parts.reduce_s == pytest.approx(2 * piped.parts.reduce_s, rel=0.01)
    # across nodes a DP group's members on a node share its NICs: TP 1 puts 8 of them there, TP 8 one
    wide = evaluate(PRESETS["8b"], SEQ, 512, h100, 1, 1, 64, 1, "none", 1)
    narrow = evaluate(PRESETS["8b"], SEQ, 512, h100, 8, 1, 64, 1, "none", 1)
    params = PRESETS["8b"].params_total
    assert wide.parts.dp_micro_s == pytest.approx(8 * 63 / 64 * params / (8 * h100.network_bytes_s), rel=0.01)
    assert narrow.parts.dp_micro_s == pytest.approx(8 * 63 / 64 * params / 8 / h100.network_bytes_s, rel=0.01)
    # AdamW on this GPU's shard, at HBM bandwidth
    assert wide.parts.optimizer_s == pytest.approx(params / 64 * OPTIMIZER_BYTES / h100.hbm_bytes_s, rel=0.01)
    assert ddp.parts.optimizer_s == pytest.approx(32 * piped.parts.optimizer_s)


def test_pipeline_only_when_memory_needs_it_and_tp_within_a_node():
    small = choose_layout(PRESETS["8b"], SEQ, 1, 512, H100, 256, fixed_gpus=True)
    assert small.pp == 1 and small.tp <= 8
    big = choose_layout(PRESETS["70b"], SEQ, 1, 512, GPUS["a100"], 512, fixed_gpus=True)
    assert big.tp <= 8
    if big.pp > 1:
        flat = choose_layout(PRESETS["70b"], SEQ, 1, 512, replace(GPUS["a100"], memory_bytes=1e15), 512, True)
        assert flat.pp == 1  # with room, no pipeline
    assert math.isfinite(big.step_time_s)
