"""The run directory: the one module that writes and reads its files (DESIGN.md, "run directory").

    RUN_DIR/
      config.yaml     the resolved TrainConfig, written before training; a rerun with another config is refused
      metrics.jsonl   one JSON row per optimizer step, appended whole lines; rows with an "event" key
                      (resume, init_from, rollback, interrupted, diverged) are events, not samples;
                      a resume event carries the bit_identity of the segment it starts
      final.json      the run's record, written atomically at the end (status, val_loss, tokens, ...,
                      bit_identity: what a bit-identical rerun needs: torch, threads, CPU capability, GPU)
      train.log       the trainer's output when it ran in a worker process
      ckpt/step_N/    checkpoints (their format: workbench.train.checkpoint)

The trainer writes through this module; the store, sweep status, the launchers and the demo read through it.
No torch or duckdb at import time (bit_identity and the checkpoint listing import torch when called).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from workbench.core.configfile import MAX_CONFIG_BYTES
from workbench.core.errors import WorkbenchError
from workbench.core.files import append_text, atomic_write_text, child, json_text, read_json, safe_name
from workbench.core.units import as_float, as_int, as_text, in_domain
from workbench.model.shapes import ModelShape

log = logging.getLogger(__name__)

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
FINAL = "final.json"
LOG = "train.log"
CKPT = "ckpt"
LOCK = ".lock"  # workbench.train.runlock: one trainer per run directory
JOBS = "jobs.json"  # runs/SWEEP/jobs.json: the launcher's record of submitted jobs (workbench.sweep.status)
VERSIONS = "versions.json"  # runs/SWEEP/versions.json: the sweep's versions and their runs (workbench.sweep.versions)
RUN_FILES = (CONFIG, METRICS, FINAL)  # a directory holding any of these is a run directory
TERMINAL = ("completed", "diverged")  # a run in one of these states is not trained again
FINAL_STATUSES = ("completed", "diverged", "failed", "interrupted")  # what final.json's status may say
RUN_KINDS = ("run", "trunk", "branch", "trial")  # config.yaml meta.kind: what the sweep planned the run as
_SKIP_DIRS = {CKPT, "__pycache__"}
MAX_DEPTH = 4  # a path given to find_run_dirs may be a run, a sweep (runs one or two levels down) or a root
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~10x faster on many runs
_FIX_HINT = "Fix or remove the file (rerunning the run rewrites it)."


# --- writes (the trainer, the launchers and the importers) --------------------------------------------------


def run_dir_in(root: str | Path, run_id: object, where: str = "") -> Path:
    """ROOT/RUN_ID for a run id checked before anything is written there: a plain name (no `/`, no `..`),
    not a link out of `root` (workbench.core.files.child)."""
    return child(root, run_id, "run id", where)


def write_config(run_dir: str | Path, text: str) -> Path:
    """RUN_DIR/config.yaml, atomically (the YAML text of a TrainConfig: workbench.config.dump_yaml)."""
    return atomic_write_text(Path(run_dir) / CONFIG, text)


def write_metrics(run_dir: str | Path, rows: list[dict]) -> Path:
    """RUN_DIR/metrics.jsonl, whole and atomically (a run imported from elsewhere), one JSON object per line."""
    return atomic_write_text(Path(run_dir) / METRICS, "".join(json_text(row) + "\n" for row in rows))


def append_metric(run_dir: str | Path, row: dict) -> None:
    """Append one row to metrics.jsonl as a whole line (a killed writer leaves at most a torn last line)."""
    append_text(Path(run_dir) / METRICS, json.dumps(row) + "\n")


def repair_metrics(run_dir: str | Path) -> None:
    """Drop a torn last line of metrics.jsonl left by a killed writer, before the run appends again."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def write_imported(run_dir: str | Path, config_text: str, rows: list[dict], final: dict | None) -> bool:
    """A run imported from elsewhere (workbench.store.importers): its config.yaml, metrics.jsonl and final.json,
    written only when one of them differs from what the folder holds; returns whether anything was written (a
    second import of the same run changes nothing, not even a file's time)."""
    run_dir = Path(run_dir)
    texts = {
        CONFIG: config_text,
        METRICS: "".join(json_text(row) + "\n" for row in rows),
        FINAL: json_text(final, indent=1) if final is not None else None,
    }
    held = {name: (run_dir / name).read_text() if (run_dir / name).is_file() else None for name in texts}
    if held == texts:
        return False
    run_dir.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        if text is None:
            (run_dir / name).unlink(missing_ok=True)
        elif held[name] != text:
            atomic_write_text(run_dir / name, text)
    return True


