"""data prepare from every input kind: the same documents give the same token stream; pre-tokenized ids pass
through; tiktoken rank files; resume after a kill; bad inputs are one-line errors with nothing half-written."""

from __future__ import annotations

import base64
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from workbench.core.errors import WorkbenchError
from workbench.data.batches import Mixture, check_tokenizers
from workbench.data.prepare import prepare
from workbench.data.shards import read_manifest
from workbench.data.tokenfiles import write_llmc, write_megatron
from workbench.data.tokenizer import load_tokenizer, train_bpe

WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "was",
    "he",
    "for",
    "it",
    "with",
    "as",
    "his",
    "on",
    "be",
    "at",
    "by",
    "had",
    "are",
    "but",
    "from",
    "or",
    "have",
    "an",
    "they",
    "which",
]


def documents(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n):
        lines = [" ".join(rng.choice(WORDS, rng.integers(3, 14))) for _ in range(rng.integers(1, 5))]
        docs.append(f"Doc {i}: " + "\n".join(lines) + ("\n" if i % 3 else ""))
    return docs


def stream(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    manifest = read_manifest(folder)
    out = []
    for split in ("train", "val"):
        parts = [np.fromfile(folder / s["file"], dtype=manifest["dtype"]) for s in manifest["shards"][split]]
        out.append(np.concatenate(parts) if parts else np.zeros(0, dtype=manifest["dtype"]))
    return out[0], out[1]


@pytest.fixture(scope="module")
def tokenizer_json(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    path.write_text(train_bpe(documents(300, seed=1), 400).to_json())
    return path


def write_inputs(root: Path, docs: list[str]) -> dict[str, str]:
    """The same documents in every record format; returns kind -> input argument."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    root.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(docs)).encode()
    (root / "a.jsonl").write_bytes(lines)
    (root / "a.jsonl.gz").write_bytes(gzip.compress(lines))
    (root / "b.json.gz").write_bytes(gzip.compress(lines))
    (root / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines))
    pq.write_table(pa.table({"id": list(range(len(docs))), "text": docs}), root / "a.parquet")
    (root / "pq").mkdir()
    half = len(docs) // 2  # a folder of two parquet files, as FineWeb ships
    pq.write_table(pa.table({"id": list(range(half)), "text": docs[:half]}), root / "pq" / "000.parquet")
    pq.write_table(pa.table({"id": list(range(half, len(docs))), "text": docs[half:]}), root / "pq" / "001.parquet")
    os.environ["HF_DATASETS_CACHE"] = str(root / "hf-cache")
    import datasets

    datasets.Dataset.from_dict({"text": docs}).save_to_disk(str(root / "hf"))
    return {
        "jsonl": str(root / "a.jsonl"),
        "jsonl.gz": str(root / "a.jsonl.gz"),
        "json.gz": str(root / "b.json.gz"),
        "jsonl.zst": str(root / "a.jsonl.zst"),
        "parquet": str(root / "a.parquet"),
        "hf-disk": str(root / "hf"),
        "hf-load": f"hf:json:{root / 'a.jsonl.gz'}",
    }


def test_every_record_format_gives_the_same_tokens(tmp_path, tokenizer_json):
    docs = documents(60)
    inputs = write_inputs(tmp_path / "in", docs)
    streams = {}
    for kind, arg in inputs.items():
        out = tmp_path / f"out-{kind}"
        manifest = prepare([arg], out, tokenizer=str(tokenizer_json), val_fraction=0.2)
        assert manifest["documents"]["train"] + manifest["documents"]["val"] == len(docs), kind
        streams[kind] = stream(out)
    train, val = streams["jsonl"]
    assert len(train) > 500 and len(val) > 50
    for kind, (t, v) in streams.items():
        np.testing.assert_array_equal(t, train, err_msg=kind)
        np.testing.assert_array_equal(v, val, err_msg=kind)
    # a folder of parquet files reads them in order (each file keeps its own held-out tail)
    prepare([str(tmp_path / "in" / "pq")], tmp_path / "folder", tokenizer=str(tokenizer_json), val_fraction=0)
    prepare([inputs["jsonl.zst"]], tmp_path / "whole", tokenizer=str(tokenizer_json), val_fraction=0)
    np.testing.assert_array_equal(stream(tmp_path / "folder")[0], stream(tmp_path / "whole")[0])
    # the ids decode to the documents, each ended by <|endoftext|>
    tok = load_tokenizer(tmp_path / "out-parquet")
    assert tok.decode(np.concatenate([train, val])) == "".join(d + "<|endoftext|>" for d in docs)


def test_txt_equals_one_record_holding_its_text(tmp_path, tokenizer_json):
    text = "".join(documents(400))  # longer than one piece (64K characters): cut at line starts
    text = text * (1 + (1 << 17) // len(text))
    (tmp_path / "a.txt").write_text(text)
    (tmp_path / "a.jsonl.zst").write_bytes(__import__("zstandard").compress(json.dumps({"text": text}).encode()))
    a = prepare([str(tmp_path / "a.txt")], tmp_path / "txt", tokenizer=str(tokenizer_json), val_fraction=0.1)
    b = prepare([str(tmp_path / "a.jsonl.zst")], tmp_path / "zst", tokenizer=str(tokenizer_json), val_fraction=0.1)
    for x, y in zip(stream(tmp_path / "txt"), stream(tmp_path / "zst"), strict=True):
        np.testing.assert_array_equal(x, y)
    assert a["tokens"] == b["tokens"] and a["documents"] == b["documents"] == {"train": 1, "val": 1}
    val_text = load_tokenizer(tmp_path / "txt").decode(stream(tmp_path / "txt")[1])
    assert text.endswith(val_text.removesuffix("<|endoftext|>")) and text[-len(val_text) + 13 - 1] == "\n"


def test_pretokenized_ids_pass_through(tmp_path, tokenizer_json):
    docs = documents(80)
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    prepare([str(tmp_path / "a.jsonl")], tmp_path / "text", tokenizer=str(tokenizer_json), val_fraction=0)
    ids = stream(tmp_path / "text")[0].astype(np.int64)
    eot = load_tokenizer(tmp_path / "text").eot_id
    ids.astype(np.uint16).tofile(tmp_path / "nanogpt.bin")
    write_llmc(tmp_path / "llmc.bin", ids, version=2)  # uint32, read from the header
    cuts = np.flatnonzero(ids == eot) + 1
    write_megatron(tmp_path / "mega", np.split(ids, cuts[:-1]), dtype="int32")
    for name in ("nanogpt.bin", "llmc.bin", "mega.bin"):
        out = tmp_path / name.replace(".", "-")
        manifest = prepare([str(tmp_path / name)], out, tokenizer=str(tokenizer_json), val_fraction=0.1)
        train, val = stream(out)
        np.testing.assert_array_equal(np.concatenate([train, val]), ids, err_msg=name)
        assert len(val) == round(len(ids) * 0.1) and manifest["documents"]["train"] + manifest["documents"]["val"] == 80
        assert manifest["tokenizer"]["sha256"] == read_manifest(tmp_path / "text")["tokenizer"]["sha256"]
    # without a tokenizer: the vocabulary and the end-of-text id come from the user
    manifest = prepare(
        [str(tmp_path / "nanogpt.bin")], tmp_path / "ids", tokenizer="ids", vocab_size=400, eot_id=eot, val_fraction=0
    )
    assert manifest["tokenizer"]["kind"] == "ids" and manifest["tokenizer"]["eot_id"] == eot
    np.testing.assert_array_equal(stream(tmp_path / "ids")[0], ids)
    # pre-tokenized and text inputs mix in one prepare when they share the tokenizer
    both = prepare(
        [str(tmp_path / "a.jsonl"), str(tmp_path / "llmc.bin")],
        tmp_path / "both",
        tokenizer=str(tokenizer_json),
        val_fraction=0,
    )
    np.testing.assert_array_equal(stream(tmp_path / "both")[0], np.concatenate([ids, ids]))
    assert both["tokens"]["train"] == 2 * len(ids)


def test_tiktoken_rank_file(tmp_path):
    import tiktoken

    merges = [b"th", b"he", b"the", b" the", b"an", b"and", b" and", b"in", b"ing"]
    ranks = {bytes([i]): i for i in range(256)} | {m: 256 + i for i, m in enumerate(merges)}
    path = tmp_path / "tiny.tiktoken"
    path.write_text("".join(f"{base64.b64encode(t).decode()} {r}\n" for t, r in ranks.items()))
    pattern = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
    docs = ["the band and the singing\nthen", "another thing and the end\n"]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    with pytest.raises(WorkbenchError, match="needs its split pattern"):
        prepare([str(tmp_path / "a.jsonl")], tmp_path / "out", tokenizer=str(path))
    manifest = prepare(
        [str(tmp_path / "a.jsonl")],
        tmp_path / "out",
        tokenizer=str(path),
        val_fraction=0,
        split_pattern=pattern,
        special_tokens={"<|endoftext|>": 265},
    )
    assert manifest["tokenizer"]["kind"] == "tiktoken" and manifest["tokenizer"]["eot_id"] == 265
    assert manifest["tokenizer"]["vocab_size"] == 266
    enc = tiktoken.Encoding("tiny", pat_str=pattern, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": 265})
    expected = [i for d in docs for i in enc.encode_ordinary(d) + [265]]
    assert stream(tmp_path / "out")[0].tolist() == expected
    assert 258 in expected  # the merges are used
    assert load_tokenizer(tmp_path / "out").decode(expected) == "<|endoftext|>".join(docs) + "<|endoftext|>"


# ---------------------------------------------------------------- resume


def test_killed_prepare_resumes_to_the_same_shards(tmp_path, tokenizer_json):
    docs = documents(6000, seed=3)
    src = tmp_path / "a.jsonl"
    src.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    args = [str(src), "--tokenizer", str(tokenizer_json), "--shard-tokens", "4000", "--val-fraction", "0.05"]
    env = {**os.environ, "WORKBENCH_PREPARE_BATCH_CHARS": "8000", "PYTHONPATH": str(Path(__file__).parents[1])}
    command = [sys.executable, "-c", "from workbench.cli import main; main()", "data", "prepare", *args]
    proc = subprocess.Popen([*command, "--out", str(tmp_path / "out")], env=env, stderr=subprocess.PIPE)
    journal, kept = None, None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        found = list(tmp_path.glob(".out.partial-*/progress.json"))
        if found:
            try:
                state = json.loads(found[0].read_text())
            except ValueError:
                continue
            if len(state["writers"]["train"]["done"]) >= 3:
                proc.send_signal(signal.SIGKILL)
                journal = found[0]
                break
        time.sleep(0.002)
    proc.wait(timeout=30)
    assert journal is not None, "the prepare finished before it could be killed"
    assert not (tmp_path / "out").exists()
    first = journal.parent / "train_000.bin"
    kept = first.stat().st_ino, first.stat().st_mtime_ns
    done = subprocess.run([*command, "--out", str(tmp_path / "out")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    again = subprocess.run([*command, "--out", str(tmp_path / "whole")], env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    resumed, whole = read_manifest(tmp_path / "out"), read_manifest(tmp_path / "whole")
    assert resumed == whole
    for shard in resumed["shards"]["train"] + resumed["shards"]["val"]:
        assert (tmp_path / "out" / shard["file"]).read_bytes() == (tmp_path / "whole" / shard["file"]).read_bytes()
    info = (tmp_path / "out" / "train_000.bin").stat()
    assert (info.st_ino, info.st_mtime_ns) == kept  # a finished shard was not written again
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "out", "whole"]


# ---------------------------------------------------------------- bad inputs


def assert_nothing_written(tmp_path: Path) -> None:
    assert not (tmp_path / "out").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")]


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and "Traceback" not in text
    return text


def test_bad_inputs_are_one_line_errors(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": ["a", "b"]}), tmp_path / "nofield.parquet")
    with pytest.raises(WorkbenchError, match=r"nofield\.parquet: no text field 'text' \(found: body\)") as err:
        prepare([str(tmp_path / "nofield.parquet")], tmp_path / "out")
    assert "--text-field" in one_line(err)
    assert_nothing_written(tmp_path)

    good = pa.BufferOutputStream()
    pq.write_table(pa.table({"text": ["hello world"] * 100}), good)
    (tmp_path / "corrupt.parquet").write_bytes(good.getvalue().to_pybytes()[:-40])
    with pytest.raises(WorkbenchError, match=r"corrupt\.parquet: not a readable parquet file") as err:
        prepare([str(tmp_path / "corrupt.parquet")], tmp_path / "out")
    one_line(err)
    assert_nothing_written(tmp_path)

    (tmp_path / "odd.bin").write_bytes(b"\x01\x00\x02")
    with pytest.raises(WorkbenchError, match=r"odd\.bin: 3 bytes is not a multiple of uint16") as err:
        prepare([str(tmp_path / "odd.bin")], tmp_path / "out", tokenizer="ids", vocab_size=300)
    one_line(err)
    assert_nothing_written(tmp_path)

    (tmp_path / "big.bin").write_bytes(np.array([1, 2, 999], dtype=np.uint16).tobytes())
    with pytest.raises(WorkbenchError, match=r"big\.bin: token id 999 is outside the vocabulary") as err:
        prepare([str(tmp_path / "big.bin")], tmp_path / "out", tokenizer="ids", vocab_size=300)
    assert_nothing_written(tmp_path)

    (tmp_path / "cut.jsonl.gz").write_bytes(gzip.compress(b'{"text": "abc"}\n' * 1000)[:-30])
    with pytest.raises(WorkbenchError, match=r"cut\.jsonl\.gz: cannot decompress") as err:
        prepare([str(tmp_path / "cut.jsonl.gz")], tmp_path / "out")
    one_line(err)
    assert_nothing_written(tmp_path)

    with pytest.raises(WorkbenchError, match="no files match"):
        prepare(["hf:json:" + str(tmp_path / "none*.jsonl")], tmp_path / "out")


def test_tokenizer_mismatch_between_sources_names_both(tmp_path, tokenizer_json):
    (tmp_path / "a.txt").write_text("".join(documents(50)))
    prepare([str(tmp_path / "a.txt")], tmp_path / "bytes")
    prepare([str(tmp_path / "a.txt")], tmp_path / "bpe", tokenizer=str(tokenizer_json))
    with pytest.raises(WorkbenchError) as err:
        Mixture([(str(tmp_path / "bytes"), 1.0), (str(tmp_path / "bpe"), 1.0)], seq_len=8, seed=0)
    text = one_line(err)
    assert str(tmp_path / "bytes") in text and str(tmp_path / "bpe") in text
    assert "bytes (256)" in text and "tokenizer.json (vocab 400" in text
    from workbench.data.config import DataConfig

    both = DataConfig(sources=[{"path": str(tmp_path / "bpe")}], anneal_sources=[{"path": str(tmp_path / "bytes")}])
    with pytest.raises(WorkbenchError, match="use different tokenizers") as err:
        check_tokenizers(both)
    assert str(tmp_path / "bytes") in one_line(err)


def test_streaming_split_matches_the_whole_file_split(monkeypatch):
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from workbench.data.prepare import TailSplit
    from workbench.data.sources import Piece, line_chunks
    from workbench.data.tokenizer import split_documents

    monkeypatch.setattr("workbench.data.sources.CHUNK_CHARS", 5)  # documents of several pieces, as long .txt files
    text = st.text(alphabet="ab\n", min_size=0, max_size=60)

    @settings(max_examples=200, deadline=None)
    @given(st.lists(text, min_size=1, max_size=6), st.sampled_from([0.0, 0.1, 0.3, 0.5]))
    def check(docs, fraction):
        total = sum(map(len, docs))
        split = TailSplit(total, fraction)
        parts = {"train": [], "val": []}
        current = {"train": "", "val": ""}
        for doc in docs:
            chunks = list(line_chunks(doc)) or [""]
            for i, chunk in enumerate(chunks):
                for name, piece, ends in split.feed(Piece(chunk, i == 0, i == len(chunks) - 1, len(doc))):
                    current[name] += piece
                    if ends:
                        parts[name] += [current[name]] if current[name] else []
                        current[name] = ""
        train, val = split_documents(docs, fraction)
        assert (parts["train"], parts["val"]) == ([d for d in train if d], [d for d in val if d])

    check()
