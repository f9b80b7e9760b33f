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
newest checkpoint and falls back to the next older one. A file is hashed by the process that reads it,
just before reading it (`verify(path, read=...)`), and the sharded format (torch.distributed.checkpoint,
whose `.metadata` is read with pickle) keeps this manifest: no file is opened before its hash matches.

Temp and deleted folders carry the writer's host and pid: only those of a dead process on this host
are swept during rotation; `sweep_partial` (run at start-up by the holder of the run lock, so no other
trainer of this run is alive) removes them all.

Sharded checkpoints of layout runs (torch.distributed.checkpoint, DCP, written by every rank):
A checkpoint of a run with a `layout:` block is the same step directory as any other
(ckpt/step_XXXXXXXX/, written as ckpt/.tmp-step_XXXXXXXX-<pid of rank 0>/ and renamed by rank 0 through
workbench.train.checkpoint.save): `state.pt` holds the trainer state and RNG only (model and optimizer None),
and `sharded/` holds DCP's files: one `__<rank>_0.distcp` per rank with that rank's shards of the model
and optimizer state, and `.metadata`. Nothing is gathered: each rank writes its own shards (replicated
tensors once) and hashes only the files it wrote (RecordingWriter); rank 0 merges those digests into the
manifest (gather_digests, save). On load each rank hashes only `.metadata` and the shards its DCP load plan
reads (VerifyingReader), so no rank hashes every rank's files. Keys are the plain model's parameter names
(`layers.3.attention.wq.weight`, and `optimizer.state.<name>.exp_avg` ...) under every layout, so DCP
reshards on load: a checkpoint saved under TP 2 loads under DP 2, PP 2 or one process with a layout, and
the other way round.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import shutil
import socket
from collections.abc import Iterable
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from workbench.core.errors import WorkbenchError
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
    ckpt_root: Path,
    step: int,
    state: dict,
    meta: dict,
    keep: int,
    protect_tokens: set[int],
    tmp: Path | None = None,
    digests: dict[str, dict] | None = None,
) -> Path:
    """Write checkpoint `step`: `state` = {"model", "optimizer", "trainer", "rng"} (see to_files), `meta`
    JSON; then rotate (keep the newest `keep` plus those at `protect_tokens`). `tmp`: a temp dir that every
    rank has already written its shards into (save_sharded), completed here; `digests`: the size and sha256
    of each of those files, computed by the rank that wrote it (gather_digests), merged into the manifest
    unhashed, so this rank hashes only the files it wrote itself."""
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"step_{step:08d}"
    if tmp is None:
        tmp = ckpt_root / f".tmp-{final.name}-{owner_tag()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    tensors, trainer = to_files(state)
    torch.save(tensors, tmp / "state.pt")
    _write_synced(tmp / "trainer.json", json.dumps(trainer))
    _write_synced(tmp / "meta.json", json.dumps(meta))
    manifest = manifest_of(tmp, {"step": step, "tokens": meta.get("tokens")}, digests)
    _write_synced(tmp / MANIFEST, json.dumps(manifest))
    if final.exists():  # re-saving the same step (e.g. after a rollback): replace it whole
        remove(final)
    os.rename(tmp, final)
    _rotate(ckpt_root, keep, protect_tokens)
    return final


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


