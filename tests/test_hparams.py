"""Batch size and peak LR for plans: sources in order, anchors cited, leave-one-out at Llama 3 405B's scale."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from workbench.cli import app
from workbench.fit.laws import HparamLaws, PowerLaw
from workbench.plan import hparams

LLAMA3_COMMAND = ["plan", "--compute", "3.8e25", "--law", "llama3", "--gpus", "16384", "--gpu", "h100"]
LLAMA3_COMMAND += ["--seq-len", "8192", "--json"]


def test_leave_one_out_llama3_405b():
    """Without Llama 3 405B among the anchors, the rule still lands within 2x of its 16M batch and 8e-5 LR."""
    result = CliRunner().invoke(app, [*LLAMA3_COMMAND, "--leave-out-anchor", "llama3-405b"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["shape"]["n_heads"] % 8 == 0 and record["shape"]["n_kv_heads"] == 8
    assert 8e6 <= record["batch_tokens"] <= 32e6
    assert 4e-5 <= record["lr_peak"] <= 16e-5
    source = record["hparams"]
    assert source["rule"] == "anchors" and "Llama 3 405B" not in source["lr_source"]
    assert "DeepSeek LLM 67B" in source["batch_source"] and "cap" in source["batch_source"]
    assert any("extrapolated" in w for w in source["warnings"])  # 3.8e25 is beyond the other anchors
    assert record["hparams"]["at_flops"] == record["spent_flops"]
    # the layout of that plan: TP within a node (4 under this trainer's memory, docs/MEMORY.md), every batch of
    # the ramp split evenly
    lay = record["layout"]
    assert lay["tp"] in (4, 8) and record["shape"]["n_heads"] % lay["tp"] == 0
    assert lay["cp"] == 1 and lay["gpus"] <= 16384
    for step in record["schedule"]["ramp"]:
        assert (step["batch_tokens"] // 8192) % (lay["dp"] * lay["micro_batch"]) == 0


def test_with_every_anchor_the_plan_is_within_the_range():
    result = CliRunner().invoke(app, LLAMA3_COMMAND)
    record = json.loads(result.stdout)
    assert record["batch_tokens"] == 2048 * 8192 and 6e-5 < record["lr_peak"] < 1.2e-4
    assert record["hparams"]["warnings"] == []
    assert record["spent_flops"] == pytest.approx(3.8e25, rel=1e-6)  # solved with the trainer's FLOPs per token


def test_order_of_sources_and_warnings():
    tuned = HparamLaws(PowerLaw(1000.0, 0.2), PowerLaw(0.5, -0.1), "my tune sweep")
    assert hparams.choose(1e23, 4096, tuned).rule == "tuned"
    inside = hparams.choose(1e19, 4096)
    assert inside.rule == "law" and inside.warnings == () and "DeepSeek" in inside.source
    assert inside.lr_peak == pytest.approx(0.3118 * 1e19**-0.125)
    below = hparams.choose(1e12, 256)
    assert below.rule == "law" and "extrapolated 5.0 decades" in below.warnings[0]
    anchored = hparams.choose(1e23, 4096)
    assert anchored.rule == "anchors" and anchored.warnings == ()
    rule = hparams.anchor_rule()
    assert rule.lr.exp < 0 < rule.batch.exp  # larger runs: larger batches, smaller LRs
    assert anchored.lr_peak == pytest.approx(rule.lr(1e23))
    beyond = hparams.choose(1e27, 8192)
    assert beyond.batch_tokens <= rule.batch_cap_tokens and "cap" in beyond.batch_source
    assert "extrapolated" in beyond.source


def test_batch_rounding_and_anchor_compute():
    # the nearest 2^k or 3 x 2^k in log
    assert [hparams.round_sequences(t, 1) for t in (1, 5, 7, 11, 2300, 3000)] == [1, 6, 8, 12, 2048, 3072]
    assert hparams.round_sequences(3000, 1, cap_tokens=2900) == 2048
    gpt3 = next(a for a in hparams.ANCHORS if a.key == "gpt3-175b")
    assert gpt3.compute_flops == pytest.approx(3.15e23, rel=0.01)  # Brown et al. Table D.1: 3.14e23
    with pytest.raises(ValueError):
        hparams.anchor_rule(tuple(a.key for a in hparams.ANCHORS[1:]))


def test_unknown_anchor_is_one_line():
    result = CliRunner().invoke(app, ["plan", "--compute", "1e23", "--leave-out-anchor", "gpt-5"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and "unknown anchor" in lines[0]


def test_a_capped_batch_names_its_rule_once():
    from workbench.plan.hparams import choose

    choice = choose(1e26, 8192)
    assert "batch at the cap" in choice.source
    assert choice.source.count("rule anchored to") == 1
