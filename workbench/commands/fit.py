"""`workbench fit`: scaling laws from a sweep in the store or from a CSV of runs."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from workbench.errors import WorkbenchError

app = typer.Typer(no_args_is_help=True)

METHOD_CHOICES = ("isoflop", "parametric", "all")


@app.callback(invoke_without_command=True)
def fit(
    sweep: str = typer.Option(None, "--sweep", help="Fit the completed runs of this sweep in the store."),
    from_csv: Path = typer.Option(None, "--from-csv", help="Fit a CSV: params, tokens, loss [, flops, budget, acc_*]."),
    db: Path = typer.Option(None, "--db", help="DuckDB file (default: $WORKBENCH_DB or workbench.duckdb)."),
    method: str = typer.Option("all", "--method", help="isoflop, parametric or all."),
    n_bootstrap: int = typer.Option(1000, "--bootstrap", min=0, help="Bootstrap resamples (0: no intervals)."),
    holdout_largest: bool = typer.Option(False, "--holdout-largest", help="Also fit without the largest budget."),
    rollout: bool = typer.Option(False, "--rollout", help="Fit budgets 1..k, predict k+1, for every k."),
    overestimate_penalty: float = typer.Option(
        1.0, "--overestimate-penalty", min=1.0, help="Weight of residuals where the law predicts above the run."
    ),
    huber_delta: float = typer.Option(1e-3, "--huber-delta", min=1e-9, help="Huber delta on log loss."),
    starts: int = typer.Option(4, "--starts", min=2, max=8, help="Grid points per parameter (starts = this^5)."),
    at: list[str] = typer.Option([], "--at", help="Also report N*, D*, L* at this many FLOPs (repeatable)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
    name: str = typer.Option(None, "--name", help="Fit name (default: the sweep name or the CSV file stem)."),
    out: Path = typer.Option(None, "--out", help="Output JSON (default: fits/NAME.json); plots go next to it."),
    no_plots: bool = typer.Option(False, "--no-plots", help="Skip the PNG and SVG plots."),
    as_json: bool = typer.Option(False, "--json", help="Print the fit JSON instead of tables."),
) -> None:
    """Fit isoFLOP minima and the parametric law, with bootstrap intervals; write fits/NAME.json."""
    from workbench.fit import io
    from workbench.fit.data import check_losses_vary
    from workbench.fit.pipeline import FitOptions, fit_all, to_record
    from workbench.units import parse_number

    if (sweep is None) == (from_csv is None):
        raise WorkbenchError("give exactly one of --sweep NAME and --from-csv PATH", "See `workbench fit --help`.")
    if method not in METHOD_CHOICES:
        raise WorkbenchError(f"--method: unknown method {method!r}", f"Use one of {', '.join(METHOD_CHOICES)}.")
    db_path = Path(db or os.environ.get("WORKBENCH_DB") or "workbench.duckdb")
    name = name or sweep or from_csv.stem
    if out is None:  # the name becomes fits/NAME.json
        from workbench.files import safe_name

        safe_name(name, "fit name", "--name")
    points = _load_points(sweep, from_csv, db_path)
    check_losses_vary(points, str(from_csv) if from_csv else f"sweep {sweep}")
    options = FitOptions(
        method=method,
        bootstrap=n_bootstrap,
        huber_delta=huber_delta,
        overestimate_penalty=overestimate_penalty,
        starts_per_axis=starts,
        holdout_largest=holdout_largest,
        rollout=rollout,
        seed=seed,
        at_flops=tuple(parse_number(c, "--at") for c in at),
    )
    results = fit_all(points, options)
    source = f"sweep:{sweep}" if sweep else str(from_csv)
    record = to_record(results, name, source, sweep)
    out = out or Path("fits") / f"{name}.json"
    record["plots"] = [] if no_plots else [str(p) for p in _save_plots(results, out)]
    io.write_json_atomic(out, record)
    if sweep is not None or db is not None:
        _record_in_store(db_path, record)
    if as_json:
        typer.echo(io.dumps(record))
        return
    _print_tables(record, out)


def _load_points(sweep: str | None, from_csv: Path | None, db_path: Path):
    from workbench.fit.data import load_csv, validate_points

    if from_csv is not None:
        return load_csv(from_csv)
    from workbench.store import Store

    with Store(db_path) as store:
        frame = store.points(sweep)
    return validate_points(frame, f"sweep {sweep!r} in {db_path}")


def _record_in_store(db_path: Path, record: dict) -> None:
    from workbench.store import Store

    with Store(db_path) as store:
        store.record_fit(record)


def _save_plots(results, out: Path) -> list[Path]:
    from workbench.fit import plots

    stem = out.with_suffix("")
    paths = []
    if results.isoflop is not None:
        paths += plots.save_figure(plots.isoflop_figure(results.points, results.isoflop), f"{stem}.isoflop")
    if results.parametric is not None:
        paths += plots.save_figure(plots.parametric_figure(results.points, results.parametric), f"{stem}.parametric")
    if results.rollout:
        paths += plots.save_figure(plots.rollout_figure(results.rollout), f"{stem}.rollout")
    return paths


def _ci_text(ci: dict | None, key: str, fmt: str) -> str:
    if not ci or key not in ci or ci[key]["lo"] is None:
        return ""
    return f"{ci[key]['median']:{fmt}} [{ci[key]['lo']:{fmt}}, {ci[key]['hi']:{fmt}}]"


def _print_tables(record: dict, out: Path) -> None:
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
    console.print(f"wrote {out}" + (f" and {len(record['plots'])} plots" if record["plots"] else ""))


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:+.2f}%"
