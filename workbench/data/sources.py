"""The inputs of `workbench data prepare`, read as streams: text documents cut into line-aligned pieces, or
token ids that are already tokenized. Nothing here holds a whole file in memory (a record of a record
format is held whole; a .txt file is read block by block).

Kinds of input:
- text: .txt (one document per file), .jsonl, .jsonl.gz / .json.gz (Dolma), .jsonl.zst, .parquet files
  and folders of them (FineWeb), a Hugging Face `datasets` folder written by `save_to_disk`, and
  `hf:BUILDER:FILES` (local files through `datasets.load_dataset(BUILDER, data_files=FILES)`, e.g.
  `hf:json:data/*.jsonl.gz`); the text of a record is its `text_field`.
- token ids: a flat .bin of uint16 (nanoGPT) or with llm.c's 1024-byte header (its dtype read from
  the header), and the Megatron-LM indexed pair PATH.bin + PATH.idx, both read through memmap.

Optional packages (pyarrow, zstandard, datasets) are imported where used; a missing one is a one-line
error that names the package to install. The Hugging Face paths never reach the hub (offline mode).
"""

from __future__ import annotations

import codecs
import glob
import gzip
import hashlib
import importlib
import io
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.core.errors import WorkbenchError

CHUNK_CHARS = 1 << 16  # pieces end at the first newline after this many characters (parallel encoding)
TEXT_SUFFIXES = (".txt", ".jsonl", ".jsonl.gz", ".json.gz", ".jsonl.zst", ".parquet")
TOKEN_SUFFIXES = (".bin",)
SUFFIXES = TEXT_SUFFIXES + TOKEN_SUFFIXES
SHOWN_SUFFIXES = ".txt, .jsonl(.gz/.zst), .json.gz, .parquet, .bin"
_READ_BYTES = 1 << 22
_BATCH_RECORDS = 1024
PIP = {"pyarrow": "pyarrow", "zstandard": "zstandard", "datasets": "datasets"}


def require(module: str, what: str):
    """Import an optional package, or a one-line error naming what to install."""

    try:
        return importlib.import_module(module)
    except ImportError:
        package = PIP.get(module.split(".")[0], module)
        raise WorkbenchError(
            f"{what} needs the Python package `{package}`", f"Install it: pip install '{package}' (or workbench[data])."
        ) from None


@dataclass(frozen=True)
class Input:
    """One input: kind is txt | jsonl | parquet | hf-disk | hf-load | tokens | megatron."""

    path: Path
    kind: str
    builder: str | None = None  # hf-load: the datasets builder (json, parquet, csv, text)
    files: tuple[Path, ...] = ()  # hf-load: the data files

    @property
    def tokenized(self) -> bool:
        return self.kind in ("tokens", "megatron")

    def shown(self) -> str:
        return f"hf:{self.builder}:{self.path}" if self.kind == "hf-load" else str(self.path)

    def members(self) -> list[Path]:
        """The files whose bytes make up this input (hashed into the manifest)."""
        if self.kind == "hf-load":
            return list(self.files)
        if self.kind == "hf-disk":
            return sorted(p for p in self.path.rglob("*") if p.is_file())
        if self.kind == "megatron":
            return [self.path, self.path.with_suffix(".idx")]
        return [self.path]

    def fingerprint(self) -> dict:
        members = self.members()
        if len(members) == 1:
            return {"path": self.shown(), "bytes": members[0].stat().st_size, "sha256": sha256_file(members[0])}
        digest = hashlib.sha256()
        for member in members:
            digest.update(f"{member.relative_to(self.path) if self.kind == 'hf-disk' else member}\0".encode())
            digest.update(sha256_file(member).encode())
        return {"path": self.shown(), "bytes": sum(m.stat().st_size for m in members), "sha256": digest.hexdigest()}


