"""The closing lines `workbench demo` prints: the end-to-end checks, the experiment's, and where the report is."""

from __future__ import annotations

from workbench.demo import experiment


def summary(outcome: dict) -> str:
    """The closing lines `workbench demo` prints: the checks and where the report is."""
    f = outcome["flagship"]
    lines = [
        f"held-out budget {outcome['held_out_budget']:.3g} FLOPs (fit on {len(outcome['fitted_budgets'])} budgets)",
        f"  best sweep run: loss {outcome['best_run']['loss']:.4f} at N {outcome['best_run']['params']:,.0f}; "
        f"the held-out parabola's minimum {outcome.get('observed_best_loss', float('nan')):.4f}; "
        f"L*(C) = E + K C^-gamma predicted {outcome['predicted_best_loss']:.4f} "
        f"({_rel(outcome['best_loss_rel_err'])}); "
        f"parametric law {outcome['parametric_predicted_best_loss']:.4f} "
        f"({_rel(outcome['parametric_best_loss_rel_err'])})",
        _n_opt_line(outcome),
        f"  flagship: N {f['params']:,} on {f['tokens']:,} tokens, val loss {f['val_loss']:.4f}; predicted "
        f"{f['predicted']:.4f} [90% PI {f['interval'][0]:.4f}, {f['interval'][1]:.4f}]; "
        f"{f['vs_best']:+.2%} vs the best run",
    ]
    if outcome.get("lr_check"):
        lines.append(
            f"  LR rule at the smallest budget: within {outcome['lr_check']['worst_gap']:.2%} of the best of "
            f"x0.5/x1/x2 for every size"
        )
    reasons = outcome.get("not_scored") or {}
    for name, ok in outcome["checks"].items():
        lines.append(f"  {name}: {reasons.get(name) or 'not scored'}" if ok is None else f"  {verdict(ok)} {name}")
    lines += experiment.summary_lines(outcome)
    lines.append(f"done in {outcome['wall_s'] / 60:.1f} min; report: {outcome['report']}")
    return "\n".join(lines)


def verdict(passed: bool | None) -> str:
    """PASS, FAIL, or NOT SCORED for a check with nothing to score."""
    return "NOT SCORED" if passed is None else "PASS" if passed else "FAIL"


def _n_opt_line(outcome: dict) -> str:
    """The held-out N* line: the observed vertex and the predictions, or why there is nothing to compare."""
    predicted = (
        f"{outcome['predicted_n_opt_isoflop'] or float('nan'):,.0f} (isoFLOP law), "
        f"{outcome['predicted_n_opt_parametric']:,.0f} (parametric, C = 6ND)"
    )
    if outcome["observed_n_opt"] is None:
        return f"  N*: {outcome['observed_n_opt_source']}; predicted {predicted}"
    return (
        f"  N*: observed {outcome['observed_n_opt']:,.0f} ({outcome['observed_n_opt_source']}), predicted {predicted}"
    )


def _rel(err: float | None) -> str:
    return "not scored" if err is None else f"{err:+.2%}"
