"""Trainer throughput against a plain hand-written loop of the same model, batch and optimizer.

    .venv/bin/python benchmarks/train_throughput.py [--steps 150] [--repeats 3] [--size 100K]

Both sides train workbench.model.transformer.Transformer with torch.optim.AdamW on the same batches from the same
Mixture. The trainer's time is the wall time of its step loop (workbench.train.trainer reports it as wall_s,
which excludes start-up, evaluation and checkpoints); the baseline's is the wall time of its loop.
The two alternate `repeats` times and the medians are compared: the ratio is trainer / baseline
tokens per second (goal >= 0.95 on CPU). On CUDA (bf16 autocast) it also prints the MFU of both
against the GPU's dense bf16 peak (--peak-tflops, default 989 for an H100 SXM).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
import time
from pathlib import Path

import torch

from workbench.core.units import parse_number
from workbench.data.batches import Mixture
from workbench.data.prepare import ensure_default_corpus
from workbench.model import flops
from workbench.model.config import ModelConfig
from workbench.model.shapes import shape_for_params
from workbench.model.transformer import Transformer
from workbench.train.config import TrainConfig


def make_config(run_dir: Path, size: float, vocab: int, seq: int, micro: int, steps: int, device: str) -> TrainConfig:
    shape = shape_for_params(size, vocab)
    corpus = str(ensure_default_corpus())
    return TrainConfig.model_validate(
        {
            "name": "bench",
            "run_dir": str(run_dir),
            "model": ModelConfig.from_shape(shape).model_dump(),
            "data": {"sources": [{"path": corpus}], "seq_len": seq},
            "optim": {"lr_peak": 3e-3},
            "schedule": {"kind": "constant"},
            "batch": {"batch_tokens": seq * micro, "micro_batch": micro},
            "stop": {"tokens": seq * micro * steps},
            "eval": {"batches": 1, "batch_seqs": 1},
            "checkpoint": {"every_tokens": 0, "keep": 1},
            "faults": {"max_rollbacks": 0},
            "runtime": {"device": device, "log_every_steps": 10**9},
        }
    )


def trainer_tokens_per_s(cfg: TrainConfig) -> float:
    from workbench.train.trainer import main

    with contextlib.redirect_stderr(io.StringIO()):
        record = main(cfg)
    return record["tokens"] / record["wall_s"]


def baseline_tokens_per_s(cfg: TrainConfig) -> float:
    """The loop a person writes by hand: batch, forward, backward, clip, step."""
    device = torch.device("cuda" if cfg.runtime.device == "cuda" else "cpu")
    torch.manual_seed(cfg.seed)
    model = Transformer(cfg.model, max_seq_len=cfg.data.seq_len).to(device)
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.optim.lr_peak, betas=(0.9, 0.95), weight_decay=0.1, fused=device.type == "cuda"
    )
    data = Mixture([(s.path, s.weight) for s in cfg.data.sources], cfg.data.seq_len, cfg.seed)
    steps = cfg.stop.tokens // cfg.batch.batch_tokens
    bf16 = device.type == "cuda"
    start = time.perf_counter()
    for step in range(steps):
        batch = torch.from_numpy(data.train_batch(step, 0, cfg.batch.micro_batch)).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(batch[:, :-1], batch[:, 1:])
        loss.backward()
        loss.item()  # the trainer reads every loss (fault checks, logs): so does the baseline
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return cfg.stop.tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="100K", help="parameter target for the size rule")
    parser.add_argument("--vocab", type=int, default=256)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--micro-batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    args = parser.parse_args()

    ours, theirs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            cfg = make_config(
                Path(tmp) / f"r{i}",
                parse_number(args.size),
                args.vocab,
                args.seq_len,
                args.micro_batch,
                args.steps,
                args.device,
            )
            ours.append(trainer_tokens_per_s(cfg))
            theirs.append(baseline_tokens_per_s(cfg))
    shape = cfg.model.shape()
    fpt = flops.flops_per_token(shape, args.seq_len)
    a, b = statistics.median(ours), statistics.median(theirs)
    print(
        f"model {shape.n_layers}L d{shape.d_model}, N {shape.params:,}, batch {args.micro_batch}x{args.seq_len}, "
        f"{args.steps} steps, device {args.device}, threads {torch.get_num_threads()}"
    )
    print(f"trainer  : {a:12,.0f} tokens/s  ({a * fpt / 1e9:.1f} GFLOP/s)  runs {[round(x) for x in ours]}")
    print(f"hand loop: {b:12,.0f} tokens/s  ({b * fpt / 1e9:.1f} GFLOP/s)  runs {[round(x) for x in theirs]}")
    print(f"ratio trainer / hand loop: {a / b:.3f}  (goal >= 0.95)")
    if args.device == "cuda":
        peak = args.peak_tflops * 1e12
        print(f"MFU trainer {a * fpt / peak:.1%}, hand loop {b * fpt / peak:.1%} of {args.peak_tflops:g} TFLOPS")


if __name__ == "__main__":
    main()
