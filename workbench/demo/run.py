"""The embedded default, end to end: sweep -> store -> fit (largest budget held out) -> plan -> flagship
run with `workbench train` -> prediction vs outcome -> HTML report. `workbench demo` runs it.

Each step calls its stage's function; finished runs are reused on a rerun (run directories are the
cache). The checks: the fit's held-out ones (workbench.fit.holdout), the flagship's (workbench.demo.checks)
and the embedded default's acceptance as an experiment (workbench.demo.experiment). The flagship is planned
with the isoFLOP law and the sweep's own rules (workbench.plan.from_sweep); its prediction interval is the
bootstrap interval of L*(C) widened by the run-to-run scatter (workbench.fit.frontier).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from workbench.core.configfile import dump_yaml
from workbench.core.errors import WorkbenchError
from workbench.core.files import atomic_write_text
from workbench.data.prepare import ensure_default_corpus
from workbench.demo import checks, experiment
from workbench.fit.envelope import sweep_curves
from workbench.fit.fitfile import write_json_atomic
from workbench.fit.pipeline import FitOptions
from workbench.fit.points import validate_points
from workbench.fit.stage import fit_stage
from workbench.plan.from_sweep import plan_sweep_flagship
from workbench.report.page import write_report
from workbench.store.database import Store, default_db_path
from workbench.sweep.grid import expand
from workbench.sweep.launch import launch
from workbench.sweep.spec import load_spec
from workbench.train import rundir

log = logging.getLogger(__name__)


def _say(step: str, text: str) -> None:
    log.info("[demo %s] %s", step, text)


def run_demo(
    spec_path: str | Path = "sweeps/cpu.yaml",
    db_path: Path | None = None,
    out: Path | None = None,
    bootstrap: int = 1000,
    lr_check: bool = True,
    overrides: Sequence[str] = (),
) -> dict:
    """Run every stage (the sweep YAML with `key.sub=value` overrides); returns the outcome record (also
    written to fits/NAME-demo.json)."""
    t_start = time.time()
    spec, lines = load_spec(spec_path, overrides)
    db_path = Path(db_path or default_db_path())
    corpus = ensure_default_corpus()
    _say("1/7", f"corpus: {corpus}")

    def run_sweep(plan, label: str):
        step = "2/7" if plan.spec.name != spec.name or len(plan.runs) < n_runs else "3/7"
        _say(step, f"sweep {plan.spec.name}: {len(plan.runs)} runs {label}".strip() + " (finished runs are reused)")
        _launch(plan, db_path, f"{spec_path} {label}".strip())
        with Store(db_path) as store:
            return store.points(plan.spec.name)

    sweep_plan = expand(spec, str(spec_path), lines)
    n_runs = len(sweep_plan.runs)
    lr = checks.lr_check(spec, run_sweep) if lr_check else None
    points = validate_points(run_sweep(sweep_plan, ""), f"sweep {spec.name!r}")
    held = float(points["budget_flops"].max())
    _say("4/7", f"fit without the largest budget ({held:.2g} FLOPs), {bootstrap} bootstrap resamples")
    options = FitOptions(bootstrap=bootstrap, exclude_largest=True, at_flops=(held,))
    fit_path = Path("fits") / f"{spec.name}.json"
    source = f"sweep:{spec.name} without its largest budget"
    with Store(db_path) as store:  # the runs' loss curves: Chinchilla approach 1 joins the cross-method table
        curves = sweep_curves(points[points["budget_flops"] < held], store.metrics)
    extra = {"sweep_spec": spec.model_dump(mode="json")}  # `workbench plan` then inherits the sweep
    record = fit_stage(
        points, options, name=spec.name, source=source, out=fit_path, sweep=spec.name, curves=curves, extra=extra
    )
    plan, plan_record, config = plan_sweep_flagship(record, spec, held, str(corpus))
    config_path = Path(config.run_dir).parent / f"{Path(config.run_dir).name}.yaml"
    atomic_write_text(config_path, dump_yaml(config))
    stored = {**plan_record.as_dict(), "budget_flops": held, "config_path": str(config_path)}
    with Store(db_path) as store:
        store.record_fit(record.as_dict())
        store.record_plan(stored)
    _say(
        "5/7",
        f"plan for {held:.2g} FLOPs: N* {plan.params:,.0f}, shape {plan.shape.name} "
        f"({plan.shape.params:,} params, {plan.shape_tokens:,} tokens)",
    )
    _say("6/7", f"training the flagship: workbench train {config_path}")  # and the branch check beside it
    # its lines go to stderr with the demo's own: stdout carries only the demo's result (JSON under --json)
    command = [sys.executable, "-m", "workbench.cli", "train", str(config_path)]
    proc = subprocess.Popen(command, text=True, stdout=2)  # file descriptor 2, whatever sys.stderr is now
    try:
        branch = experiment.branch_check(sweep_plan, record, db_path, checks.seed_scatter(points))
    except BaseException:
        proc.kill()
        raise
    flagship = rundir.read_final(config.run_dir) if proc.wait() == 0 else None
    if flagship is None:
        raise WorkbenchError(f"the flagship run failed (exit {proc.returncode})", f"See the run dir of {config_path}.")
    with Store(db_path) as store:
        store.ingest(Path(config.run_dir))
    outcome = checks.flagship_outcome(record, flagship, plan_record.shape)
    outcome.update(experiment.assess(outcome, record, points, spec.name, db_path, flagship, branch))
    outcome.update(lr_check=lr, sweep=spec.name, wall_s=time.time() - t_start, flagship_config=str(config_path))
    _say("7/7", "writing the report")
    report = write_report(
        spec.name,
        db_path,
        fit_path=fit_path,
        plan=stored,
        out=out or Path("reports") / f"{spec.name}.html",
        extra={"demo": outcome},
    )
    outcome["report"] = str(report)
    write_json_atomic(Path("fits") / f"{spec.name}-demo.json", outcome)
    return outcome


def _launch(plan, db_path: Path, spec_path: str) -> None:
    report = launch(plan, executor="local", new_version=True)  # a changed spec is a new version: reruns reuse runs
    with Store(db_path) as store:
        store.upsert_sweep(plan.spec.name, plan.spec.model_dump(mode="json"), spec_path)
        store.ingest(report.sweep_dir)
    for rid, state in (report.results or {}).items():
        if state != "completed":  # a diverged point is left out of the fit, as a real sweep's would be
            _say("!", f"run {rid} ended {state}: left out of the fit (see {report.sweep_dir / rid})")
