"""Checkpoints that heal: atomic directories under RUN_DIR/ckpt with a manifest, the newest K kept.

A checkpoint `ckpt/step_XXXXXXXX/` holds
- `state.pt`: the model and optimizer state dicts, tensors only, read with `torch.load(weights_only=True)`;
- `trainer.json`: step, tokens, data position, RNG states (torch's and numpy's), as JSON;
- `meta.json`: step, tokens, flops and the model shape (for a one-line error on a shape mismatch);
- `manifest.json`, written last: the size and sha256 of every other file in the directory.

It is written into `ckpt/.tmp-step_N-HOST-PID/` and renamed into place, so a `step_N` directory is
complete the moment it appears; deletion renames to `.del-...` first, so a kill mid-delete never leaves
a half `step_N`. A checkpoint is trusted only if its manifest lists exactly the files in the
directory with matching sizes and hashes; `newest_intact` reports and removes a damaged or partial
newest checkpoint and falls back to the next older one. A later format (torch.distributed.checkpoint,
whose `.metadata` is read with pickle) keeps this manifest: nothing in a directory is opened before
its manifest matches.

Temp and deleted folders carry the writer's host and pid: only those of a dead process on this host
are swept during rotation; `sweep_partial` (run at start-up by the holder of the run lock, so no other
trainer of this run is alive) removes them all.

Sharded checkpoints of layout runs (torch.distributed.checkpoint, DCP, written by every rank):
A checkpoint of a run with a `layout:` block is the same step directory as any other
(ckpt/step_XXXXXXXX/, written as ckpt/.tmp-step_XXXXXXXX-<pid of rank 0>/ and renamed by rank 0 through
workbench.train.checkpoint.save): `state.pt` holds the trainer state and RNG only (model and optimizer None),
and `sharded/` holds DCP's files: one `__<rank>_0.distcp` per rank with that rank's shards of the model
and optimizer state, and `.metadata`. Nothing is gathered: each rank writes its own shards (replicated
tensors once). Keys are the plain model's parameter names (`layers.3.attention.wq.weight`, and
`optimizer.state.<name>.exp_avg` ...) under every layout, so DCP reshards on load: a checkpoint saved
under TP 2 loads under DP 2, PP 2 or one process with a layout, and the other way round.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import shutil
import socket
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from workbench.core.errors import WorkbenchError
from workbench.core.files import write_stream, writing
from workbench.train import rundir

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = "workbench-checkpoint-2"
FILES = ("state.pt", "trainer.json", "meta.json")
SHAPE_KEYS = ("n_layers", "d_model", "n_heads", "n_kv_heads", "ffn_dim", "vocab_size")


class Damaged(Exception):
    """A checkpoint directory that fails verification (the message says why)."""


def _step_of(path: Path) -> int | None:
    digits = path.name.removeprefix("step_")
    return int(digits) if path.name.startswith("step_") and digits.isdigit() else None


def step_dirs(ckpt_root: Path) -> list[Path]:
    """Complete checkpoints (renamed into place, with a manifest), oldest first; not yet verified."""
    if not ckpt_root.is_dir():
        return []
    found = [p for p in ckpt_root.iterdir() if _step_of(p) is not None and (p / MANIFEST).is_file()]
    return sorted(found, key=_step_of)


def run_checkpoints(run_dir: str | Path) -> list[Path]:
    """A run directory's complete checkpoints, oldest first."""
    return step_dirs(rundir.ckpt_dir(run_dir))


def latest_of_run(run_dir: str | Path) -> Path | None:
    """A run directory's newest complete checkpoint, or None."""
    found = run_checkpoints(run_dir)
    return found[-1] if found else None


def latest(ckpt_root: Path) -> Path | None:
    dirs = step_dirs(ckpt_root)
    return dirs[-1] if dirs else None


