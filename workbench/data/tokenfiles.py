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
    idx = path.with_suffix(".idx")
    raw = idx.read_bytes()
    if raw[:9] != MEGATRON_MAGIC or len(raw) < 34:
        raise WorkbenchError(f"{idx}: not a Megatron-LM index (bad magic)", "Give the .idx written with its .bin.")
    (version,) = struct.unpack("<Q", raw[9:17])
    code = raw[17]
    if version != 1 or code not in MEGATRON_DTYPES:
        raise WorkbenchError(
            f"{idx}: unsupported Megatron index (version {version}, dtype code {code})", "Expected version 1."
        )
    dtype = np.dtype(MEGATRON_DTYPES[code])
    (sequences,) = struct.unpack("<Q", raw[18:26])
    sizes = np.frombuffer(raw, dtype=np.int32, count=sequences, offset=34)
    total = int(sizes.sum(dtype=np.int64))
    size = path.stat().st_size
    if size % dtype.itemsize or size // dtype.itemsize < total:
        raise WorkbenchError(
            f"{path}: {size} bytes do not hold the {total} {dtype.name} tokens its index lists",
            "The .bin is truncated or not the index's partner; re-create the pair.",
        )
    ids = np.memmap(path, dtype=dtype, mode="r", shape=(total,)) if total else np.zeros(0, dtype)
    return TokenFile(ids, dtype.name, "megatron v1")


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
