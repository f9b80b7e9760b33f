"""`workbench db import`: runs logged elsewhere into the store, so a team can fit the curves it already has.

Each imported run becomes a run directory (config.yaml, metrics.jsonl, final.json) under `--runs`/imported, which
`Store.ingest` then reads like any other: one ingest path, and the run can be reported and re-ingested.

- A W&B offline run folder (wandb/offline-run-*/run-ID.wandb; `wandb/` or a run directory holding it):
  the transaction log is a LevelDB-style record log of W&B's protobuf `Record`s, parsed here with
  W&B's own protobuf classes; history rows are the metrics, the config and summary give config.yaml and
  final.json (a workbench run's full config and final record, under `workbench` / `workbench_final`).
- A W&B CSV export of a run's history (`_step` or `step` plus metric columns; a chart export's
  `RUN - metric` columns are understood, its __MIN/__MAX columns dropped).
- A TensorBoard event folder: every scalar point (the reader's default sampling is turned off) by step;
  TensorBoard keeps float32, so values match the original within float32 precision.
"""

from __future__ import annotations

import csv
import math
import struct
from pathlib import Path
from typing import Any

import yaml

from workbench.core.errors import WorkbenchError
from workbench.core.files import parse_json, safe_name, size_text
from workbench.train import rundir
from workbench.train.trackers import CONFIG_KEY, FINAL_KEY, TB_CONFIG, TB_FINAL, require

_BLOCK = 32768  # LevelDB log block
_HEADER = 7  # crc32 (4), length (2), type (1)
_FILE_HEADER = b":W&B"
_INT_KEYS = ("step", "tokens", "batch_tokens")


SOURCES = ("wandb", "tensorboard", "csv")  # where an imported run came from: the first part of its run id
MAX_CSV_BYTES = 1 << 30  # a history export larger than this is read by other means (docs/LIMITS.md)


def imported_id(source: str, found: str, given: str | None = None) -> str:
    """An imported run's id: SOURCE-RUNID (wandb-abc, tensorboard-abc, csv-export), so that copies of one run from
    two trackers, and the run's own directory, never share an id; `given` (--run-id) is taken as it is. Either
    becomes a folder name: checked (a plain name, not a link out of --runs) by rundir.run_dir_in before the
    first write."""
    return str(given) if given is not None else f"{source}-{found}"


def import_path(path: Path, into: Path, run_id: str | None = None, sweep: str | None = None) -> list[Path]:
    """Write a run directory under `into` for each run found at `path` (a run imported before with the same
    files is left as it is); returns them. Every run is read and checked first (its id and sweep are plain
    names, its final record valid), then written, file by file through a temp name in the run directory."""
    path = Path(path)
    if not path.exists():
        raise WorkbenchError(
            f"{path} not found", "Give a W&B offline run folder, a W&B CSV export or a TensorBoard folder."
        )
    if path.is_file() and path.suffix == ".csv":
        runs = [_from_csv(path, run_id, sweep)]
    elif path.is_file() and path.suffix == ".wandb" or path.is_dir() and list(path.rglob("*.wandb")):
        files = [path] if path.is_file() else sorted(path.rglob("*.wandb"))
        runs = [_from_wandb(f, run_id if len(files) == 1 else None, sweep) for f in files]
    elif path.is_dir() and list(path.rglob("events.out.tfevents.*")):
        folders = sorted({f.parent for f in path.rglob("events.out.tfevents.*")})
        runs = [_from_tensorboard(f, run_id if len(folders) == 1 else None, sweep) for f in folders]
    else:
        raise WorkbenchError(
            f"{path} holds no W&B run (*.wandb), CSV export or TensorBoard events (events.out.tfevents.*)",
            "Point at one of those.",
        )
    targets = [_checked(into, path, *run) for run in runs]  # every check before the first write
    return [_write_run_dir(target, *run[1:]) for target, run in zip(targets, runs, strict=True)]


def _checked(into: Path, source: Path, run_id: str, config: dict, rows: list[dict], final: dict | None) -> Path:
    """The run directory INTO/RUN_ID after checking what will be written there: the run id a plain name and
    not a link out of `into` (rundir.run_dir_in), the sweep a plain name (from the run's config or --sweep),
    the final record valid (rundir.check_final)."""
    where = f"{source} (run {str(run_id)[:60]!r})"
    target = rundir.run_dir_in(into, run_id, str(source))
    meta = config.get("meta") if isinstance(config.get("meta"), dict) else {}
    if meta.get("sweep") is not None:
        safe_name(meta["sweep"], "sweep name", f"{where} meta.sweep")
    if final is not None:
        rundir.check_final(final, f"{where} final record")
    return target


