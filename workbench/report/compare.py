"""Compare the scaling laws of several sweeps: `workbench report A B [--at C]`.

Each sweep is fitted by the fit pipeline (isoFLOP power laws N* = G C^a, D* = H C^b, and the compute-optimal
loss L*(C) = K C^-gamma on the parabolas' minima), with bootstrap draws. For each pair of sweeps the page
reports the loss gap L_A - L_B at the target budget and the compute where one law's L*(C) overtakes the
other's, both with 5-95% intervals over paired bootstrap draws (the sweeps are independent, so draw i of A
is paired with draw i of B), and says how often the resamples agree with the estimate.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.core.errors import WorkbenchError
from workbench.core.units import human
from workbench.fit.frontier import optimal_loss_law
from workbench.fit.laws import isoflop_allocation
from workbench.fit.pipeline import FitOptions, fit_all
from workbench.fit.points import validate_points

LO_Q, HI_Q = 5.0, 95.0
RANGE_FACTOR = 100.0  # overtaking is looked for from the smallest swept budget to 100x the target budget


@dataclass(frozen=True)
class SweepLaw:
    """One sweep's fitted laws and bootstrap draws."""

    name: str
    points: pd.DataFrame  # validated points (with run_id)
    iso: dict  # IsoflopFit.as_dict(): minima, G, a, H, b
    iso_draws: dict  # G, a, H, b arrays
    loss: dict  # optimal_loss_law(): K, gamma, draws {K, gamma}
    data: dict  # {"tokenizer": ..., "validation": ...} as the run configs record them


def fit_sweep_law(store, name: str, bootstrap: int = 200, seed: int = 0) -> SweepLaw:
    """Fit one sweep of the store with the fit pipeline's public functions."""

    points = validate_points(store.points(name), f"sweep '{name}'")
    results = fit_all(points, FitOptions(method="isoflop", bootstrap=bootstrap, seed=seed))
    loss = optimal_loss_law(points, bootstrap, seed)
    draws = {k: np.asarray(v, float) for k, v in (results.isoflop_draws or {}).items()}
    return SweepLaw(name, points, results.isoflop.as_dict(), draws, loss, data_identity(store.runs(name)))


def data_identity(runs: pd.DataFrame) -> dict:
    """What the runs' configs say about tokenizer and validation data (the prepared sets' manifests if present)."""
    tokenizers, validations = set(), set()
    for text in runs.get("config", pd.Series(dtype=object)).dropna():
        config = json.loads(text) if isinstance(text, str) else text
        data, model = config.get("data") or {}, config.get("model") or {}
        sources = sorted(str(s.get("path")) for s in data.get("sources") or [] if isinstance(s, dict))
        tok = [manifest_tokenizer(Path(p)) for p in sources]
        tokenizers.add(json.dumps({"vocab_size": model.get("vocab_size"), "tokenizer": sorted(set(tok) - {""})}))
        validations.add(json.dumps({"sources": sources, "eval": config.get("eval") or {}}, sort_keys=True))
    return {"tokenizer": sorted(tokenizers), "validation": sorted(validations)}


def manifest_tokenizer(path: Path) -> str:
    """The tokenizer a prepared data set's manifest.json records ('' when there is no readable manifest)."""
    try:
        record = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        return ""
    return json.dumps(record.get("tokenizer"), sort_keys=True)


def flags(laws: list[SweepLaw]) -> list[str]:
    """Warnings for sweeps whose losses are not comparable (tokenizer or validation set differ)."""
    out = []
    for key, what in (("tokenizer", "tokenizer (vocabulary)"), ("validation", "validation set")):
        seen = {law.name: law.data[key] for law in laws}
        if len({json.dumps(v) for v in seen.values()}) > 1:
            detail = "; ".join(
                f"{name}: {', '.join(short(v) for v in values) or 'not recorded'}" for name, values in seen.items()
            )
            out.append(f"The sweeps differ in {what}, so their losses are not directly comparable ({detail}).")
    return out


def short(text: str, limit: int = 90) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def interval(values: np.ndarray) -> dict:
    finite = np.asarray(values, float)
    finite = finite[np.isfinite(finite)]
    if not finite.size:
        return {"lo": math.nan, "hi": math.nan, "n": 0}
    lo, hi = np.percentile(finite, [LO_Q, HI_Q])
    return {"lo": float(lo), "hi": float(hi), "n": int(finite.size)}


def loss_at(law: SweepLaw, c: float) -> tuple[float, np.ndarray]:
    """L*(c) of the fit and of every bootstrap draw."""
    k, g = np.asarray(law.loss["draws"]["K"]), np.asarray(law.loss["draws"]["gamma"])
    return law.loss["K"] * c ** -law.loss["gamma"], k * c**-g


def at_budget(law: SweepLaw, c: float) -> dict:
    """N*, D*, L* at compute c with 5-95% intervals."""

    n, d = isoflop_allocation(law.iso, c)
    n_draws, d_draws = isoflop_allocation(law.iso_draws, c) if law.iso_draws else (np.array([]), np.array([]))
    loss, loss_draws = loss_at(law, c)
    return {
        "budget_flops": c,
        "N": float(n),
        "N_ci": interval(n_draws),
        "D": float(d),
        "D_ci": interval(d_draws),
        "L": float(loss),
        "L_ci": interval(loss_draws),
    }


