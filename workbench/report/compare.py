"""Compare the scaling laws of several sweeps: `workbench report A B [--at C]`.

Each sweep's laws are read from its stored fit (`workbench fit NAME`: the isoFLOP power laws N* = G C^a and
the compute-optimal loss L*(C) = E + K C^-gamma on the parabolas' minima, with their bootstrap draws); a
report never refits. For each pair of sweeps the page reports the loss gap L_A - L_B at the target budget and
the compute where one law's L*(C) overtakes the other's (found on a log grid: laws with floors cross where no
closed form says), both with 5-95% intervals over paired bootstrap draws (the sweeps are independent, so
draw i of A is paired with draw i of B), and says how often the resamples agree with the estimate.
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
from workbench.fit.frontier import predict
from workbench.fit.laws import FlopsPerToken, isoflop_allocation
from workbench.fit.points import validate_points
from workbench.report.inputs import find_fit

LO_Q, HI_Q = 5.0, 95.0
RANGE_FACTOR = 100.0  # overtaking is looked for from the smallest swept budget to 100x the target budget


@dataclass(frozen=True)
class SweepLaw:
    """One sweep's fitted laws and bootstrap draws."""

    name: str
    points: pd.DataFrame  # validated points (with run_id)
    iso: dict  # IsoflopFit.as_dict(): minima, G, a, H, b
    iso_draws: dict  # G, a, H, b arrays
    loss: dict  # the stored L*(C) law: E, K, gamma, draws {E, K, gamma}
    data: dict  # {"tokenizer": ..., "validation": ...} as the run configs record them
    flops: FlopsPerToken = FlopsPerToken()  # how the sweep's budgets were counted (D* = C / flops(N*))
    bootstrap: int = 0  # resamples behind the stored draws


def fit_sweep_law(store, name: str) -> SweepLaw:
    """One sweep's laws as its stored fit holds them (the fits table, else fits/NAME.json): never a refit."""
    fit, _ = find_fit(store, name, None)
    iso = (fit or {}).get("isoflop") or {}
    if not iso.get("loss_law") or iso.get("G") is None:
        what = "no fit" if fit is None else "a fit without isoFLOP laws"
        raise WorkbenchError(
            f"sweep '{name}' has {what} to compare", f"Run `workbench fit {name}` first (a report never refits)."
        )
    points = validate_points(store.points(name), f"sweep '{name}'")
    draws = {
        k: np.asarray([np.nan if v is None else v for v in vals], float) for k, vals in (iso.get("draws") or {}).items()
    }
    flops = FlopsPerToken.of(fit.get("flops_per_token"))
    boot = int((fit.get("settings") or {}).get("bootstrap") or 0)
    return SweepLaw(name, points, iso, draws, iso["loss_law"], data_identity(store.runs(name)), flops, boot)


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


def _tokenizer_words(text: str) -> str:
    """A recorded tokenizer identity ({"vocab_size": .., "tokenizer": [..]}) in words."""
    record = json.loads(text)
    vocab = record.get("vocab_size")
    words = f"vocabulary {vocab:,}" if isinstance(vocab, int) else "vocabulary not recorded"
    names = [short(t, 60) for t in record.get("tokenizer") or []]
    return words + (f", tokenizer {' / '.join(names)}" if names else ", tokenizer file not recorded")


def _validation_words(text: str) -> str:
    """A recorded validation identity ({"sources": [..], "eval": {..}}) in words."""
    record = json.loads(text)
    sources = ", ".join(short(s, 50) for s in record.get("sources") or []) or "no data sources recorded"
    settings = ", ".join(f"{k} {v}" for k, v in sorted((record.get("eval") or {}).items()))
    return f"data {sources}" + (f", evaluation {settings}" if settings else "")


def flags(laws: list[SweepLaw]) -> list[str]:
    """Why the sweeps' losses are not comparable, in words (tokenizer or validation set differ); [] if they are."""
    out = []
    for key, what, words in (
        ("tokenizer", "tokenizers", _tokenizer_words),
        ("validation", "validation sets", _validation_words),
    ):
        seen = {law.name: law.data[key] for law in laws}
        if len({json.dumps(v) for v in seen.values()}) > 1:
            detail = "; ".join(
                f"{name} uses {' or '.join(words(v) for v in values) or 'nothing recorded'}"
                for name, values in seen.items()
            )
            reason = (
                "a loss in nats per token then counts different tokens"
                if key == "tokenizer"
                else "each loss is measured on different text"
            )
            out.append(f"Not comparable: the sweeps use different {what} ({detail}), and {reason}.")
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
    """L*(c) of the fit and of every bootstrap draw (workbench.fit.frontier.predict: E + K c^-gamma)."""
    return predict(law.loss, c)


def at_budget(law: SweepLaw, c: float) -> dict:
    """N*, D*, L* at compute c with 5-95% intervals."""

    n, d = isoflop_allocation(law.iso, c, law.flops)
    if law.iso_draws:
        n_draws, d_draws = isoflop_allocation(law.iso_draws, c, law.flops)
    else:
        n_draws, d_draws = np.array([]), np.array([])
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