def _write_run_dir(run_dir: Path, config: dict, rows: list[dict], final: dict | None) -> Path:
    typed = [_typed(row) for row in sorted(rows, key=lambda r: r["step"])]
    rundir.write_imported(run_dir, yaml.safe_dump(config, sort_keys=False), typed, final)
    return run_dir


def _typed(row: dict) -> dict:
    return {
        k: int(round(v)) if k in _INT_KEYS and isinstance(v, float) and math.isfinite(v) else v for k, v in row.items()
    }


def _labelled(config: dict, sweep: str | None) -> dict:
    if sweep:
        meta = config.get("meta") if isinstance(config.get("meta"), dict) else {}
        config = {**config, "meta": {**meta, "sweep": sweep}}
    return config


# ---------------------------------------------------------------- W&B offline runs


def wandb_records(path: Path) -> list[tuple[str, Any]]:
    """(record type, message) of every record in a .wandb transaction log, in order."""
    require("wandb", "wandb")
    from wandb.proto import wandb_internal_pb2 as pb

    raw = Path(path).read_bytes()
    if raw[:4] != _FILE_HEADER:
        raise WorkbenchError(
            f"{path} is not a W&B transaction log (no :W&B header)", "Give an offline run's .wandb file."
        )
    records, pending, at = [], b"", 7
    while at + _HEADER <= len(raw):
        left = _BLOCK - at % _BLOCK
        if left < _HEADER:  # block trailer padding
            at += left
            continue
        _, length, kind = struct.unpack("<IHB", raw[at : at + _HEADER])
        data = raw[at + _HEADER : at + _HEADER + length]
        at += _HEADER + length
        if kind == 0 and length == 0:
            continue
        pending = data if kind in (1, 2) else pending + data  # FULL, FIRST / MIDDLE, LAST
        if kind in (1, 4):
            record = pb.Record()
            try:
                record.ParseFromString(pending)
            except Exception as err:  # google.protobuf.message.DecodeError, RecursionError of a deep message
                raise WorkbenchError(
                    f"{path}: damaged W&B record at byte {at} ({type(err).__name__})", "Give an intact .wandb file."
                ) from None
            records.append((record.WhichOneof("record_type"), record))
            pending = b""
    return records


def _items(items, path: Path) -> dict:
    out = {}
    for item in items:
        key = item.key or "/".join(item.nested_key)
        hint = "Give an intact .wandb file."
        out[key] = parse_json(item.value_json, f"{path}: value of {key[:40]!r}", hint) if item.value_json else None
    return out


def _from_wandb(path: Path, run_id: str | None, sweep: str | None) -> tuple[str, dict, list[dict], dict | None]:
    config, summary, rows, found_id = {}, {}, [], None
    for kind, record in wandb_records(path):
        if kind == "run":
            found_id = record.run.run_id or found_id
            config |= _items(record.run.config.update, path)
        elif kind == "config":
            config |= _items(record.config.update, path)
        elif kind == "history":
            values = _items(record.history.item, path)
            step = values.get("_step")
            if step is None:
                continue
            metrics = {k: v for k, v in values.items() if not k.startswith("_")}
            rows.append({"step": _csv_step(path, len(rows) + 1, step)} | metrics)
        elif kind == "summary":
            summary |= _items(record.summary.update, path)
    config = {
        k: (v.get("value") if isinstance(v, dict) and set(v) <= {"value", "desc"} else v) for k, v in config.items()
    }
    config.pop("_wandb", None)
    full = config.get(CONFIG_KEY) if isinstance(config.get(CONFIG_KEY), dict) else config
    final = summary.get(FINAL_KEY) if isinstance(summary.get(FINAL_KEY), dict) else _final_from(rows)
    return imported_id("wandb", found_id or path.stem.removeprefix("run-"), run_id), _labelled(full, sweep), rows, final


LOSS_KEYS = ("loss", "val_loss")