# ---------------------------------------------------------------- writing
def save(
    ckpt_root: Path, step: int, state: dict, meta: dict, keep: int, protect_tokens: set[int], tmp: Path | None = None
) -> Path:
    """Write checkpoint `step`: `state` = {"model", "optimizer", "trainer", "rng"} (see to_files), `meta`
    JSON; then rotate (keep the newest `keep` plus those at `protect_tokens`). `tmp`: a temp dir that every
    rank has already written its shards into (save_sharded), completed here; the manifest covers them."""
    final = ckpt_root / f"step_{step:08d}"
    tensors, trainer = to_files(state)
    need = _tensor_bytes(tensors)
    with writing(ckpt_root, need):
        ckpt_root.mkdir(parents=True, exist_ok=True)
        if tmp is None:
            tmp = ckpt_root / f".tmp-{final.name}-{owner_tag()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
    try:
        write_stream(tmp / "state.pt", lambda f: torch.save(tensors, f), need)
        _write_synced(tmp / "trainer.json", json.dumps(trainer))
        _write_synced(tmp / "meta.json", json.dumps(meta))
        _write_synced(tmp / MANIFEST, json.dumps(manifest_of(tmp, {"step": step, "tokens": meta.get("tokens")})))
        with writing(final, need):
            if final.exists():  # re-saving the same step (e.g. after a rollback): replace it whole
                remove(final)
            os.replace(tmp, final)
    except WorkbenchError:  # a full or read-only disk: the older checkpoints stay as they were
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _rotate(ckpt_root, keep, protect_tokens)
    return final


def _tensor_bytes(tensors: dict) -> int:
    """Bytes of the tensors in a (nested) state dict: about what state.pt needs on disk."""
    total, stack = 0, [tensors]
    while stack:
        node = stack.pop()
        if isinstance(node, torch.Tensor):
            total += node.numel() * node.element_size()
        elif isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list | tuple):
            stack.extend(node)
    return total


def to_files(state: dict) -> tuple[dict, dict]:
    """Split a trainer state into tensors (state.pt) and plain JSON (trainer.json): no pickled objects."""
    numpy_state = state["rng"]["numpy"]
    trainer = {
        "trainer": state["trainer"],
        "rng": {
            "torch": state["rng"]["torch"].tolist(),
            "numpy": [
                numpy_state[0],
                numpy_state[1].tolist(),
                *(x.item() if hasattr(x, "item") else x for x in numpy_state[2:]),
            ],
        },
    }
    return {"model": state["model"], "optimizer": state["optimizer"]}, trainer


def manifest_of(folder: Path, extra: dict) -> dict:
    """Sizes and sha256 of every file under `folder` (but the manifest itself)."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        files[path.relative_to(folder).as_posix()] = {"bytes": path.stat().st_size, "sha256": _sha256(path)}
    return {"format": FORMAT, **extra, "files": files}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_synced(path: Path, text: str) -> None:
    write_stream(path, lambda f: f.write(text.encode()), len(text))


def owner_tag() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _owner_dead(name: str) -> bool:
    """Whether the writer named at the end of a `.tmp-`/`.del-` folder is a dead process on this host."""
    host, _, pid = name.rpartition("-")
    if not pid.isdigit() or not host.endswith(socket.gethostname()):
        return False
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def remove(path: Path) -> None:
    """Delete a checkpoint folder: rename it out of the step_* namespace first, then remove it."""
    doomed = path.parent / f".del-{path.name}-{owner_tag()}"
    try:
        os.rename(path, doomed)
    except FileNotFoundError:
        return
    shutil.rmtree(doomed, ignore_errors=True)


def _rotate(ckpt_root: Path, keep: int, protect_tokens: set[int]) -> None:
    dirs = step_dirs(ckpt_root)
    for old in dirs[:-keep]:
        if _meta_tokens(old) not in protect_tokens:
            remove(old)
    for stale in ckpt_root.glob(".*-step_*"):  # left by a killed writer on this host
        if stale.name.startswith((".tmp-", ".del-")) and _owner_dead(stale.name):
            shutil.rmtree(stale, ignore_errors=True)


def _meta_tokens(path: Path) -> int | None:
    try:
        return json.loads((path / MANIFEST).read_text()).get("tokens")
    except (OSError, ValueError, AttributeError):
        return None


def sweep_partial(ckpt_root: Path) -> list[str]:
    """Remove temp and half-deleted folders and step_* folders without a manifest; returns their names.
    Call only while holding the run lock: no other trainer of this run is then writing here."""
    if not ckpt_root.is_dir():
        return []
    swept = []
    for path in sorted(ckpt_root.iterdir()):
        partial = path.name.startswith((".tmp-", ".del-")) or (
            _step_of(path) is not None and not (path / MANIFEST).is_file()
        )
        if partial and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            swept.append(path.name)
    return swept


# ---------------------------------------------------------------- verifying and reading
def verify(path: Path) -> dict:
    """The manifest of checkpoint dir `path` if every file matches it exactly; else Damaged."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError) as err:
        raise Damaged(f"unreadable {MANIFEST} ({type(err).__name__})") from None
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != FORMAT
        or not isinstance(manifest.get("files"), dict)
    ):
        raise Damaged(f"{MANIFEST} is not a {FORMAT} manifest")
    present = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file() and p.name != MANIFEST}
    listed = set(manifest["files"])
    if present != listed:
        extra, missing = sorted(present - listed), sorted(listed - present)
        raise Damaged(f"files differ from the manifest (missing {missing}, not listed {extra})")
    for name, entry in manifest["files"].items():
        size = (path / name).stat().st_size
        if not isinstance(entry, dict) or size != entry.get("bytes"):
            raise Damaged(
                f"{name} has {size} bytes, the manifest says {entry.get('bytes') if isinstance(entry, dict) else entry}"
            )
        if _sha256(path / name) != entry.get("sha256"):
            raise Damaged(f"{name} does not match its sha256 in the manifest")
    return manifest


