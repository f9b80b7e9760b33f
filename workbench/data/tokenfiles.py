"""Token files that come tokenized, read through memmap: flat .bin (nanoGPT's uint16, or llm.c's with a
1024-byte header whose version gives the dtype) and the Megatron-LM indexed pair PATH.bin + PATH.idx."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workbench.core.errors import WorkbenchError

LLMC_MAGIC = 20240520
LLMC_HEADER_BYTES = 256 * 4
LLMC_DTYPES = {1: np.uint16, 2: np.uint32}  # llm.c header version -> token dtype
MEGATRON_MAGIC = b"MMIDIDX\x00\x00"
MEGATRON_HEADER = 34  # magic (9), version (8), dtype code (1), sequence count (8), document count (8)
MEGATRON_DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64, 7: np.float32}
MEGATRON_DTYPES[8] = np.uint16


@dataclass(frozen=True)
class TokenFile:
    """A memmapped token stream: ids (a 1-D array), and what the header said."""

    ids: np.ndarray
    dtype: str
    header: str


def open_tokens(inp, flat_dtype: str = "uint16") -> TokenFile:
    """The ids of a flat .bin (llm.c header read if present, else `flat_dtype`) or a Megatron .bin/.idx pair."""
    if inp.kind == "megatron":
        return _open_megatron(inp.path)
    path = inp.path
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(LLMC_HEADER_BYTES)
    offset, dtype, header = 0, np.dtype(flat_dtype), "none"
    if len(head) == LLMC_HEADER_BYTES:
        magic, version, count = struct.unpack("<3i", head[:12])
        if magic == LLMC_MAGIC:
            if version not in LLMC_DTYPES:
                raise WorkbenchError(
                    f"{path}: llm.c header version {version} is unknown", "Expected 1 (uint16) or 2 (uint32)."
                )
            offset, dtype, header = LLMC_HEADER_BYTES, np.dtype(LLMC_DTYPES[version]), f"llm.c v{version}"
            if size - offset != count * dtype.itemsize:
                raise WorkbenchError(
                    f"{path}: llm.c header says {count} tokens; the file holds {size - offset} bytes of {dtype.name}",
                    "The file is truncated; re-create it.",
                )
    if (size - offset) % dtype.itemsize:
        raise WorkbenchError(
            f"{path}: {size - offset} bytes is not a multiple of {dtype.name} ({dtype.itemsize} bytes)",
            "Give the dtype it was written with (--token-dtype), or re-create the file.",
        )
    ids = np.memmap(path, dtype=dtype, mode="r", offset=offset) if size > offset else np.zeros(0, dtype)
    return TokenFile(ids, dtype.name, header)


def _open_megatron(path: Path) -> TokenFile:
    """The ids of a Megatron-LM pair, after checking the index as Megatron's reader would rely on it: its
    length is exactly what its counts say, sizes are non-negative, each pointer is the byte offset where
    the previous sequence ends (aligned, inside the .bin), doc_idx runs from 0 to the sequence count without
    going back, and the .bin holds exactly the tokens the index lists."""
    idx = path.with_suffix(".idx")
    try:
        raw = idx.read_bytes()
    except OSError as err:
        raise WorkbenchError(f"cannot read {idx} ({err.strerror or err})", "Check the file.") from None
    if raw[:9] != MEGATRON_MAGIC or len(raw) < MEGATRON_HEADER:
        raise WorkbenchError(f"{idx}: not a Megatron-LM index (bad magic)", "Give the .idx written with its .bin.")
    (version,) = struct.unpack("<Q", raw[9:17])
    code = raw[17]
    if version != 1 or code not in MEGATRON_DTYPES:
        raise WorkbenchError(
            f"{idx}: unsupported Megatron index (version {version}, dtype code {code})", "Expected version 1."
        )
    dtype = np.dtype(MEGATRON_DTYPES[code])
    sequences, documents = struct.unpack("<QQ", raw[18:34])
    expected = MEGATRON_HEADER + sequences * 12 + documents * 8
    if expected != len(raw):
        raise WorkbenchError(
            f"{idx}: the index says {sequences:,} sequences and {documents:,} document offsets "
            f"({expected:,} bytes) but holds {len(raw):,} bytes",
            "The index is damaged or truncated; re-create the pair.",
        )
    sizes = np.frombuffer(raw, dtype=np.int32, count=sequences, offset=MEGATRON_HEADER).astype(np.int64)
    pointers = np.frombuffer(raw, dtype=np.int64, count=sequences, offset=MEGATRON_HEADER + sequences * 4)
    doc_idx = np.frombuffer(raw, dtype=np.int64, count=documents, offset=MEGATRON_HEADER + sequences * 12)
    _check_megatron(idx, sizes, pointers, doc_idx, dtype)
    total = int(sizes.sum())
    size = path.stat().st_size
    if size != total * dtype.itemsize:
        raise WorkbenchError(
            f"{path}: {size:,} bytes, but its index lists {total:,} {dtype.name} tokens "
            f"({total * dtype.itemsize:,} bytes)",
            "The .bin is truncated or not the index's partner; re-create the pair.",
        )
    ids = np.memmap(path, dtype=dtype, mode="r", shape=(total,)) if total else np.zeros(0, dtype)
    return TokenFile(ids, dtype.name, "megatron v1")


def _check_megatron(idx: Path, sizes: np.ndarray, pointers: np.ndarray, doc_idx: np.ndarray, dtype: np.dtype) -> None:
    hint = "The index is damaged or not the .bin's partner; re-create the pair."
    if sizes.size and sizes.min() < 0:
        raise WorkbenchError(f"{idx}: sequence {int(np.argmin(sizes))} has a negative size", hint)
    expected = np.concatenate([[0], np.cumsum(sizes[:-1])]) * dtype.itemsize if sizes.size else sizes
    wrong = np.flatnonzero(pointers != expected)
    if wrong.size:
        i = int(wrong[0])
        raise WorkbenchError(
            f"{idx}: sequence {i} points at byte {int(pointers[i]):,}; the sequences before it end at byte "
            f"{int(expected[i]):,} (a pointer past the end, misaligned or out of order)",
            hint,
        )
    bad_doc = doc_idx.size == 0 or doc_idx[0] != 0 or doc_idx[-1] != sizes.size or bool(np.any(np.diff(doc_idx) < 0))
    if bad_doc:
        raise WorkbenchError(
            f"{idx}: doc_idx must run from 0 to the {sizes.size:,} sequences without going back "
            f"(got {doc_idx[:3].tolist()}...{doc_idx[-1:].tolist()})",
            hint,
        )


def write_megatron(prefix: Path, documents: list[np.ndarray], dtype: str = "uint16") -> None:
    """Write a Megatron-LM indexed pair PREFIX.bin + PREFIX.idx (tests and tools; version 1 layout)."""
    dtype_np = np.dtype(dtype)
    code = next(c for c, d in MEGATRON_DTYPES.items() if np.dtype(d) == dtype_np)
    sizes = np.array([len(d) for d in documents], dtype=np.int32)
    pointers = np.concatenate([[0], np.cumsum(sizes[:-1], dtype=np.int64) * dtype_np.itemsize]).astype(np.int64)
    doc_idx = np.arange(len(documents) + 1, dtype=np.int64)
    Path(f"{prefix}.bin").write_bytes(b"".join(np.asarray(d, dtype=dtype_np).tobytes() for d in documents))
    head = MEGATRON_MAGIC + struct.pack("<Q", 1) + bytes([code]) + struct.pack("<QQ", len(sizes), len(doc_idx))
    Path(f"{prefix}.idx").write_bytes(head + sizes.tobytes() + pointers[: len(sizes)].tobytes() + doc_idx.tobytes())


def write_llmc(path: Path, ids: np.ndarray, version: int = 1) -> None:
    """Write a token file with llm.c's header (version 1: uint16, 2: uint32)."""
    header = np.zeros(256, dtype=np.int32)
    header[:3] = [LLMC_MAGIC, version, len(ids)]
    Path(path).write_bytes(header.tobytes() + np.asarray(ids, dtype=LLMC_DTYPES[version]).tobytes())