def write_final(run_dir: str | Path, record: dict) -> Path:
    """RUN_DIR/final.json, atomically, as strict JSON (a NaN loss is written as null)."""
    return atomic_write_text(Path(run_dir) / FINAL, json_text(record, indent=1))


def bit_identity(device: Any = None) -> dict:
    """What a bit-identical rerun of this process depends on: torch version, intra-op threads, the CPU
    kernels' instruction set (torch.backends.cpu.get_cpu_capability()) and, on a GPU, its name."""
    import torch

    cuda = getattr(device, "type", device) == "cuda"
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cuda_device": torch.cuda.get_device_name(device) if cuda else None,
    }


# --- reads ----------------------------------------------------------------------------------------------


def is_run_dir(path: Path) -> bool:
    return any((path / name).is_file() for name in RUN_FILES)


def find_run_dirs(root: str | Path) -> dict[str, Path]:
    """run_id (the directory's name) -> run directory, for every run at or below `root` (a run may hold its
    branch runs below it); two directories with one name are an error."""
    found: dict[str, Path] = {}
    stack = [(Path(root), 0)]
    while stack:
        path, depth = stack.pop()
        if is_run_dir(path):
            other = found.setdefault(path.name, path)
            if other != path:
                raise WorkbenchError(
                    f"two run directories share the run id '{path.name}': {other} and {path}",
                    "Run ids must be unique; remove or rename one of them.",
                )
        if depth < MAX_DEPTH:
            children = (p for p in path.iterdir() if p.is_dir() and p.name not in _SKIP_DIRS)
            stack.extend((child, depth + 1) for child in sorted(children, reverse=True) if child.name[0] != ".")
    return dict(sorted(found.items()))


def read_config(run_dir: str | Path) -> dict:
    """config.yaml as a dict ({} when there is none); malformed YAML is a one-line error with file:line."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        return {}
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise WorkbenchError(f"{path}: {size:,} bytes, over the {MAX_CONFIG_BYTES:,}-byte limit of a config", _FIX_HINT)
    try:
        data = yaml.load(path.read_bytes(), Loader=_YAML_LOADER)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise WorkbenchError(f"{where}: malformed YAML", _FIX_HINT) from None
    except RecursionError:
        raise WorkbenchError(f"{path}: YAML nested too deeply", _FIX_HINT) from None
    except (ValueError, OverflowError) as err:  # an int of thousands of digits
        raise WorkbenchError(f"{path}: a value YAML cannot read ({str(err)[:80]})", _FIX_HINT) from None
    return data if isinstance(data, dict) else {}


def read_final(run_dir: str | Path) -> dict | None:
    """final.json (None while the run has not ended), checked with check_final: not a JSON object, an
    unknown status or a number outside its domain is a one-line error."""
    path = Path(run_dir) / FINAL
    if not path.exists() and not path.is_symlink():
        return None
    data = read_json(path, "run record", _FIX_HINT)
    return check_final(data, str(path))


# final.json's numbers: field -> (lowest value, whole number); a value may also be null
FINAL_NUMBERS = {
    "val_loss": (0.0, False),
    "val_loss_se": (0.0, False),
    "params": (0, True),
    "params_total": (0, True),
    "tokens": (0, True),
    "flops": (0.0, False),
    "steps": (0, True),
    "wall_s": (0.0, False),
    "rollbacks": (0, True),
    "seq_len": (1, True),
    "flops_per_token": (0.0, False),
}


def check_final(record: object, where: str) -> dict:
    """A run record (final.json, or one an importer is about to write) checked in one pass: a JSON object,
    status one of FINAL_STATUSES, every number of FINAL_NUMBERS and each val_loss_NAME finite and in its
    domain (or null). The first problem is a one-line error at `where`."""
    if not isinstance(record, dict):
        raise WorkbenchError(f"{where}: expected a JSON object", _FIX_HINT)
    status = record.get("status")
    if status not in FINAL_STATUSES:
        raise WorkbenchError(
            f"{where}: status {str(status)[:40]!r} is not one of {', '.join(FINAL_STATUSES)}", _FIX_HINT
        )
    losses = {k: (0.0, False) for k in record if k.startswith("val_loss_") and k != "val_loss_se"}
    for field, (low, integer) in (FINAL_NUMBERS | losses).items():
        value = record.get(field)
        if status != "completed" and field.startswith("val_loss") and isinstance(value, float) and math.isnan(value):
            continue  # a diverged run's loss, written as NaN by older versions: stored as null
        try:
            in_domain(value, field, low=low, integer=integer)
        except WorkbenchError as err:
            raise WorkbenchError(f"{where}: {err.detail}", _FIX_HINT) from None
    return record


def final_status(run_dir: str | Path) -> str | None:
    """final.json's status, or None while the run has not ended."""
    final = read_final(run_dir)
    return None if final is None else final.get("status")


