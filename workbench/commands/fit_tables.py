"""A fit record as rich tables for the terminal (`workbench fit`): estimates with 5-95% intervals, isoFLOP
minima and exclusions, held-out and rollout errors, the held-out checks."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from workbench.core.units import human


def _ci_text(ci: dict | None, key: str, fmt: str) -> str:
    if not ci or key not in ci or ci[key]["lo"] is None:
        return ""
    return f"{ci[key]['median']:{fmt}} [{ci[key]['lo']:{fmt}}, {ci[key]['hi']:{fmt}}]"


def print_fit(record: dict, out: Path) -> None:
    """The fit as rich tables: estimates with 5-95% intervals, minima and exclusions, held-out errors."""

    console = Console()
    console.print(f"fit [bold]{record['name']}[/]: {record['n_points']} runs from {record['source']}")
    par, iso = record["parametric"], record["isoflop"]
    if par:
        table = Table(title="L = E + A/N^alpha + B/D^beta")
        for column in ("param", "estimate", "bootstrap median [5%, 95%]"):
            table.add_column(column)
        for key in ("E", "A", "B", "alpha", "beta", "a"):
            table.add_row(key, f"{par[key]:.4g}", _ci_text(par["ci"], key, ".4g"))
        console.print(table)
    if iso:
        table = Table(title="isoFLOP minima")
        for column in ("budget (FLOPs)", "N*", "D*", "L*", "sizes", "note"):
            table.add_column(column)
        for m in iso["minima"]:
            table.add_row(
                f"{m['budget_flops']:.3g}",
                human(m["params"]),
                human(m["tokens"]),
                f"{m['loss']:.4f}",
                str(m["n_sizes"]),
                "",
            )
        for e in iso["excluded"]:
            table.add_row(f"{e['budget_flops']:.3g}", "", "", "", "", f"excluded: {e['reason']}")
        console.print(table)
        console.print(
            f"N* = {iso['G']:.4g} C^{iso['a']:.4f} {_ci_text(iso['ci'], 'a', '.4f')}   "
            f"D* = {iso['H']:.4g} C^{iso['b']:.4f} {_ci_text(iso['ci'], 'b', '.4f')}"
        )
    for label, rows in (("held out", [record["holdout"]] if record["holdout"] else []), ("rollout", record["rollout"])):
        if rows:
            console.print(heldout_table(label, rows))
    if record.get("crosscheck"):
        console.print(crosscheck_table(record["crosscheck"]))
    design = record.get("design")
    if design:
        console.print(f"bootstrap: {design['bootstrap_mode']} ({design['reason']})")
    for row in (record.get("calibration") or {}).get("rows", []):
        console.print(
            f"rollout calibration {row['quantity']}: nominal {row['nominal']:.0%}, achieved {row['achieved']:.0%} "
            f"of {row['n']} (calibrated: {row['achieved_calibrated']:.0%}, extra log sd {row['widen']:.3g}/decade)"
        )
    for warning in (record.get("diagnostics") or {}).get("warnings", []):
        console.print(f"[yellow]warning[/]: {warning}")
    for check, c in (record.get("checks") or {}).items():
        console.print(
            f"{'PASS' if c['passed'] else 'FAIL'} {check}: predicted {c['predicted']}, observed {c['observed']}"
        )
    console.print(f"wrote {out}" + (f" and {len(record['plots'])} plots" if record["plots"] else ""))


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:+.2f}%"


def error_text(scored: dict | None) -> str:
    """'+1.20% [-0.8%, +3.1%] in PI' for a scored prediction (workbench.fit.scoring), '' when unscored."""
    if not scored or scored.get("rel_err") is None:
        return "not scored" if scored else ""
    span = scored.get("rel_err_interval")
    text = _pct(scored["rel_err"]) + (f" [{100 * span[0]:+.1f}%, {100 * span[1]:+.1f}%]" if span else "")
    inside = scored.get("truth_in_interval")
    return text + ("" if inside is None else " in PI" if inside else " OUTSIDE PI")


def heldout_table(label: str, rows: list[dict]):
    """Predicted vs the held-out budget's own parabola: errors with 90% intervals, and whether the target
    lies in the prediction interval (PI)."""

    table = Table(title=f"{label}: predicted vs the held-out budget's parabola (error [90%], target in PI?)")
    for column in ("budget (FLOPs)", "fit on", "L* (parametric)", "L* (L*(C) law)", "N* (parametric)", "N* (isoFLOP)"):
        table.add_column(column)
    for row in rows:
        p, i, f = row.get("parametric", {}), row.get("isoflop", {}), row.get("loss_law", {})
        table.add_row(
            f"{row['budget_flops']:.3g}",
            f"{row['train_budgets']} budgets",
            error_text(p.get("loss")),
            error_text(f.get("loss")),
            error_text(p.get("N_opt")),
            error_text(i.get("N_opt")) if "error" not in i else "no fit",
        )
    source = rows[-1]["observed"].get("N_opt_source")
    if source:
        table.caption = f"target N*: {source}; target L*: the parabola's minimum"
    return table


def crosscheck_table(cross: dict):
    """The methods' exponent a and N* at the target budget with 5-95% intervals, and the disagreement flag."""

    flag = {True: "DISAGREE", False: "agree", None: "no intervals to compare"}[cross["flag"]]
    table = Table(title=f"cross-check of the methods (N* at {cross['target_flops']:.3g} FLOPs): {flag}")
    for column in ("method", "a (N* ~ C^a)", "5-95%", "N*", "5-95%"):
        table.add_column(column)
    for r in cross["rows"]:
        a_ci, n_ci = r["a_interval"], r["N_opt_interval"]
        table.add_row(
            r["method"],
            f"{r['a']:.4f}",
            f"[{a_ci[0]:.4f}, {a_ci[1]:.4f}]" if a_ci else "",
            human(r["N_opt"]),
            f"[{human(n_ci[0])}, {human(n_ci[1])}]" if n_ci else "",
        )
    if cross["disagreements"]:
        table.caption = "; ".join(cross["disagreements"])
    return table
