"""Expansion of a sweep spec into runs: grid points, the auto rules, cosine runs and WSD trunks/branches.

Pure: no torch, no submitit. The rules are documented in workbench.sweep.spec.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from pydantic import ValidationError

from workbench.core.configfile import Where, describe
from workbench.core.errors import WorkbenchError
from workbench.core.units import human
from workbench.model import flops
from workbench.model.shapes import ModelShape, ladder, shape_for_params, shape_named
from workbench.sweep.spec import HASH_KEY, MAX_RUNS, Plan, PlannedRun, SweepSpec, load_spec, spec_hash
from workbench.train.config import TrainConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Point:
    """A grid point before schedules: budget (or None), size target, resolved shape, raw tokens."""

    budget_flops: float | None
    target_params: float
    shape: ModelShape
    tokens: float


def plan_file(path: str | Path, overrides: Sequence[str] = ()) -> Plan:
    """Load a sweep YAML (with `key.sub=value` overrides) and expand it into its runs."""
    spec, lines = load_spec(path, overrides)
    return expand(spec, str(path), lines)


def expand(spec: SweepSpec, source: str = "sweep", lines: dict[tuple, int] | None = None) -> Plan:
    """All runs of a sweep, resolved (no `auto` left), in launch order (trunks before their branches); each
    run's meta records the hash of the spec (workbench.sweep.versions), which its run id does not cover."""
    digest = spec_hash(spec)
    runs = []
    for run in expand_runs(spec, source, lines or {}):
        config = run.config.model_copy(update={"meta": {**run.config.meta, HASH_KEY: digest}})
        runs.append(replace(run, config=config))
    return Plan(spec, source, tuple(runs))


def expand_runs(spec: SweepSpec, source: str, lines: dict[tuple, int]) -> list[PlannedRun]:
    """The runs of `spec`, trunks before their branches (see workbench.sweep.spec for the rules)."""
    where = Where(source, lines)
    points = _grid_points(spec, where)
    runs = []
    centers = _center_points(spec, points, where) if spec.train.center_seeds else []
    seeds = [(seed, points) for seed in spec.train.seeds or [spec.train.seed]]
    for seed, chosen in seeds + [(seed, centers) for seed in spec.train.center_seeds]:
        seeded = spec.model_copy(update={"train": spec.train.model_copy(update={"seed": seed})})
        if seeded.grid.schedule == "wsd":
            runs += _wsd_runs(seeded, chosen, where)
        else:
            runs += [_cosine_run(seeded, p, where) for p in chosen]
    seen: dict[str, PlannedRun] = {}
    for run in runs:
        if run.run_id in seen:
            raise WorkbenchError(
                f"two runs resolve to the same config ({run.run_id})",
                "Remove duplicate budgets, sizes or points (sizes closer than the size rule's 4% steps collide).",
                where=where(("grid",)),
            )
        seen[run.run_id] = run
    trains: dict[str, str] = {}  # what a run trains (its config without names and bookkeeping) -> its id
    for run in runs:
        key = json.dumps(run.config.model_dump(mode="json", exclude={"name", "run_dir", "meta", "logging"}))
        if key in trains:
            raise WorkbenchError(
                f"runs {trains[key]} and {run.run_id} train the same model on the same tokens: two sizes resolve "
                f"to one shape ({run.config.model.n_layers} layers, d_model {run.config.model.d_model})",
                "Space the sizes further apart (the size rule's shapes are about 4% apart) or drop one.",
                where=where(("grid",)),
            )
        trains[key] = run.run_id
    return runs


def _prior_optimum(spec: SweepSpec, budget: float) -> float:
    prior = spec.grid.prior
    return budget / (6 * prior.coefficient * budget**prior.exponent)


