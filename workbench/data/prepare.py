"""`workbench data prepare`: inputs -> token shards, streaming, in parallel, atomic and resumable.

Memory stays bounded whatever the corpus: inputs are read as streams of line-aligned pieces (see
workbench.data.sources), a reader thread reads, decompresses and parses ahead while the Rust encoder (which
releases the GIL and encodes a batch on every core) tokenizes, and token ids go straight to shard files.

The held-out split is the contiguous tail (val_fraction of the characters, or of the tokens for
pre-tokenized inputs) of every input: a first pass counts an input's characters, the second cuts there.
Pieces are encoded independently, so the token stream does not depend on the input's format: the same
documents give the same ids from .txt, .jsonl(.gz/.zst), parquet or a Hugging Face dataset.

Work happens in a hidden folder next to --out (.NAME.partial-HASH, under a lock): a journal records, after
each finished shard, where every writer and the reader stood. A killed prepare rerun with the same inputs
and options continues from there (finished shards are kept, the open one is cut back) and ends with the
same shards and manifest as an uninterrupted run; the finished folder is published with a rename.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import queue
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from workbench.core.errors import WorkbenchError
from workbench.core.files import DiskError, atomic_write_bytes, atomic_write_text, env_number, inside, writing
from workbench.data.shards import DEFAULT_CORPUS_FOLDER, ShardWriter, check_out, locked, manifest_if_any, publish
from workbench.data.sources import Input, Piece, count_chars, pieces, resolve_inputs
from workbench.data.tokenfiles import open_tokens
from workbench.data.tokenizer import (
    TextTokenizer,
    byte_tokenizer,
    check_tokenizer,
    corpus_files,
    ids_tokenizer,
    load_tiktoken,
    load_tokenizer_file,
    resolve_spec,
    token_dtype,
    train_bpe,
)

log = logging.getLogger(__name__)
FORMAT = "workbench-data/1"
DEFAULT_SHARD_TOKENS = 100_000_000  # 200 MB per uint16 shard
JOURNAL = "progress.json"
# text per encode call: enough for every core, small enough to bound memory (env: smaller in tests)
BATCH_CHARS = 1 << 21
TOKEN_BLOCK = 1 << 22  # pre-tokenized ids copied per step
_QUEUE_BATCHES = 4


@dataclass
class Options:
    """What besides the inputs decides the output (all of it goes into inputs_sha256)."""

    tokenizer: str = "bytes"
    vocab_size: int | None = None
    val_fraction: float = 0.05
    text_field: str = "text"
    shard_tokens: int = DEFAULT_SHARD_TOKENS
    split_pattern: str | None = None  # tiktoken
    special_tokens: dict[str, int] | None = None  # tiktoken
    eot_id: int | None = None  # overrides the tokenizer's; the separator of pre-tokenized inputs
    token_dtype: str = "uint16"  # flat .bin inputs without an llm.c header


def prepare(
    inputs: list[str],
    out: Path,
    tokenizer: str = "bytes",
    vocab_size: int | None = None,
    val_fraction: float = 0.05,
    text_field: str = "text",
    force: bool = False,
    progress: bool = False,
    *,
    corpus: str | None = None,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    split_pattern: str | None = None,
    special_tokens: dict[str, int] | None = None,
    eot_id: int | None = None,
    token_dtype: str = "uint16",
) -> dict:
    """Tokenize `inputs` (or the embedded `corpus`; no inputs means shakespeare) into shards under `out`
    (streaming and resumable).

    Returns the manifest plus `reused: True` when `out` already held this exact data set (nothing written).
    """

    options = Options(
        tokenizer,
        vocab_size,
        val_fraction,
        text_field,
        shard_tokens,
        split_pattern,
        special_tokens,
        eot_id,
        token_dtype,
    )
    return _prepare(inputs, out, options, corpus, progress, force)


def default_corpus_dir() -> Path:
    """Where the embedded corpus is prepared with bytes: $WORKBENCH_DATA/shakespeare-bytes, else
    <project root or cwd>/data/shakespeare-bytes (the project root: nearest folder up from the cwd
    with .git or pyproject.toml)."""
    root = os.environ.get("WORKBENCH_DATA")
    if root:
        return Path(root) / DEFAULT_CORPUS_FOLDER
    cwd = Path.cwd()
    project = next((d for d in (cwd, *cwd.parents) if (d / ".git").exists() or (d / "pyproject.toml").is_file()), cwd)
    return project / "data" / DEFAULT_CORPUS_FOLDER


def ensure_default_corpus(out: Path | None = None) -> Path:
    """Prepare the embedded Shakespeare corpus with the byte tokenizer unless `out` already holds it."""
    out = Path(out) if out is not None else default_corpus_dir()
    manifest = manifest_if_any(out)
    if manifest and manifest.get("corpus") == "shakespeare" and manifest["tokenizer"]["kind"] == "bytes":
        return out
    prepare([], out, corpus="shakespeare")
    return out


def _prepare(inputs: list[str], out: Path, options: Options, corpus: str | None, progress: bool, force: bool) -> dict:
    """Tokenize `inputs` (or the embedded `corpus`) into shards under `out`; the manifest, plus `reused`."""
    out, o = Path(out), options
    if not 0 <= o.val_fraction < 1:
        raise WorkbenchError(f"--val-fraction {o.val_fraction} is out of range", "Use a value in [0, 1), e.g. 0.05.")
    if o.shard_tokens < 1:
        raise WorkbenchError(f"--shard-tokens {o.shard_tokens} must be positive", "Use e.g. 100M.")
    if o.token_dtype not in ("uint16", "uint32", "int32"):
        raise WorkbenchError(f"--token-dtype {o.token_dtype!r} is not supported", "Use uint16, uint32 or int32.")
    if inputs and corpus:
        raise WorkbenchError("give input files or --corpus, not both", "Prepare them into separate folders.")
    corpus = corpus or (None if inputs else "shakespeare")
    kind, user_file = resolve_spec(o.tokenizer, o.vocab_size)
    items = [Input(f, "txt") for f in corpus_files(corpus)] if corpus else resolve_inputs(inputs)
    _check_out_apart(out, inputs, items)
    sources = [i.fingerprint() for i in items]
    if corpus:
        sources = [s | {"path": f"{corpus}:{i.path.name}"} for s, i in zip(sources, items, strict=True)]
    if not any(s["bytes"] for s in sources):
        raise WorkbenchError("the inputs hold no text (all files are empty)", "Point at files with text.")
    settings = {"val_fraction": o.val_fraction, "text_field": o.text_field, "shard_tokens": o.shard_tokens}
    spec = {"kind": kind, "vocab_size": o.vocab_size, "file_sha256": _sha256(user_file) if user_file else None}
    extra = {"split_pattern": o.split_pattern, "special_tokens": o.special_tokens, "eot_id": o.eot_id}
    if any(i.tokenized for i in items):
        extra["token_dtype"] = o.token_dtype
    spec |= {k: v for k, v in extra.items() if v is not None}  # unset: digests of older data sets still match
    inputs_sha256 = _digest(
        {"format": FORMAT, "sources": [[s["bytes"], s["sha256"]] for s in sources]} | settings | spec
    )

    existing = check_out(out, inputs_sha256, force)
    if existing is not None:
        return existing | {"reused": True}
    with writing(out.parent):
        out.parent.mkdir(parents=True, exist_ok=True)
    with locked(out.parent / f".{out.name}.lock"):
        existing = check_out(out, inputs_sha256, force)  # another process may have finished meanwhile
        if existing is not None and not force:
            return existing | {"reused": True}
        work = out.parent / f".{out.name}.partial-{inputs_sha256[:16]}"
        try:
            with writing(work):
                work.mkdir(exist_ok=True)
            finished = manifest_if_any(work)  # an earlier run finished here but could not publish (a full disk)
            if finished is None or finished.get("inputs_sha256") != inputs_sha256:
                tok = _tokenizer(work, kind, user_file, o, items)
                manifest = _Job(work, tok, items, o, progress).run()
                manifest |= {"format": FORMAT, "corpus": corpus, "sources": sources, "options": settings}
                manifest["inputs_sha256"] = inputs_sha256
                atomic_write_text(work / "manifest.json", json.dumps(manifest, indent=2) + "\n")
                (work / JOURNAL).unlink(missing_ok=True)
            return publish(work, out, inputs_sha256, force) | {"reused": False}
        except DiskError:  # a full or read-only disk: the work folder stays, a rerun continues from it
            raise
        except WorkbenchError:  # bad input: nothing half-written is left behind
            shutil.rmtree(work, ignore_errors=True)
            raise


def _check_out_apart(out: Path, inputs: list[str], items: list[Input]) -> None:
    """--out may not lie inside an input folder, nor hold an input: a rerun would read its own shards back."""
    for item in inputs:
        if not item.startswith("hf:") and Path(item).is_dir() and inside(out, item):
            raise WorkbenchError(
                f"--out {out} is inside the input folder {item}: a rerun would read its shards back as input",
                "Write the data set outside the input folders.",
            )
    for inp in items:
        member = next((m for m in inp.members() if inside(m, out)), None)
        if member is not None:
            raise WorkbenchError(f"input {member} lies inside --out {out}", "Give inputs from outside --out.")


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ---------------------------------------------------------------- tokenizer


def _tokenizer(work: Path, kind: str, user_file: Path | None, o: Options, items: list[Input]) -> TextTokenizer:
    if kind == "bpe" and (work / "bpe.json").is_file():  # resuming: the BPE trained before the interruption
        tok = load_tokenizer_file(work / "bpe.json", kind="bpe")
    else:
        tok = _build_tokenizer(kind, user_file, o, items)
        if tok.kind not in ("bytes", "ids"):
            check_tokenizer(tok, _sample(items, o.text_field))
        if kind == "bpe":
            atomic_write_text(work / "bpe.json", tok.to_json())
    if o.eot_id is not None:
        if not 0 <= o.eot_id < tok.vocab_size:
            raise WorkbenchError(f"--eot-id {o.eot_id} is outside the vocabulary of {tok.vocab_size}", "Fix --eot-id.")
        tok.eot_id = o.eot_id
    return tok


def _sample(items: list[Input], text_field: str, chars: int = 4096) -> str:
    """The first `chars` characters of the first text input (what check_tokenizer round-trips)."""
    text = next((i for i in items if not i.tokenized), None)
    if text is None:
        return ""
    stream = pieces(text, text_field, 0)  # 0: the document length is not needed for a sample
    first = next(stream, None)
    stream.close()
    return first.text[:chars] if first is not None else ""


def _build_tokenizer(kind: str, user_file: Path | None, o: Options, items: list[Input]) -> TextTokenizer:
    if kind == "bytes":
        return byte_tokenizer()
    if kind == "ids":
        return ids_tokenizer(o.vocab_size, o.eot_id)
    if kind == "tiktoken":
        tok = load_tiktoken(user_file, o.split_pattern, o.special_tokens)
    elif kind == "file":
        tok = load_tokenizer_file(user_file)
    else:
        texts = [i for i in items if not i.tokenized]
        if not texts:
            raise WorkbenchError("--tokenizer bpe has no text to learn from", "Give text inputs or a tokenizer file.")

        def train_texts() -> Iterator[str]:  # BPE learns from the train split only
            for inp in texts:
                split = TailSplit(count_chars(inp, o.text_field), o.val_fraction)
                for piece in pieces(inp, o.text_field, split.total):
                    yield from (text for name, text, _ in split.feed(piece) if name == "train" and text)

        return train_bpe(train_texts(), o.vocab_size)
    if o.vocab_size is not None and o.vocab_size != tok.vocab_size:
        raise WorkbenchError(
            f"--vocab-size {o.vocab_size} differs from {user_file}'s vocabulary of {tok.vocab_size}",
            "Drop --vocab-size: a tokenizer file fixes it.",
        )
    return tok


def tokenizer_record(tok: TextTokenizer, folder: Path) -> dict:
    """The manifest's `tokenizer` entry; writes the files needed to load it again into `folder`."""
    record = {"kind": tok.kind, "vocab_size": tok.vocab_size, "eot_id": tok.eot_id, "sha256": tok.sha256()}
    record["name"] = tok.describe()
    if tok.to_json() is not None:
        atomic_write_text(folder / "tokenizer.json", tok.to_json())
        record["file"] = "tokenizer.json"
    if tok.kind == "tiktoken":
        atomic_write_bytes(folder / "tokenizer.tiktoken", Path(tok.source).read_bytes())
        record |= {"file": "tokenizer.tiktoken", "pattern": tok.spec["pattern"]}
        record["special_tokens"] = tok.spec["special_tokens"]
    return record


