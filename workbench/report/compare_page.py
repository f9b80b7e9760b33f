"""The comparison page of several sweeps (report.compare computes, this module lays out and writes)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

import workbench
from workbench.core.units import human
from workbench.report import compare as cmp
from workbench.report import interactive as vl
from workbench.report.inputs import git_commit, resolve_sweep
from workbench.report.page import assets, environment, prepare_charts, write_text_atomic
from workbench.report.sections import cell
from workbench.report.style import LOSS_FORMAT


def num(value: float) -> str:
    return f"{value:.4f}"


def law_table(result: dict) -> dict:
    rows = []
    for law in result["laws"]:
        iso, draws, loss = law.iso, law.iso_draws, law.loss
        rows.append(
            [
                cell(law.name),
                cell(len(law.points)),
                cell(len(iso["minima"])),
                cell(cmp.fmt_ci(iso["a"], cmp.interval(draws.get("a", [])), lambda v: f"{v:.3f}"), iso["a"]),
                cell(cmp.fmt_ci(iso["b"], cmp.interval(draws.get("b", [])), lambda v: f"{v:.3f}"), iso["b"]),
                cell(
                    cmp.fmt_ci(loss["gamma"], cmp.interval(loss["draws"]["gamma"]), lambda v: f"{v:.4f}"), loss["gamma"]
                ),
                cell(f"{loss['K']:.4g}", loss["K"]),
                cell(f"{loss.get('E', 0.0):.4g}", loss.get("E", 0.0)),
            ]
        )
    header = ["sweep", "runs", "budgets fitted", "a (N* = G C^a)", "b (D* = H C^b)", "gamma (L* = E + K C^-gamma)"]
    header += ["K", "E (floor)"]
    return {"caption": "Fitted laws, estimate [5%, 95%] over bootstrap resamples", "header": header, "rows": rows}


def budget_table(result: dict) -> dict:
    rows = []
    for name, entries in result["at"].items():
        for e in entries:
            rows.append(
                [
                    cell(name),
                    cell(f"{e['budget_flops']:.3g}", e["budget_flops"]),
                    cell(cmp.fmt_ci(e["N"], e["N_ci"]), e["N"]),
                    cell(cmp.fmt_ci(e["D"], e["D_ci"]), e["D"]),
                    cell(cmp.fmt_ci(e["L"], e["L_ci"], num), e["L"]),
                ]
            )
    header = ["sweep", "C (FLOPs)", "N* [5%, 95%]", "D* [5%, 95%]", "L* nats/token [5%, 95%]"]
    return {"caption": "Compute-optimal N*, D* and loss L* at chosen budgets", "header": header, "rows": rows}


def pair_table(result: dict) -> dict:
    rows = []
    for p in result["pairs"]:
        ci = p["gap_ci"]
        cross = "never within the range" if p["cross"] is None else f"{p['cross']:.3g}"
        if p["cross_ci"]:
            cross += f" [{p['cross_ci']['lo']:.3g}, {p['cross_ci']['hi']:.3g}]"
        rows.append(
            [
                cell(f"{p['a']} vs {p['b']}"),
                cell(f"{p['target']:.3g}", p["target"]),
                cell(f"{p['gap']:+.4f} [{ci['lo']:+.4f}, {ci['hi']:+.4f}]", p["gap"]),
                cell(f"{p['p_a_lower']:.0%}"),
                cell(cross, p["cross"] or ""),
                cell(p["overtaker"] if p["cross"] else "-"),
                cell(f"{p['decades']:+.1f}", p["decades"]),
                cell("no" if result["flags"] else "yes", cls="bad" if result["flags"] else ""),
            ]
        )
    header = [
        "pair A vs B",
        "target C (FLOPs)",
        "gap L_A - L_B [5%, 95%]",
        "P(A lower)",
        "overtaking C [5%, 95%]",
        "who overtakes",
        "decades past the largest swept",
        "comparable",
    ]
    return {
        "caption": "Pairs: loss gap at the target and the compute where one law overtakes the other",
        "header": header,
        "rows": rows,
    }


def sweep_keys(result: dict) -> list[dict]:
    """One HTML legend entry per sweep (colour and shape), toggling all of that sweep's marks."""
    shapes = ("circle", "square", "triangle-up", "diamond", "triangle-down", "cross")
    return [
        vl.key(law.name, vl.PALETTE[i % len(vl.PALETTE)], "point", shapes[i % len(shapes)])
        for i, law in enumerate(result["laws"])
    ]


