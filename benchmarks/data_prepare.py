"""Tokens per second and peak memory of `data prepare`, against the previous implementation in the same run.

Usage: .venv/bin/python benchmarks/data_prepare.py [--mb 100] [--formats jsonl,parquet,zst] [--baseline-ref REF]
       [--tokenizer bpe|bytes] [--work DIR] [--keep]

Generates a corpus of `mb` MB of text (documents of 0.5-8 KB cut from a pool of Zipf-distributed words)
as .jsonl, and the same documents as .parquet and .jsonl.zst; trains an 8192-entry BPE on a 1 MB sample
(tokenizer.json). Each prepare runs in its own process, so wall time and peak RSS (VmHWM) are its own.
The baseline is `workbench data prepare` at git REF (default: the commit before the streaming rewrite),
extracted with `git archive` and run on the .jsonl. Goals: no slower than the baseline on .jsonl;
parquet and zst at least as fast as .jsonl per byte of text; peak memory flat as the corpus grows (run
with --mb 100 and --mb 1000 --formats jsonl --baseline-ref none and compare). Everything generated is
deleted at the end unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BASELINE_REF = "ff7c32a"  # data prepare before streaming (whole files in memory, one pass, no resume)


def word_pool(rng: np.random.Generator, chars: int) -> str:
    syllables = ["ka", "to", "ri", "me", "sun", "el", "dra", "or", "vin", "qu", "as", "pe", "lo", "ny", "th"]
    words = ["".join(rng.choice(syllables, rng.integers(1, 4))) for _ in range(6000)]
    ranks = 1.0 / np.arange(1, len(words) + 1)
    picks = rng.choice(len(words), size=chars // 5, p=ranks / ranks.sum())
    text = " ".join(words[i] for i in picks)
    return "\n".join(text[i : i + 300] for i in range(0, len(text), 300))


def documents(mb: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    pool = word_pool(rng, 4 << 20)
    total, target = 0, int(mb * 1e6)
    while total < target:
        start, size = int(rng.integers(0, len(pool) - 9000)), int(rng.integers(500, 8000))
        doc = pool[start : start + size]
        total += len(doc)
        yield doc


def write_corpus(folder: Path, mb: float, formats: list[str]) -> dict[str, Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    paths = {"jsonl": folder / "corpus.jsonl", "parquet": folder / "corpus.parquet", "zst": folder / "corpus.jsonl.zst"}
    jsonl = paths["jsonl"].open("w")
    zst_raw = paths["zst"].open("wb") if "zst" in formats else None
    zst = zstandard.ZstdCompressor(level=3).stream_writer(zst_raw) if zst_raw else None
    writer = pq.ParquetWriter(paths["parquet"], pa.schema([("text", pa.string())])) if "parquet" in formats else None
    batch = []
    for doc in documents(mb):
        line = json.dumps({"text": doc}) + "\n"
        jsonl.write(line)
        if zst:
            zst.write(line.encode())
        batch.append(doc)
        if len(batch) == 4096:
            if writer:
                writer.write_table(pa.table({"text": batch}))
            batch = []
    if writer:
        if batch:
            writer.write_table(pa.table({"text": batch}))
        writer.close()
    jsonl.close()
    if zst:
        zst.close()
    return {f: paths[f] for f in formats}


def train_tokenizer(folder: Path, kind: str) -> str:
    if kind == "bytes":
        return "bytes"
    from workbench.data.tokenizer import train_bpe

    sample = list(documents(1, seed=1))
    path = folder / "tokenizer.json"
    path.write_text(train_bpe(sample, 8192).to_json())
    return str(path)


def extract_baseline(ref: str, folder: Path) -> Path | None:
    target = folder / "baseline"
    target.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "workbench"], capture_output=True)
    if archive.returncode:
        print(f"baseline {ref}: not available ({archive.stderr.decode().strip()}); skipped", file=sys.stderr)
        return None
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def timed_prepare(pythonpath: Path, source: Path, out: Path, tokenizer: str) -> dict:
    code = (  # VmHWM: this process's peak RSS (ru_maxrss of a forked child would count the parent's pages)
        "import sys, json, re; from workbench.data import prepare; "
        "m = prepare([sys.argv[1]], sys.argv[2], tokenizer=sys.argv[3]); "
        "hwm = int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)); "
        "print(json.dumps(m['tokens'] | {'hwm_kb': hwm}))"
    )
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    check = "import workbench, sys; print(workbench.__file__)"
    where = subprocess.run([sys.executable, "-c", check], env=env, cwd=out.parent, capture_output=True, text=True)
    assert where.stdout.startswith(str(pythonpath)), where.stdout  # the tree under test, not the cwd's
    started = time.perf_counter()
    # cwd: the corpus folder, so that `python -c` (sys.path[0] = cwd) imports workbench from PYTHONPATH only
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(source), str(out), tokenizer], env=env, stdout=subprocess.PIPE, cwd=out.parent
    )
    output = proc.stdout.read()
    proc.wait()
    wall_s = time.perf_counter() - started
    if proc.returncode:
        raise SystemExit(f"prepare of {source} failed (exit {proc.returncode})")
    tokens = json.loads(output.decode().strip().splitlines()[-1])
    shutil.rmtree(out)
    return {"tokens": tokens["train"] + tokens["val"], "wall_s": wall_s, "peak_rss_mb": tokens["hwm_kb"] / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=100)
    parser.add_argument("--formats", default="jsonl,parquet,zst")
    parser.add_argument("--baseline-ref", default=BASELINE_REF, help="git ref of the baseline, or none")
    parser.add_argument("--tokenizer", default="bpe", choices=("bpe", "bytes"))
    parser.add_argument("--work", type=Path, default=None, help="folder for the corpus (default: a temp folder)")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    formats = args.formats.split(",")
    work = Path(tempfile.mkdtemp(prefix="wb-prepare-bench-", dir=args.work))
    try:
        t0 = time.perf_counter()
        corpus = write_corpus(work, args.mb, sorted(set(formats) | {"jsonl"}))
        text_bytes = corpus["jsonl"].stat().st_size
        tokenizer = train_tokenizer(work, args.tokenizer)
        setup_s = time.perf_counter() - t0
        print(f"corpus {text_bytes / 1e6:.0f} MB of jsonl, written in {setup_s:.0f} s; {os.cpu_count()} cores")
        results = {}
        baseline = None if args.baseline_ref == "none" else extract_baseline(args.baseline_ref, work)
        if baseline is not None:
            results[f"baseline ({args.baseline_ref}) jsonl"] = timed_prepare(
                baseline, corpus["jsonl"], work / "o", tokenizer
            )
        for fmt in formats:
            results[f"streaming {fmt}"] = timed_prepare(ROOT, corpus[fmt], work / "o", tokenizer)
        print(f"{'run':<28} {'tokens':>12} {'wall s':>8} {'tokens/s':>12} {'MB text/s':>10} {'peak RSS MB':>12}")
        for name, r in results.items():
            rate = r["tokens"] / r["wall_s"]
            print(
                f"{name:<28} {r['tokens']:>12,} {r['wall_s']:>8.1f} {rate:>12,.0f} "
                f"{text_bytes / 1e6 / r['wall_s']:>10.2f} {r['peak_rss_mb']:>12,.0f}"
            )
        print(json.dumps({"mb": args.mb, "tokenizer": args.tokenizer, "results": results}))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