# ---------------------------------------------------------------- the held-out split


@dataclass
class TailSplit:
    """Cuts one input's stream of pieces into train and the held-out tail of val_fraction of its characters.

    Short documents (records) go whole to the nearer side of the cut; a long one (a .txt file) is cut at
    the first line start at or after it. feed() returns (split, text, ends_part) items; an item with
    ends_part closes a part (a document, or its train or val side) and carries no text.
    """

    total: int
    val_fraction: float
    seen: int = 0
    at: int = 0
    offset: int = 0
    search: bool = False
    train_open: bool = False

    def feed(self, p: Piece) -> list[tuple[str, str, bool]]:
        if p.start:
            self._start(p.doc_chars)
        lo, hi = self.offset, self.offset + len(p.text)
        if self.search and self.at < hi:
            k = p.text.find("\n", self.at - lo)
            if k >= 0:
                self.at, self.search = lo + k + 1, False
            elif p.end:
                self.search = False
            else:
                self.at = hi
        elif self.search and p.end:
            self.search = False
        k = min(max(self.at - lo, 0), len(p.text))
        out = []
        if self.train_open:
            if k:
                out.append(("train", p.text[:k], False))
            if p.end or (not self.search and self.at <= hi):
                out.append(("train", "", True))
                self.train_open = False
        if k < len(p.text):
            out.append(("val", p.text[k:], False))
        if p.end:
            out.append(("val", "", True))
        self.seen, self.offset = self.seen + len(p.text), hi
        return out

    def _start(self, n: int) -> None:
        cut = self.total - round(self.total * self.val_fraction)
        self.offset, self.search, self.train_open = 0, False, True
        if self.seen + n <= cut:
            self.at = n
        elif self.seen >= cut:
            self.at = 0
        else:
            self.at = cut - self.seen
            if n <= self.total - cut:  # shorter than the held-out part: goes whole to the nearer side
                self.at = 0 if self.at < n / 2 else n
            else:
                self.search = True