def isoflop_chart(result: dict) -> dict:
    keys = sweep_keys(result)
    names = [k["value"] for k in keys]
    runs, curves, mins = [], [], []
    for law in result["laws"]:
        r, c, m = vl.isoflop_layers(law.points, law.iso["minima"])
        for frame in (r, c, m):
            frame["budget"] = frame["series"]
            frame["series"] = law.name
        runs.append(r)
        curves.append(c)
        mins.append(m)
    runs, curves, mins = (pd.concat(f, ignore_index=True) for f in (runs, curves, mins))
    spec = vl.isoflop_spec(runs, curves, mins, names, [k["colour"] for k in keys], [k["shape"] for k in keys])
    spec["layer"][0]["encoding"]["detail"] = {"field": "budget"}
    spec["layer"][1]["encoding"]["tooltip"] = [
        *vl.TIP_RUN[:4],
        {"field": "series", "title": "sweep"},
        {"field": "budget"},
    ]
    return vl.chart(
        "cmp-isoflop",
        "isoFLOP curves of every sweep",
        "Final validation loss against model size for "
        "every sweep and budget, overlaid, with each budget's parabola and its minimum (stars).",
        "isoFLOP curves overlaid, coloured by sweep. Hover a point for its run; the legend's buttons hide a sweep.",
        spec,
        "runs",
        legend=keys,
        legend_title="sweep",
    )


def _marks(result: dict) -> pd.DataFrame:
    """The budgets the page reports at (--at): the target first."""
    budgets = sorted({result["target"], *result.get("extra_at", [])})
    return pd.DataFrame(
        [{"C": c, "label": f"{'target' if c == result['target'] else '--at'} {c:.3g} FLOPs"} for c in budgets]
    )


def law_charts(result: dict) -> list[dict]:
    """N*(C), D*(C) and L*(C) of every sweep, extrapolated to the target, with 5-95% bands, the minima and a
    dotted rule at each --at budget."""
    laws, target = result["laws"], result["target"]
    keys = sweep_keys(result)
    c_lo = min(float(law.points["budget_flops"].min()) for law in laws) / 2
    grid = np.geomspace(c_lo, max(target, *result.get("extra_at", [target])) * 3, 60)
    out = []
    for key, what, unit in (("params", "N*", "parameters"), ("tokens", "D*", "tokens"), ("loss", "L*", "loss")):
        lines, bands, dots = [], [], []
        for law in laws:
            if key == "loss":
                pairs = [cmp.loss_at(law, c) for c in grid]
                fit = np.array([value for value, _ in pairs])
                draws = np.stack([d for _, d in pairs]) if pairs[0][1].size else np.full((len(grid), 1), np.nan)
            else:
                which = 0 if key == "params" else 1
                fit = cmp.isoflop_allocation(law.iso, grid, law.flops)[which]
                draws = cmp.isoflop_allocation(law.iso_draws, grid[:, None], law.flops)[which]
            lo, hi = np.nanpercentile(np.where(draws > 0, draws, np.nan), [5, 95], axis=1)
            lines += [{"series": law.name, "C": c, "v": v} for c, v in zip(grid, fit, strict=True)]
            bands += [{"series": law.name, "C": c, "lo": a, "hi": b} for c, a, b in zip(grid, lo, hi, strict=True)]
            dots += [
                {"series": law.name, "C": m["budget_flops"], "v": m[key], "run": vl.budget_label(m["budget_flops"])}
                for m in law.iso["minima"]
            ]
        frames = (pd.DataFrame(lines), pd.DataFrame(bands), pd.DataFrame(dots))
        spec = vl.frontier_spec(what, key, *frames, [{**k, "mark": "line"} for k in keys])
        spec["datasets"]["marks"] = vl.columns(_marks(result))
        spec["layer"].insert(
            0,
            {
                "data": {"name": "marks"},
                "mark": {"type": "rule", "strokeDash": [2, 3], "color": "#000000"},
                "encoding": {
                    "x": spec["layer"][0]["encoding"]["x"],
                    "tooltip": [{"field": "label", "title": "budget"}],
                },
            },
        )
        if key == "loss":
            for layer in spec["layer"]:
                if "y" in layer["encoding"]:
                    layer["encoding"]["y"]["title"] = "L*: compute-optimal loss (nats/token)"
                    layer["encoding"]["y"]["axis"] = {"format": LOSS_FORMAT}
        out.append(
            {
                **vl.chart(
                    f"cmp-{unit}",
                    f"{what}(C)",
                    f"{what} against compute for every sweep on log axes, the "
                    f"fitted power law with its 5-95% bootstrap band, extrapolated to {target:.3g} FLOPs.",
                    f"{what}(C) of each sweep: minima (dots), fitted law and 5-95% band, to the target; dotted: the "
                    "target and each --at budget. The data button exports the minima.",
                    spec,
                    "dots",
                    legend=keys,
                    legend_title="sweep",
                ),
                "wide": key == "loss",
            }
        )
    return out


