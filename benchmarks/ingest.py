"""Metric rows per second into DuckDB: Store.ingest against a naive row-by-row INSERT, same run, same data.

Usage: .venv/bin/python benchmarks/ingest.py [--rows 100000] [--runs 20] [--naive-rows 5000]

Writes `runs` run directories holding `rows` metric rows in all (DESIGN.md's run-directory contract) to a
temporary folder. Store.ingest is timed on the whole set into a fresh database (best of 3). The naive
baseline parses the same files line by line and inserts each row with its own INSERT statement (one
transaction, so it is not penalised by a commit per row), and also with executemany; it is timed on the
first `naive-rows` rows only and extrapolated linearly (its cost per row is flat). Goal: >= 100k rows/s.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

import yaml

from workbench.store.database import METRIC_COLUMNS, Store


def write_runs(root: Path, runs: int, rows: int) -> list[Path]:
    """`runs` completed run directories under root/bench/ with `rows` metric rows in all."""
    per_run = rows // runs
    dirs = []
    for index in range(runs):
        run_dir = root / "bench" / f"run{index:04d}"
        run_dir.mkdir(parents=True)
        config = {
            "name": run_dir.name,
            "meta": {"sweep": "bench", "budget_flops": 1e18},
            "model": {
                "n_layers": 4,
                "d_model": 256,
                "n_heads": 4,
                "n_kv_heads": 2,
                "ffn_dim": 896,
                "vocab_size": 32000,
            },
            "optim": {"lr_peak": 1e-3},
            "batch": {"batch_tokens": 65536},
            "data": {"seq_len": 512},
        }
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
        with open(run_dir / "metrics.jsonl", "w") as f:
            for step in range(per_run):
                tokens = step * 65536
                row = {
                    "step": step,
                    "tokens": tokens,
                    "flops": tokens * 6e7,
                    "loss": 10 / math.log(step + 3),
                    "lr": 1e-3,
                    "grad_norm": 0.4,
                    "batch_tokens": 65536,
                    "tokens_per_s": 123456.7,
                    "wall_s": 0.5 * step,
                }
                if step % 50 == 0:
                    row["val_loss"] = row["loss"] + 0.05
                f.write(json.dumps(row) + "\n")
        (run_dir / "final.json").write_text(json.dumps({"status": "completed", "val_loss": 3.0, "steps": per_run}))
        dirs.append(run_dir)
    return dirs


def time_store(root: Path, work: Path, repeats: int = 3) -> tuple[float, float, int]:
    """Best wall time and best CPU time (all threads) of Store.ingest into a fresh database, and its rows."""
    best_s, best_cpu_s, rows = math.inf, math.inf, 0
    for attempt in range(repeats):
        db = work / f"store{attempt}.duckdb"
        start, start_cpu = time.perf_counter(), time.process_time()
        stats = Store(db).ingest(root)
        best_s = min(best_s, time.perf_counter() - start)
        best_cpu_s = min(best_cpu_s, time.process_time() - start_cpu)
        rows = stats.metric_rows
    return best_s, best_cpu_s, rows


def time_naive(run_dirs: list[Path], work: Path, limit: int, many: bool) -> tuple[float, int]:
    """Wall time of a row-by-row ingest (execute per row, or executemany) of the first `limit` rows."""
    store = Store(work / ("naive_many.duckdb" if many else "naive.duckdb"))
    with store._writer():  # creates the schema; the timing below opens its own connection
        pass
    con = store._connect(read_only=False)
    sql = f"INSERT INTO metrics (run_id, {', '.join(METRIC_COLUMNS)}) VALUES ({', '.join('?' * 12)})"
    start = time.perf_counter()
    con.execute("BEGIN TRANSACTION")
    done, batch = 0, []
    for run_dir in run_dirs:
        for line in (run_dir / "metrics.jsonl").read_text().splitlines():
            row = json.loads(line)
            values = [run_dir.name, *(row.get(key) for key in METRIC_COLUMNS)]
            if many:
                batch.append(values)
            else:
                con.execute(sql, values)
            done += 1
            if done >= limit:
                break
        if done >= limit:
            break
    if batch:
        con.executemany(sql, batch)
    con.execute("COMMIT")
    elapsed_s = time.perf_counter() - start
    con.close()
    return elapsed_s, done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--naive-rows", type=int, default=5_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root, work = Path(tmp) / "runs", Path(tmp)
        run_dirs = write_runs(root, args.runs, args.rows)
        store_s, store_cpu_s, rows = time_store(root, work)
        store_rate = rows / store_s
        print(
            f"Store.ingest: {rows:,} rows in {args.runs} runs, {store_s:.3f} s wall (best of 3): "
            f"{store_rate:,.0f} rows/s; {store_cpu_s:.3f} CPU-s: {rows / store_cpu_s:,.0f} rows per CPU-second"
        )
        start = time.perf_counter()
        again = Store(work / "store0.duckdb").ingest(root)
        print(f"re-ingest of unchanged runs: {time.perf_counter() - start:.3f} s ({again.unchanged} runs unchanged)")
        for many, label in ((False, "execute per row"), (True, "executemany")):
            naive_s, naive_rows = time_naive(run_dirs, work, args.naive_rows, many)
            naive_rate = naive_rows / naive_s
            print(
                f"naive {label}: {naive_rows:,} rows in {naive_s:.3f} s: {naive_rate:,.0f} rows/s "
                f"(extrapolated to {rows:,} rows: {rows / naive_rate:.1f} s); Store.ingest is "
                f"{store_rate / naive_rate:,.0f}x faster"
            )
        print(f"goal >= 100,000 rows/s (wall): {'met' if store_rate >= 100_000 else 'NOT met'}")
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"load average while measuring: {load} (on {os.cpu_count()} CPUs shared with other work)")


if __name__ == "__main__":
    main()