def signature(run_dir: Path) -> str:
    """Where the run lives and the size and mtime of its files: an unchanged signature is an unchanged run."""
    parts = [str(run_dir.resolve())]
    for name in RUN_FILES:
        try:
            info = (run_dir / name).stat()
            parts.append(f"{name}:{info.st_size}:{info.st_mtime_ns}")
        except FileNotFoundError:
            parts.append(f"{name}:-")
    return "|".join(parts)


def metrics_path(run_dir: str | Path) -> Path:
    """RUN_DIR/metrics.jsonl: present once the run has logged a step."""
    return Path(run_dir) / METRICS


def final_path(run_dir: str | Path) -> Path:
    """RUN_DIR/final.json: written last, when the run ends."""
    return Path(run_dir) / FINAL


def lock_path(run_dir: str | Path) -> Path:
    """RUN_DIR/.lock, held by the run's trainer (workbench.train.runlock)."""
    return Path(run_dir) / LOCK


def jobs_path(sweep_root: str | Path) -> Path:
    """runs/SWEEP/jobs.json, the launcher's record of the sweep's submitted jobs."""
    return Path(sweep_root) / JOBS


def versions_path(sweep_root: str | Path) -> Path:
    """runs/SWEEP/versions.json, the sweep's versions: each spec hash with the run ids it plans."""
    return Path(sweep_root) / VERSIONS


def read_versions(sweep_root: str | Path) -> dict | None:
    """runs/SWEEP/versions.json as a dict (None when the sweep has none); not a JSON object is a one-line error."""
    path = versions_path(sweep_root)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError as err:
        raise WorkbenchError(f"{path}: not valid JSON ({err})", "Restore it, or delete it to start over.") from None
    if not isinstance(data, dict) or not isinstance(data.get("versions"), list):
        raise WorkbenchError(f"{path}: expected an object with a list `versions`", "Restore it, or delete it.")
    for i, entry in enumerate(data["versions"]):
        number = entry.get("version") if isinstance(entry, dict) else None
        ids = entry.get("run_ids", []) if isinstance(entry, dict) else None
        if (
            type(number) is not int
            or number < 1
            or not isinstance(ids, list | type(None))
            or not all(isinstance(r, str) for r in ids or [])
            or not isinstance(entry.get("spec_hash"), str | type(None))
            or not isinstance(entry.get("spec"), dict | type(None))
        ):
            raise WorkbenchError(
                f"{path}: versions[{i}] is not a version (an object with a whole `version` >= 1, a list of "
                "`run_ids` strings and a `spec_hash` string)",
                "Restore it, or delete it to start over.",
            )
    return data


def write_versions(sweep_root: str | Path, record: dict) -> Path:
    """Atomic write of runs/SWEEP/versions.json."""
    return atomic_write_text(versions_path(sweep_root), json_text(record, indent=1))


def ckpt_dir(run_dir: str | Path) -> Path:
    """RUN_DIR/ckpt, the folder workbench.train.checkpoint writes into."""
    return Path(run_dir) / CKPT