def crossing(k_a, g_a, k_b, g_b) -> np.ndarray:
    """log C where K_a C^-g_a = K_b C^-g_b (NaN for parallel laws)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return (np.log(k_a) - np.log(k_b)) / (np.asarray(g_a) - np.asarray(g_b))


def pair(a: SweepLaw, b: SweepLaw, target: float) -> dict:
    """Gap L_a - L_b at the target and where one law overtakes the other, with intervals."""
    n = min(len(a.loss["draws"]["K"]), len(b.loss["draws"]["K"]))
    la, la_draws = loss_at(a, target)
    lb, lb_draws = loss_at(b, target)
    gap_draws = la_draws[:n] - lb_draws[:n]
    c_lo = min(float(a.points["budget_flops"].min()), float(b.points["budget_flops"].min()))
    c_hi = target * RANGE_FACTOR
    log_cross = float(crossing(a.loss["K"], a.loss["gamma"], b.loss["K"], b.loss["gamma"]))
    ka, ga = (np.asarray(a.loss["draws"][k])[:n] for k in ("K", "gamma"))
    kb, gb = (np.asarray(b.loss["draws"][k])[:n] for k in ("K", "gamma"))
    cross_draws = crossing(ka, ga, kb, gb)
    inside = np.isfinite(cross_draws) & (cross_draws >= math.log(c_lo)) & (cross_draws <= math.log(c_hi))
    steeper = a.name if a.loss["gamma"] > b.loss["gamma"] else b.name
    result = {
        "a": a.name,
        "b": b.name,
        "target": target,
        "gap": la - lb,
        "gap_ci": interval(gap_draws),
        "p_a_lower": float(np.mean(gap_draws < 0)) if n else math.nan,
        "range": (c_lo, c_hi),
        "cross": None,
        "cross_ci": None,
        "p_cross": float(inside.mean()) if n else math.nan,
        "overtaker": steeper,
    }
    if math.isfinite(log_cross) and math.log(c_lo) <= log_cross <= math.log(c_hi):
        ci = interval(cross_draws[inside])
        result["cross"] = math.exp(log_cross)
        result["cross_ci"] = {"lo": math.exp(ci["lo"]), "hi": math.exp(ci["hi"])} if ci["n"] else None
    return result


def verdict(p: dict) -> str:
    """The pair's outcome in plain words, with its uncertainty."""
    a, b, gap, ci = p["a"], p["b"], p["gap"], p["gap_ci"]
    better, worse = (a, b) if gap < 0 else (b, a)
    share = p["p_a_lower"] if gap < 0 else 1 - p["p_a_lower"]
    where = f"{p['target']:.3g} FLOPs"
    if ci["lo"] <= 0 <= ci["hi"]:
        text = (
            f"At {where} the laws of {a} and {b} cannot be told apart: the predicted gap {a} - {b} is "
            f"{gap:+.4f} nats/token, and its 5-95% interval [{ci['lo']:+.4f}, {ci['hi']:+.4f}] includes zero "
            f"({better} lower in {share:.0%} of bootstrap resamples)."
        )
    else:
        text = (
            f"At {where}, {better} is predicted to reach a lower loss than {worse} by {abs(gap):.4f} nats/token "
            f"(gap {a} - {b}: {gap:+.4f}, 5-95% [{ci['lo']:+.4f}, {ci['hi']:+.4f}]; {better} lower in "
            f"{share:.0%} of bootstrap resamples)."
        )
    return text + " " + overtake_text(p)


def overtake_text(p: dict) -> str:
    lo, hi = p["range"]
    span = f"between {lo:.3g} and {hi:.3g} FLOPs"
    if p["cross"] is None:
        return (
            f"Neither law overtakes the other {span} (never within the range; {p['p_cross']:.0%} of resamples "
            "cross there)."
        )
    ci = p["cross_ci"]
    band = f" (5-95%: {ci['lo']:.3g} to {ci['hi']:.3g})" if ci else ""
    return f"{p['overtaker']} overtakes at {p['cross']:.3g} FLOPs{band}; {p['p_cross']:.0%} of resamples cross {span}."


def compare(store, names: list[str], target: float | None, budgets: list[float], bootstrap: int = 200) -> dict:
    """Everything the comparison page shows."""
    if len(set(names)) < 2:
        raise WorkbenchError("a comparison needs 2 or more different sweeps", "Name them: `workbench report A B`.")
    laws = [fit_sweep_law(store, name, bootstrap) for name in names]
    largest = max(float(law.points["budget_flops"].max()) for law in laws)
    target = float(target) if target is not None else largest * 1000
    at = sorted({largest, target, *map(float, budgets)})
    return {
        "laws": laws,
        "target": target,
        "at": {law.name: [at_budget(law, c) for c in at] for law in laws},
        "pairs": [pair(a, b, target) for a, b in itertools.combinations(laws, 2)],
        "flags": flags(laws),
        "bootstrap": bootstrap,
    }


def fmt_ci(value: float, ci: dict, f=human) -> str:
    return f"{f(value)} [{f(ci['lo'])}, {f(ci['hi'])}]" if ci.get("n") else f(value)
