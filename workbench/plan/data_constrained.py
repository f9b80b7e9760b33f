"""Data-constrained training (Muennighoff et al. 2023, Scaling Data-Constrained Language Models): repeated
epochs of U unique tokens are worth less than fresh tokens. Pure numpy, no I/O.

With D tokens trained on U unique ones, R = D / U - 1 repetitions, the effective data is
    D' = U + U R* (1 - exp(-R / R*)),   R* = 15.4 (their fitted R*_D),
so 4 epochs are worth about 3.8 fresh ones and D' never exceeds U (1 + R*). The loss law is evaluated at
D' (their data term only; the excess-parameter term is left out), and the compute-optimal allocation
at C = 6 N D is found numerically: with little unique data it moves compute from tokens to parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from workbench.fit.laws import ParametricLaw

R_STAR_DATA = 15.4  # Muennighoff et al. 2023, Sec. 3: the decay constant of repeated data's value
EPOCHS_WARN = 4.0  # past about 4 epochs repeated data is worth markedly less than fresh data


def effective_tokens(tokens: ArrayLike, unique_tokens: float) -> np.ndarray:
    """D' of D tokens drawn from `unique_tokens` unique ones (D itself while D <= U)."""
    d = np.asarray(tokens, dtype=float)
    repeats = np.maximum(d / unique_tokens - 1.0, 0.0)
    return np.where(d <= unique_tokens, d, unique_tokens * (1.0 + R_STAR_DATA * (1.0 - np.exp(-repeats / R_STAR_DATA))))


@dataclass(frozen=True)
class DataConstrainedLaw(ParametricLaw):
    """A parametric law whose data term sees the effective data D' of `unique_tokens` unique tokens."""

    unique_tokens: float = math.inf

    def loss(self, params: ArrayLike, tokens: ArrayLike) -> float | np.ndarray:
        return super().loss(params, effective_tokens(tokens, self.unique_tokens))

    def optimum(self, budget_flops: ArrayLike) -> tuple[float, float]:
        """(N, D) minimising the loss at C = 6 N D: a log-spaced search around the unconstrained optimum."""
        c = float(budget_flops)
        n0, _ = ParametricLaw(self.E, self.A, self.B, self.alpha, self.beta).optimum(c)
        centre, width = math.log(n0), math.log(1000.0)
        for _ in range(4):  # each pass narrows the bracket around the best grid point
            grid = np.linspace(centre - width, centre + width, 201)
            params = np.exp(grid)
            centre = float(grid[int(np.argmin(self.loss(params, c / (6.0 * params))))])
            width /= 20.0
        params = math.exp(centre)
        return params, c / (6.0 * params)

    def tokens_for_loss(self, params: ArrayLike, loss: ArrayLike) -> float | np.ndarray:
        raise NotImplementedError("inference-aware sizing with unique tokens is not supported")


def epochs_note(tokens: float, unique_tokens: float) -> tuple[str, bool]:
    """(text, warn): the epochs of the plan's tokens over the unique data, and whether they pass 4."""
    epochs = tokens / unique_tokens
    worth = float(effective_tokens(tokens, unique_tokens)) / unique_tokens
    text = (
        f"data-constrained (Muennighoff et al. 2023): {epochs:.2f} epochs of {unique_tokens:.3g} unique tokens, "
        f"worth {worth:.2f} epochs of fresh data (R* = {R_STAR_DATA})"
    )
    warn = epochs > EPOCHS_WARN
    if warn:
        text += (
            f"; WARNING: past about {EPOCHS_WARN:g} epochs repeated tokens are worth much less than fresh ones: "
            "find more unique data or plan a smaller budget"
        )
    return text, warn
