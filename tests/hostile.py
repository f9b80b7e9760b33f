"""Helpers of the hostile-input tests: the CLI in-process, the one-line check, a listing of every file."""

from __future__ import annotations

import os
import struct
from pathlib import Path

from typer.testing import CliRunner

from workbench.cli import app

runner = CliRunner()


def invoke(*args, env: dict | None = None):
    """The CLI in this process (exceptions caught, so an escaping one can be asserted on)."""
    return runner.invoke(app, [str(a) for a in args], env=env, catch_exceptions=True)


def one_line(result, *words: str) -> str:
    """The run ended with exit 1 and exactly one `Error:` line, last on stderr, holding every word."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 1, (result.exit_code, result.output[-1500:])
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("Error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in errors[0], (word, errors[0])
    return errors[0]


def files_under(root: Path) -> dict[str, bytes | str]:
    """Every file, link and folder below `root`: path -> content (links: their target; folders: '/')."""
    out: dict[str, bytes | str] = {}
    for folder, dirs, names in os.walk(root):
        for name in dirs + names:
            path = Path(folder) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = "-> " + os.readlink(path)
            elif path.is_dir():
                out[rel] = "/"
            else:
                out[rel] = path.read_bytes()
    return out


def wandb_file(path: Path, run_id: str, rows: list[dict], final: dict | None = None, config: dict | None = None):
    """A W&B offline transaction log (LevelDB-style records of W&B's protobuf Record) with a run record, its
    config, history rows and a summary: what `wandb` writes offline, made without running wandb."""
    import json

    from wandb.proto import wandb_internal_pb2 as pb

    records = []
    run = pb.Record()
    run.run.run_id = run_id
    for key, value in (config or {}).items():
        item = run.run.config.update.add()
        item.key, item.value_json = key, json.dumps({"value": value})
    records.append(run)
    for row in rows:
        history = pb.Record()
        for key, value in row.items():
            item = history.history.item.add()
            item.key, item.value_json = key, json.dumps(value)
        records.append(history)
    if final is not None:
        summary = pb.Record()
        item = summary.summary.update.add()
        item.key, item.value_json = "workbench_final", json.dumps(final)
        records.append(summary)
    data = bytearray(b":W&B" + bytes([0, 0, 0]))
    for record in records:
        body = record.SerializeToString()
        assert len(body) + 7 < 32768 - len(data) % 32768, "keep the test log in one block"
        data += struct.pack("<IHB", 0, len(body), 1) + body
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
    return path
