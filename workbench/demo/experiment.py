"""The embedded default as an experiment: the seed scatter per budget, the WSD branch check (a
branch against the same (N, D, seed) trained alone), the validation set's own sampling error, and the
acceptance checks of workbench.demo.checks.experiment_checks on the demo's outcome. Launches one run (the
branch check); the rest reads the store and the run directories."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from workbench.demo import checks
from workbench.records import FitRecord
from workbench.train import rundir

log = logging.getLogger(__name__)


def assess(
    outcome: dict,
    record: FitRecord,
    points: pd.DataFrame,
    sweep: str,
    db_path: Path,
    flagship: dict,
    branch: dict | None,
) -> dict:
    """The demo outcome's experiment fields: seed_scatter, branch_check (`branch_check`'s result),
    val_set_error, experiment (the checks) and the flagship's bit_identity (what its losses reproduce on)."""

    scatter = checks.seed_scatter(points)
    return {
        "seed_scatter": scatter,
        "branch_check": branch,
        "val_set_error": val_set_error(db_path, sweep),
        "experiment": checks.experiment_checks(outcome, record, scatter, branch),
        "bit_identity": flagship.get("bit_identity"),
    }


def branch_check(plan, record, db_path: Path, scatter: list[dict]) -> dict | None:
    """A WSD branch against the same (N, D, seed) trained alone from step 0: the seed-0 branch at the centre
    size of the largest fitted budget that has one (None on a cosine sweep)."""
    from workbench.store.database import Store
    from workbench.sweep.launch import launch_runs, materialize, single_run

    fitted = [m["budget_flops"] for m in record.isoflop.minima]
    branches = [r for r in plan.runs if r.kind == "branch" and r.budget_flops in fitted and r.config.seed == 0]
    if not branches:
        return None
    centre = {s["budget_flops"]: s["params"] for s in scatter}
    run = max(branches, key=lambda r: (r.budget_flops, r.params == centre.get(r.budget_flops), r.params))
    name = f"{plan.spec.name}-branch-check"
    cfg = materialize(run.config, Path.cwd())  # as the sweep wrote it: absolute paths, the corpus resolved
    root = Path(cfg.run_dir).parent.parent / name
    config = cfg.model_copy(
        update={
            "run_dir": str(root / run.run_id),
            "meta": {**cfg.meta, "sweep": name, "kind": "run", "branch_of": None},
            "checkpoint": cfg.checkpoint.model_copy(update={"init_from": None}),
        }
    )
    log.info("[demo 6/7] WSD branch check: %s trained alone from step 0", run.run_id)
    launch_runs(root, [single_run(config)], {run.run_id: config}, plan.spec.launch, "local", job_name=name)
    with Store(db_path) as store:
        store.ingest(root)
    separate, branch = rundir.read_final(config.run_dir), rundir.read_final(cfg.run_dir)
    if not separate or not branch or separate.get("val_loss") is None:
        return None
    out = checks.branch_match(branch["val_loss"], separate["val_loss"], scatter, run.budget_flops)
    return {
        **out,
        "run_id": run.run_id,
        "params": run.params,
        "tokens": run.tokens,
        "budget_flops": run.budget_flops,
        "trunk": run.branch_of,
        "branch_start_tokens": run.start_tokens,
    }


def val_set_error(db_path: Path, sweep: str) -> float | None:
    """The validation set's own sampling error: the largest standard error of a run's mean validation loss
    over its batches (final.json val_loss_se), relative to that loss."""
    from workbench.store.database import Store

    with Store(db_path) as store:
        runs = store.runs(sweep)
    finals = [json.loads(f) for f in runs["final"].dropna()]
    errors = [f["val_loss_se"] / f["val_loss"] for f in finals if f.get("val_loss_se") and f.get("val_loss")]
    return max(errors, default=None)


def _value(value) -> str:
    if isinstance(value, dict) and "rel_diff" in value:
        return f"{value['rel_diff']:+.2%} vs seed scatter {value['seed_scatter'] or float('nan'):.2%}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v:.3g}" for k, v in value.items())
    return "n/a" if value is None else f"{value:.4g}"


def summary_lines(outcome: dict) -> list[str]:
    """The experiment's lines of `workbench demo`'s closing summary."""
    lines: list[str] = []
    if outcome.get("seed_scatter"):
        per = ", ".join(
            f"{s['budget_flops']:.2g}: " + ("-" if s["scatter"] is None else f"{s['scatter']:.2%} ({s['seeds']} seeds)")
            for s in outcome["seed_scatter"]
        )
        lines.append(f"  seed scatter (sd / mean of the final val loss) per budget: {per}")
    if outcome.get("branch_check"):
        b = outcome["branch_check"]
        lines.append(
            f"  WSD branch {b['run_id']}: {b['branch_loss']:.4f}; the same (N, D, seed) trained alone "
            f"{b['separate_loss']:.4f} ({b['rel_diff']:+.2%})"
        )
    if outcome.get("val_set_error") is not None:
        lines.append(f"  validation set's own sampling error: at most {outcome['val_set_error']:.2%} of a run's loss")
    if outcome.get("experiment"):
        lines.append("  the embedded default as an experiment:")
        lines += [
            f"  {name}: {c.get('reason') or 'not scored'}"
            if c["passed"] is None
            else f"  {'PASS' if c['passed'] else 'FAIL'} {name}: {_value(c['value'])}"
            for name, c in outcome["experiment"].items()
        ]
    return lines