def _center_points(spec: SweepSpec, points: list[_Point], where: Where) -> list[_Point]:
    """Per budget, the point whose size is nearest the prior optimum in log (train.center_seeds train it)."""
    if spec.grid.kind != "isoflop":
        raise WorkbenchError(
            "train.center_seeds needs an isoflop grid (a centre size per budget)",
            "Use train.seeds with a grid of points.",
            where=where(("train", "center_seeds")),
        )
    centers = []
    for budget in spec.grid.budgets_flops:
        n_star = _prior_optimum(spec, budget)
        at = [p for p in points if p.budget_flops == budget]
        centers.append(min(at, key=lambda p: abs(math.log(p.target_params / n_star))))
    return centers


def _shape(target: float | str, spec: SweepSpec, where: Where, key: tuple) -> ModelShape:
    try:
        if isinstance(target, str):  # an explicit shape, L3-d20 (the spec checked its form)
            return shape_named(target, spec.model.vocab_size)
        return shape_for_params(target, spec.model.vocab_size)
    except WorkbenchError as err:
        raise err.at(where(key), ".".join(map(str, key))) from None


def _candidate_sizes(spec: SweepSpec, where: Where) -> list[tuple[float | str, tuple]]:
    grid = spec.grid
    if grid.sizes:
        return [(s, ("grid", "sizes", i)) for i, s in enumerate(grid.sizes)]
    counts, _ = ladder(spec.model.vocab_size)
    for key in ("min_params", "max_params"):  # fail on the key, before building a grid
        _shape(getattr(grid, key), spec, where, ("grid", key))
    n = int(math.floor(math.log10(grid.max_params / grid.min_params) * grid.sizes_per_decade + 1e-9)) + 1
    if n > MAX_RUNS:
        raise WorkbenchError(
            f"grid of {n} sizes", "Use fewer sizes per decade.", where=where(("grid", "sizes_per_decade"))
        )
    return [(grid.min_params * 10 ** (i / grid.sizes_per_decade), ("grid", "min_params")) for i in range(n)]


def _grid_points(spec: SweepSpec, where: Where) -> list[_Point]:
    grid, rule, seq = spec.grid, spec.model.flop_rule, spec.data.seq_len
    if grid.kind == "points":
        out = []
        for i, p in enumerate(grid.points):
            shape = _shape(p.params, spec, where, ("grid", "points", i, "params"))
            budget = flops.training_flops(shape, p.tokens, seq, rule)
            out.append(_Point(budget, p.params, shape, p.tokens))
        return out
    # (N, size, key): a named shape (L3-d20) stands at its own N
    candidates = [
        (_shape(s, spec, where, key).params if isinstance(s, str) else s, s, key)
        for s, key in _candidate_sizes(spec, where)
    ]
    out = []
    for b, budget in enumerate(grid.budgets_flops):
        n_star = _prior_optimum(spec, budget)
        low, high = (n_star / grid.spread, n_star * grid.spread) if grid.spread else (0, math.inf)
        chosen = [(n, size, key) for n, size, key in candidates if low <= n <= high]
        if len(chosen) < grid.min_sizes_per_budget:
            window = f" in [{human(low)}, {human(high)}]" if grid.spread else ", all of them (no grid.spread)"
            raise WorkbenchError(
                f"budget {budget:.3g} has {len(chosen)} sizes{window} (prior optimum {human(n_star)}), fewer than "
                f"min_sizes_per_budget {grid.min_sizes_per_budget}",
                "Widen grid.spread or min_params/max_params, or lower min_sizes_per_budget.",
                where=where(("grid", "budgets_flops", b)),
            )
        for n, size, key in chosen:
            shape = _shape(size, spec, where, key)
            out.append(_Point(budget, n, shape, budget / flops.flops_per_token(shape, seq, rule)))
        if len(out) > MAX_RUNS:
            raise WorkbenchError(f"more than {MAX_RUNS} runs", "Use fewer budgets or sizes.", where=where(("grid",)))
    return out


def lr_for(spec: SweepSpec, params: int) -> float:
    """The sweep's peak LR for a model of `params` parameters: its LR rule, or its fixed lr_peak."""
    if spec.train.lr_peak != "auto":
        return float(spec.train.lr_peak)
    r = spec.rules
    return min(r.lr_max, r.lr_ref * (params / r.lr_ref_params) ** -r.lr_exponent)