def has_checkpoint(run_dir: str | Path) -> bool:
    """Anything under ckpt/ (without importing torch): the run started and a rerun resumes it."""
    folder = ckpt_dir(run_dir)
    return folder.is_dir() and any(folder.iterdir())


# --- metrics.jsonl ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricFile:
    """metrics.jsonl as read: by_step (the row kept for each step), events (every row with an "event"
    key, in file order), skipped (lines not kept: malformed, without a step, or torn)."""

    by_step: dict[int, dict]
    events: list[dict]
    skipped: int

    @property
    def last_sample(self) -> dict:
        """The training row of the highest step (event rows are not samples)."""
        steps = [step for step, row in self.by_step.items() if "event" not in row]
        return self.by_step[max(steps)] if steps else {}


def read_metrics(run_dir: str | Path) -> MetricFile:
    """Parse metrics.jsonl. The LAST training row for a step wins (a resumed run logs its steps again);
    an event row never replaces a training row: it is kept in events, and stands for its step only where
    that step has no training row and the event carries a loss (a rollback's or a divergence's spike); a
    bookkeeping event (checkpoint_rejected, interrupted, resume at step 0) is never a metrics row."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return MetricFile({}, [], 0)
    text = path.read_text(encoding="utf-8", errors="replace")
    try:  # fast path: one C-level parse of the whole file as a JSON array (a blank or bad line fails it)
        rows = json.loads("[" + text.rstrip("\n").replace("\n", ",") + "]") if text.strip() else []
        steps = [_step(row) for row in rows]
        bad_at: list[int] = []
    except (ValueError, KeyError, TypeError, OverflowError, RecursionError):
        rows, steps, bad_at = _parse_lines(path, text)
    if '"event"' not in text:
        return MetricFile(dict(zip(steps, rows, strict=True)), [], len(bad_at))
    by_step: dict[int, dict] = {}
    event_rows: dict[int, dict] = {}
    events: list[dict] = []
    for step, row in zip(steps, rows, strict=True):
        if "event" in row:
            events.append(row)
            if "loss" in row:
                event_rows[step] = row
        else:
            by_step[step] = row
    for step, row in event_rows.items():
        by_step.setdefault(step, row)
    return MetricFile(by_step, events, len(bad_at))


def _step(row: dict) -> int:
    """A metric row's step: a whole number in [0, 2^63) (anything else makes the line malformed)."""
    step = row["step"]
    if isinstance(step, bool) or not isinstance(step, int | float) or not 0 <= step < 2**63 or step != int(step):
        raise ValueError(f"step {step!r}")
    return int(step)


def _parse_lines(path: Path, text: str) -> tuple[list[dict], list[int], list[int]]:
    """Line by line: (rows, their steps, numbers of the lines that could not be read)."""
    rows, steps, bad_at = [], [], []
    numbered = [(n, line) for n, line in enumerate(text.split("\n"), 1) if line.strip()]
    for number, line in numbered:
        try:
            row = json.loads(line)
            steps.append(_step(row))
            rows.append(row)
        except (ValueError, KeyError, TypeError, OverflowError, RecursionError):
            bad_at.append(number)
    # a last line without its newline is being written now (the next read has it); anything else is damage
    torn = not text.endswith("\n") and bad_at[-1:] == [numbered[-1][0]]
    damaged = bad_at[:-1] if torn else bad_at
    if damaged:
        log.warning("workbench: %s:%d: skipped %d malformed metric line(s)", path, damaged[0], len(damaged))
    return rows, steps, bad_at


# --- one run as a record --------------------------------------------------------------------------------------