# ---------------------------------------------------------------- the job


class _Job:
    """One prepare into `work`: writers, the journal, and the loop over inputs (resumed from the journal)."""

    def __init__(self, work: Path, tok: TextTokenizer, items: list[Input], o: Options, progress: bool):
        self.work, self.tok, self.items, self.o, self.progress = work, tok, items, o, progress
        self.dtype = token_dtype(tok.vocab_size)
        journal = _read_journal(work / JOURNAL, tok.sha256())
        self.source = journal.get("source", 0)  # the input being read
        self.position = journal.get("position", 0)  # pieces (text) or ids (tokenized) of it already done
        self.split_state = journal.get("split")
        self.parts = journal.get("parts", {"train": False, "val": False})  # the open part has text
        self.documents = journal.get("documents", {"train": 0, "val": 0})
        self.chars = journal.get("chars", {})
        writers = journal.get("writers", {})
        self.writers = {s: ShardWriter(work, s, self.dtype, o.shard_tokens, writers.get(s)) for s in ("train", "val")}
        self.finished = self._finished_count()
        if journal:
            log.info("resuming %s at input %d (%d shards kept)", work, self.source, self.finished)

    def run(self) -> dict:
        sizes = [sum(m.stat().st_size for m in i.members()) for i in self.items]
        with _progress_bar(self.progress, sum(sizes)) as advance:
            advance(sum(sizes[: self.source]))
            while self.source < len(self.items):
                inp = self.items[self.source]
                (self._tokens if inp.tokenized else self._text)(inp)
                self.source, self.position, self.split_state = self.source + 1, 0, None
                self._checkpoint()
                advance(sizes[self.source - 1])
        return self._manifest()

    def _finished_count(self) -> int:
        return sum(len(w.done) for w in self.writers.values())

    def _checkpoint(self, force: bool = True) -> None:
        if not force and self._finished_count() == self.finished:
            return
        self.finished = self._finished_count()
        state = {
            "tokenizer_sha256": self.tok.sha256(),
            "source": self.source,
            "position": self.position,
            "split": self.split_state,
            "parts": self.parts,
            "documents": self.documents,
            "chars": self.chars,
            "writers": {s: w.state() for s, w in self.writers.items()},
        }
        atomic_write_text(self.work / JOURNAL, json.dumps(state))

    # -- text
    def _text(self, inp: Input) -> None:
        key = str(self.source)
        if key not in self.chars:
            self.chars[key] = count_chars(inp, self.o.text_field)
        split = TailSplit(**self.split_state) if self.split_state else TailSplit(self.chars[key], self.o.val_fraction)
        stream = itertools.islice(pieces(inp, self.o.text_field, self.chars[key]), self.position, None)
        for batch in _read_ahead(stream):
            items = [item for p in batch for item in split.feed(p)]
            self._write_text(items)
            self.position += len(batch)
            self.split_state = asdict(split)
            self._checkpoint(force=False)

    def _write_text(self, items: list[tuple[str, str, bool]]) -> None:
        encoded = iter(self.tok.encode_chunks([text for _, text, _ in items if text]))
        eot = np.array([self.tok.eot_id] if self.tok.eot_id is not None else [], dtype=np.int64)
        arrays: dict[str, list[np.ndarray]] = {"train": [], "val": []}
        for name, text, ends in items:
            if text:
                arrays[name].append(next(encoded))
                self.parts[name] = True
            elif ends and self.parts[name]:
                arrays[name].append(eot)
                self.parts[name] = False
                self.documents[name] += 1
        for name, parts in arrays.items():
            if parts:
                self.writers[name].write(np.concatenate(parts))

    # -- pre-tokenized
    def _tokens(self, inp: Input) -> None:
        ids = open_tokens(inp, self.o.token_dtype).ids
        cut = len(ids) - round(len(ids) * self.o.val_fraction)
        eot = self.tok.eot_id
        while self.position < len(ids):
            end = min(self.position + TOKEN_BLOCK, len(ids))
            if self.position < cut:
                end = min(end, cut)
            block = np.asarray(ids[self.position : end]).astype(np.int64)
            if block.size and (block.min() < 0 or block.max() >= self.tok.vocab_size):
                bad = int(block.max()) if block.max() >= self.tok.vocab_size else int(block.min())
                raise WorkbenchError(
                    f"{inp.path}: token id {bad} is outside the vocabulary of {self.tok.describe()}",
                    "Give the tokenizer the ids were made with (--tokenizer FILE, or ids --vocab-size V).",
                )
            name = "train" if self.position < cut else "val"
            self.writers[name].write(block)
            if eot is not None:
                self.documents[name] += int(np.count_nonzero(block == eot))
            self.position = end
            self._checkpoint(force=False)

    def _manifest(self) -> dict:
        shards = {split: w.close() for split, w in self.writers.items()}
        tokens = {split: sum(s["tokens"] for s in shards[split]) for split in shards}
        if not tokens["train"]:
            raise WorkbenchError("the inputs hold no text for the train split", "Point at files with text.")
        tokenizer = tokenizer_record(self.tok, self.work)
        data_sha256 = _digest(
            {"tokenizer": tokenizer["sha256"], "shards": {k: [s["sha256"] for s in v] for k, v in shards.items()}}
        )
        (self.work / "bpe.json").unlink(missing_ok=True)
        return {
            "tokenizer": tokenizer,
            "dtype": self.dtype.name,
            "tokens": tokens,
            "documents": self.documents,
            "shards": shards,
            "data_sha256": data_sha256,
        }


