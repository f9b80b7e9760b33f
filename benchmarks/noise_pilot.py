"""Pilot: what drives the seed-to-seed scatter of the embedded default's final validation loss.

Trains one (size, budget) point of a sweep spec with several seeds under variants of its settings (LR,
batch, schedule floor, cooldown, warmup) and prints, per variant, the mean final validation loss, its
standard deviation over the seeds (as a fraction of the mean) and the run length in steps. Every run is
a real `workbench` run launched through the sweep machinery on this machine's CPUs; finished runs are
reused on a rerun (the run directories under --out are the cache).

Run: .venv/bin/python benchmarks/noise_pilot.py [--spec sweeps/cpu.yaml] [--size 23K|L3-d20] [--budget 2e11]
     [--seeds 4] [--variants base,lr_half,...]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _set(spec: dict, dotted: str, value) -> None:
    node = spec
    *parents, last = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value


# name -> overrides of the spec (dotted keys); multiplicative LR/batch changes scale the rule constants
VARIANTS: dict[str, dict] = {
    "base": {},
    "lr_half": {"rules.lr_ref": "x0.5", "rules.lr_max": "x0.5"},
    "batch_x4": {"rules.batch_ref_tokens": "x4", "rules.batch_max_tokens": "x4"},
    "floor0": {"train.schedule.floor": 0.0},
    "wsd": {"grid.schedule": "wsd", "train.schedule.floor": 0.0, "train.schedule.decay_fraction": 0.3},
    "lr_half_floor0": {"rules.lr_ref": "x0.5", "rules.lr_max": "x0.5", "train.schedule.floor": 0.0},
    "batch_x2_floor0": {"rules.batch_ref_tokens": "x2", "rules.batch_max_tokens": "x2", "train.schedule.floor": 0.0},
    "batch_x4_floor0": {"rules.batch_ref_tokens": "x4", "rules.batch_max_tokens": "x4", "train.schedule.floor": 0.0},
    "lr_x2": {"rules.lr_ref": "x2", "rules.lr_max": "x2"},
    "decay50": {"train.schedule.decay_fraction": 0.5},
    "cosine0": {"grid.schedule": "cosine", "train.schedule.floor": 0.0},
    "seq128": {"data.seq_len": 128},
    "init02": {"model.init_std": 0.02},
    "batch_half": {"train.batch_tokens": "x0.5"},
    "batch_x2": {"train.batch_tokens": "x2"},
    "warmup_x4": {"train.schedule.warmup_steps": "x4", "train.schedule.warmup_max_fraction": "x4"},
}


def variant_spec(base: dict, name: str, overrides: dict, size: float | str, budget: float, seeds: int) -> dict:
    spec = copy.deepcopy(base)
    spec["name"] = f"pilot-{name}"
    spec["grid"].update(budgets_flops=[budget], sizes=[size], spread=None, min_sizes_per_budget=1)
    spec["train"]["seeds"] = list(range(seeds))
    spec["train"].pop("center_seeds", None)
    for key, value in overrides.items():
        if isinstance(value, str) and value.startswith("x"):
            node = spec
            *parents, last = key.split(".")
            for part in parents:
                node = node[part]
            value = float(node[last]) * float(value[1:])
        _set(spec, key, value)
    return spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(ROOT / "sweeps" / "cpu.yaml"))
    parser.add_argument("--size", default="23K")
    parser.add_argument("--budget", type=float, default=2e11)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--set", action="append", default=[], help="extra override KEY=VALUE for every variant")
    parser.add_argument("--out", default="pilot")
    args = parser.parse_args()

    from workbench.core.logs import setup
    from workbench.core.units import parse_number
    from workbench.model.shapes import SHAPE_NAME
    from workbench.sweep.grid import expand
    from workbench.sweep.launch import launch
    from workbench.sweep.spec import load_spec

    setup()
    base = yaml.safe_load(Path(args.spec).read_text())
    for item in args.set:
        key, value = item.split("=", 1)
        _set(base, key, yaml.safe_load(value))
    size = args.size if SHAPE_NAME.fullmatch(args.size) else parse_number(args.size)  # L3-d20 or 23K
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.variants.split(","):
        spec = variant_spec(base, name, VARIANTS[name], size, args.budget, args.seeds)
        path = out / f"{spec['name']}.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        loaded, lines = load_spec(path)
        plan = expand(loaded, str(path), lines)
        report = launch(plan, base=out, executor="local")
        finals = [json.loads((report.sweep_dir / r.run_id / "final.json").read_text()) for r in plan.runs]
        finals = [f for f in finals if f.get("branch_of") is None]
        losses = [f["val_loss"] for f in finals if f.get("val_loss") is not None]
        cfg = plan.runs[-1].config
        mean = statistics.fmean(losses)
        sd = statistics.stdev(losses) if len(losses) > 1 else float("nan")
        rows.append((name, len(losses), mean, sd / mean, cfg.optim.lr_peak, cfg.batch.batch_tokens, finals[0]["steps"]))
        print(f"{name:>18}  seeds {len(losses)}  loss {mean:.4f}  sd {sd / mean:.2%}", flush=True)
    print(f"\npoint: {args.size} parameters at {args.budget:.3g} FLOPs ({args.spec})")
    print("| variant | seeds | mean val loss | sd / mean | lr_peak | batch tokens | steps |")
    print("|---|---|---|---|---|---|---|")
    for name, n, mean, rel, lr, batch, steps in rows:
        print(f"| {name} | {n} | {mean:.4f} | {rel:.2%} | {lr:.3g} | {batch} | {steps} |")


if __name__ == "__main__":
    main()
