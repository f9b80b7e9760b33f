"""One visual language for every figure of a report, static (matplotlib) and interactive (Vega-Lite).

Budgets: one colour and one marker shape per compute budget, the same in every figure of a page. The
colour is sequential (viridis from dark purple to green, cut before its pale yellow end, which vanishes on
white; luminance rises monotonically, so the order survives greyscale printing) and runs from the smallest
budget to the largest; neighbouring budgets also differ in marker shape (8 solid shapes in turn), which
keeps 25 or more budgets apart where neighbouring colours are close. Only solid, filled shapes are used:
thin ones (wedge, stroke) vanish at small sizes.

Numbers: counts (parameters, tokens, batch) as 350M, 8.03B, 1.5T (workbench.core.units.human) in tables,
axes and tooltips alike; FLOPs in scientific notation as `format(x, ".3g")` writes it (1e+17, 3.16e+18),
which is also what d3's ".3~g" gives in the interactive figures; losses with at most 4 significant digits
and no padding zeros (4.8, not 4.800).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

# (Vega-Lite shape, matplotlib marker): the same shape in both renderers
SHAPES = (
    ("circle", "o"),
    ("square", "s"),
    ("triangle-up", "^"),
    ("diamond", "D"),
    ("triangle-down", "v"),
    ("cross", "P"),
    ("triangle-left", "<"),
    ("triangle-right", ">"),
)
VIRIDIS_END = 0.88  # the part of viridis used (its last 12% is too pale on white)
COUNT_FORMAT = "wbcount"  # the page registers this Vega expression function: counts as 350M, 8.03B
FLOPS_FORMAT = ".3~g"  # d3: 1e+17, 3.16e+18 (Python's ".3g")
LOSS_FORMAT = ".4~g"  # d3: 4.8, 3.142 (no padding zeros)

# Okabe & Ito (2008): the non-budget series (laws, bands, the plan), distinguishable under colour-vision deficiencies
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000", "#F0E442")


def budget_label(budget: float) -> str:
    """A budget as every legend, tooltip and table of the page names it: '1e+17 FLOPs'."""
    return f"{budget:.3g} FLOPs"


def flops_text(value: float) -> str:
    """FLOPs as tables write them: 1e+17, 3.16e+18."""
    return f"{value:.3g}"


def _hex(rgba) -> str:
    return "#" + "".join(f"{round(255 * c):02x}" for c in rgba[:3])


@dataclass(frozen=True)
class BudgetScale:
    """The colour and shape of each budget of a sweep (sorted ascending)."""

    budgets: tuple[float, ...]

    def index(self, budget: float) -> int:
        """The position of `budget` among the sweep's budgets (the nearest one, relative 1e-6)."""
        i = bisect.bisect_left(self.budgets, budget * (1 - 1e-6))
        return min(i, len(self.budgets) - 1)

    def colour(self, budget: float) -> str:
        from matplotlib import colormaps

        n = len(self.budgets)
        return _hex(colormaps["viridis"](VIRIDIS_END * self.index(budget) / max(n - 1, 1)))

    def shape(self, budget: float) -> str:
        return SHAPES[self.index(budget) % len(SHAPES)][0]

    def marker(self, budget: float) -> str:
        return SHAPES[self.index(budget) % len(SHAPES)][1]

    @property
    def labels(self) -> list[str]:
        return [budget_label(b) for b in self.budgets]

    @property
    def colours(self) -> list[str]:
        return [self.colour(b) for b in self.budgets]

    @property
    def shapes(self) -> list[str]:
        return [self.shape(b) for b in self.budgets]

    def legend(self) -> list[dict]:
        """HTML legend entries: {value, label, colour, shape} per budget."""
        return [
            {"value": budget_label(b), "label": flops_text(b), "colour": self.colour(b), "shape": self.shape(b)}
            for b in self.budgets
        ]


def budget_scale(budgets) -> BudgetScale:
    """The scale of a sweep's budgets (NaN and repeats dropped)."""
    clean = sorted({float(b) for b in budgets if b == b})
    return BudgetScale(tuple(clean))


def report_scale(runs, fit: dict | None) -> BudgetScale:
    """A report's one budget scale: every budget of the sweep's runs (a frame) and of the fit's points."""
    fit_budgets = ((fit or {}).get("points") or {}).get("budget_flops") or []
    return budget_scale([*runs["budget_flops"].dropna(), *fit_budgets])
