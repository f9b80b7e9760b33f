"""Benchmark: `workbench --help` of this checkout against another installation, alternating, in one run.

`workbench --help` is the first thing a newcomer runs and the floor of every command's start-up. The two
executables are run in turn (ABAB...), so that a busy machine slows both alike, each from an empty folder;
the medians and their ratio are printed (below 1: this checkout is faster).

Run: .venv/bin/python benchmarks/help.py --baseline /path/to/other/.venv/bin/workbench [--runs 100]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(sys.executable).with_name("workbench")


def time_help(executable: Path, folder: str) -> float:
    start = time.perf_counter()
    subprocess.run([str(executable), "--help"], cwd=folder, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="the other `workbench` executable")
    parser.add_argument("--runs", type=int, default=100, help="runs of each (alternating)")
    args = parser.parse_args()
    if not args.baseline.exists():
        sys.exit(f"Error: --baseline {args.baseline} does not exist. Give the path of another `workbench`.")
    times: dict[str, list[float]] = {"baseline": [], "this": []}
    with tempfile.TemporaryDirectory() as folder:
        for exe in (args.baseline, HERE):  # one warm-up each: the first run reads the files from disk
            time_help(exe, folder)
        for _ in range(args.runs):
            times["baseline"].append(time_help(args.baseline, folder))
            times["this"].append(time_help(HERE, folder))
    base, this = (statistics.median(times[k]) for k in ("baseline", "this"))
    print(f"workbench --help, median of {args.runs} alternating runs")
    print(f"  baseline {args.baseline}: {base * 1e3:.1f} ms (min {min(times['baseline']) * 1e3:.1f})")
    print(f"  this     {HERE}: {this * 1e3:.1f} ms (min {min(times['this']) * 1e3:.1f})")
    print(f"  ratio this / baseline: {this / base:.3f}")


if __name__ == "__main__":
    main()
