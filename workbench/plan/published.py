"""Published training throughputs (workbench/plan/published_runs.csv) and their conversion to this project's MFU.

Each row of the table is one published measurement with its source, locator, model shape, layout and GPU
(docs/throughput.md lists them). `mfu` recomputes the table's `mfu_ours` column from the other columns:

    MFU = tokens/s/GPU x (6 N + 12 L T d) / peak

with N every parameter but the input embedding (the output projection counts once), attention unhalved and
recompute not counted (workbench.model.flops), against the dense 16-bit peak of the GPU. The source's figure
becomes tokens/s/GPU by its unit, and, for a FLOP rate or an MFU, by the source's own FLOPs per token
(`conv=` in the notes):

    ours, assumed_ours      6 N + 12 L T d (assumed_ours: the source does not say; Llama 3 and OPT)
    megatron2021_hw         96 L d^2 + 16 L d T + 6 V d   Narayanan et al. 2021 eq. (3) / (B T): counts the
                            extra forward of full recompute, so MFU ~ 0.75 x their "% of peak"
    megatron_model          72 L d^2 + 12 L d T + 6 V d   Korthikanti et al. 2022 eq. (7) / (B T): model FLOPs
    torchtitan_allparams    6 (N + V d) + 12 L T d        torchtitan before 2024-04-26 (embedding counted)

N follows `arch=` in the notes: `gpt` (biases, LayerNorms, a 2-matrix MLP of ffn_dim) or `llama` (no
biases, RMSNorms, SwiGLU of ffn_dim, grouped KV heads). Pure: the standard library only.

Which rows calibrate the efficiency model is decided by what a row is, never by how well it fits
(`exclusion`); the excluded rows are still predicted and shown.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path

TABLE = Path(__file__).with_name("published_runs.csv")

PEAK_FLOPS = {  # dense 16-bit tensor-core peak (FLOP/s), vendors' data sheets
    "A100-80GB": 312e12,
    "A100": 312e12,  # variant not stated by the source
    "H100-SXM": 989e12,
    "H100-SXM-HBM2e": 989e12,  # Meta's 500 W HBM2e H100: true peak unknown and lower; its sources divide by 989
}
GPU_KIND = {"A100-80GB": "a100", "A100": "a100", "H100-SXM": "h100", "H100-SXM-HBM2e": "h100"}

# MegaScale rows that are not the standard block trained with Adam: the MegaScale system (parallel block,
# sliding-window attention, LAMB) and its ablation steps 2-9 (cumulative optimisations of one configuration)
MODIFIED = ("_megascale_", "ablation2", "ablation3", "ablation4", "ablation5", "ablation6", "ablation7")
MODIFIED += ("ablation8", "ablation9")


@dataclass(frozen=True)
class PublishedRun:
    """One published measurement: shape, layout (None where the source does not say), GPU and the figure."""

    id: str
    source: str
    locator: str
    model: str
    arch: str  # gpt | llama (how N is counted)
    conv: str  # the source's FLOPs-per-token convention
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    ffn_dim: int
    vocab_size: int
    seq_len: int
    global_batch_seqs: int
    micro_batch: int | None
    tp: int | None
    pp: int | None
    virtual_stages: int | None
    dp: int | None
    cp: int
    sharding: str  # none (DDP), zero1, zero2, zero3, fsdp, or "" (not stated)
    schedule: str  # none, 1f1b, interleaved, or "" (not stated)
    recompute: str  # none, selective, full, or "" (not stated)
    precision: str  # bf16, fp16, fp8, or "" (16-bit, not named)
    gpu: str
    n_gpus: int
    reported_value: float
    reported_unit: str
    counts_recompute: str  # yes, no, unknown: whether the source's figure counts recompute FLOPs
    mfu_table: float  # the table's mfu_ours column
    notes: str

    @property
    def gpu_kind(self) -> str:
        return GPU_KIND[self.gpu]

    @property
    def peak_flops(self) -> float:
        return PEAK_FLOPS[self.gpu]


def recompute_policy(run: PublishedRun) -> str:
    """The recompute policy behind a row's `recompute` (workbench.plan.layout_cost.PUBLISHED_RECOMPUTE): a
    selective row of Megatron-LM recomputes the attention core, one of torchtitan every second block ("layer")
    or every second matmul ("op", its default); "" when not stated."""
    if run.recompute != "selective":
        return run.recompute
    if "torchtitan" in run.source.lower():
        return (
            "alternate_blocks"
            if "selective (layer)" in run.notes or "selective layer" in run.notes
            else ("alternate_matmuls")
        )
    if "Korthikanti" in run.source or "Megatron" in run.source:
        return "attention"
    return "selective"


def _int(text: str) -> int | None:
    text = text.strip()
    return int(float(text)) if text else None


def _tags(notes: str) -> dict[str, str]:
    """The `conv=` and `arch=` tags every notes cell starts with."""
    tags = {}
    for part in notes.split(";")[:2]:
        key, _, value = part.strip().partition("=")
        tags[key] = value.strip()
    return tags


def _run(row: dict[str, str]) -> PublishedRun:
    tags = _tags(row["notes"])
    return PublishedRun(
        id=row["id"],
        source=row["source"],
        locator=row["locator"],
        model=row["model"],
        arch=tags["arch"],
        conv=tags["conv"],
        n_layers=int(row["n_layers"]),
        d_model=int(row["d_model"]),
        n_heads=int(row["n_heads"]),
        n_kv_heads=int(row["n_kv_heads"]),
        ffn_dim=int(row["ffn_dim"]),
        vocab_size=int(row["vocab_size"]),
        seq_len=int(row["seq_len"]),
        global_batch_seqs=int(row["global_batch_seqs"]),
        micro_batch=_int(row["micro_batch"]),
        tp=_int(row["tp"]),
        pp=_int(row["pp"]),
        virtual_stages=_int(row["virtual_stages"]),
        dp=_int(row["dp"]),
        cp=_int(row["cp"]) or 1,
        sharding=row["zero_or_fsdp"].strip(),
        schedule=row["pp_schedule"].strip(),
        recompute=row["recompute"].strip(),
        precision=row["precision"].strip(),
        gpu=row["gpu"].strip(),
        n_gpus=int(row["n_gpus"]),
        reported_value=float(row["reported_value"]),
        reported_unit=row["reported_unit"].strip(),
        counts_recompute=row["reported_counts_recompute"].strip(),
        mfu_table=float(row["mfu_ours"]),
        notes=row["notes"],
    )


@cache
def load_runs(path: Path = TABLE) -> tuple[PublishedRun, ...]:
    """Every row of the published table, in its order."""
    with open(path, newline="") as f:
        return tuple(_run(row) for row in csv.DictReader(f))


def n_params(run: PublishedRun) -> float:
    """N: every parameter but the input embedding (the output projection counts once)."""
    d, head_dim = run.d_model, run.d_model / run.n_heads
    kv = run.n_kv_heads * head_dim
    if run.arch == "gpt":  # biases, two LayerNorms (weight and bias), a 2-matrix MLP
        block = 2 * d * d + 2 * d * kv + (2 * d + 2 * kv) + 2 * d * run.ffn_dim + run.ffn_dim + d + 4 * d
        final = 2 * d
    elif run.arch == "llama":  # no biases, two RMSNorms, SwiGLU
        block = 2 * d * d + 2 * d * kv + 3 * d * run.ffn_dim + 2 * d
        final = d
    else:
        raise ValueError(f"{run.id}: unknown arch {run.arch!r}")
    return run.n_layers * block + final + run.vocab_size * d


def flops_per_token(run: PublishedRun) -> float:
    """This project's training FLOPs per token: 6 N + 12 L T d."""
    return 6.0 * n_params(run) + 12.0 * run.n_layers * run.seq_len * run.d_model


