"""What `workbench plan` asks for, planned: the law (a built-in one, or a fit file's), and for a fit of a sweep a
plan that inherits the sweep (workbench.plan.from_sweep); the record `--json` prints and the flagship config.

Pure apart from reading the fit file, a `sweep tune` file and a data folder's manifest; writes nothing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from workbench.core.errors import WorkbenchError
from workbench.data.prepare import default_corpus_dir
from workbench.fit.laws import Law
from workbench.plan import from_sweep, planner
from workbench.plan.data_constrained import epochs_note
from workbench.plan.hparams import anchors_left_out
from workbench.plan.law_choice import data_constrained, fit_of, resolve_law, tuned_laws
from workbench.plan.layout_cost import Gpu
from workbench.plan.record import to_record
from workbench.sweep.spec import SweepSpec
from workbench.train.config import TrainConfig

PUBLISHED = "published"  # --hparams published: the published-run rules (workbench.plan.hparams)


@dataclass(frozen=True)
class Request:
    """The options of `workbench plan`, parsed."""

    budget_flops: float
    gpu: Gpu
    mfu: float = 0.4
    gpus: int | None = None
    days: float | None = None
    law: str | None = None  # a built-in law's name or a fit file (None: the only fit in fits/, else epoch)
    method: str | None = None  # a fit's parametric (default) or isoflop law
    hparams: str | None = None  # a `sweep tune` file, or "published"
    inference_tokens: float | None = None
    unique_tokens: float | None = None
    seq_len: int | None = None
    vocab_size: int | None = None
    lr_floor: float = planner.FLOOR
    leave_out: tuple[str, ...] = ()


@dataclass(frozen=True)
class Planned:
    """The plan, its record (a dict, as `--json` prints it) and the sweep it inherits (None: a generic plan)."""

    plan: planner.Plan
    record: dict
    sweep: SweepSpec | None

    @property
    def name(self) -> str:
        return f"flagship-{self.plan.law.name}-{self.plan.budget_flops:.3g}".replace("+", "").replace("/", "_")

    def config(self, data: str | None, run_dir: str | None) -> TrainConfig:
        """The flagship's train config: trained as the sweep's runs were, or the generic recipe on `data`."""
        run_dir = run_dir or f"runs/flagship/{self.name}"
        if self.sweep is not None:
            config = from_sweep.sweep_config(self.plan, self.sweep, run_dir, self.name)
            if data is None:
                return config
            return config.model_copy(update={"data": config.data.model_copy(update={"sources": [{"path": data}]})})
        return planner.flagship_config(self.plan, data or str(default_corpus_dir()), run_dir, self.name)


def make(req: Request) -> Planned:
    """Plan what `req` asks for (see the module docstring)."""
    if req.method is not None and req.method not in from_sweep.METHODS:
        raise WorkbenchError(f"--method: unknown method {req.method!r}", f"Use one of {', '.join(from_sweep.METHODS)}.")
    published = req.hparams is not None and req.hparams.strip().lower() == PUBLISHED
    tune_file = None if published or req.hparams is None else Path(req.hparams)
    fit = fit_of(req.law)
    if fit is None and req.method is not None:
        raise WorkbenchError("--method picks a fit file's law", "Give --law fits/NAME.json, or drop --method.")
    sweep = from_sweep.sweep_spec_of(fit[0], fit[1]) if fit else None
    if sweep is not None:
        plan = _from_sweep(req, fit, sweep, tune_file, published)
    else:
        plan = _generic(req, fit, tune_file, published)
    record = to_record(plan).public()
    if sweep is not None:
        spec_hash = ((fit[0].model_extra or {}).get("sweep_version") or {}).get("spec_hash")
        record["inherited"] = from_sweep.inherited(sweep, plan, spec_hash)
    if req.unique_tokens is not None:
        text, warn = epochs_note(plan.shape_tokens, req.unique_tokens)
        epochs = plan.shape_tokens / req.unique_tokens
        record["data_constrained"] = {"unique_tokens": req.unique_tokens, "epochs": epochs, "warning": warn}
        record["law"]["notes"].append(text)
    return Planned(plan, record, sweep)


def _from_sweep(req: Request, fit, sweep: SweepSpec, tune_file: Path | None, published: bool) -> planner.Plan:
    record, path, note = fit
    tune_default = Path("fits") / f"{sweep.name}-hparams.json"
    tune_file = tune_file or (tune_default if tune_default.is_file() else None)
    law = from_sweep.sweep_law(record, path, req.method or "parametric")
    if req.unique_tokens is not None:
        law = data_constrained(law, req.unique_tokens, req.inference_tokens)
    if note:
        law = dataclasses.replace(law, notes=(note, *law.notes))
    return from_sweep.plan_from_sweep(
        record,
        path,
        sweep,
        req.budget_flops,
        law=law,
        tuned=tuned_laws(tune_file) if tune_file else None,
        published=published,
        gpu=req.gpu,
        mfu=req.mfu,
        gpus=req.gpus,
        days=req.days,
        seq_len=req.seq_len,
        vocab_size=req.vocab_size,
        inference_tokens=req.inference_tokens,
        leave_out=anchors_left_out(list(req.leave_out)),
    )


def _generic(req: Request, fit, tune_file: Path | None, published: bool) -> planner.Plan:
    law: Law | None = None
    if fit is not None:  # a fit without a sweep (a CSV, an older fit): its law, refused when degenerate
        record, path, note = fit
        law = from_sweep.sweep_law(record, path, req.method or "parametric")
        law = dataclasses.replace(law, notes=(note, *law.notes)) if note else law
    law = resolve_law(req.law, req.budget_flops, tune_file, law)
    if published:
        law = dataclasses.replace(law, hparams=None)
    if req.unique_tokens is not None:
        law = data_constrained(law, req.unique_tokens, req.inference_tokens)
    return planner.make_plan(
        law,
        req.budget_flops,
        gpu=req.gpu,
        mfu=req.mfu,
        seq_len=req.seq_len or planner.default_seq_len(req.budget_flops),
        vocab_size=req.vocab_size or planner.default_vocab(req.budget_flops),
        gpus=req.gpus,
        days=req.days,
        inference_tokens=req.inference_tokens,
        floor=req.lr_floor,
        hparams_leave_out=anchors_left_out(list(req.leave_out)),
    )