def _read_journal(path: Path, tokenizer_sha256: str) -> dict:
    if not path.is_file():
        return {}
    try:
        journal = json.loads(path.read_text())
    except (ValueError, RecursionError):
        return {}
    return journal if isinstance(journal, dict) and journal.get("tokenizer_sha256") == tokenizer_sha256 else {}


def _read_ahead(stream: Iterator[Piece]) -> Iterator[list[Piece]]:
    """Batches of about BATCH_CHARS characters, read by a thread ahead of the consumer (errors re-raised)."""
    batches: queue.Queue = queue.Queue(maxsize=_QUEUE_BATCHES)
    stop = threading.Event()
    batch_chars = env_number("WORKBENCH_PREPARE_BATCH_CHARS", BATCH_CHARS, 0, 1 << 30, integer=True)

    def produce() -> None:
        try:
            batch, chars = [], 0
            for piece in stream:
                batch.append(piece)
                chars += len(piece.text) + 64
                if chars >= batch_chars:
                    _put(batches, batch, stop)
                    batch, chars = [], 0
            if batch:
                _put(batches, batch, stop)
            _put(batches, None, stop)
        except BaseException as err:  # handed to the consumer, which raises it
            _put(batches, err, stop)

    thread = threading.Thread(target=produce, daemon=True, name="prepare-reader")
    thread.start()
    try:
        while True:
            item = batches.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def _put(batches: queue.Queue, item, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            batches.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


@contextlib.contextmanager
def _progress_bar(enabled: bool, total_bytes: int) -> Iterator[Callable[[int], None]]:
    if not enabled:
        yield lambda n: None
        return

    columns = (TextColumn("tokenizing"), BarColumn(), DownloadColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task("tokenizing", total=total_bytes)
        yield lambda n: bar.advance(task, n)