def newest_intact(ckpt_root: Path, remove_damaged: bool = True) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest checkpoint that verifies, and (path, reason) for each newer one that did not (removed,
    unless `remove_damaged` is False). Each rejection is logged as one warning line."""
    rejected: list[tuple[Path, str]] = []
    for path in reversed(step_dirs(ckpt_root)):
        try:
            verify(path)
            return path, rejected
        except Damaged as err:
            log.warning("checkpoint %s is damaged (%s); trying the next older one", path, err)
            rejected.append((path, str(err)))
            if remove_damaged:
                remove(path)
    return None, rejected


def read_meta(path: Path) -> dict:
    try:
        return json.loads((path / "meta.json").read_text())
    except (OSError, ValueError) as err:
        raise WorkbenchError(
            f"checkpoint {path}: unreadable meta.json ({type(err).__name__})", "Delete that checkpoint directory."
        ) from None


def load(path: Path) -> dict:
    """The state of verified checkpoint dir `path` (tensors on CPU): model, optimizer, trainer, rng, meta.
    Nothing is unpickled: tensors are read weights-only, the rest is JSON."""
    try:
        verify(path)
        tensors = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
        body = json.loads((path / "trainer.json").read_text())
        meta = json.loads((path / "meta.json").read_text())
        rng = body["rng"]
        numpy_state = (rng["numpy"][0], np.array(rng["numpy"][1], dtype=np.uint32), *rng["numpy"][2:])
        return {
            "model": tensors["model"],
            "optimizer": tensors["optimizer"],
            "trainer": body["trainer"],
            "rng": {"torch": torch.tensor(rng["torch"], dtype=torch.uint8), "numpy": numpy_state},
            "meta": meta,
        }
    except (
        Damaged,
        OSError,
        ValueError,
        KeyError,
        TypeError,
        IndexError,
        RuntimeError,
        EOFError,
        pickle.UnpicklingError,
    ) as err:
        why = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise WorkbenchError(
            f"checkpoint {path} cannot be loaded ({why})",
            "Delete that checkpoint directory (an older one is used), or give another checkpoint.",
        ) from None


def check_shape(path: Path, saved_meta: dict, shape: dict) -> None:
    """One line naming both shapes when checkpoint `path` was saved from another model shape."""
    saved = saved_meta.get("shape")
    if saved != shape:

        def text(s):
            return " ".join(f"{k}={s[k]}" for k in SHAPE_KEYS if k in s) if isinstance(s, dict) else "unknown"

        raise WorkbenchError(
            f"checkpoint {path} is of another model shape ({text(saved)}) than this config ({text(shape)})",
            "Point checkpoint.init_from at a checkpoint of the same model, or change the model section.",
        )


def resolve_init_from(spec: str) -> Path:
    """`DIR` (a checkpoint dir or a run dir) or `RUN_DIR@TOKENS` (RUN_DIR's checkpoint at exactly TOKENS
    tokens); the result has passed verification."""
    if "@" in spec:
        run_dir, tokens = spec.rsplit("@", 1)
        root = rundir.ckpt_dir(run_dir)
        for path in step_dirs(root):
            if str(_meta_tokens(path)) == tokens:
                return _verified(path, spec)
        raise WorkbenchError(
            f"checkpoint.init_from: {run_dir} has no checkpoint at {tokens} tokens",
            "Run the trunk first with that count in checkpoint.save_at_tokens.",
        )
    path = Path(spec)
    if (path / MANIFEST).is_file():
        return _verified(path, spec)
    if path.is_dir():
        found, _ = newest_intact(rundir.ckpt_dir(path), remove_damaged=False)
        if found is not None:
            return found
    raise WorkbenchError(
        f"checkpoint.init_from: no intact checkpoint at {spec}",
        "Give a checkpoint dir (with manifest.json), a run dir, or RUN_DIR@TOKENS.",
    )


def _verified(path: Path, spec: str) -> Path:
    try:
        verify(path)
    except Damaged as err:
        raise WorkbenchError(
            f"checkpoint.init_from {spec}: {path} is damaged ({err})",
            "Rerun the source run or give another checkpoint.",
        ) from None
    return path


# ---------------------------------------------------------------- sharded (DCP) state of layout runs

SHARDED = "sharded"


def is_sharded(path: Path) -> bool:
    return (path / SHARDED / ".metadata").is_file()


def model_view(parts: list[nn.Module]) -> nn.Module:
    """One module whose parameter names are the plain model's, over this rank's parts (pipeline stages)."""
    if len(parts) == 1:
        return parts[0]
    view = nn.Module()
    layers = nn.ModuleDict()
    for part in parts:
        for name in ("tok_embeddings", "norm", "output"):
            if getattr(part, name, None) is not None:
                setattr(view, name, getattr(part, name))
        for key, layer in part.layers.items():
            layers[key] = layer
    view.layers = layers
    return view


def shared_tmp_dir(ckpt_root: Path, step: int) -> Path:
    """The temp dir of checkpoint `step`, named by rank 0's host and pid (owner_tag,
    so rotation sweeps it only when rank 0 is dead) and the same on every rank."""
    tag = [owner_tag()]
    if dist.is_initialized():
        dist.broadcast_object_list(tag, src=0)
    return ckpt_root / f".tmp-step_{step:08d}-{tag[0]}"


def save_sharded(tmp: Path, parts: list[nn.Module], optimizer: torch.optim.Optimizer) -> None:
    """Every rank writes its shards of the model and optimizer state into tmp/sharded (a collective)."""

    view = model_view(parts)
    state = {"model": get_model_state_dict(view)}
    if optimizer.state:  # before the first step there is none: a resumed run starts a fresh optimizer
        state["optimizer"] = get_optimizer_state_dict(view, optimizer)
    dcp.save(state, checkpoint_id=str(tmp / SHARDED))


def load_sharded(path: Path, parts: list[nn.Module], optimizer: torch.optim.Optimizer | None) -> None:
    """Load checkpoint dir `path`'s DCP state into this rank's (possibly differently sharded) parts."""

    view = model_view(parts)
    reader = dcp.FileSystemReader(str(path / SHARDED))
    has_optimizer = any(key.startswith("optimizer.") for key in reader.read_metadata().state_dict_metadata)
    state = {"model": get_model_state_dict(view)}
    if optimizer is not None and has_optimizer:
        state["optimizer"] = get_optimizer_state_dict(view, optimizer)
    dcp.load(state, storage_reader=reader)
    set_model_state_dict(view, state["model"])
    if optimizer is None:
        return
    if has_optimizer:
        set_optimizer_state_dict(view, optimizer, state["optimizer"])
    else:
        optimizer.state.clear()


def load_full_into_sharded(parts: list[nn.Module], model_state: dict) -> None:
    """An unsharded model state dict (a checkpoint of a run without a layout) into this rank's parts."""

    view = model_view(parts)
    names = set(view.state_dict())
    mine = {k: v for k, v in model_state.items() if k in names}
    set_model_state_dict(view, mine, options=StateDictOptions(full_state_dict=True, strict=False))
