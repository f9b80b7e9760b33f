"""Shard files and the output folder of `workbench data prepare`: a resumable shard writer, the lock, the
check of what --out already holds, and the publish by rename (readers never see a half-written set)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from workbench.core.errors import WorkbenchError
from workbench.core.files import SAFE_NAME, disk_error, write_all, writing

DEFAULT_CORPUS_FOLDER = "shakespeare-bytes"  # the embedded corpus prepared with bytes (data.prepare.default_corpus_dir)


class ShardWriter:
    """Appends ids to <split>_000.bin, <split>_001.bin, ... of at most shard_tokens each, hashing as it goes;
    its state() (finished shards, the open one's length) lets a later process continue the same files."""

    def __init__(self, folder: Path, split: str, dtype: np.dtype, shard_tokens: int, state: dict | None = None):
        self.folder, self.split, self.dtype, self.shard_tokens = folder, split, dtype, shard_tokens
        state = state or {"done": [], "open": None}
        self.done: list[dict] = list(state["done"])
        self.fd, self.hash, self.count, self.name = None, None, 0, None
        keep = {s["file"] for s in self.done} | ({state["open"]["file"]} if state["open"] else set())
        for stale in folder.glob(f"{split}_*.bin"):  # written after the last journal entry
            if stale.name not in keep:
                stale.unlink()
        if state["open"]:
            self.name, self.count = state["open"]["file"], state["open"]["tokens"]
            path = folder / self.name
            with path.open("r+b") as f:
                f.truncate(self.count * dtype.itemsize)
            self.hash = hashlib.sha256(path.read_bytes())
            self.fd = self._open(path, os.O_APPEND)

    @staticmethod
    def _open(path: Path, flags: int) -> int:
        with writing(path):
            return os.open(path, os.O_WRONLY | os.O_CREAT | flags, 0o644)

    def write(self, ids: np.ndarray) -> None:
        data = ids.astype(self.dtype, copy=False)
        while data.size:
            if self.fd is None:
                self.name = f"{self.split}_{len(self.done):03d}.bin"
                self.fd, self.hash, self.count = self._open(self.folder / self.name, os.O_TRUNC), hashlib.sha256(), 0
            part, data = data[: self.shard_tokens - self.count], data[self.shard_tokens - self.count :]
            raw = part.tobytes()
            with writing(self.folder / self.name, len(raw)):
                write_all(self.fd, raw)
            self.hash.update(raw)
            self.count += part.size
            if self.count == self.shard_tokens:
                self._finish()

    def _finish(self) -> None:
        with writing(self.folder / self.name):
            os.fsync(self.fd)
            os.close(self.fd)
        self.done.append({"file": self.name, "tokens": self.count, "sha256": self.hash.hexdigest()})
        self.fd = None

    def state(self) -> dict:
        if self.fd is not None:
            with writing(self.folder / self.name):
                os.fsync(self.fd)
        current = {"file": self.name, "tokens": self.count} if self.fd is not None else None
        return {"done": list(self.done), "open": current}

    def close(self) -> list[dict]:
        if self.fd is not None:
            self._finish()
        return self.done


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive flock on `path` (removed on release; a waiter that wakes on a removed file retries)."""
    while True:
        with writing(path):
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


def manifest_if_any(folder: Path) -> dict | None:
    path = folder / "manifest.json"
    if not path.is_file():
        return None
    hint = f"Re-create it: workbench data prepare ... --out {folder} --force"
    try:
        manifest = json.loads(path.read_bytes())
    except (ValueError, RecursionError):  # malformed, not UTF-8, a huge number, too deep
        raise WorkbenchError(f"{path} is not valid JSON", hint) from None
    if not isinstance(manifest, dict):
        raise WorkbenchError(f"{path} is not a manifest (a JSON object)", hint)
    return manifest


def check_out(out: Path, inputs_sha256: str, force: bool) -> dict | None:
    """The existing manifest if `out` already holds this data set; raise if it holds something else."""
    if out.is_file():
        raise WorkbenchError(f"--out {out} is a file", "Give a folder path.")
    if not out.exists() or not any(out.iterdir()):
        return None
    manifest = manifest_if_any(out)
    if manifest is None:
        raise WorkbenchError(f"--out {out} holds other files (no manifest.json)", "Choose a new or empty folder.")
    if force:
        return None
    if manifest.get("inputs_sha256") != inputs_sha256:
        raise WorkbenchError(
            f"--out {out} holds a data set prepared from other inputs or options",
            "Add --force to replace it, or choose another --out.",
        )
    return manifest


def publish(work: Path, out: Path, inputs_sha256: str, force: bool) -> dict:
    """Move the finished folder into place with a rename, so readers never see a half-written data set. With
    `force` over an earlier data set, only what its manifest lists is replaced (replace_listed): a user's
    other files and folders in `out` stay."""
    manifest = json.loads((work / "manifest.json").read_text())
    if out.exists() and force and any(out.iterdir()):
        replace_listed(work, out, manifest_if_any(out) or {}, manifest)
        shutil.rmtree(work, ignore_errors=True)
        return manifest
    if out.exists() and not any(out.iterdir()):
        out.rmdir()
    try:
        work.rename(out)
    except OSError as err:  # another process published first: fine if it is the same data set
        if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise disk_error(err, out) from None
        other = manifest_if_any(out)
        if other is None or other.get("inputs_sha256") != inputs_sha256:
            raise WorkbenchError(
                f"--out {out} was filled by another process with other inputs meanwhile", "Choose another --out."
            ) from None
        shutil.rmtree(work, ignore_errors=True)
        return other
    return manifest


def replace_listed(work: Path, out: Path, old: dict, new: dict) -> None:
    """Swap the files of data set `old` in `out` for those of `new` in `work`, by renames only: the old
    manifest and files go aside (into `work`/.old), then the new files come in, the manifest last (a reader in
    between sees no data set, never a mixed one). A rename that fails (a full or read-only disk) puts
    everything back where it was: `out` holds the old data set and `work` the new one, and a rerun continues."""
    aside = work / ".old"
    moves: list[tuple[Path, Path]] = []
    try:
        with writing(out):
            aside.mkdir(exist_ok=True)
            for name in ["manifest.json", *written_files(old)]:
                if (out / name).is_file():
                    os.replace(out / name, aside / name)
                    moves.append((out / name, aside / name))
            for name in [*written_files(new), "manifest.json"]:
                if (work / name).is_file():
                    os.replace(work / name, out / name)
                    moves.append((work / name, out / name))
    except WorkbenchError:
        for source, target in reversed(moves):
            with contextlib.suppress(OSError):
                os.rename(target, source)
        raise


def written_files(manifest: dict) -> list[str]:
    """The files a manifest says `workbench data prepare` wrote (shards and tokenizer file; the manifest
    itself aside): the only files --force deletes. Names that are not plain file names are ignored."""
    shards = manifest.get("shards") if isinstance(manifest.get("shards"), dict) else {}
    entries = [s for split in shards.values() if isinstance(split, list) for s in split if isinstance(s, dict)]
    names = [s.get("file") for s in entries]
    tokenizer = manifest.get("tokenizer") if isinstance(manifest.get("tokenizer"), dict) else {}
    names.append(tokenizer.get("file"))
    return [n for n in names if isinstance(n, str) and SAFE_NAME.fullmatch(n) and ".." not in n]


def read_manifest(folder: str | Path) -> dict:
    """The manifest of a prepared data set; a missing folder is a one-line error that says how to make it."""
    folder = Path(folder)
    manifest = manifest_if_any(folder)
    if manifest is None:
        what = "not found" if not folder.exists() else "is not a prepared data set (no manifest.json)"
        inputs = "--corpus shakespeare" if folder.name == DEFAULT_CORPUS_FOLDER else "INPUTS"
        raise WorkbenchError(
            f"data set {folder} {what}", f"Create it with `workbench data prepare {inputs} --out {folder}`."
        )
    return manifest