def _final_from(rows: list[dict]) -> dict | None:
    """A final record for a run logged without one: its last values; status completed, or diverged (loss
    null) when a loss it logged is NaN or infinite."""
    if not rows:
        return None
    last = {}
    for row in rows:
        last |= {k: v for k, v in row.items() if v is not None}
    keys = ("val_loss", "tokens", "flops", "wall_s")
    final = {"status": "completed", "steps": last.get("step")} | {k: last.get(k) for k in keys}
    bad = next((row for row in rows if any(not _finite(row.get(k)) for k in LOSS_KEYS)), None)
    if bad is not None:
        final |= {"status": "diverged", "val_loss": None, "error": f"non-finite loss at step {bad['step']}"}
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in final.items()}


def _finite(value: object) -> bool:
    return not isinstance(value, float) or math.isfinite(value)


# ---------------------------------------------------------------- W&B CSV export


def _from_csv(path: Path, run_id: str | None, sweep: str | None) -> tuple[str, dict, list[dict], dict | None]:
    size = path.stat().st_size
    if size > MAX_CSV_BYTES:
        raise WorkbenchError(f"{path} is {size_text(size)}, over the {size_text(MAX_CSV_BYTES)} limit", "Split it.")
    try:
        with path.open(newline="", encoding="utf-8") as f:
            table = list(csv.DictReader(f))
    except (csv.Error, UnicodeDecodeError) as err:
        what = str(err)[:80]
        raise WorkbenchError(f"{path}: not a readable CSV file ({what})", "Export the history again.") from None
    if not table:
        raise WorkbenchError(f"{path} has no rows", "Export the run's history with its values.")
    columns = [c for c in table[0] if c is not None]
    step_column = next((c for c in ("_step", "step", "Step") if c in columns), None)
    if step_column is None:
        raise WorkbenchError(
            f"{path}: no _step or step column (found: {', '.join(columns[:8])})", "Export the history."
        )
    rows = []
    for n, line in enumerate(table, 2):
        rows.append({"step": _csv_step(path, n, line.get(step_column))} | _csv_values(line, step_column))
    name = imported_id("csv", path.stem, run_id)
    return name, _labelled({"name": name}, sweep), rows, _final_from(rows)


def _csv_step(path: Path, n: int, text: object) -> int:
    try:
        step = float(text)
    except (TypeError, ValueError, OverflowError):
        step = math.nan
    if not (math.isfinite(step) and 0 <= step < 2**63 and step == int(step)):
        raise WorkbenchError(f"{path}:{n}: step {str(text)[:40]!r} is not a whole number >= 0", "Fix that row.")
    return int(step)


def _csv_values(line: dict, step_column: str) -> dict:
    """The metric columns of one CSV row as floats (a cell that is not a number is left out)."""
    row = {}
    for column, value in line.items():
        if column is None or column == step_column or not isinstance(value, str) or value == "":
            continue
        name = column.split(" - ", 1)[-1]
        if name.startswith("_") or name.endswith(("__MIN", "__MAX")):
            continue
        try:
            row[name] = float(value)
        except ValueError:
            continue
    return row


# ---------------------------------------------------------------- TensorBoard


def _from_tensorboard(folder: Path, run_id: str | None, sweep: str | None) -> tuple[str, dict, list[dict], dict | None]:
    require("tensorboard", "tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})  # 0: keep every point
    acc.Reload()
    tags = acc.Tags()
    by_step: dict[int, dict] = {}
    for tag in tags.get("scalars", []):
        for event in acc.Scalars(tag):
            by_step.setdefault(int(event.step), {"step": int(event.step)})[tag] = float(event.value)
    texts = {}
    for tag in tags.get("tensors", []):
        name = tag.removesuffix("/text_summary")
        if name in (TB_CONFIG, TB_FINAL):
            raw = acc.Tensors(tag)[-1].tensor_proto.string_val[0]
            texts[name] = parse_json(raw, f"{folder}: {name}", "Give the event files the trainer wrote.")
    config = texts.get(TB_CONFIG) if isinstance(texts.get(TB_CONFIG), dict) else {}
    rows = list(by_step.values())
    final = texts.get(TB_FINAL) or _final_from(rows)
    found = Path(str(config["run_dir"])).name if config.get("run_dir") else folder.parent.name
    return imported_id("tensorboard", found, run_id), _labelled(config, sweep), rows, final
