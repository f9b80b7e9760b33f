"""A fit record as rich tables for the terminal (`workbench fit`): estimates with 5-95% intervals, isoFLOP
minima and exclusions, held-out and rollout errors, the held-out checks."""

from __future__ import annotations

from pathlib import Path


def _ci_text(ci: dict | None, key: str, fmt: str) -> str:
    if not ci or key not in ci or ci[key]["lo"] is None:
        return ""
    return f"{ci[key]['median']:{fmt}} [{ci[key]['lo']:{fmt}}, {ci[key]['hi']:{fmt}}]"


def print_fit(record: dict, out: Path) -> None:
    """The fit as rich tables: estimates with 5-95% intervals, minima and exclusions, held-out errors."""
    from rich.console import Console
    from rich.table import Table

    from workbench.units import human

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
            table.add_row(f"{m['budget_flops']:.3g}", human(m["params"]), human(m["tokens"]), f"{m['loss']:.4f}",
                          str(m["n_sizes"]), "")  # fmt: skip
        for e in iso["excluded"]:
            table.add_row(f"{e['budget_flops']:.3g}", "", "", "", "", f"excluded: {e['reason']}")
        console.print(table)
        console.print(
            f"N* = {iso['G']:.4g} C^{iso['a']:.4f} {_ci_text(iso['ci'], 'a', '.4f')}   "
            f"D* = {iso['H']:.4g} C^{iso['b']:.4f} {_ci_text(iso['ci'], 'b', '.4f')}"
        )
    for label, rows in (("held out", [record["holdout"]] if record["holdout"] else []), ("rollout", record["rollout"])):
        if not rows:
            continue
        table = Table(title=f"{label}: predicted vs observed (relative error)")
        for column in ("budget (FLOPs)", "fit on", "loss (parametric)", "N* (parametric)", "N* (isoFLOP)"):
            table.add_column(column)
        for row in rows:
            p, i = row.get("parametric", {}), row.get("isoflop", {})
            table.add_row(f"{row['budget_flops']:.3g}", f"{row['train_budgets']} budgets",
                          _pct(p.get("loss_rel_err")), _pct(p.get("N_opt_rel_err")),
                          _pct(i.get("N_opt_rel_err")) if "error" not in i else "no fit")  # fmt: skip
        console.print(table)
    for check, c in (record.get("checks") or {}).items():
        console.print(
            f"{'PASS' if c['passed'] else 'FAIL'} {check}: predicted {c['predicted']}, observed {c['observed']}"
        )
    console.print(f"wrote {out}" + (f" and {len(record['plots'])} plots" if record["plots"] else ""))


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:+.2f}%"