def sha256_file(path: Path) -> str:
    """The file's sha256; a file that cannot be read is a one-line error naming it."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as err:
        raise WorkbenchError(f"cannot read input {path} ({err.strerror or err})", "Check the file.") from None
    return digest.hexdigest()


# ---------------------------------------------------------------- finding inputs


def resolve_inputs(inputs: list[str]) -> list[Input]:
    """The inputs named by files, folders (searched recursively), globs and hf:BUILDER:FILES, in order, once each."""
    found: list[Input] = []
    for item in inputs:
        if item.startswith("hf:"):
            found.append(_hf_load_input(item))
            continue
        path = Path(item)
        if any(c in item for c in "*?["):
            matches = [Path(m) for m in sorted(glob.glob(item, recursive=True))]
            dangling = next((m for m in matches if m.is_symlink() and not m.exists()), None)
            if dangling is not None:
                raise WorkbenchError(f"input {dangling} is a dangling link", "Restore its target or remove the link.")
            hits = [i for m in matches for i in (_folder_inputs(m) if m.is_dir() else _file_input(m, strict=False))]
            if not hits:
                raise WorkbenchError(f"no {SHOWN_SUFFIXES} files match {item!r}", "Check the pattern (quote it).")
        elif path.is_dir():
            hits = _folder_inputs(path)
            if not hits:
                raise WorkbenchError(f"folder {path} holds no {SHOWN_SUFFIXES} files", "Point at text or token files.")
        elif path.is_file():
            hits = _file_input(path, strict=True)
        elif path.is_symlink():
            raise WorkbenchError(f"input {path} is a dangling link (to {os.readlink(path)})", "Restore its target.")
        else:
            raise WorkbenchError(f"input {path} not found", "Check the path.")
        found += hits
    seen: set[Path] = set()
    return [i for i in found if not (i.path.resolve() in seen or seen.add(i.path.resolve()))]


def suffix_of(path: Path) -> str:
    name = path.name.lower()
    return next((s for s in sorted(SUFFIXES, key=len, reverse=True) if name.endswith(s)), path.suffix)


def _file_input(path: Path, strict: bool) -> list[Input]:
    suffix = suffix_of(path)
    if suffix not in SUFFIXES:
        if strict:
            raise WorkbenchError(f"input {path}: unsupported file type {suffix!r}", f"Use {SHOWN_SUFFIXES}.")
        return []
    if suffix == ".bin":
        idx = path.with_suffix(".idx")
        if idx.is_symlink() and not idx.exists():
            raise WorkbenchError(f"index {idx} is a dangling link (to {os.readlink(idx)})", "Restore its target.")
        kind = "megatron" if idx.is_file() else "tokens"
        return [Input(path, kind)]
    kinds = {".txt": "txt", ".parquet": "parquet"}
    return [Input(path, kinds.get(suffix, "jsonl"))]


def is_hf_dataset(folder: Path) -> bool:
    return (folder / "state.json").is_file() and (folder / "dataset_info.json").is_file()


def _folder_inputs(folder: Path) -> list[Input]:
    if is_hf_dataset(folder):
        return [Input(folder, "hf-disk")]
    if (folder / "dataset_dict.json").is_file():
        splits = ", ".join(sorted(p.name for p in folder.iterdir() if p.is_dir()))
        raise WorkbenchError(
            f"{folder} is a saved DatasetDict (splits: {splits})", f"Point at one split's folder, e.g. {folder}/train."
        )
    files = sorted(
        p
        for p in folder.rglob("*")
        if suffix_of(p) in SUFFIXES and not any(s.startswith(".") for s in p.relative_to(folder).parts)
    )
    for path in files:
        if path.is_symlink() and not path.exists():
            raise WorkbenchError(
                f"input {path} is a dangling link (to {os.readlink(path)})", "Restore its target or remove the link."
            )
    return [i for f in files if f.is_file() for i in _file_input(f, strict=False)]


def _hf_load_input(item: str) -> Input:
    parts = item.split(":", 2)
    if len(parts) != 3 or not parts[1] or not parts[2]:
        raise WorkbenchError(f"input {item!r} is not hf:BUILDER:FILES", "E.g. hf:json:data/*.jsonl.gz.")
    builder, pattern = parts[1], parts[2]
    files = tuple(Path(m) for m in sorted(glob.glob(pattern, recursive=True)) if Path(m).is_file())
    if not files:
        raise WorkbenchError(f"input {item!r}: no files match {pattern!r}", "Give local files (the hub is not used).")
    return Input(Path(pattern), "hf-load", builder, files)


# ---------------------------------------------------------------- text records


def line_chunks(text: str) -> Iterator[str]:
    """`text` in pieces that end at the first newline after CHUNK_CHARS characters (the last may not)."""
    start = 0
    while start < len(text):
        end = text.find("\n", start + CHUNK_CHARS)
        end = len(text) if end < 0 else end + 1
        yield text[start:end]
        start = end


@dataclass
class Piece:
    """Part of a document: its text, whether it starts or ends the document, and the document's length."""

    text: str
    start: bool
    end: bool
    doc_chars: int


def pieces(inp: Input, text_field: str, total_chars: int | None = None) -> Iterator[Piece]:
    """The documents of a text input as pieces (line_chunks of each document), NUL removed."""
    if inp.kind == "txt":
        if total_chars is None:
            total_chars = count_chars(inp, text_field)
        yield from _txt_pieces(inp.path, total_chars)
        return
    for batch in records(inp, text_field):
        for doc in batch:
            chunks = list(line_chunks(doc)) or [""]
            for i, chunk in enumerate(chunks):
                yield Piece(chunk, i == 0, i == len(chunks) - 1, len(doc))


