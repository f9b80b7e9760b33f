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
import json
import math
import struct
from pathlib import Path
from typing import Any

import yaml

from workbench.core.errors import WorkbenchError
from workbench.core.files import safe_name
from workbench.train import rundir
from workbench.train.trackers import CONFIG_KEY, FINAL_KEY, TB_CONFIG, TB_FINAL, require

_BLOCK = 32768  # LevelDB log block
_HEADER = 7  # crc32 (4), length (2), type (1)
_FILE_HEADER = b":W&B"
_INT_KEYS = ("step", "tokens", "batch_tokens")


SOURCES = ("wandb", "tensorboard", "csv")  # where an imported run came from: the first part of its run id


def imported_id(source: str, found: str, given: str | None = None) -> str:
    """An imported run's id: SOURCE-RUNID (wandb-abc, tensorboard-abc, csv-export), so that copies of one run from
    two trackers, and the run's own directory, never share an id; `given` (--run-id) is taken as it is. Either
    becomes a folder name: checked by workbench.core.files.safe_name."""
    if given is not None:
        return safe_name(given, "run id", "--run-id")
    return safe_name(f"{source}-{found}", "imported run id", f"the {source} run's id")


def import_path(path: Path, into: Path, run_id: str | None = None, sweep: str | None = None) -> list[Path]:
    """Write a run directory under `into` for each run found at `path` (a run imported before with the same
    files is left as it is); returns them."""
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
    return [_write_run_dir(into, *run) for run in runs]


def _write_run_dir(into: Path, run_id: str, config: dict, rows: list[dict], final: dict | None) -> Path:
    run_dir = Path(into) / run_id
    typed = [_typed(row) for row in sorted(rows, key=lambda r: r["step"])]
    rundir.write_imported(run_dir, yaml.safe_dump(config, sort_keys=False), typed, final)
    return run_dir


def _typed(row: dict) -> dict:
    return {
        k: int(round(v)) if k in _INT_KEYS and isinstance(v, float) and math.isfinite(v) else v for k, v in row.items()
    }


def _labelled(config: dict, sweep: str | None) -> dict:
    if sweep:
        config = {**config, "meta": {**(config.get("meta") or {}), "sweep": sweep}}
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
            record.ParseFromString(pending)
            records.append((record.WhichOneof("record_type"), record))
            pending = b""
    return records


def _items(items) -> dict:
    out = {}
    for item in items:
        key = item.key or "/".join(item.nested_key)
        out[key] = json.loads(item.value_json) if item.value_json else None
    return out


def _from_wandb(path: Path, run_id: str | None, sweep: str | None) -> tuple[str, dict, list[dict], dict | None]:
    config, summary, rows, found_id = {}, {}, [], None
    for kind, record in wandb_records(path):
        if kind == "run":
            found_id = record.run.run_id or found_id
            config |= _items(record.run.config.update)
        elif kind == "config":
            config |= _items(record.config.update)
        elif kind == "history":
            values = _items(record.history.item)
            step = values.get("_step")
            if step is None:
                continue
            rows.append({"step": int(step)} | {k: v for k, v in values.items() if not k.startswith("_")})
        elif kind == "summary":
            summary |= _items(record.summary.update)
    config = {
        k: (v.get("value") if isinstance(v, dict) and set(v) <= {"value", "desc"} else v) for k, v in config.items()
    }
    config.pop("_wandb", None)
    full = config.get(CONFIG_KEY) if isinstance(config.get(CONFIG_KEY), dict) else config
    final = summary.get(FINAL_KEY) if isinstance(summary.get(FINAL_KEY), dict) else _final_from(rows)
    return imported_id("wandb", found_id or path.stem.removeprefix("run-"), run_id), _labelled(full, sweep), rows, final


def _final_from(rows: list[dict]) -> dict | None:
    """A final record for a run logged without one: its last values (status completed)."""
    if not rows:
        return None
    last = {}
    for row in rows:
        last |= {k: v for k, v in row.items() if v is not None}
    keys = ("val_loss", "tokens", "flops", "wall_s")
    return {"status": "completed", "steps": last.get("step")} | {k: last.get(k) for k in keys}


# ---------------------------------------------------------------- W&B CSV export


def _from_csv(path: Path, run_id: str | None, sweep: str | None) -> tuple[str, dict, list[dict], dict | None]:
    with path.open(newline="") as f:
        table = list(csv.DictReader(f))
    if not table:
        raise WorkbenchError(f"{path} has no rows", "Export the run's history with its values.")
    columns = list(table[0])
    step_column = next((c for c in ("_step", "step", "Step") if c in columns), None)
    if step_column is None:
        raise WorkbenchError(
            f"{path}: no _step or step column (found: {', '.join(columns[:8])})", "Export the history."
        )
    rows = []
    for n, line in enumerate(table, 2):
        try:
            row = {"step": int(float(line[step_column]))}
        except (TypeError, ValueError):
            raise WorkbenchError(f"{path}:{n}: step {line[step_column]!r} is not a number", "Fix that row.") from None
        for column, value in line.items():
            name = column.split(" - ", 1)[-1]
            if (
                column == step_column
                or name.startswith("_")
                or name.endswith(("__MIN", "__MAX"))
                or value in ("", None)
            ):
                continue
            try:
                row[name] = float(value)
            except ValueError:
                continue
        rows.append(row)
    name = imported_id("csv", path.stem, run_id)
    return name, _labelled({"name": name}, sweep), rows, _final_from(rows)


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
            texts[name] = json.loads(acc.Tensors(tag)[-1].tensor_proto.string_val[0].decode())
    config = texts.get(TB_CONFIG, {})
    rows = list(by_step.values())
    final = texts.get(TB_FINAL) or _final_from(rows)
    found = Path(config["run_dir"]).name if config.get("run_dir") else folder.parent.name
    return imported_id("tensorboard", found, run_id), _labelled(config, sweep), rows, final