def sections(result: dict, db: Path, command: str) -> list[dict]:

    verdicts = [cmp.verdict(p, result["flags"]) for p in result["pairs"]]
    charts = [isoflop_chart(result), *law_charts(result)]
    prov = [
        ("generated", datetime.now(UTC).isoformat(timespec="seconds")),
        ("report command", command),
        ("database", str(db)),
        ("git commit", git_commit()),
        (
            "method",
            f"isoFLOP parabolas, N*/D* power laws and L*(C) = E + K C^-gamma on the minima, read from each sweep's "
            f"stored fit (workbench fit); {result['bootstrap']} bootstrap resamples per sweep, paired across sweeps; "
            "overtaking is "
            f"looked for from the smallest swept budget to {cmp.RANGE_FACTOR:g}x the target",
        ),
    ]
    return [
        {
            "id": "verdict",
            "title": "Verdict",
            "sentences": verdicts,
            "flags": result["flags"],
            "charts": [],
            "tables": [pair_table(result)],
        },
        {
            "id": "laws",
            "title": "Laws",
            "sentences": [],
            "flags": [],
            "charts": charts[1:],
            "tables": [law_table(result), budget_table(result)],
        },
        {"id": "isoflop", "title": "isoFLOP curves", "sentences": [], "flags": [], "charts": charts[:1], "tables": []},
        {
            "id": "provenance",
            "title": "Provenance",
            "sentences": [],
            "flags": [],
            "charts": [],
            "tables": [],
            "rows": prov,
        },
    ]


def _ci_columns(prefix: str, value: float, ci: dict) -> dict:
    return {prefix: value, f"{prefix}_p5": ci.get("lo"), f"{prefix}_p95": ci.get("hi")}


def downloads(result: dict) -> list[dict]:
    """CSV files: the runs, the isoFLOP minima, the laws, N*/D*/L* at each budget and the pairs, every
    estimate with its 5% and 95% bootstrap bounds."""
    runs = pd.concat([law.points.assign(sweep=law.name) for law in result["laws"]], ignore_index=True)
    minima = pd.concat([pd.DataFrame(law.iso["minima"]).assign(sweep=law.name) for law in result["laws"]])
    laws = pd.DataFrame(
        [
            {
                "sweep": law.name,
                **_ci_columns("a", law.iso["a"], cmp.interval(law.iso_draws.get("a", []))),
                **_ci_columns("b", law.iso["b"], cmp.interval(law.iso_draws.get("b", []))),
                **_ci_columns("gamma", law.loss["gamma"], cmp.interval(law.loss["draws"]["gamma"])),
                "G": law.iso["G"],
                "H": law.iso["H"],
                "K": law.loss["K"],
                "E": law.loss.get("E", 0.0),
            }
            for law in result["laws"]
        ]
    )
    at = pd.DataFrame(
        [
            {
                "sweep": name,
                "budget_flops": e["budget_flops"],
                **_ci_columns("N", e["N"], e["N_ci"]),
                **_ci_columns("D", e["D"], e["D_ci"]),
                **_ci_columns("L", e["L"], e["L_ci"]),
            }
            for name, entries in result["at"].items()
            for e in entries
        ]
    )
    pairs = pd.DataFrame(
        [
            {
                "a": p["a"],
                "b": p["b"],
                "target_flops": p["target"],
                "decades_past_largest_swept": p["decades"],
                "comparable": not result["flags"],
                **_ci_columns("gap", p["gap"], p["gap_ci"]),
                "p_a_lower": p["p_a_lower"],
                "overtake_flops": p["cross"],
                "overtake_p5": (p["cross_ci"] or {}).get("lo"),
                "overtake_p95": (p["cross_ci"] or {}).get("hi"),
            }
            for p in result["pairs"]
        ]
    )
    files = [("runs", runs), ("minima", minima), ("fits", laws), ("at-budgets", at), ("pairs", pairs)]
    return [
        {"id": f"csv-{i}", "name": f"compare-{name}.csv", "text": vl.csv_text(frame)}
        for i, (name, frame) in enumerate(files)
    ]


def write_comparison(
    db: Path,
    names: list[str],
    target: float | None,
    budgets: list[float],
    out: Path | None,
    command: str = "",
) -> Path:
    """Read every sweep's stored fit, compare them pairwise and write the page (default
    reports/compare-A-B.html)."""
    from workbench.store.database import Store

    for name in names:
        resolve_sweep(db, name)
    result = cmp.compare(Store(db), names, target, budgets)
    built = sections(result, db, command)
    html = (
        environment()
        .get_template("compare.html.j2")
        .render(
            names=names,
            version=workbench.__version__,
            generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            sections=built,
            downloads=downloads(result),
            assets=assets(prepare_charts(built)),
            target=result["target"],
        )
    )
    path = out if out is not None else Path("reports") / f"compare-{'-'.join(names)}.html"
    return write_text_atomic(Path(path), html)


__all__ = ["write_comparison", "human"]
