"""Checkpoints: atomic directories under RUN_DIR/ckpt, the newest K kept.

A checkpoint is written into `ckpt/.tmp-<name>-<pid>/` and renamed to `ckpt/step_XXXXXXXX/` when
complete, so a crash leaves either the old set or the new one, never a torn checkpoint. meta.json is
written last inside the temp dir; a directory without it is ignored.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from workbench.errors import WorkbenchError


def step_dirs(ckpt_root: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not ckpt_root.is_dir():
        return []
    found = [p for p in ckpt_root.glob("step_*") if (p / "meta.json").is_file()]
    return sorted(found, key=lambda p: int(p.name.removeprefix("step_")))


def latest(ckpt_root: Path) -> Path | None:
    dirs = step_dirs(ckpt_root)
    return dirs[-1] if dirs else None


def save(
    ckpt_root: Path, step: int, state: dict, meta: dict, keep: int, protect_tokens: set[int], tmp: Path | None = None
) -> Path:
    """Write `state` (torch-serialisable) and `meta` (JSON) as checkpoint `step`, then rotate. `tmp`: a temp
    dir that every rank has already written its shards into (workbench.dcp_state), kept and completed here."""
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"step_{step:08d}"
    if tmp is None:
        tmp = ckpt_root / f".tmp-{final.name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    torch.save(state, tmp / "state.pt")
    _write_synced(tmp / "meta.json", json.dumps(meta))
    if final.exists():  # re-saving the same step (e.g. after a rollback): replace it whole
        shutil.rmtree(final)
    os.rename(tmp, final)
    _rotate(ckpt_root, keep, protect_tokens)
    return final


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _rotate(ckpt_root: Path, keep: int, protect_tokens: set[int]) -> None:
    dirs = step_dirs(ckpt_root)
    for old in dirs[:-keep]:
        if read_meta(old).get("tokens") not in protect_tokens:
            shutil.rmtree(old, ignore_errors=True)
    for stale in ckpt_root.glob(".tmp-*"):  # left by a killed writer
        if not stale.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(stale, ignore_errors=True)


def read_meta(path: Path) -> dict:
    return json.loads((path / "meta.json").read_text())


def load(path: Path) -> dict:
    """The state dict of checkpoint dir `path` (on CPU)."""
    return torch.load(path / "state.pt", map_location="cpu", weights_only=False)


def resolve_init_from(spec: str) -> Path:
    """`DIR` (a checkpoint dir) or `RUN_DIR@TOKENS` (RUN_DIR's checkpoint at exactly TOKENS tokens)."""
    if "@" in spec:
        run_dir, tokens = spec.rsplit("@", 1)
        root = Path(run_dir) / "ckpt"
        for path in step_dirs(root):
            if str(read_meta(path).get("tokens")) == tokens:
                return path
        raise WorkbenchError(
            f"checkpoint.init_from: {run_dir} has no checkpoint at {tokens} tokens",
            "Run the trunk first with that count in checkpoint.save_at_tokens.",
        )
    path = Path(spec)
    if (path / "meta.json").is_file():
        return path
    if path.is_dir() and latest(path / "ckpt"):
        return latest(path / "ckpt")
    raise WorkbenchError(f"checkpoint.init_from: no checkpoint at {spec}", "Give a checkpoint dir or RUN_DIR@TOKENS.")