def count_chars(inp: Input, text_field: str) -> int:
    """Characters of text in an input (after NUL removal): the first of two passes (the split needs it)."""
    if inp.kind == "txt":
        return sum(len(block) - block.count("\x00") for block in _txt_blocks(inp.path))
    if inp.kind == "parquet":  # counted in Arrow, without making Python strings
        import pyarrow.compute as pc

        return sum(
            pc.sum(pc.utf8_length(col)).as_py() - pc.sum(pc.count_substring(col, "\x00")).as_py()
            for col in _parquet_columns(inp, text_field, 1 << 16)
        )
    return sum(sum(map(len, batch)) for batch in records(inp, text_field))


def _txt_blocks(path: Path) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    offset = 0
    with path.open("rb") as f:
        while True:
            raw = f.read(_READ_BYTES)
            try:
                text = decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as err:
                byte = offset - len(decoder.getstate()[0]) + err.start
                raise WorkbenchError(
                    f"{path} is not UTF-8 (byte {max(byte, 0)})", "Convert it, e.g. with iconv."
                ) from None
            offset += len(raw)
            if text:
                yield text
            if not raw:
                return


def _txt_pieces(path: Path, total_chars: int) -> Iterator[Piece]:
    buffer, searched, first = "", CHUNK_CHARS, True
    for block in _txt_blocks(path):
        buffer += block.replace("\x00", "")
        while True:
            end = buffer.find("\n", searched)
            if end < 0:
                searched = max(len(buffer), CHUNK_CHARS)
                break
            yield Piece(buffer[: end + 1], first, False, total_chars)
            buffer, searched, first = buffer[end + 1 :], CHUNK_CHARS, False
    if buffer or first:
        yield Piece(buffer, first, True, total_chars)
    else:  # the file ended with a newline: close the document with an empty last piece
        yield Piece("", False, True, total_chars)


def records(inp: Input, text_field: str) -> Iterator[list[str]]:
    """Batches of record texts (NUL removed) of a record input."""
    readers = {"jsonl": _jsonl_records, "parquet": _parquet_records, "hf-disk": _hf_disk_records}
    readers["hf-load"] = _hf_load_records
    yield from readers[inp.kind](inp, text_field)


def _open_binary(path: Path) -> io.BufferedIOBase:
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith(".zst"):
        return io.BufferedReader(ZstdFrames(path, require("zstandard", f"reading {path}")), _READ_BYTES)
    return path.open("rb")


class ZstdFrames(io.RawIOBase):
    """The decompressed bytes of a .zst file (one or more frames), ending with an error when the file
    ends inside a frame: zstandard's stream reader returns the bytes so far and a clean end of file for
    a truncated file, which would drop its tail (or all of it) without a word."""

    def __init__(self, path: Path, zstd):
        super().__init__()
        self.path, self.zstd, self.file = path, zstd, path.open("rb")
        self.frame = zstd.ZstdDecompressor().decompressobj()
        self.in_frame, self.ready, self.at = False, b"", 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while self.at >= len(self.ready):
            chunk = self.file.read(_READ_BYTES)
            if not chunk:
                if self.in_frame:
                    raise EOFError(f"the file ends inside a zstd frame (after {self.file.tell():,} bytes)")
                return 0
            self.ready, self.at = self._feed(chunk), 0
        n = min(len(buffer), len(self.ready) - self.at)
        buffer[:n] = self.ready[self.at : self.at + n]
        self.at += n
        return n

    def _feed(self, chunk: bytes) -> bytes:
        out = []
        while chunk:
            out.append(self.frame.decompress(chunk))
            self.in_frame = not self.frame.eof
            if self.in_frame:
                break
            chunk = self.frame.unused_data  # the next frame of a multi-frame file
            self.frame = self.zstd.ZstdDecompressor().decompressobj()
        return b"".join(out)

    def close(self) -> None:
        self.file.close()
        super().close()


def _jsonl_records(inp: Input, text_field: str) -> Iterator[list[str]]:
    path, batch = inp.path, []
    try:
        with _open_binary(path) as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                batch.append(_record_text(path, lineno, line, text_field))
                if len(batch) >= _BATCH_RECORDS:
                    yield batch
                    batch = []
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError; zstd raises ZstdError (an Exception)
        raise WorkbenchError(f"{path}: cannot decompress ({err})", "Check the file (it may be truncated).") from None
    except Exception as err:
        if type(err).__name__ != "ZstdError":
            raise
        raise WorkbenchError(f"{path}: cannot decompress ({err})", "Check the file (it may be truncated).") from None
    if batch:
        yield batch