def summary(run_dir: Path, metric_file: MetricFile) -> dict[str, Any]:
    """The run as one flat record (the store's `runs` row; config, final and meta stay dicts): a run
    without final.json takes its progress from its last training row and its size from its shape."""
    config = read_config(run_dir)
    final = read_final(run_dir)
    meta, model = _section(config, "meta"), _section(config, "model")
    last, done = metric_file.last_sample, final or {}
    if final is not None:
        status = as_text(done.get("status")) or "unknown"
    else:
        status = "running" if metric_file.by_step else "pending"
    params, params_total = _shape_params(model)
    identity = _section(done, "bit_identity")
    budget_flops, target_params = _meta_numbers(config, meta, run_dir)
    return {
        "run_id": safe_name(run_dir.name, "run id", str(run_dir)),
        "sweep": _sweep_name(meta, run_dir),
        "name": as_text(config.get("name")),
        "run_dir": str(run_dir.resolve()),
        "status": status,
        "budget_flops": budget_flops,
        "target_params": target_params,
        "branch_of": as_text(meta.get("branch_of")),
        "params": as_int(_pick(done, "params", params)),
        "params_total": as_int(_pick(done, "params_total", params_total)),
        "tokens": as_int(_pick(done, "tokens", last.get("tokens"))),
        "flops": as_float(_pick(done, "flops", last.get("flops"))),
        "steps": as_int(_pick(done, "steps", last.get("step"))),
        "val_loss": as_float(done.get("val_loss")),
        "wall_s": as_float(_pick(done, "wall_s", last.get("wall_s"))),
        "error": as_text(done.get("error")),
        "config": config,
        "final": final,
        "lr_peak": as_float(_section(config, "optim").get("lr_peak")),
        "batch_tokens": as_int(_section(config, "batch").get("batch_tokens")),
        "seq_len": as_int(_section(config, "data").get("seq_len")),
        "n_layers": as_int(model.get("n_layers")),
        "d_model": as_int(model.get("d_model")),
        "schedule": as_text(_section(config, "schedule").get("kind")),
        "meta": meta,
        "metric_rows": len(metric_file.by_step),
        "last_step": as_int(last.get("step")),
        "last_loss": as_float(last.get("loss")),
        # older runs have no bit_identity block: their torch version is in final.json's versions
        "torch_version": as_text(_pick(identity, "torch", _section(done, "versions").get("torch"))),
        "torch_threads": as_int(identity.get("threads")),
        "cpu_capability": as_text(identity.get("cpu_capability")),
        "cuda_device": as_text(identity.get("cuda_device")),
    }


def _meta_numbers(config: dict, meta: dict, run_dir: Path) -> tuple[float | None, float | None]:
    """(budget_flops, target_params) of a run's config, checked: positive finite numbers (YAML reads 1e18 as
    text, so text that reads as a number is one) or absent; meta.kind one of RUN_KINDS or absent."""
    where = f"{run_dir / CONFIG}"
    kind = meta.get("kind")
    if kind is not None and kind not in RUN_KINDS:
        raise WorkbenchError(f"{where}: meta.kind {str(kind)[:40]!r} is not one of {', '.join(RUN_KINDS)}", _FIX_HINT)
    values = []
    for field, value in (
        ("meta.budget_flops", _pick(meta, "budget_flops", _section(config, "stop").get("budget_flops"))),
        ("meta.target_params", meta.get("target_params")),
    ):
        number = as_float(value) if isinstance(value, str) else value
        if isinstance(value, str) and number is None:
            raise WorkbenchError(f"{where}: {field} {value[:40]!r} is not a number", _FIX_HINT)
        try:
            values.append(in_domain(number, field, low=0.0, low_open=True))
        except WorkbenchError as err:
            raise WorkbenchError(f"{where}: {err.detail}", _FIX_HINT) from None
    return values[0], values[1]


def _section(record: dict, key: str) -> dict:
    value = record.get(key)
    return value if isinstance(value, dict) else {}


def _pick(record: dict, key: str, fallback: Any) -> Any:
    value = record.get(key)
    return fallback if value is None else value


def _shape_params(model: dict) -> tuple[int | None, int | None]:
    """(N, total) from the config's model section, so running runs show a size before final.json exists."""

    fields = ("n_layers", "d_model", "n_heads", "n_kv_heads", "ffn_dim", "vocab_size")
    try:
        shape = ModelShape("run", *(int(model[f]) for f in fields))
        return shape.params, shape.params_total
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None, None


def _sweep_name(meta: dict, run_dir: Path) -> str:
    """The run's sweep: meta.sweep (checked: it becomes part of report and fit paths), else its folder."""
    sweep = as_text(meta.get("sweep"))
    if sweep is None:
        return run_dir.parent.name
    return safe_name(sweep, "sweep name", f"{run_dir / CONFIG} meta.sweep")
