"""Property: every planned flagship config from 1e20 to 1e26 FLOPs on 8 to 32,768 GPUs passes the trainer's checks."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from workbench.core.errors import WorkbenchError
from workbench.fit.laws import CHINCHILLA
from workbench.plan.efficiency import CALIBRATION
from workbench.plan.hardware import GPUS, GPUS_PER_NODE
from workbench.plan.layout_cost import STEP_TIME_TIE, _rank, candidates
from workbench.plan.planner import flagship_config, make_plan, micro_batch_for
from workbench.train.config import TrainConfig

H100 = GPUS["h100"]


@example(log_budget=25.0, log2_gpus=10.0)  # TP 4 x PP 4 on 1,024 GPUs: the fastest PP = 1 layout used 768
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(log_budget=st.floats(20, 26), log2_gpus=st.floats(3, 15))
def test_planned_flagship_passes_the_trainers_checks(log_budget, log2_gpus):
    from workbench.train import trainer

    budget, gpus = 10**log_budget, max(8, min(32768, round(2**log2_gpus)))
    try:
        plan = make_plan(CHINCHILLA, budget, gpu=H100, seq_len=8192, vocab_size=128256, gpus=gpus)
    except WorkbenchError as err:  # a model that no layout of this many GPUs holds: said so, in one line
        assert "does not fit" in str(err)
        return
    shape, lay = plan.shape, plan.layout
    if shape.params >= 1e9:
        assert shape.n_heads % 8 == 0 and shape.n_kv_heads == 8
    cfg = flagship_config(plan, "data/corpus", "runs/flagship/x", "x")
    loaded = TrainConfig.model_validate(cfg.model_dump())  # the trainer's config validation
    trainer.check_batches(loaded, trainer.total_tokens(loaded), lay.dp)  # its batch check, DP processes
    assert lay.tp <= GPUS_PER_NODE and shape.n_heads % lay.tp == 0 and lay.cp == 1
    assert lay.tp * lay.pp * lay.dp == lay.gpus <= gpus
    assert lay.memory.total <= lay.memory_limit_bytes
    if lay.schedule == "interleaved":  # the trainer's chunks: v divides the fullest stage, each chunk a layer
        assert -(-shape.n_layers // lay.pp) % lay.virtual_stages == 0 and lay.pp * lay.virtual_stages <= shape.n_layers
    if lay.pp > 1:  # a pipeline only when no PP = 1 layout fits, or the fastest that fits leaves GPUs idle; then
        # the pipeline is as fast as it, within the tie rule (workbench.plan.layout_cost.choose_layout)
        batch_seqs = plan.batch_tokens // plan.seq_len
        ramp_seqs = tuple(b // plan.seq_len for _, b in plan.schedule.ramp)
        micro, gpu = micro_batch_for(batch_seqs, plan.seq_len), replace(H100, efficiency=CALIBRATION.efficiency)
        flat = candidates(shape, plan.seq_len, micro, batch_seqs, gpu, gpus, True, [1], ramp_seqs)
        fitting = sorted((c for c in flat if c.fits), key=_rank)
        tie = 1 + STEP_TIME_TIE
        assert not fitting or (fitting[0].gpus < gpus and lay.step_time_s <= fitting[0].step_time_s * tie)
    assert 0.05 < lay.mfu < 0.8 and plan.days > 0