def _record_text(path: Path, lineno: int, line: bytes, text_field: str) -> str:
    try:
        record = json.loads(line)
    except UnicodeDecodeError as err:
        raise WorkbenchError(f"{path}:{lineno}: not UTF-8 (byte {err.start})", "Convert it, e.g. with iconv.") from None
    except json.JSONDecodeError as err:
        raise WorkbenchError(f"{path}:{lineno}: malformed JSON ({err.msg})", "Fix that line.") from None
    except (ValueError, RecursionError) as err:  # a number of thousands of digits, nesting beyond the stack
        what = "nested too deeply" if isinstance(err, RecursionError) else str(err).split(";")[0][:80]
        raise WorkbenchError(f"{path}:{lineno}: malformed JSON ({what})", "Fix that line.") from None
    value = record.get(text_field) if isinstance(record, dict) else None
    if not isinstance(value, str):
        keys = ", ".join(sorted(record)) if isinstance(record, dict) else type(record).__name__
        raise WorkbenchError(
            f"{path}:{lineno}: no text field {text_field!r} (found: {keys})",
            "Name the field that holds the text with --text-field.",
        )
    return value.replace("\x00", "") if "\x00" in value else value


def _column_texts(where: str, column, text_field: str) -> list[str]:
    texts = column.to_pylist()
    if any(not isinstance(t, str) for t in texts):
        raise WorkbenchError(
            f"{where}: field {text_field!r} holds non-text values", "Name a text column with --text-field."
        )
    return [t.replace("\x00", "") if "\x00" in t else t for t in texts]


def _check_field(where: str, names: list[str], text_field: str) -> None:
    if text_field not in names:
        raise WorkbenchError(
            f"{where}: no text field {text_field!r} (found: {', '.join(sorted(names))})",
            "Name the field that holds the text with --text-field.",
        )


def _parquet_records(inp: Input, text_field: str) -> Iterator[list[str]]:
    for column in _parquet_columns(inp, text_field, _BATCH_RECORDS):
        yield _column_texts(str(inp.path), column, text_field)


def _parquet_columns(inp: Input, text_field: str, rows: int) -> Iterator[Any]:
    pq = require("pyarrow.parquet", f"reading {inp.path}")
    try:
        pf = pq.ParquetFile(inp.path)
        _check_field(str(inp.path), pf.schema_arrow.names, text_field)
        for batch in pf.iter_batches(batch_size=rows, columns=[text_field]):
            column = batch.column(0)
            if column.null_count or not str(column.type).endswith("string"):
                raise WorkbenchError(
                    f"{inp.path}: field {text_field!r} holds non-text values", "Name a text column with --text-field."
                )
            yield column
    except WorkbenchError:
        raise
    except Exception as err:  # ArrowInvalid, OSError: a corrupt or truncated file
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise WorkbenchError(
            f"{inp.path}: not a readable parquet file ({first})", "Re-download or re-write it."
        ) from None


def _offline() -> None:
    """No hub access: the environment for modules imported later, the flags of those imported already."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    for module, flag in (("datasets.config", "HF_HUB_OFFLINE"), ("huggingface_hub.constants", "HF_HUB_OFFLINE")):
        loaded = sys.modules.get(module)
        if loaded is not None and hasattr(loaded, flag):
            setattr(loaded, flag, True)
    config = sys.modules.get("datasets.config")
    if config is not None and hasattr(config, "HF_DATASETS_OFFLINE"):
        config.HF_DATASETS_OFFLINE = True


def _hf_disk_records(inp: Input, text_field: str) -> Iterator[list[str]]:
    _offline()
    datasets = require("datasets", f"reading the Hugging Face dataset {inp.path}")
    try:
        dataset = datasets.load_from_disk(str(inp.path))
    except Exception as err:
        raise WorkbenchError(
            f"{inp.path}: cannot load the saved dataset ({err})", "Re-save it with save_to_disk."
        ) from None
    _check_field(str(inp.path), list(dataset.column_names), text_field)
    table = dataset.with_format("arrow")
    for start in range(0, len(dataset), _BATCH_RECORDS):
        batch = table[start : start + _BATCH_RECORDS]
        yield _column_texts(str(inp.path), batch.column(text_field), text_field)


def _hf_load_records(inp: Input, text_field: str) -> Iterator[list[str]]:
    _offline()
    datasets = require("datasets", f"reading {inp.shown()}")
    files = [str(f) for f in inp.files]
    try:
        dataset = datasets.load_dataset(inp.builder, data_files=files, split="train", streaming=True)
        batches = iter(dataset.iter(batch_size=_BATCH_RECORDS))
        first = next(batches, None)
    except Exception as err:
        first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise WorkbenchError(
            f"{inp.shown()}: datasets.load_dataset failed ({first_line})", "Check the files and BUILDER."
        ) from None
    if first is None:
        return
    _check_field(inp.shown(), list(first), text_field)
    for batch in _chain(first, batches):
        yield [t.replace("\x00", "") if "\x00" in t else t for t in batch[text_field]]


def _chain(first, rest):
    yield first
    yield from rest