def manifest_of(folder: Path, extra: dict, known: dict[str, dict] | None = None) -> dict:
    """Sizes and sha256 of every file under `folder` (but the manifest itself); files in `known` (relative
    name -> {"bytes", "sha256"}, hashed by their writers) are taken from there after a size check."""
    known, files = known or {}, {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        name, size = path.relative_to(folder).as_posix(), path.stat().st_size
        if name in known and known[name]["bytes"] != size:
            raise WorkbenchError(
                f"checkpoint file {path} has {size} bytes, but its writer hashed {known[name]['bytes']}",
                "Another process is writing into this checkpoint; rerun.",
            )
        files[name] = known[name] if name in known else file_digest(path)
    return {"format": FORMAT, **extra, "files": files}


def file_digest(path: Path) -> dict:
    """{"bytes", "sha256"} of the file at `path`, as a manifest lists it."""
    return {"bytes": path.stat().st_size, "sha256": _sha256(path)}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


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
def verify(path: Path, read: Iterable[str] | None = None) -> dict:
    """The manifest of checkpoint dir `path` if its files are exactly those listed with the listed sizes and
    the files in `read` (relative names; None: every file) match their sha256; else Damaged. A process
    hashes only what it is about to read: the files of a sharded checkpoint that its DCP load plan reads
    are hashed at load (VerifyingReader), each by the ranks that read it."""
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
    for name in listed if read is None else sorted(set(read) & listed):
        check_hash(path, name, manifest)
    return manifest


def check_hash(path: Path, name: str, manifest: dict) -> None:
    """Damaged unless file `name` of checkpoint dir `path` matches its sha256 in `manifest`."""
    if _sha256(path / name) != manifest["files"][name].get("sha256"):
        raise Damaged(f"{name} does not match its sha256 in the manifest")


def newest_intact(
    ckpt_root: Path, remove_damaged: bool = True, read: Iterable[str] | None = None
) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest checkpoint that verifies (hashing the files in `read`, None: all), and (path, reason) for
    each newer one that did not (removed, unless `remove_damaged` is False)."""
    rejected: list[tuple[Path, str]] = []
    for path in reversed(step_dirs(ckpt_root)):
        try:
            verify(path, read)
            return path, rejected
        except Damaged as err:
            reject(path, str(err), remove_damaged)
            rejected.append((path, str(err)))
    return None, rejected


def reject(path: Path, reason: str, remove_it: bool) -> None:
    """Log one warning line for damaged checkpoint `path`, and remove it if `remove_it`."""
    log.warning("checkpoint %s is damaged (%s); trying the next older one", path, reason)
    if remove_it:
        remove(path)


def read_meta(path: Path) -> dict:
    try:
        return json.loads((path / "meta.json").read_text())
    except (OSError, ValueError) as err:
        raise WorkbenchError(
            f"checkpoint {path}: unreadable meta.json ({type(err).__name__})", "Delete that checkpoint directory."
        ) from None


def load(path: Path) -> dict:
    """The state of checkpoint dir `path` (tensors on CPU): model, optimizer, trainer, rng, meta and its
    manifest, after verifying the files read here (state.pt, trainer.json, meta.json; a sharded checkpoint's
    shards are verified as load_sharded reads them). Nothing is unpickled: tensors are read weights-only,
    the rest is JSON. A damaged file raises Damaged; anything else unreadable a WorkbenchError."""
    try:
        manifest = verify(path, FILES)
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
            "manifest": manifest,
        }
    except (
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
    tokens); its files are those of its manifest, with their sizes (each is hashed when it is read)."""
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
        found, _ = newest_intact(rundir.ckpt_dir(path), remove_damaged=False, read=())
        if found is not None:
            return found
    raise WorkbenchError(
        f"checkpoint.init_from: no intact checkpoint at {spec}",
        "Give a checkpoint dir (with manifest.json), a run dir, or RUN_DIR@TOKENS.",
    )


def _verified(path: Path, spec: str) -> Path:
    try:
        verify(path, read=())
    except Damaged as err:
        raise WorkbenchError(
            f"checkpoint.init_from {spec}: {path} is damaged ({err})",
            "Rerun the source run or give another checkpoint.",
        ) from None
    return path


# ---------------------------------------------------------------- sharded (DCP) state of layout runs

SHARDED = "sharded"
METADATA = f"{SHARDED}/.metadata"


def is_sharded(path: Path) -> bool:
    return (path / METADATA).is_file()


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


class RecordingWriter(dcp.FileSystemWriter):
    """DCP's file writer, remembering the files this rank wrote: its `__<rank>_*.distcp` shards, and on the
    coordinator the `.metadata`."""

    def __init__(self, path: Path):
        super().__init__(str(path))
        self.folder, self.prefixes, self.wrote_metadata = Path(path), [], False

    def write_data(self, plan, planner):
        self.prefixes.append(plan.storage_data.prefix)
        return super().write_data(plan, planner)

    def finish(self, metadata, results) -> None:
        super().finish(metadata, results)
        self.wrote_metadata = True

    def digests(self) -> dict[str, dict]:
        """{"sharded/<file>": {"bytes", "sha256"}} of every file this rank wrote (read back and hashed)."""
        mine = sorted(p for prefix in self.prefixes for p in self.folder.glob(f"{prefix}*") if p.is_file())
        if self.wrote_metadata:
            mine.append(self.folder / ".metadata")
        return {f"{SHARDED}/{p.name}": file_digest(p) for p in mine}


def _sharded_state(parts: list[nn.Module], optimizer: torch.optim.Optimizer) -> dict:
    view = model_view(parts)
    state = {"model": get_model_state_dict(view)}
    if optimizer.state:  # before the first step there is none: a resumed run starts a fresh optimizer
        state["optimizer"] = get_optimizer_state_dict(view, optimizer)
    return state


def _planner() -> dcp.DefaultSavePlanner:
    """DCP's planner, storing each replicated entry (norm gains under TP, optimizer steps) once, in rank 0's file:
    a rank resuming the same layout then reads (and hashes) its own file and rank 0's, not a few bytes from
    many files that it would have to hash whole."""
    return dcp.DefaultSavePlanner(dedup_save_to_lowest_rank=True)


def save_sharded(tmp: Path, parts: list[nn.Module], optimizer: torch.optim.Optimizer) -> dict[str, dict]:
    """Every rank writes its shards of the model and optimizer state into tmp/sharded (a collective) and
    returns the digests of the files it wrote (for gather_digests)."""
    writer = RecordingWriter(tmp / SHARDED)
    dcp.save(_sharded_state(parts, optimizer), storage_writer=writer, planner=_planner())
    return writer.digests()


def save_sharded_async(tmp: Path, parts: list[nn.Module], optimizer: torch.optim.Optimizer, group) -> Future:
    """save_sharded with DCP's async_save: the state is staged to CPU memory now (a collective on `group`, a
    gloo group of all ranks), written and hashed by a background thread; the returned future holds the
    digests of this rank's files. Collect it (gather_digests, save) at a point every rank reaches together."""
    writer = RecordingWriter(tmp / SHARDED)
    state = _sharded_state(parts, optimizer)
    written = dcp.async_save(state, storage_writer=writer, planner=_planner(), process_group=group)
    done: Future = Future()

    def hash_files(future: Future) -> None:
        try:
            future.result()
            done.set_result(writer.digests())
        except BaseException as err:  # DCP's CheckpointException is a BaseException
            done.set_exception(err)

    written.add_done_callback(hash_files)
    return done


def gather_digests(mine: dict[str, dict]) -> dict[str, dict] | None:
    """Every rank's digests (a collective), merged on rank 0; None on the other ranks."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return mine
    gathered = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(mine, gathered, dst=0)
    return {name: digest for part in gathered for name, digest in part.items()} if gathered else None


class VerifyingReader(dcp.FileSystemReader):
    """DCP's file reader that checks each file against `manifest` before reading it: `.metadata` (pickled)
    before it is opened, and the shards this rank's load plan reads before they are read, so each rank
    hashes only what it reads. A mismatch raises Damaged on that rank, which DCP's load turns into a
    CheckpointException on every rank."""

    def __init__(self, checkpoint_dir: Path, manifest: dict):
        super().__init__(str(checkpoint_dir / SHARDED))
        self.checkpoint_dir, self.manifest, self.checked = checkpoint_dir, manifest, set()

    def _check(self, name: str) -> None:
        if name not in self.checked:
            check_hash(self.checkpoint_dir, name, self.manifest)
            self.checked.add(name)

    def read_metadata(self, *args, **kwargs):
        self._check(METADATA)
        return super().read_metadata(*args, **kwargs)

    def read_data(self, plan, planner):
        for relative in sorted({self.storage_data[item.storage_index].relative_path for item in plan.items}):
            self._check(f"{SHARDED}/{relative}")
        return super().read_data(plan, planner)


def load_sharded(path: Path, parts: list[nn.Module], optimizer: torch.optim.Optimizer | None, manifest: dict) -> None:
    """Load checkpoint dir `path`'s DCP state into this rank's (possibly differently sharded) parts, hashing
    the files this rank reads against `manifest` (Damaged, on every rank, if one does not match)."""

    view = model_view(parts)
    reader = VerifyingReader(path, manifest)
    has_optimizer = any(key.startswith("optimizer.") for key in reader.read_metadata().state_dict_metadata)
    state = {"model": get_model_state_dict(view)}
    if optimizer is not None and has_optimizer:
        state["optimizer"] = get_optimizer_state_dict(view, optimizer)
    try:
        dcp.load(state, storage_reader=reader)
    except CheckpointException as err:
        damaged = [e for e, _ in err.failures.values() if isinstance(e, Damaged)]
        if damaged:
            raise Damaged(str(damaged[0])) from None
        raise
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
