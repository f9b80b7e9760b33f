"""`workbench plan`: from a law and a compute budget (or GPUs x days) to the flagship run and its config."""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import UTC, datetime
from pathlib import Path

import typer

from workbench.commands.options import json_option
from workbench.core.errors import WorkbenchError
from workbench.core.files import atomic_write_text, json_clean
from workbench.core.units import parse_number
from workbench.plan.layout_cost import resolve_gpu


def _positive(text: str | None, option: str) -> float | None:
    if text is None:
        return None
    value = parse_number(text, option)
    if value <= 0:
        raise WorkbenchError(f"{option}: {text} must be positive", f"Give {option} a number above 0, e.g. 1e21.")
    return value


def _budget(compute: str | None, gpus_text: str | None, days_text: str | None, gpu, mfu: float):
    """(budget FLOPs, GPU count or None, days or None) from --compute | --gpus --days."""
    from workbench.plan.planner import resolve_budget

    gpus = _positive(gpus_text, "--gpus")
    if gpus is not None and gpus != math.floor(gpus):
        raise WorkbenchError(f"--gpus: {gpus_text} is not a whole number", "Give a GPU count such as 1024.")
    gpus = int(gpus) if gpus is not None else None
    return resolve_budget(_positive(compute, "--compute"), gpus, _positive(days_text, "--days"), gpu, mfu)


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
    mfu: float = typer.Option(0.4, "--mfu", help="Model FLOPs utilisation in (0, 1]."),
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
    out: Path = typer.Option(None, "--out", help="Write the flagship train config here (flagship.yaml)."),
    data: str = typer.Option(None, "--data", help="Prepared data folder for the flagship config."),
    run_dir: str = typer.Option(None, "--run-dir", help="Run directory of the flagship (default runs/flagship/NAME)."),
    db: Path = typer.Option(None, "--db", help="DuckDB file for the plans table (default: if it exists)."),
) -> None:
    """Plan the flagship: N*, D*, shape, loss, batch, LR, schedule, GPU time, memory and layout; a sweep's fit
    plans as the sweep trained (its data, tokenizer, seq_len, init, schedule and batch/LR rules)."""
    from workbench.plan.record import explain_layout, plan_text
    from workbench.plan.request import Request, make

    if not (0 < mfu <= 1):
        raise WorkbenchError(f"--mfu {mfu:g} is outside (0, 1]", "Give a utilisation such as 0.4 (40%).")
    device = resolve_gpu(gpu, gpu_memory_gb)
    budget, gpu_count, target_days = _budget(compute, gpus, days, device, mfu)
    for option, value, low in (("--seq-len", seq_len, 1), ("--vocab-size", vocab_size, 2)):
        if value is not None and value < low:
            raise WorkbenchError(f"{option} {value} is too small", f"Give {option} of at least {low}.")
    if not 0 <= lr_floor <= 1:
        raise WorkbenchError(f"--lr-floor {lr_floor:g} is outside [0, 1]", "Give a fraction of the peak, e.g. 0.01.")
    inference = None
    if inference_tokens is not None:
        inference = parse_number(inference_tokens, "--inference-tokens")
        if inference < 0:
            raise WorkbenchError(f"--inference-tokens {inference_tokens} is negative", "Give 0 or more, e.g. 1e13.")
    unique = _positive(unique_tokens, "--unique-tokens")
    request = Request(budget, device, mfu, gpu_count, target_days, law_spec, method, hparams, inference, unique)
    request = dataclasses.replace(
        request, seq_len=seq_len, vocab_size=vocab_size, lr_floor=lr_floor, leave_out=tuple(leave_out or [])
    )
    planned = make(request)
    record, name, messages = planned.record, planned.name, []
    if out is not None:
        from workbench.core.configfile import dump_yaml

        try:
            atomic_write_text(out, dump_yaml(planned.config(data, run_dir)))
        except OSError as err:
            raise WorkbenchError(f"--out: cannot write {out} ({err.strerror})", "Pick a writable path.") from None
        messages.append(f"wrote {out}: run it with `workbench train {out}`")
    stored = {**record, "name": name, "budget_flops": budget, "created": datetime.now(UTC).isoformat()}
    messages.append(_record(db, {**stored, "config_path": str(out) if out else None}))
    typer.echo(json.dumps(json_clean(record)) if as_json else plan_text(record))
    if explain:
        typer.echo(explain_layout(planned.plan), err=as_json)
    for message in filter(None, messages):
        typer.echo(message, err=as_json)