def crossing(grid: np.ndarray, gap: np.ndarray) -> np.ndarray:
    """log C of the first sign change of gap (rows: the estimate or draws, columns: the log-C grid), linearly
    interpolated; NaN where the gap keeps its sign over the grid."""
    gap = np.atleast_2d(gap)
    sign = np.sign(gap)
    change = (sign[:, :-1] * sign[:, 1:] < 0) & np.isfinite(gap[:, :-1]) & np.isfinite(gap[:, 1:])
    out = np.full(len(gap), np.nan)
    rows = np.flatnonzero(change.any(axis=1))
    first = change[rows].argmax(axis=1)
    g0, g1 = gap[rows, first], gap[rows, first + 1]
    out[rows] = grid[first] + (grid[first + 1] - grid[first]) * g0 / (g0 - g1)
    return out


def pair(a: SweepLaw, b: SweepLaw, target: float) -> dict:
    """Gap L_a - L_b at the target and where one law overtakes the other, with intervals."""
    n = min(len(a.loss["draws"]["K"]), len(b.loss["draws"]["K"]))
    la, la_draws = loss_at(a, target)
    lb, lb_draws = loss_at(b, target)
    gap_draws = la_draws[:n] - lb_draws[:n]
    c_lo = min(float(a.points["budget_flops"].min()), float(b.points["budget_flops"].min()))
    c_hi = target * RANGE_FACTOR
    grid = np.linspace(math.log(c_lo), math.log(c_hi), 400)
    curves = [np.array([loss_at(law, c) for c in np.exp(grid)], dtype=object) for law in (a, b)]
    point_gap = np.array([pa - pb for (pa, _), (pb, _) in zip(curves[0], curves[1], strict=True)])
    draw_gap = np.stack([da[:n] - db[:n] for (_, da), (_, db) in zip(curves[0], curves[1], strict=True)], axis=1)
    log_cross = float(crossing(grid, point_gap)[0])
    cross_draws = crossing(grid, draw_gap) if n else np.array([])
    inside = np.isfinite(cross_draws)
    steeper = a.name if point_gap[-1] < 0 else b.name  # lower at the far end: the one that overtakes
    swept = max(float(a.points["budget_flops"].max()), float(b.points["budget_flops"].max()))
    result = {
        "largest_swept": swept,
        "decades": math.log10(target / swept),
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


def distance_text(p: dict) -> str:
    """How far the target lies from the largest budget swept, in decades."""
    decades, swept = p["decades"], p["largest_swept"]
    if decades > 1.0:
        return f"{decades:.1f} decades past the largest budget swept ({swept:.3g} FLOPs)"
    if decades > 0.0:
        return f"{decades:.1f} decades past the largest budget swept ({swept:.3g} FLOPs), within one decade"
    return f"inside the swept budgets (up to {swept:.3g} FLOPs)"


def verdict(p: dict, comparable: list[str] | None = None) -> str:
    """The pair's outcome in plain words: comparability first, then the gap at the target with how far the
    target lies past the swept budgets and what the interval does and does not contain."""
    a, b, gap, ci = p["a"], p["b"], p["gap"], p["gap_ci"]
    better, worse = (a, b) if gap < 0 else (b, a)
    share = p["p_a_lower"] if gap < 0 else 1 - p["p_a_lower"]
    where = f"{p['target']:.3g} FLOPs, {distance_text(p)}"
    head = ""
    if comparable:
        what = " and ".join(
            w for w in ("tokenizers", "validation sets") if any(f"different {w}" in c for c in comparable)
        )
        head = (
            f"Not comparable: {a} and {b} use different {what} (above), so the figures compare the laws as fitted, "
            "not the models. "
        )
    if ci["lo"] <= 0 <= ci["hi"]:
        text = (
            f"at {where}, the laws of {a} and {b} cannot be told apart: the predicted gap {a} - {b} is "
            f"{gap:+.4f} nats/token, and its 5-95% interval [{ci['lo']:+.4f}, {ci['hi']:+.4f}] includes zero "
            f"({better} lower in {share:.0%} of bootstrap resamples)."
        )
    else:
        text = (
            f"at {where}, {better}'s law predicts a lower loss than {worse}'s by {abs(gap):.4f} nats/token "
            f"(gap {a} - {b}: {gap:+.4f}, 5-95% [{ci['lo']:+.4f}, {ci['hi']:+.4f}]; {better} lower in "
            f"{share:.0%} of bootstrap resamples)."
        )
    text = text[0].upper() + text[1:]
    caveat = (
        " The interval contains only the resampling of runs within the swept budgets: it assumes each power law "
        "holds unchanged up to the target, which nothing here tests"
        + (f" over {p['decades']:.1f} decades (see a fit's rollout for the track record)." if p["decades"] > 1 else ".")
    )
    return head + text + caveat + " " + overtake_text(p)


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


def compare(store, names: list[str], target: float | None, budgets: list[float]) -> dict:
    """Everything the comparison page shows."""
    if len(set(names)) < 2:
        raise WorkbenchError("a comparison needs 2 or more different sweeps", "Name them: `workbench report A B`.")
    laws = [fit_sweep_law(store, name) for name in names]
    largest = max(float(law.points["budget_flops"].max()) for law in laws)
    target = float(target) if target is not None else largest * 1000
    at = sorted({largest, target, *map(float, budgets)})
    return {
        "laws": laws,
        "target": target,
        "at": {law.name: [at_budget(law, c) for c in at] for law in laws},
        "pairs": [pair(a, b, target) for a, b in itertools.combinations(laws, 2)],
        "flags": flags(laws),
        "bootstrap": min(law.bootstrap for law in laws),
        "extra_at": [float(b) for b in budgets],
    }


def fmt_ci(value: float, ci: dict, f=human) -> str:
    return f"{f(value)} [{f(ci['lo'])}, {f(ci['hi'])}]" if ci.get("n") else f(value)
