"""`workbench plan`: from a law and a compute budget (or GPUs x days) to the flagship run and its config."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import typer

from workbench.commands.options import json_option
from workbench.core.errors import WorkbenchError
from workbench.core.files import atomic_write_text, json_clean, output_file
from workbench.core.units import parse_number


def _record(db: Path | None, record: dict) -> str:
    """Store the plan in the plans table when --db is given or the default database exists."""
    from workbench.store.database import Store, default_db_path

    path = db or default_db_path()
    if db is None and not path.is_file():
        return ""
    with Store(path) as store:
        store.record_plan(record)
    return f"plans table: recorded plan {record['name']} in {path}"


def plan(
    compute: str = typer.Option(None, "--compute", help="Compute budget in FLOPs (1e21, 3.8e25)."),
    gpus: str = typer.Option(None, "--gpus", help="GPUs: with --days gives the budget; with --compute, the days."),
    days: str = typer.Option(None, "--days", help="Wall days: with --gpus gives the budget; with --compute, GPUs."),
    gpu: str = typer.Option("h100", "--gpu", help="h100, a100, h200, b200 or a bf16 peak in TFLOPS."),
    gpu_memory_gb: float = typer.Option(None, "--gpu-memory-gb", help="Memory per GPU in GB (default: the GPU's)."),
    mfu: float = typer.Option(None, "--mfu", help="Override the modelled MFU (0, 1] (labelled as such)."),
    law_spec: str = typer.Option(
        None,
        "--law",
        help="fits/NAME.json, epoch, chinchilla or llama3 (default: the only fit in fits/, else epoch); "
        "the output names its source.",
    ),
    method: str = typer.Option(None, "--method", help="A fit file's law: parametric (default) or isoflop."),
    hparams: str = typer.Option(
        None, "--hparams", help="Batch and LR: a `sweep tune` file (fits/X-hparams.json) or `published` rules."
    ),
    inference_tokens: str = typer.Option(None, "--inference-tokens", help="Tokens to serve (inference-aware)."),
    unique_tokens: str = typer.Option(
        None, "--unique-tokens", help="Unique tokens available: repeated epochs count as less data (Muennighoff 2023)."
    ),
    seq_len: int = typer.Option(None, "--seq-len", help="Sequence length (default: the sweep's, else 8192 / 256)."),
    vocab_size: int = typer.Option(None, "--vocab-size", help="Vocabulary (default: the sweep's, else 128256 / 256)."),
    lr_floor: float = typer.Option(0.01, "--lr-floor", help="Cosine floor as a fraction of the peak LR."),
    as_json: bool = json_option(),
    explain: bool = typer.Option(False, "--explain-layout", help="Print the table of costed layout candidates."),
    leave_out: list[str] = typer.Option(
        None, "--leave-out-anchor", help="Drop a published run from the batch/LR anchors (e.g. llama3-405b)."
    ),
    leave_out_run: list[str] = typer.Option(
        None, "--leave-out-run", help="Drop published runs (id prefix, e.g. llama3) from the efficiency calibration."
    ),
    failures: float = typer.Option(
        None, "--failures-per-gpu-day", help="Job failures per GPU-day (Llama 3's: 5.3e-4)."
    ),
    checkpoint_gb_s: float = typer.Option(None, "--checkpoint-gb-s", help="Checkpoint write GB/s (default 2000)."),
    restart_min: float = typer.Option(None, "--restart-min", help="Minutes a restart loses (default 10)."),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 when the plan has any warning."),
    out: Path = typer.Option(None, "--out", help="Write the flagship train config here (flagship.yaml)."),
    data: str = typer.Option(None, "--data", help="Prepared data folder for the flagship config."),
    run_dir: str = typer.Option(None, "--run-dir", help="Run directory of the flagship (default runs/flagship/NAME)."),
    db: Path = typer.Option(None, "--db", help="DuckDB file for the plans table (default: if it exists)."),
) -> None:
    """Plan the flagship: N*, D*, shape, loss, batch, LR, schedule, GPU time with failures, memory and layout; a
    sweep's fit plans as the sweep trained (its data, tokenizer, seq_len, init, schedule and batch/LR rules)."""
    from workbench.plan import request
    from workbench.plan.hardware import resolve_gpu
    from workbench.plan.record import explain_layout, plan_text

    if out is not None:
        output_file(out, "--out", (db, law_spec, hparams))
    inference = None if inference_tokens is None else parse_number(inference_tokens, "--inference-tokens")
    asked = request.PlanRequest(
        request.positive(compute, "--compute"),
        request.whole_gpus(gpus),
        request.positive(days, "--days"),
        resolve_gpu(gpu, gpu_memory_gb),
        mfu,
        law_spec,
        hparams,
        inference,
        request.positive(unique_tokens, "--unique-tokens"),
        seq_len,
        vocab_size,
        lr_floor,
        tuple(leave_out or ()),
        tuple(leave_out_run or ()),
        request.failures(failures, checkpoint_gb_s, restart_min),
        method,
    )
    planned = request.make(asked)
    record, name, messages = planned.record, planned.name, []
    if out is not None:
        from workbench.core.configfile import dump_yaml

        try:
            atomic_write_text(out, dump_yaml(planned.config(data, run_dir)))
        except OSError as err:
            raise WorkbenchError(f"--out: cannot write {out} ({err.strerror})", "Pick a writable path.") from None
        messages.append(f"wrote {out}: run it with `workbench train {out}`")
    created = datetime.now(UTC).isoformat()
    stored = {**record, "name": name, "budget_flops": planned.plan.budget_flops, "created": created}
    messages.append(_record(db, {**stored, "config_path": str(out) if out else None}))
    typer.echo(json.dumps(json_clean(record)) if as_json else plan_text(record))
    if explain:
        typer.echo(explain_layout(planned.plan), err=as_json)
    for message in filter(None, messages):
        typer.echo(message, err=as_json)
    if strict and record["warnings"]:
        count = len(record["warnings"])
        raise WorkbenchError(
            f"--strict: the plan has {count} warning{'s' if count > 1 else ''} ({record['warnings'][0]})",
            "Change the plan (e.g. --gpus, --days, --compute), or drop --strict.",
        )
