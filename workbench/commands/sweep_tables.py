"""Rich tables that the sweep commands print (the face: no logic, only layout)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from workbench.core.units import human

WIDTH = 160  # wide enough for run ids and every column, also when stdout is not a terminal


def print_plan(result) -> None:
    """Every run of a workbench.sweep.spec.Plan and its totals."""
    launch = result.spec.launch
    table = Table(title=f"sweep {result.spec.name}: {len(result.runs)} runs ({result.source})")
    for column in ("run", "kind", "budget", "params", "shape", "tokens", "steps", "batch", "LR", "GPU-h"):
        table.add_column(column, justify="left" if column in ("run", "kind", "shape") else "right")
    for r in result.runs:
        table.add_row(
            r.run_id,
            r.kind,
            f"{r.budget_flops:.3g}",
            human(r.params),
            r.shape,
            human(r.tokens),
            f"{r.steps:,}",
            human(r.batch_tokens),
            f"{r.lr_peak:.3g}",
            f"{r.gpu_hours:,.1f}",
        )
    console = Console(width=WIDTH)
    console.print(table)
    console.print(
        f"total {result.cost_flops:.3g} FLOPs = {result.gpu_hours:,.1f} GPU-hours at {launch.mfu:.0%} MFU of "
        f"{launch.gpu_peak_flops:.3g} FLOP/s per GPU",
        highlight=False,
    )
    if result.spec.grid.schedule == "wsd":
        console.print(
            f"WSD: {result.cost_flops:.3g} FLOPs against {result.cosine_flops:.3g} for separate cosine runs "
            f"({result.saved_fraction:.0%} saved)",
            highlight=False,
        )


def print_checks(report) -> None:
    """The checks' notes of `sweep plan` (workbench.sweep.preflight.Report), or that every check passed."""
    console = Console(width=WIDTH)
    console.print(f"spec hash {report.spec_hash} (runs/SWEEP/versions.json records each launched version)")
    for note in report.notes:
        console.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)
    if not report.notes:
        console.print("checks: tokenizer and vocabulary, sizes per budget, data and executor all pass here")


def print_status(result) -> None:
    """A workbench.sweep.status.SweepStatus: counts by state and one row per run."""
    counts = ", ".join(f"{n} {state}" for state, n in result.counts.items()) or "no runs"
    scope = f"; {result.scope.describe()}" if result.scope else ""
    table = Table(title=f"sweep {result.name}: {result.state} ({counts}){scope}")
    for column in ("run", "state", "job", "slurm", "tokens", "val_loss"):
        table.add_column(column)
    for r in result.runs:
        loss = f"{r.val_loss:.4f}" if isinstance(r.val_loss, float) else ""
        table.add_row(r.run_id, r.state, r.job_id or "", r.slurm_state or "", str(r.tokens or ""), loss)
    Console(width=WIDTH).print(table)


def launch_lines(report, result) -> list[str]:
    """What a launch did (a workbench.sweep.launch.LaunchReport of the sweep plan `result`), one line each:
    local runs by outcome (completed, diverged, failed, skipped); Slurm and dry runs: submitted and skipped."""
    counts = report.counts()
    if report.dry_run or report.executor == "slurm":
        verb, shown = ("would submit" if report.dry_run else "submitted"), ("skipped",)
    else:
        verb, shown = "ran", ("completed", "diverged", "failed", "skipped")
    outcome = ", ".join(f"{counts[k]} {k}" for k in shown if counts[k] or k != "diverged")
    version = ""
    if report.version is not None:
        would = "would start " if report.dry_run and report.version.action == "new" else ""
        version = f" ({would}{report.version.describe()})"
    lines = [
        f"sweep {result.spec.name}{version}: {verb} {len(report.submit)} of {len(result.runs)} runs "
        f"({report.executor}): {outcome}; run dirs in {report.sweep_dir}"
    ]
    lines += [f"  note: {note}" for note in report.notes]
    lines += [f"  replaced {rid} (moved to .replaced/)" for rid in report.replaced]
    lines += [f"  {rid}: job {job}" for rid, job in report.jobs.items()]
    lines += [f"  {rid}: {status} (another launch is training it)" for rid, status in report.locked_elsewhere().items()]
    return lines
