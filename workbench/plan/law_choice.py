"""What a plan starts from: the law by name or fit file (with `--hparams`' batch and LR laws), and the
data-constrained variant of a loss law (`--unique-tokens`). Reads the files it is given; the plan itself
(workbench.plan.planner) stays pure."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from workbench.core.errors import WorkbenchError
from workbench.fit.laws import ALIASES, BUILTIN, DEFAULT_LAW, DEFAULT_REASON, builtin_law, hparam_laws, law_from_fit
from workbench.plan.data_constrained import DataConstrainedLaw
from workbench.records import read_fit, read_hparams


def resolve_law(spec: str | None, budget_flops: float, hparams: Path | None):
    """A built-in law by name (None: the default, with the reason as its first note), or the law of a fit
    file fits/NAME.json; with --hparams, its batch and LR laws."""

    only = only_fit() if spec is None else None
    if only is not None:
        law = law_from_fit(read_fit(only), str(only))
        law = dataclasses.replace(
            law, notes=(f"the law of {only}, the only fit in fits/ (--law picks another)", *law.notes)
        )
    elif spec is None:
        law = builtin_law(DEFAULT_LAW, budget_flops)
        law = dataclasses.replace(law, notes=(DEFAULT_REASON, *law.notes))
    elif spec.strip().lower() in (*BUILTIN, *ALIASES) or (Path(spec).suffix != ".json" and not Path(spec).exists()):
        law = builtin_law(spec, budget_flops)  # an unknown name raises, listing the valid ones
    else:
        law = law_from_fit(read_fit(spec), spec)
    if hparams is None:
        return law
    block, source = read_hparams(hparams)
    return dataclasses.replace(law, hparams=hparam_laws(block, source))


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
