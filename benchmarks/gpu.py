"""One-GPU measurement of the trainer's model: tokens/s, MFU, peak memory against the plan's memory model,
and the step time with activation checkpointing off, selective and full.

    python benchmarks/gpu.py                       # 125M, 1B and the largest ladder model that fits
    python benchmarks/gpu.py --sizes 1B --json gpu.json
    python benchmarks/gpu.py --dry-run             # no GPU: print what would be measured and predicted
    python benchmarks/gpu.py --cpu-smoke           # no GPU: one tiny model through the same code on CPU

Needs only torch (whatever CUDA build the machine has) and the project's pure-Python dependencies
(pydantic, pyyaml, numpy): `PYTHONPATH=. python benchmarks/gpu.py` from the repository root.

What one measurement is: the trainer's own code path for a one-GPU `layout:` run (TP 1 x PP 1 x DP 1), built by
workbench.train.parallel.parallelize.build: the model on the meta device, activation checkpointing and torch.compile
applied together (the compiled function calls `checkpoint`, so the recomputed region is compiled too; unless
--no-compile), FSDP2 over a mesh of one under the trainer's mixed-precision policy
(workbench.train.parallel.distributed.mixed_precision_policy: bf16 weights and activations in forward and backward,
fp32 master weights and gradients), materialised and initialised as a run is; each step is the trainer's
parallelize.forward_backward, clip_grad_norm and fused AdamW (16 bytes of weights, gradients and moments per
parameter, as the memory model counts), on micro-batches of random tokens (the step time does not depend on the
data). `--warmup` steps (compilation) are not timed; the next `--steps` are, with cuda.synchronize around them.

MFU = FLOPs per token x tokens/s / peak. FLOPs per token: the project's rule "6N+attn" =
6 N + 6 n_layers seq_len d_model (N: non-embedding parameters, output projection included; the attention
scores and values forward and backward, causal not halved; workbench.model.flops.flops_per_token), or "6N" with
--flop-rule 6N. Peak: the dense bf16 peak of workbench.plan.hardware.GPUS for the detected GPU (H100/H200:
989 TFLOPS, A100: 312, B200: 2250), or --peak-tflops. Recomputed FLOPs are not counted (MFU, not HFU).

Memory: torch.cuda.max_memory_allocated over the timed steps against workbench.plan.layout_cost.memory_per_gpu for
TP 1 x PP 1 x DP 1 (AC off and selective are compared with the model's "selective", full with "full").
Goal: >= 45% MFU at 1B and memory within 15% of the prediction. Not part of the tests.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass

import torch

from workbench.model import flops
from workbench.model.config import ModelConfig
from workbench.model.shapes import LLAMA3_VOCAB, ModelShape, ladder, shape_for_params
from workbench.plan.hardware import GPUS
from workbench.plan.layout_cost import USABLE_MEMORY, memory_per_gpu

RECOMPUTE_MODEL = {"none": "selective", "selective": "selective", "full": "full"}


@dataclass
class Result:
    size: str
    shape: dict
    params: int
    params_total: int
    recompute: str
    seq_len: int
    micro_batch: int
    compile: bool
    status: str  # ok | oom | skipped
    step_s: float | None = None
    tokens_per_s: float | None = None
    mfu: float | None = None
    flop_rule: str = "6N+attn"
    peak_tflops: float | None = None
    peak_memory_gb: float | None = None
    predicted_memory_gb: float | None = None
    memory_ratio: float | None = None  # measured / predicted


def predicted_bytes(shape: ModelShape, seq_len: int, micro_batch: int, recompute: str) -> float:
    return memory_per_gpu(shape, seq_len, micro_batch, 1, 1, 1, RECOMPUTE_MODEL[recompute]).total


def largest_fitting(seq_len: int, micro_batch: int, memory_bytes: float, recompute: str) -> ModelShape:
    """The largest ladder shape whose predicted memory fits USABLE_MEMORY of one GPU."""
    _, shapes = ladder(LLAMA3_VOCAB)
    fitting = [s for s in shapes if predicted_bytes(s, seq_len, micro_batch, recompute) <= USABLE_MEMORY * memory_bytes]
    if not fitting:
        raise SystemExit("no ladder shape fits this GPU at this seq_len and micro-batch")
    return max(fitting, key=lambda s: s.params)


def detect_peak(name: str, override: float | None) -> tuple[float, float]:
    """(dense bf16 peak FLOP/s, memory bytes) of the GPU named `name` (torch's device name)."""
    lowered = name.lower()
    gpu = next((g for key, g in GPUS.items() if key in lowered), GPUS["h100"])
    memory = torch.cuda.get_device_properties(0).total_memory if torch.cuda.is_available() else gpu.memory_bytes
    return (override * 1e12 if override else gpu.peak_flops), float(memory)


def build(shape: ModelShape, seq_len: int, device: torch.device, recompute: str, compile_blocks: bool):
    """The trainer's model and optimizer for a one-process layout run in bf16 (needs the process group of
    workbench.train.parallel.distributed.setup)."""
    from workbench.train.config import LayoutConfig, RuntimeConfig
    from workbench.train.parallel import distributed, parallelize

    cfg = ModelConfig.from_shape(shape)
    policy = distributed.mixed_precision_policy(RuntimeConfig(dtype="bf16"), device.type)
    layout = LayoutConfig(recompute=recompute, gpus_per_node=1)
    par = parallelize.build(
        cfg, layout, seq_len=seq_len, device=device, seed=0, compile=compile_blocks, mp_policy=policy
    )
    fused = device.type == "cuda"
    optimizer = torch.optim.AdamW(par.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=fused)
    return par, optimizer


def measure(size: str, shape: ModelShape, args, device: torch.device, recompute: str, peak: float) -> Result:
    result = Result(
        size,
        shape.as_dict(),
        shape.params,
        shape.params_total,
        recompute,
        args.seq_len,
        args.micro_batch,
        not args.no_compile,
        "ok",
        flop_rule=args.flop_rule,
        peak_tflops=peak / 1e12,
    )
    result.predicted_memory_gb = predicted_bytes(shape, args.seq_len, args.micro_batch, recompute) / 1e9
    cuda = device.type == "cuda"
    from workbench.train.parallel.parallelize import clip_grad_norm, forward_backward

    par = optimizer = None
    try:
        par, optimizer = build(shape, args.seq_len, device, recompute, not args.no_compile)
        gen = torch.Generator(device=device).manual_seed(0)
        tokens = torch.randint(0, shape.vocab_size, (args.micro_batch, args.seq_len + 1), generator=gen, device=device)

        def step() -> None:  # the trainer's step on one micro-batch
            forward_backward(par, [tokens], 1.0)
            clip_grad_norm(par.parameters(), 1.0, None)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        for _ in range(args.warmup):
            step()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        if cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    except torch.OutOfMemoryError:
        result.status = "oom"
        return result
    finally:
        par = optimizer = None
        torch._dynamo.reset()  # the next size compiles afresh
        if cuda:
            torch.cuda.empty_cache()
    result.step_s = elapsed / args.steps
    result.tokens_per_s = args.micro_batch * args.seq_len / result.step_s
    result.mfu = flops.flops_per_token(shape, args.seq_len, args.flop_rule) * result.tokens_per_s / peak
    if cuda:
        result.peak_memory_gb = torch.cuda.max_memory_allocated() / 1e9
        result.memory_ratio = result.peak_memory_gb / result.predicted_memory_gb
    return result


def measure_fitting(size: str, shape: ModelShape, args, device, mode: str, peak: float) -> Result:
    """measure(); for `max`, step down the ladder (at most 3 rungs) while it runs out of memory."""
    result = measure(size, shape, args, device, mode, peak)
    if size != "max" or result.status != "oom":
        return result
    _, shapes = ladder(LLAMA3_VOCAB)
    smaller = sorted((s for s in shapes if s.params < shape.params), key=lambda s: -s.params)[:3]
    for candidate in smaller:
        result = measure(size, candidate, args, device, mode, peak)
        if result.status == "ok":
            break
    return result


def sizes(args, memory_bytes: float) -> list[tuple[str, ModelShape]]:
    if args.cpu_smoke:
        return [("smoke", ModelShape("smoke", 2, 64, 4, 2, 176, 256))]
    chosen = []
    for size in args.sizes.split(","):
        if size.strip().lower() == "max":
            chosen.append(("max", largest_fitting(args.seq_len, args.micro_batch, memory_bytes, "full")))
        else:
            chosen.append((size, shape_for_params(float(size.upper().replace("M", "e6").replace("B", "e9")))))
    return chosen


def line(r: Result) -> str:
    head = f"{r.size:>6} N={r.params / 1e6:8.1f}M  AC {r.recompute:9}"
    if r.status != "ok":
        return f"{head} {r.status} (predicted {r.predicted_memory_gb:.1f} GB)"
    text = f"{head} step {r.step_s * 1e3:8.1f} ms  {r.tokens_per_s:10,.0f} tok/s  MFU {100 * r.mfu:5.1f}%"
    if r.peak_memory_gb is not None:
        text += f"  memory {r.peak_memory_gb:6.1f} GB vs model {r.predicted_memory_gb:6.1f} GB ({r.memory_ratio:.2f}x)"
    return text


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="125M,1B,max", help="comma-separated: parameter targets and/or max")
    p.add_argument("--recompute", default="none,selective,full", help="activation checkpointing modes to time")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--flop-rule", choices=["6N+attn", "6N"], default="6N+attn")
    p.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak (default: by GPU name)")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--dry-run", action="store_true", help="print the plan and the memory predictions only")
    p.add_argument("--cpu-smoke", action="store_true", help="a tiny model on CPU through the same code")
    args = p.parse_args(argv)
    if args.cpu_smoke:
        args.seq_len, args.micro_batch, args.steps, args.warmup = 64, 2, 2, 1  # compiled unless --no-compile
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    modes = [m.strip() for m in args.recompute.split(",")]
    unknown = [m for m in modes if m not in RECOMPUTE_MODEL]
    if unknown:
        raise SystemExit(f"--recompute: unknown mode {unknown[0]!r}; use none, selective, full")
    cuda = torch.cuda.is_available() and not args.cpu_smoke
    name = torch.cuda.get_device_name(0) if cuda else "cpu"
    peak, memory_bytes = detect_peak(name if cuda else "h200", args.peak_tflops)
    print(
        f"device {name}; peak {peak / 1e12:g} TFLOPS bf16 dense; FLOP rule {args.flop_rule}; torch {torch.__version__}"
    )
    if not cuda and not (args.dry_run or args.cpu_smoke):
        print("no CUDA device: nothing measured (use --dry-run or --cpu-smoke)", file=sys.stderr)
        return 2
    from workbench.train.parallel import distributed

    d = distributed.setup("cuda" if cuda else "cpu", group=True)  # the one-process group of a layout run
    try:
        results = run_all(args, modes, cuda, peak, memory_bytes)
    finally:
        distributed.teardown(d)
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(r) for r in results], f, indent=1)
    ok = [r for r in results if r.status == "ok" and r.mfu is not None]
    return 0 if args.dry_run or ok and all(math.isfinite(r.mfu) for r in ok) else 1


def run_all(args, modes: list[str], cuda: bool, peak: float, memory_bytes: float) -> list[Result]:
    results = []
    for size, shape in sizes(args, memory_bytes):
        for mode in modes:
            predicted = predicted_bytes(shape, args.seq_len, args.micro_batch, mode)
            if args.dry_run or (cuda and predicted > memory_bytes):  # nothing run: the prediction only
                r = Result(
                    size,
                    shape.as_dict(),
                    shape.params,
                    shape.params_total,
                    mode,
                    args.seq_len,
                    args.micro_batch,
                    not args.no_compile,
                    "skipped",
                    flop_rule=args.flop_rule,
                    peak_tflops=peak / 1e12,
                )
                r.predicted_memory_gb = predicted / 1e9
            else:
                r = measure_fitting(size, shape, args, torch.device("cuda" if cuda else "cpu"), mode, peak)
            results.append(r)
            print(line(r), flush=True)
    return results


if __name__ == "__main__":
    sys.exit(main())
