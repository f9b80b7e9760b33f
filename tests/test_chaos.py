"""Chaos: a tiny sweep is launched again and again while a background loop kills random
training processes (SIGKILL or SIGTERM, at random moments) and, between launches, damages the newest
checkpoint of a random run (truncated, emptied or one byte changed). When every run has finished, each
final.json equals that of an undisturbed sweep bit for bit (timing aside) and the database holds exactly
one row per run and per step.
"""

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "workbench.cli"]
MAX_KILLS = 8
MAX_LAUNCHES = 30


def sweep_spec(folder: Path) -> Path:
    spec = yaml.safe_load((ROOT / "tests" / "data" / "tiny.yaml").read_text())
    spec["train"]["checkpoint"] = {"every_tokens": 2560, "keep": 2}  # every 10 steps
    spec["name"] = "chaos"
    spec["launch"]["local_workers"] = 2
    path = folder / "chaos.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def launch(folder: Path, spec: Path, env: dict) -> subprocess.Popen:
    command = [*CLI, "sweep", "launch", str(spec), "--executor", "local", "--db", str(folder / "wb.duckdb")]
    return subprocess.Popen(
        command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def trainers(parent: int) -> list[int]:
    """The pool workers (the training processes) of launcher `parent`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[-1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == parent and b"spawn_main" in cmdline:
            found.append(int(stat.parent.name))
    return found


def finals(runs: Path) -> dict[str, dict]:
    out = {}
    for path in sorted(runs.glob("*/final.json")):
        record = json.loads(path.read_text())
        record.pop("wall_s")
        out[path.parent.name] = record
    return out


def damage_newest(runs: Path, rng: random.Random) -> str | None:
    candidates = [d for d in runs.iterdir() if d.is_dir() and list((d / "ckpt").glob("step_*"))]
    candidates = [d for d in candidates if not (d / "final.json").exists()]
    if not candidates:
        return None
    newest = sorted((rng.choice(sorted(candidates)) / "ckpt").glob("step_*"))[-1]
    target = newest / rng.choice(["state.pt", "trainer.json", "meta.json", "manifest.json"])
    data = target.read_bytes()
    how = rng.choice(["truncate", "empty", "flip"])
    if how == "truncate":
        data = data[: len(data) // 2]
    elif how == "empty":
        data = b""
    elif data:
        i = rng.randrange(len(data))
        data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]
    else:  # emptied by an earlier round and not yet healed: garbage instead of a flipped byte
        data = b"\xff"
    target.write_bytes(data)
    return f"{how} {target.relative_to(runs)}"


@pytest.mark.slow
def test_sweep_survives_kills_and_damaged_checkpoints(tmp_path, corpus_home):
    env = {**os.environ, "WORKBENCH_DATA": str(corpus_home), "OMP_NUM_THREADS": "1"}
    clean, chaos = tmp_path / "clean", tmp_path / "chaos"
    clean.mkdir()
    chaos.mkdir()
    reference = launch(clean, sweep_spec(clean), env)
    _, err = reference.communicate(timeout=600)
    assert reference.returncode == 0, err[-3000:]
    expected = finals(clean / "runs" / "chaos")
    assert len(expected) == 4 and all(r["status"] == "completed" for r in expected.values())

    rng = random.Random(17)
    spec, runs = sweep_spec(chaos), chaos / "runs" / "chaos"
    log: list[str] = []
    kills = 0
    deadline = time.time() + 900
    for _ in range(MAX_LAUNCHES):
        proc = launch(chaos, spec, env)
        stop = threading.Event()

        def killer(proc=proc, stop=stop):
            nonlocal kills
            while not stop.wait(rng.uniform(1.0, 4.0)) and kills < MAX_KILLS:
                workers = trainers(proc.pid)
                if workers:
                    victim, sig = rng.choice(workers), rng.choice([signal.SIGKILL, signal.SIGTERM])
                    try:
                        os.kill(victim, sig)
                    except ProcessLookupError:
                        continue
                    kills += 1
                    log.append(f"{sig.name} pid {victim}")

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        out, err = proc.communicate(timeout=max(deadline - time.time(), 1))
        stop.set()
        thread.join()
        assert "Traceback" not in err, err[-3000:]
        assert proc.returncode in (0, 1, 4), err[-3000:]
        log.append(f"launch exit {proc.returncode}")
        if proc.returncode == 0 and len(finals(runs)) == 4:
            break
        if kills < MAX_KILLS and (damaged := damage_newest(runs, rng)):
            log.append(f"damaged {damaged}")
    else:
        pytest.fail(f"the sweep did not finish: {log}")
    assert kills >= 3, log  # the test did disturb the sweep

    assert finals(runs) == expected, log  # bit for bit, timing aside
    import duckdb

    con = duckdb.connect(str(chaos / "wb.duckdb"), read_only=True)
    per_run = con.execute(
        "SELECT run_id, count(*), count(DISTINCT step), max(step) FROM metrics GROUP BY run_id ORDER BY run_id"
    ).fetchall()
    assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 4
    con.close()
    for run_id, rows, steps, last in per_run:
        assert rows == steps == last == expected[run_id]["steps"], (run_id, rows, steps, last)