def source_flops_per_token(run: PublishedRun) -> float:
    """The FLOPs per token behind the source's FLOP rate or MFU (its convention, `conv=`)."""
    lay, d, seq, vocab = run.n_layers, run.d_model, run.seq_len, run.vocab_size
    if run.conv in ("ours", "assumed_ours"):
        return flops_per_token(run)
    if run.conv == "megatron2021_hw":
        return 96 * lay * d * d + 16 * lay * d * seq + 6 * vocab * d
    if run.conv == "megatron_model":
        return 72 * lay * d * d + 12 * lay * d * seq + 6 * vocab * d
    if run.conv == "torchtitan_allparams":
        return 6.0 * (n_params(run) + vocab * d) + 12 * lay * seq * d
    raise ValueError(f"{run.id}: unknown convention {run.conv!r}")


def tokens_per_s_per_gpu(run: PublishedRun) -> float:
    """The source's figure as training tokens per second per GPU."""
    value, unit, gpus = run.reported_value, run.reported_unit, run.n_gpus
    if unit == "tokens_per_s_per_gpu":
        return value
    if unit == "tokens_per_s_total":
        return value / gpus
    if unit == "samples_per_s":
        return value * run.seq_len / gpus
    if unit == "s_per_iteration":
        return run.global_batch_seqs * run.seq_len / (value * gpus)
    if unit == "TFLOPs_per_gpu":
        return value * 1e12 / source_flops_per_token(run)
    if unit == "MFU_percent":
        return value / 100.0 * run.peak_flops / source_flops_per_token(run)
    raise ValueError(f"{run.id}: unknown unit {unit!r}")


def mfu(run: PublishedRun) -> float:
    """Model FLOPs utilisation in this project's convention (a fraction of the dense 16-bit peak)."""
    return tokens_per_s_per_gpu(run) * flops_per_token(run) / run.peak_flops


def exclusion(run: PublishedRun) -> str:
    """Why a row does not calibrate the efficiency model ("" when it does). Each reason is about what the row
    is (precision, GPU, what the source states, the architecture), decided before any fit."""
    if run.precision == "fp8":
        return "fp8 matmuls (the plan is for bf16 training)"
    if run.gpu == "H100-SXM-HBM2e":
        return "500 W HBM2e H100: its peak is below 989 TFLOP/s and not published"
    if None in (run.tp, run.pp, run.dp):
        return "layout (TP, PP, DP) not stated"
    if run.cp > 1:
        return "context parallelism (the plan uses CP 1)"
    if any(tag in run.id for tag in MODIFIED):
        return "MegaScale's parallel block, sliding-window attention or LAMB (not the block the plan trains)"
    if run.counts_recompute == "unknown" or (run.counts_recompute == "yes" and not run.recompute):
        return "the FLOPs behind the figure are unknown (recompute or attention convention not stated)"
    if "UNVERIFIED" in run.notes:
        return "figures from secondary quotes, not checked against the primary source"
    return ""


def calibration_runs(runs: tuple[PublishedRun, ...] | None = None) -> tuple[PublishedRun, ...]:
    """The rows that calibrate the efficiency model (`exclusion` is empty)."""
    return tuple(r for r in (runs or load_runs()) if not exclusion(r))


def check_table(runs: tuple[PublishedRun, ...] | None = None, tolerance: float = 5e-4) -> list[str]:
    """Rows whose recomputed MFU differs from the table's column by more than `tolerance` (should be none)."""
    return [r.id for r in (runs or load_runs()) if not math.isclose(mfu(r), r.mfu_table, abs_tol=tolerance)]
