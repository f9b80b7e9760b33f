"""The costed layout model against Llama 3's Table 4 (405B on 8,192 and 16,384 H100s), and its rules."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from workbench.model import flops
from workbench.model.shapes import PRESETS
from workbench.plan.layout_cost import (
    ACHIEVABLE_FRACTION,
    GPUS,
    LLAMA3_TABLE4,
    best_at,
    calibrate,
    candidates_table,
    choose_layout,
    evaluate,
)

SHAPE, SEQ, BATCH_SEQS = PRESETS["405b"], 8192, 2048  # Table 4: seq 8,192, 16M tokens per batch
H100 = GPUS["h100"]
README = Path(__file__).resolve().parents[1] / "README.md"


def row(gpus: int) -> dict:
    return next(r for r in LLAMA3_TABLE4 if r["gpus"] == gpus)


def test_calibrated_on_the_8192_gpu_row():
    r = row(8192)
    fraction = calibrate(SHAPE, SEQ, BATCH_SEQS, H100, r["tp"], r["pp"], r["dp"], r["mfu"])
    assert fraction == pytest.approx(ACHIEVABLE_FRACTION, abs=0.001)  # the shipped constant is this calibration
    assert 0.5 < fraction < 0.75  # 490-740 TFLOP/s: what bf16 GEMMs reach on an H100, not more
    at = best_at(SHAPE, SEQ, BATCH_SEQS, H100, r["tp"], r["pp"], r["dp"])
    assert at.mfu == pytest.approx(0.43, abs=0.002)
    assert at.fits and at.memory.total <= 0.9 * 80e9


def test_predicts_the_16384_gpu_row_within_3_points():
    r = row(16384)
    at = best_at(SHAPE, SEQ, BATCH_SEQS, H100, r["tp"], r["pp"], r["dp"])
    assert abs(at.mfu - r["mfu"]) <= 0.03, at.mfu
    assert at.mfu < best_at(SHAPE, SEQ, BATCH_SEQS, H100, 8, 16, 64).mfu  # twice the GPUs: a larger bubble
    assert at.bubble_fraction > best_at(SHAPE, SEQ, BATCH_SEQS, H100, 8, 16, 64).bubble_fraction


def test_chooses_tp8_pp16_or_a_layout_at_least_5_percent_faster():
    layout = choose_layout(SHAPE, SEQ, 1, BATCH_SEQS, H100, 16384, fixed_gpus=True)
    published = best_at(SHAPE, SEQ, BATCH_SEQS, H100, 8, 16, 128)
    assert (layout.tp, layout.pp) == (8, 16) or layout.step_time_s <= 0.95 * published.step_time_s
    assert layout.cp == 1 and layout.tp <= 8 and layout.gpus <= 16384
    assert BATCH_SEQS % (layout.dp * layout.micro_batch) == 0
    # the table in the README is this layout's table
    text = README.read_text()
    block = re.search(r"<!-- layout-table:start -->\n(.*?)\n<!-- layout-table:end -->", text, re.S)
    assert block and block.group(1).strip() == candidates_table(layout)


def test_pipeline_bubble_and_costs():
    gpu = replace(H100, nvlink_bytes_s=1e30, network_bytes_s=1e30)  # no communication: compute and bubble only
    one = evaluate(SHAPE, SEQ, BATCH_SEQS, gpu, 8, 16, 128, 1, "selective", 1)
    assert one.grad_accum == 16 and one.schedule == "1f1b"
    assert one.bubble_fraction == pytest.approx(15 / (16 + 15), rel=0.01)
    interleaved = evaluate(SHAPE, SEQ, BATCH_SEQS, gpu, 8, 16, 128, 1, "selective", 8)
    assert interleaved.bubble_fraction == pytest.approx(15 / 8 / (16 + 15 / 8), rel=0.01)
    full = evaluate(SHAPE, SEQ, BATCH_SEQS, gpu, 8, 16, 128, 1, "full", 8)
    assert full.compute_s > 1.25 * interleaved.compute_s  # one more forward of every block
    assert full.memory.activations < interleaved.memory.activations
    flat = evaluate(PRESETS["8b"], SEQ, 512, gpu, 1, 1, 64, 1, "none", 1)
    step_flops = flops.flops_per_token(PRESETS["8b"], SEQ) * 512 * SEQ
    assert flat.bubble_fraction == 0 and flat.step_time_s == pytest.approx(flat.compute_s, rel=1e-6)
    assert flat.mfu == pytest.approx(step_flops / (flat.step_time_s * 64 * H100.peak_flops))


def test_pipeline_only_when_memory_needs_it_and_tp_within_a_node():
    small = choose_layout(PRESETS["8b"], SEQ, 1, 512, H100, 256, fixed_gpus=True)
    assert small.pp == 1 and small.tp <= 8
    big = choose_layout(PRESETS["70b"], SEQ, 1, 512, GPUS["a100"], 512, fixed_gpus=True)
    assert big.tp <= 8
    if big.pp > 1:
        flat = choose_layout(PRESETS["70b"], SEQ, 1, 512, replace(GPUS["a100"], memory_bytes=1e15), 512, True)
        assert flat.pp == 1  # with room, no pipeline
