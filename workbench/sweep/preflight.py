"""The checks of a sweep before anything is written: `sweep plan`, `sweep launch --dry-run` and `sweep launch`
run the same ones, on the plan as validated (after overrides).

- the tokenizer of every prepared data folder (sources, anneal_sources, eval.sets) against model.vocab_size
  (the trainer refuses a mismatch at its first step: every run would fail), and one tokenizer per mixture;
- sizes per budget against the fit's rule (a parabola per budget needs workbench.fit.design.MIN_SIZES sizes);
  a sweep whose grid.min_sizes_per_budget is set below it says so and is launched (a pilot or a test);
- the data folders exist (`@default`, the embedded corpus, is prepared on demand);
- the executor can run here: Slurm's sbatch and srun on PATH; a CUDA sweep run locally needs a GPU.

`Problem.here` marks what depends on this machine (data present, executor available): `sweep plan` reviews a
sweep anywhere and only notes those; a launch, dry or not, refuses on any problem, before writing a file.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from workbench.core.errors import WorkbenchError
from workbench.data.shards import manifest_if_any
from workbench.fit.design import MIN_SIZES
from workbench.sweep.spec import Plan, spec_hash

DEFAULT_CORPUS = "@default"  # a data source path meaning workbench.data's embedded corpus (byte-level)
BYTES_VOCAB = 256


@dataclass(frozen=True)
class Problem:
    """One thing that stops the sweep: a one-line message and what to do; `here`: only on this machine."""

    message: str
    hint: str
    here: bool = False

    def error(self) -> WorkbenchError:
        return WorkbenchError(self.message, self.hint)


@dataclass(frozen=True)
class Report:
    """The problems (errors) and notes (warnings that do not stop a launch) of one sweep, and its spec hash."""

    problems: tuple[Problem, ...]
    notes: tuple[str, ...]
    spec_hash: str = ""

    def as_dict(self) -> dict:
        return {
            "spec_hash": self.spec_hash,
            "problems": [{"message": p.message, "hint": p.hint, "here": p.here} for p in self.problems],
            "notes": list(self.notes),
        }


def check(plan: Plan, base: Path, executor: str) -> Report:
    """Every check of the module docstring, for running `plan` from folder `base` with `executor`."""
    problems = _data_problems(plan, base) + _executor_problems(plan, executor)
    sizes_problems, notes = _sizes(plan)
    return Report(tuple(sizes_problems + problems), tuple(notes), spec_hash(plan.spec))


def review(plan: Plan, base: Path) -> Report:
    """`sweep plan`'s checks (with the spec's executor): a problem of the sweep itself is raised; what only this
    machine lacks (data, Slurm, a GPU) becomes a note, so that a sweep can be reviewed anywhere."""
    report = check(plan, base, plan.spec.launch.executor)
    fatal = [p for p in report.problems if not p.here]
    if fatal:
        raise fatal[0].error()
    here = tuple(f"not launchable here: {p.message}. {p.hint}" for p in report.problems)
    return Report((), report.notes + here, report.spec_hash)


def require(plan: Plan, base: Path, executor: str, dry_run: bool = False) -> Report:
    """`check`, raising the first problem as a one-line error (with a count of the others)."""
    report = check(plan, base, executor)
    if report.problems:
        first, more = report.problems[0], len(report.problems) - 1
        also = f" (and {more} more problem{'s' if more > 1 else ''}: `workbench sweep plan` lists them)" if more else ""
        raise WorkbenchError(first.message + also, first.hint)
    return report


def _folders(plan: Plan) -> list[tuple[str, str]]:
    """(key, path) of every data folder the sweep reads."""
    data, sets = plan.spec.data, plan.spec.train.eval.sets
    found = [("data.sources", s.path) for s in data.sources]
    found += [("data.anneal_sources", s.path) for s in data.anneal_sources]
    return found + [(f"train.eval.sets.{name}", path) for name, path in sets.items()]


def _data_problems(plan: Plan, base: Path) -> list[Problem]:
    vocab, name = plan.spec.model.vocab_size, plan.spec.name
    problems, tokenizers = [], []
    for key, path in _folders(plan):
        if path == DEFAULT_CORPUS:
            tokenizers.append((path, f"bytes, vocab {BYTES_VOCAB}", BYTES_VOCAB, "bytes"))
            continue
        folder = Path(path) if Path(path).is_absolute() else base / path
        manifest = manifest_if_any(folder) if folder.is_dir() else None
        if manifest is None:
            what = "not found" if not folder.exists() else "is not a prepared data set (no manifest.json)"
            problems.append(
                Problem(
                    f"sweep {name}: data set {path} ({key}) {what}",
                    f"Prepare it: `workbench data prepare INPUTS --out {path}` (docs/OWN-DATA.md).",
                    here=True,
                )
            )
            continue
        tok = manifest.get("tokenizer") or {}
        label = tok.get("name") or f"{tok.get('kind')}, vocab {tok.get('vocab_size')}"
        tokenizers.append((path, label, tok.get("vocab_size"), tok.get("sha256")))
    for path, label, size, _ in tokenizers:
        if size != vocab:
            problems.append(
                Problem(
                    f"sweep {name}: model.vocab_size {vocab} does not match the tokenizer of {path} ({label})",
                    f"Set model.vocab_size: {size} (the trainer refuses every run otherwise).",
                )
            )
            break
    first = tokenizers[0] if tokenizers else None
    for other in tokenizers[1:]:
        if (other[2], other[3]) != (first[2], first[3]):
            problems.append(
                Problem(
                    f"sweep {name}: data sets {first[0]} ({first[1]}) and {other[0]} ({other[1]}) use different "
                    "tokenizers",
                    "Prepare every folder of a sweep with the same --tokenizer.",
                )
            )
            break
    return problems


def slurm_problem(what: str) -> Problem | None:
    """No Slurm here (sbatch or srun missing from PATH): the problem, naming `what` is launched."""
    missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
    if not missing:
        return None
    return Problem(
        f"{what}: no Slurm on this machine ({' and '.join(missing)} not found)",
        "Launch from a Slurm login node, or on this machine with --executor local.",
        here=True,
    )


def _executor_problems(plan: Plan, executor: str) -> list[Problem]:
    if executor == "slurm":
        problem = slurm_problem(f"sweep {plan.spec.name}")
        return [problem] if problem else []
    if plan.spec.train.runtime.device == "cuda" and shutil.which("nvidia-smi") is None:
        return [
            Problem(
                f"sweep {plan.spec.name}: train.runtime.device is cuda and this machine has no NVIDIA GPU "
                "(nvidia-smi not found)",
                "Launch with the Slurm executor, or set train.runtime.device: cpu for a run on this machine.",
                here=True,
            )
        ]
    return []


def _sizes(plan: Plan) -> tuple[list[Problem], list[str]]:
    """Budgets with fewer sizes than a fit needs: an error, or a note where grid.min_sizes_per_budget allows it."""
    grid = plan.spec.grid
    if grid.kind != "isoflop":
        return [], []
    sizes: dict[float, set[int]] = {}
    for run in plan.runs:
        sizes.setdefault(run.budget_flops, set()).add(run.params)
    short = {b: len(s) for b, s in sorted(sizes.items()) if len(s) < MIN_SIZES}
    if not short:
        return [], []
    listed = ", ".join(f"{b:.3g} ({n})" for b, n in short.items())
    text = f"sweep {plan.spec.name}: budgets {listed} have fewer sizes than the {MIN_SIZES} a fit needs (a parabola)"
    if "min_sizes_per_budget" in grid.model_fields_set and grid.min_sizes_per_budget < MIN_SIZES:
        return [], [f"{text}: `workbench fit` leaves them out (grid.min_sizes_per_budget {grid.min_sizes_per_budget})"]
    return [Problem(text, f"Add sizes (grid.sizes) or widen grid.spread to {MIN_SIZES} sizes per budget.")], []
