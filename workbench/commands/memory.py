"""`workbench memory`: the modelled memory per GPU and step time of a layout the user names, and with --measure
the peak of the trainer's own step measured on fake tensors (no GPU needed)."""

from __future__ import annotations

import time

import typer

from workbench.commands.options import echo_json, json_option

GB = 1e9


def _measure(req, quiet: bool) -> tuple[list, float]:
    started = time.monotonic()

    def progress(i, n, spec, probe):
        if not quiet:
            typer.echo(
                f"  measured {i + 1}/{n}: pipeline rank {spec.pp_rank}, {probe.blocks_on_rank} blocks on the rank, "
                f"{probe.peak_bytes / GB:.2f} GB in {probe.wall_s:.1f} s ({time.monotonic() - started:.0f} s so far)",
                err=True,
            )

    from workbench.train.parallel.memory_scale import measure_layout  # off `workbench --help`'s path (HELP_LIGHT)

    ranks = measure_layout(req, progress)
    return ranks, time.monotonic() - started


def _lines(title: str, values: dict[str, float]) -> list[str]:
    from workbench.plan.memory_model import CATEGORIES  # numpy: off the path of `workbench --help`

    rows = [f"{title}"]
    rows += [f"  {k:<12} {values[k] / GB:8.2f} GB" for k in CATEGORIES]
    rows.append(f"  {'total':<12} {values['total'] / GB:8.2f} GB")
    return rows


def memory(
    shape_spec: str = typer.Option(..., "--shape", help="8b, 70b, 405b, a shape like L120-d15360, or a size (70B)."),
    tp: int = typer.Option(1, "--tp", min=1, help="Tensor-parallel degree (inside a node)."),
    pp: int = typer.Option(1, "--pp", min=1, help="Pipeline stages."),
    dp: int = typer.Option(1, "--dp", min=1, help="Data-parallel degree (FSDP2 shards over it)."),
    micro_batch: int = typer.Option(1, "--micro-batch", min=1, help="Sequences per micro-batch."),
    micro_batches: int = typer.Option(None, "--micro-batches", min=1, help="Micro-batches per DP replica and step."),
    batch: int = typer.Option(None, "--batch", min=1, help="Global batch in sequences (default dp x micro-batch x m)."),
    recompute: str = typer.Option("none", "--recompute", help="none, selective or full."),
    schedule: str = typer.Option("1f1b", "--schedule", help="Pipeline schedule: 1f1b or interleaved."),
    virtual: int = typer.Option(None, "--virtual-stages", min=1, help="Chunks per rank (interleaved; default 2)."),
    seq_len: int = typer.Option(8192, "--seq-len", min=1, help="Sequence length."),
    vocab_size: int = typer.Option(128256, "--vocab-size", min=2, help="Vocabulary."),
    gpu: str = typer.Option("h100", "--gpu", help="h100, a100, h200, b200 or a bf16 peak in TFLOPS."),
    gpu_memory_gb: float = typer.Option(None, "--gpu-memory-gb", help="Memory per GPU in GB (default: the GPU's)."),
    measure: bool = typer.Option(False, "--measure", help="Measure the trainer's step on fake tensors (CPU)."),
    full_depth: bool = typer.Option(False, "--full-depth", help="With --measure: no reduced depth (slower)."),
    as_json: bool = json_option(),
) -> None:
    """Memory per GPU (weights, gradients, optimizer state, activations, logits/loss, buffers) and step time of a
    layout: modelled, and with --measure measured from the trainer's own code (docs/MEMORY.md)."""
    from workbench.plan.memory_cost import cost_layout

    out, req, step, shape, card = cost_layout(
        shape_spec,
        tp,
        pp,
        dp,
        micro_batch,
        micro_batches,
        batch,
        recompute,
        schedule,
        virtual,
        seq_len,
        vocab_size,
        gpu,
        gpu_memory_gb,
        full_depth,
    )
    if not as_json:
        _print_model(out, shape, card)
    if measure:
        if not as_json:
            depth = "full depth" if not req.reduced else f"{req.depths[0]} and {req.depths[1]} blocks per chunk"
            typer.echo(f"measuring one rank of each of pipeline ranks {req.ranks()} at {depth} ...", err=True)
        ranks, wall_s = _measure(req, as_json)
        out["measured"] = {"ranks": [r.as_dict() for r in ranks], "wall_s": wall_s, "reduced_depth": req.reduced}
    if as_json:
        echo_json(out)
    elif measure:
        _print_measured(out["measured"], ranks, step)


def _print_model(out: dict, shape, card) -> None:
    lay, model, room = out["layout"], out["model"], out["headroom"]
    typer.echo(
        f"{shape.name} ({shape.n_layers} layers, d_model {shape.d_model}): TP {lay['tp']} x PP {lay['pp']} x DP "
        f"{lay['dp']} = {lay['gpus']} GPUs, {lay['schedule']} schedule"
        + (f" ({lay['virtual_stages']} chunks a rank)" if lay["virtual_stages"] > 1 else "")
        + f", {lay['recompute']} recompute, micro-batch {lay['micro_batch']} x {lay['micro_batches']} per replica, "
        f"seq {lay['seq_len']}"
    )
    where = f"pipeline rank {model['pp_rank']}, " if lay["pp"] > 1 else ""
    typer.echo("\n".join(_lines(f"modelled peak per GPU ({where}at the {model['moment']}):", model)))
    limit = room["limit_bytes"]
    verdict = "fits" if model["total"] <= limit else "does NOT fit"
    typer.echo(
        f"  {verdict} {card.name} ({card.memory_bytes / GB:g} GB): a plan keeps {100 * room['fraction']:.0f}% free "
        f"(10% of the card + {100 * (room['fraction'] - 0.1):.0f}% measured model error for {room['family']}), "
        f"limit {limit / GB:.1f} GB"
    )
    typer.echo(f"step time        {out['step_time_s']:.2f} s modelled (MFU {100 * out['mfu']:.1f}%)")


def _print_measured(meas: dict, ranks: list, step) -> None:
    from workbench.plan.memory_model import rank_peak

    how = "extrapolated per window from reduced depth" if meas["reduced_depth"] else "at full depth"
    typer.echo(f"measured on fake tensors ({how}; {meas['wall_s']:.0f} s):")
    typer.echo(f"  {'rank':>4} {'blocks':>6} {'measured GB':>11} {'model GB':>9} {'error':>6}  peak window")
    for r in ranks:
        modelled = rank_peak(step, r.pp_rank).total
        error = (modelled - r.peak_bytes) / r.peak_bytes
        scaled = f" (measured at {'/'.join(map(str, r.measured_blocks))})" if len(r.measured_blocks) > 1 else ""
        typer.echo(
            f"  {r.pp_rank:>4} {r.blocks:>6} {r.peak_bytes / GB:>11.2f} {modelled / GB:>9.2f} {100 * error:>+5.1f}%  "
            f"{r.window}{scaled}"
        )
    top = max(ranks, key=lambda r: r.peak_bytes)
    typer.echo(
        "\n".join(
            _lines(f"measured breakdown, pipeline rank {top.pp_rank}:", {**top.breakdown, "total": top.peak_bytes})
        )
    )
