"""What a plan starts from: the law by name or fit file (with `--hparams`' batch and LR laws), and the
data-constrained variant of a loss law (`--unique-tokens`). Reads the files it is given; the plan itself
(workbench.plan.planner) stays pure."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from workbench.core.errors import WorkbenchError
from workbench.fit.laws import (
    ALIASES,
    BUILTIN,
    DEFAULT_LAW,
    DEFAULT_REASON,
    HparamLaws,
    Law,
    builtin_law,
    hparam_laws,
    law_from_fit,
)
from workbench.plan.data_constrained import DataConstrainedLaw
from workbench.records import FitRecord, read_fit, read_hparams


def fit_of(spec: str | None) -> tuple[FitRecord, str, str | None] | None:
    """(fit record, its path, a note) when `spec` names a fit file, or is None and fits/ holds exactly one fit;
    None for a built-in law's name (or no law given and no single fit)."""
    if spec is None:
        only = only_fit()
        if only is None:
            return None
        return read_fit(only), str(only), f"the law of {only}, the only fit in fits/ (--law picks another)"
    if spec.strip().lower() in (*BUILTIN, *ALIASES) or (Path(spec).suffix != ".json" and not Path(spec).exists()):
        return None
    return read_fit(spec), spec, None


def resolve_law(spec: str | None, budget_flops: float, hparams: Path | None, law: Law | None = None):
    """A built-in law by name (None: the default, with the reason as its first note), or the law of a fit
    file fits/NAME.json (or `law`, already chosen from one); with --hparams, its batch and LR laws."""
    law = law or _named_or_fit_law(spec, budget_flops)
    return law if hparams is None else dataclasses.replace(law, hparams=tuned_laws(hparams))


def _named_or_fit_law(spec: str | None, budget_flops: float) -> Law:
    fit = fit_of(spec)
    if fit is not None:
        record, path, note = fit
        law = law_from_fit(record, path)
        return dataclasses.replace(law, notes=(note, *law.notes)) if note else law
    if spec is None:
        law = builtin_law(DEFAULT_LAW, budget_flops)
        return dataclasses.replace(law, notes=(DEFAULT_REASON, *law.notes))
    return builtin_law(spec, budget_flops)  # an unknown name raises, listing the valid ones


def tuned_laws(path: str | Path) -> HparamLaws:
    """The batch and LR laws of a `sweep tune` file (fits/SWEEP-hparams.json)."""
    block, source = read_hparams(path)
    return hparam_laws(block, source)


def only_fit(folder: Path = Path("fits")) -> Path | None:
    """The one fit record in `folder` (fits/NAME.json written by `workbench fit`), or None when there are none
    or several; other JSON files there (a demo's outcome, `sweep tune`'s hparams) are not fits."""
    found = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            record = read_fit(path)
        except WorkbenchError:
            continue
        if record.isoflop is not None or record.parametric is not None:
            found.append(path)
    return found[0] if len(found) == 1 else None


def data_constrained(law, unique_tokens: float, inference: float | None):
    """The law with its data term at Muennighoff et al.'s effective data of `unique_tokens` unique tokens."""

    if law.parametric is None:
        raise WorkbenchError(
            f"--unique-tokens needs a loss law, and {law.name} gives tokens only", "Use --law epoch or a fit file."
        )
    if inference is not None:
        raise WorkbenchError("--unique-tokens and --inference-tokens cannot be combined", "Drop one of them.")
    constrained = DataConstrainedLaw(**law.parametric.as_dict(), unique_tokens=unique_tokens)
    draws = None if law.draws is None else DataConstrainedLaw(**law.draws.as_dict(), unique_tokens=unique_tokens)
    return dataclasses.replace(law, parametric=constrained, draws=draws)
