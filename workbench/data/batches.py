"""Deterministic batches from weighted mixtures of prepared data sets (what the trainer reads).

Batches are pure functions of (seed, step, micro): a resumed run sees exactly the batches it would have
seen, and row i of a micro-batch does not depend on how many rows are asked for, so data-parallel ranks
that take slices of a global micro-batch together see what one process sees.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from workbench.core.errors import WorkbenchError
from workbench.data.shards import read_manifest

VAL_SEED = 20240731  # fixed: validation batches never depend on a run's seed or mixture weights


class _Windows:
    """Windows of `width` consecutive tokens that lie inside one shard of a list of memmapped shards."""

    def __init__(self, shards: list[np.memmap], width: int):
        self.shards, self.width = shards, width
        starts = np.array([max(len(s) - width + 1, 0) for s in shards], dtype=np.int64)
        self.cum = np.cumsum(starts)
        self.first = self.cum - starts  # index of each shard's first window
        self.count = int(self.cum[-1]) if len(shards) else 0

    def gather(self, u: np.ndarray) -> np.ndarray:
        """Windows at uniform positions u in [0, 1): int64 [len(u), width]."""
        start = np.minimum((u * self.count).astype(np.int64), self.count - 1)
        shard = np.searchsorted(self.cum, start, side="right")
        offset = start - self.first[shard]
        out = np.empty((len(u), self.width), dtype=np.int64)
        span = np.arange(self.width)
        for s in np.unique(shard):
            rows = np.flatnonzero(shard == s)
            out[rows] = self.shards[s][offset[rows, None] + span]
        return out


def _open_shards(folder: Path, manifest: dict, split: str) -> list[np.memmap]:
    dtype = np.dtype(manifest["dtype"])
    shards = []
    for shard in manifest["shards"][split]:
        path = folder / shard["file"]
        size = path.stat().st_size if path.is_file() else -1
        if size != shard["tokens"] * dtype.itemsize:
            raise WorkbenchError(
                f"shard {path} is missing or truncated ({size} bytes, manifest says {shard['tokens']} tokens)",
                f"Re-create it: workbench data prepare ... --out {folder} --force",
            )
        shards.append(np.memmap(path, dtype=dtype, mode="r"))
    return shards


def check_tokenizers(data_config) -> None:
    """Raise one line naming both folders and tokenizers if a DataConfig's sources (and anneal_sources, and
    eval sets if given) were prepared with different tokenizers; reads manifests only."""
    folders = [s.path for s in data_config.sources + data_config.anneal_sources]
    infos = [(f, read_manifest(f)["tokenizer"]) for f in folders]
    for folder, info in infos[1:]:
        if (info["sha256"], info["vocab_size"]) != (infos[0][1]["sha256"], infos[0][1]["vocab_size"]):
            raise WorkbenchError(
                f"data sets {infos[0][0]} ({_tokenizer_name(infos[0][1])}) and {folder} ({_tokenizer_name(info)}) "
                "use different tokenizers",
                "Prepare every source of a mixture with the same --tokenizer.",
            )


def _tokenizer_name(info: dict) -> str:
    return info.get("name") or f"{info['kind']}, vocab {info['vocab_size']}"


class Mixture:
    """Sequences drawn from prepared data sets with weights; batches are pure functions of (seed, step, micro)."""

    def __init__(self, sources: list[tuple[str, float]], seq_len: int, seed: int):
        if not sources:
            raise WorkbenchError("the data mixture has no sources", "Add at least one prepared folder to data.sources.")
        if seq_len < 1 or seed < 0:
            raise WorkbenchError(f"seq_len {seq_len} and seed {seed} must be >= 1 and >= 0", "Fix the config.")
        self.seq_len, self.seed = seq_len, seed
        self.dirs = [Path(path) for path, _ in sources]
        weights = np.array([float(w) for _, w in sources])
        if not (np.all(np.isfinite(weights)) and np.all(weights > 0)):
            raise WorkbenchError(f"mixture weights {weights.tolist()} must be positive", "Fix data.sources weights.")
        self.weights = weights / weights.sum()
        self._cum_weights = np.cumsum(self.weights)
        self.manifests = [read_manifest(d) for d in self.dirs]
        first = self.manifests[0]["tokenizer"]
        for folder, manifest in zip(self.dirs[1:], self.manifests[1:], strict=True):
            other = manifest["tokenizer"]
            if (other["sha256"], other["vocab_size"]) != (first["sha256"], first["vocab_size"]):
                raise WorkbenchError(
                    f"data sets {self.dirs[0]} ({_tokenizer_name(first)}) and {folder} ({_tokenizer_name(other)}) "
                    "use different tokenizers",
                    "Prepare every source of a mixture with the same --tokenizer.",
                )
        self.vocab_size: int = first["vocab_size"]
        self.eot_id: int | None = first["eot_id"]
        self.tokenizer_sha256: str = first["sha256"]
        self._train = [
            _Windows(_open_shards(d, m, "train"), seq_len + 1) for d, m in zip(self.dirs, self.manifests, strict=True)
        ]
        for folder, manifest, windows in zip(self.dirs, self.manifests, self._train, strict=True):
            if windows.count == 0:
                raise WorkbenchError(
                    f"data set {folder} has {manifest['tokens']['train']} train tokens, too few for seq_len {seq_len}",
                    "Add text or lower data.seq_len.",
                )
        val_shards = [s for d, m in zip(self.dirs, self.manifests, strict=True) for s in _open_shards(d, m, "val")]
        self._val = _Windows(val_shards, seq_len + 1)
        self.train_tokens = sum(m["tokens"]["train"] for m in self.manifests)
        self.val_tokens = sum(m["tokens"]["val"] for m in self.manifests)

    def train_batch(self, step: int, micro: int, n_seqs: int, first_row: int = 0) -> np.ndarray:
        """Rows first_row .. first_row + n_seqs of micro-batch `micro` of step `step`: int64 [n_seqs, seq_len + 1].

        Row i depends only on (seed, step, micro, i): a rank may ask for its slice of a global micro-batch.
        """
        if step < 0 or micro < 0 or n_seqs < 1 or first_row < 0:
            raise ValueError(f"bad batch request step={step} micro={micro} n_seqs={n_seqs} first_row={first_row}")
        rows = slice(first_row, first_row + n_seqs)
        # separate streams for the source and the position keep each row independent of the row count
        u_pos = np.random.default_rng([self.seed, step, micro, 0]).random(rows.stop)[rows]
        if len(self._train) == 1:
            return self._train[0].gather(u_pos)
        u_src = np.random.default_rng([self.seed, step, micro, 1]).random(rows.stop)[rows]
        source = np.minimum(np.searchsorted(self._cum_weights, u_src, side="right"), len(self._train) - 1)
        out = np.empty((n_seqs, self.seq_len + 1), dtype=np.int64)
        for s in np.unique(source):
            picked = np.flatnonzero(source == s)
            out[picked] = self._train[s].gather(u_pos[picked])
        return out

    def val_batches(self, n_batches: int, n_seqs: int) -> list[np.ndarray]:
        """Fixed validation batches from the pooled val splits of all sources (independent of seed and weights)."""
        if self._val.count == 0:
            raise WorkbenchError(
                f"the validation split of {', '.join(map(str, self.dirs))} has {self.val_tokens} tokens, "
                f"too few for seq_len {self.seq_len}",
                "Prepare the data with a larger --val-fraction or lower data.seq_len.",
            )
        u = np.random.default_rng(VAL_SEED).random(n_batches * n_seqs)
        windows = self._val.gather(u)
        return [windows[i * n_seqs : (i + 1) * n_seqs] for i in range(n_batches)]


def mixtures(data, seed: int) -> tuple[Mixture, Mixture | None]:
    """The training mixture and the annealing mixture (None if none) of a DataConfig; both use one tokenizer."""
    main = Mixture([(s.path, s.weight) for s in data.sources], data.seq_len, seed)
    if not data.anneal_sources:
        return main, None
    anneal = Mixture([(s.path, s.weight) for s in data.anneal_sources], data.seq_len, seed)
    if anneal.tokenizer_sha256 != main.tokenizer_sha256:
        raise WorkbenchError(
            f"data.anneal_sources use another tokenizer than data.sources (vocab {anneal.vocab_size} vs "
            f"{main.vocab_size})",
            "Prepare the annealing data with the same --tokenizer.",
        )
    return main, anneal