def init_std_for(spec: SweepSpec, shape: ModelShape) -> float:
    """The sweep's init std for `shape`: its number, or d_model ** -0.5 (`auto`, fan-in)."""
    if spec.model.init_std == "auto":
        return round(shape.d_model**-0.5, 6)
    return float(spec.model.init_std)


def _batch(spec: SweepSpec, budget_flops: float, tokens: float) -> int:
    """Global batch in tokens: the auto rule by budget (module docstring) or the spec's number."""
    seq = spec.data.seq_len
    if spec.train.batch_tokens != "auto":
        return int(spec.train.batch_tokens)
    r = spec.rules
    target = r.batch_ref_tokens * (budget_flops / r.batch_ref_flops) ** r.batch_exponent
    seqs = max(1.0, min(target, r.batch_max_tokens) / seq)
    seqs_pow2 = 2 ** round(math.log2(seqs))
    while seqs_pow2 > 1 and tokens / (seqs_pow2 * seq) < r.min_steps:
        seqs_pow2 //= 2
    return seqs_pow2 * seq


def _whole_steps(tokens: float, batch_tokens: int) -> int:
    return max(1, round(tokens / batch_tokens)) * batch_tokens


def run_id_of(prefix: str, config: dict) -> str:
    """PREFIX-HASH: the hash (8 hex digits of SHA-1) covers the resolved config (a JSON dict) but not its
    name or run_dir, which contain the id itself. Sweep runs and tune trials are named by it."""
    body = {k: v for k, v in config.items() if k not in ("name", "run_dir")}
    digest = hashlib.sha1(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{prefix}-{digest}"


def _budget_label(budget_flops: float) -> str:
    mantissa, exponent = f"{budget_flops:.2e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"


def _count_label(count: float) -> str:
    """63400 -> '63.4k', 1.27e8 -> '127m' (three significant digits, no exponent)."""
    for suffix, scale in (("t", 1e12), ("b", 1e9), ("m", 1e6), ("k", 1e3)):
        if count >= scale:
            return f"{count / scale:.3g}{suffix}".replace("e+", "e")
    return f"{count:.0f}"


def _prefix(point: _Point, spec: SweepSpec) -> str:
    size = _count_label(point.shape.params)
    seed = f"-s{spec.train.seed}" if len(spec.train.seeds) > 1 or spec.train.center_seeds else ""
    if spec.grid.kind == "points":
        return f"n{size}-d{_count_label(point.tokens)}{seed}"
    return f"c{_budget_label(point.budget_flops)}-n{size}{seed}"


_WARNED: set[tuple] = set()  # (source, micro_batch, sequences) already warned about


def _config(spec: SweepSpec, point: _Point, meta: dict, sched: dict, batch: int, tokens: int, ckpt: dict, where):
    """Build and validate one TrainConfig; returns (run_id, config)."""
    t = spec.train
    lr = lr_for(spec, point.shape.params)
    seqs = batch // spec.data.seq_len
    # a batch below one sequence has no divisor: TrainConfig then says it is not a multiple of seq_len
    micro = max((d for d in range(1, min(t.micro_batch, seqs) + 1) if seqs % d == 0), default=t.micro_batch)
    if micro != t.micro_batch and (where.source, t.micro_batch, seqs) not in _WARNED:
        _WARNED.add((where.source, t.micro_batch, seqs))
        log.warning(
            "%s: train.micro_batch %d does not divide the %d sequences of a %d-token batch; runs use %d",
            where(("train", "micro_batch")),
            t.micro_batch,
            seqs,
            batch,
            micro,
        )
    numerics = spec.model.model_dump(include={"rope_theta", "norm_eps"})
    numerics["init_std"] = init_std_for(spec, point.shape)
    body = {
        "seed": t.seed,
        "meta": {"sweep": spec.name, **meta},
        "model": {**{k: getattr(point.shape, k) for k in _SHAPE_KEYS}, **numerics},
        "data": spec.data.model_dump(),
        "optim": {"lr_peak": lr, **t.optim.model_dump()},
        "schedule": {"anneal_tokens": t.schedule.anneal_tokens, **sched},
        "batch": {"batch_tokens": batch, "micro_batch": micro},
        "stop": {"tokens": tokens, "flop_rule": spec.model.flop_rule},
        "eval": t.eval.model_dump(),
        "checkpoint": ckpt,
        "faults": t.faults.model_dump(),
        "runtime": t.runtime.model_dump(),
    }
    prefix = _prefix(point, spec)
    run_id = run_id_of(prefix, body)
    body = {"name": run_id, "run_dir": f"{spec.runs_root}/{spec.name}/{run_id}", **body}
    body["logging"] = t.logging.model_dump()  # after the run id: trackers do not change what a run is
    try:
        return run_id, TrainConfig.model_validate(body)
    except ValidationError as err:
        hint = "Fix the sweep's train or data settings."
        raise describe(err, TrainConfig, where, at=("train",), context=f"run {prefix}", hint=hint) from None


_SHAPE_KEYS = ("n_layers", "d_model", "n_heads", "n_kv_heads", "ffn_dim", "vocab_size")


def _check_budget(spec: SweepSpec, point: _Point, tokens: int, batch: int, where: Where) -> float:
    run_flops = flops.training_flops(point.shape, tokens, spec.data.seq_len, spec.model.flop_rule)
    if point.budget_flops and spec.grid.kind == "isoflop" and abs(run_flops / point.budget_flops - 1) > 0.01:
        raise WorkbenchError(
            f"run {_prefix(point, spec)} has {tokens // batch} steps of "
            f"{batch} tokens: whole steps miss its budget {point.budget_flops:.3g} by more than 1%",
            "Use a smaller batch_tokens (or `auto`) so every run takes at least ~50 steps.",
            where=where(("train", "batch_tokens")),
        )
    return run_flops


def _meta(point: _Point, kind: str, branch_of: str | None = None, group: str = "") -> dict:
    return {
        "budget_flops": point.budget_flops,
        "target_params": point.target_params,
        "group": group or _budget_label(point.budget_flops or 0),
        "branch_of": branch_of,
        "kind": kind,
    }


def _gpu_hours(spec: SweepSpec, cost_flops: float) -> float:
    return cost_flops / (spec.launch.mfu * spec.launch.gpu_peak_flops) / 3600


def _planned(spec, point, kind, run_id, config, run_flops, cost_flops, branch_of=None, start=0) -> PlannedRun:
    return PlannedRun(
        run_id=run_id,
        kind=kind,
        budget_flops=point.budget_flops,
        target_params=point.target_params,
        params=point.shape.params,
        params_total=point.shape.params_total,
        shape=point.shape.name,
        tokens=config.stop.tokens,
        steps=(config.stop.tokens - start) // config.batch.batch_tokens,
        batch_tokens=config.batch.batch_tokens,
        lr_peak=config.optim.lr_peak,
        flops=run_flops,
        cost_flops=cost_flops,
        gpu_hours=_gpu_hours(spec, cost_flops),
        branch_of=branch_of,
        start_tokens=start,
        config=config,
    )


def _warmup(spec: SweepSpec, batch: int, shortest_tokens: int) -> int:
    s = spec.train.schedule
    cap = int(s.warmup_max_fraction * shortest_tokens) // batch
    return min(s.warmup_steps, cap) * batch


def standalone_schedule(spec: SweepSpec, batch: int, tokens: int) -> dict:
    """The schedule of one run of `tokens` trained on its own as the sweep trains its runs: cosine, or wsd
    with the sweep's decay fraction (in whole steps) and floor; warmup by the sweep's rule."""
    s = spec.train.schedule
    if spec.grid.schedule == "cosine":
        return {"kind": "cosine", "warmup_tokens": _warmup(spec, batch, tokens), "floor": s.floor}
    start = _cooldown_start(spec, batch, tokens)
    warmup = _warmup(spec, batch, start)
    return {"kind": "wsd", "warmup_tokens": warmup, "floor": s.floor, "decay_fraction": (tokens - start) / tokens}


def _cooldown_start(spec: SweepSpec, batch: int, tokens: int) -> int:
    """Where a WSD run of `tokens` starts its cooldown (decay_fraction of it, at least one step, whole steps)."""
    return tokens - max(batch, _whole_steps(spec.train.schedule.decay_fraction * tokens, batch))


def _cosine_run(spec: SweepSpec, point: _Point, where: Where) -> PlannedRun:
    batch = _batch(spec, point.budget_flops, point.tokens)
    tokens = _whole_steps(point.tokens, batch)
    run_flops = _check_budget(spec, point, tokens, batch, where)
    sched = standalone_schedule(spec, batch, tokens)  # a cosine grid's runs are each trained alone
    ckpt = spec.train.checkpoint.model_dump()
    run_id, config = _config(spec, point, _meta(point, "run"), sched, batch, tokens, ckpt, where)
    return _planned(spec, point, "run", run_id, config, run_flops, run_flops)


def branch_init_from(trunk_run_dir: str, start_tokens: int) -> str:
    """The `checkpoint.init_from` of a WSD branch: the trunk's checkpoint at `start_tokens` tokens."""
    return f"{trunk_run_dir}@{start_tokens}"


def _wsd_runs(spec: SweepSpec, points: list[_Point], where: Where) -> list[PlannedRun]:
    by_shape: dict[ModelShape, list[_Point]] = {}
    for p in points:
        by_shape.setdefault(p.shape, []).append(p)
    s = spec.train.schedule
    runs: list[PlannedRun] = []
    for family in by_shape.values():
        family.sort(key=lambda p: p.tokens)
        longest, shorter = family[-1], family[:-1]
        # one batch per family: the rule at the shortest run, so even the shortest gets min_steps
        batch = _batch(spec, family[0].budget_flops, family[0].tokens)
        totals = [_whole_steps(p.tokens, batch) for p in family]
        # each run's cooldown in whole steps; a branch starts where its cooldown begins
        starts = [_cooldown_start(spec, batch, t) for t in totals]
        warmup = _warmup(spec, batch, min(starts))
        trunk_ckpt = {**spec.train.checkpoint.model_dump(), "save_at_tokens": starts[:-1]}
        trunk_sched = {"kind": "wsd", "warmup_tokens": warmup, "floor": s.floor}
        trunk_sched["decay_fraction"] = (totals[-1] - starts[-1]) / totals[-1]
        trunk_flops = _check_budget(spec, longest, totals[-1], batch, where)
        meta = _meta(longest, "trunk")
        trunk_id, trunk_cfg = _config(spec, longest, meta, trunk_sched, batch, totals[-1], trunk_ckpt, where)
        runs.append(_planned(spec, longest, "trunk", trunk_id, trunk_cfg, trunk_flops, trunk_flops))
        for point, total, start in zip(shorter, totals[:-1], starts[:-1], strict=True):
            if start >= total or start >= totals[-1] or start < warmup:
                raise WorkbenchError(
                    f"WSD branch {_prefix(point, spec)} cannot start at {start} of {total} tokens (warmup {warmup})",
                    "Use a larger budget gap between sizes, a smaller batch or a smaller decay_fraction.",
                    where=where(("train", "schedule", "decay_fraction")),
                )
            sched = {**trunk_sched, "decay_fraction": (total - start) / total}
            ckpt = {**spec.train.checkpoint.model_dump(), "init_from": branch_init_from(trunk_cfg.run_dir, start)}
            run_flops = _check_budget(spec, point, total, batch, where)
            cost = run_flops * (total - start) / total
            meta = _meta(point, "branch", trunk_id)
            run_id, config = _config(spec, point, meta, sched, batch, total, ckpt, where)
            runs.append(_planned(spec, point, "branch", run_id, config, run_flops, cost, trunk_id, start))
    return runs
