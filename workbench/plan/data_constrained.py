"""Data-constrained training (Muennighoff et al. 2023, "Scaling Data-Constrained Language Models", NeurIPS
2023, Sec. 3): repeated epochs of U unique tokens are worth less than fresh tokens, and parameters beyond
what the unique data can feed are worth less than fresh parameters. Pure numpy, no I/O.

The formulas are those of the authors' released fitting code (huggingface/datablations, README "Parametric
Fit" and utils/parametric_fit.ipynb):

    U_D = min(U, D),   R_D = D / U_D - 1,   D' = U_D + U_D R*_D (1 - exp(-R_D / R*_D))
    U_N = min(N, N_bal(U_D)),   R_N = N / U_N - 1,   N' = U_N + U_N R*_N (1 - exp(-R_N / R*_N))
    L   = E + A / N'^alpha + B / D'^beta

with N_bal(U) = G (U G)^(beta / alpha), G = (alpha A / (beta B))^(1 / (alpha + beta)): the base law's
compute-optimal N at the budget whose compute-optimal D is U. R*_D = 15.387756 and R*_N = 5.309743 (their
fit on 182 runs). So 4 epochs are worth 3.73 fresh ones, D' never exceeds U (1 + R*_D) and N' never exceeds
U_N (1 + R*_N): with little unique data, the allocation moves compute toward smaller models trained for more
epochs (with the parameter term left out it would move the other way). The allocation at a budget is
found numerically over N (vectorised over the law's bootstrap draws, so a plan keeps its interval).
Their fitted runs with at least 1B unique tokens repeat the data at most about 400 times and exceed N_bal
at most about 37-fold: past either, the plan extrapolates their law and says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from workbench.fit.laws import FlopsPerToken, ParametricLaw

R_STAR_DATA = 15.387756  # Muennighoff et al. 2023: the decay constant of repeated data's value
R_STAR_PARAMS = 5.309743  # and of parameters in excess of what the unique data can feed
EPOCHS_WARN = 4.0  # past about 4 epochs repeated data is worth markedly less than fresh data
EPOCHS_TESTED = 400.0  # their fitted runs with >= 1B unique tokens repeat the data at most ~400 times
EXCESS_TESTED = 37.0  # and exceed the unique data's balanced model size at most ~37-fold


def _decayed(amount: np.ndarray, unique: np.ndarray, r_star: float) -> np.ndarray:
    """U + U R* (1 - exp(-R / R*)) with R = amount / U - 1: the effective amount of `amount` repeated over
    `unique` (the amount itself while it does not exceed unique)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        repeats = np.maximum(amount / unique - 1.0, 0.0)
        return np.where(amount <= unique, amount, unique * (1.0 + r_star * (1.0 - np.exp(-repeats / r_star))))


def effective_tokens(tokens: ArrayLike, unique_tokens: float) -> np.ndarray:
    """D' of D tokens drawn from `unique_tokens` unique ones (D itself while D <= U)."""
    d = np.asarray(tokens, dtype=float)
    return _decayed(d, np.minimum(unique_tokens, d), R_STAR_DATA)


@dataclass(frozen=True)
class DataConstrainedLaw(ParametricLaw):
    """A parametric law whose data term sees the effective data D' and whose model term sees the effective
    parameters N' of `unique_tokens` unique tokens (fields may be arrays of bootstrap draws)."""

    unique_tokens: float = math.inf

    def balanced_params(self, unique_data: ArrayLike) -> np.ndarray:
        """N_bal(U): the base law's compute-optimal N where its compute-optimal D is U (C = 6ND cancels)."""
        alpha, beta = np.asarray(self.alpha, dtype=float), np.asarray(self.beta, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            g = (alpha * np.asarray(self.A) / (beta * np.asarray(self.B))) ** (1.0 / (alpha + beta))
            return g * (np.asarray(unique_data, dtype=float) * g) ** (beta / alpha)

    def effective(self, params: ArrayLike, tokens: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """(N', D') of N parameters trained on D tokens."""
        n, d = np.asarray(params, dtype=float), np.asarray(tokens, dtype=float)
        unique_data = np.minimum(self.unique_tokens, d)
        d_eff = _decayed(d, unique_data, R_STAR_DATA)
        n_eff = _decayed(n, np.minimum(n, self.balanced_params(unique_data)), R_STAR_PARAMS)
        return n_eff, d_eff

    def loss(self, params: ArrayLike, tokens: ArrayLike) -> float | np.ndarray:
        return super().loss(*self.effective(params, tokens))

    def excess(self, params: ArrayLike, tokens: ArrayLike) -> np.ndarray:
        """N / U_N: how far the model exceeds what the unique data can feed (1: not at all)."""
        n, d = np.asarray(params, dtype=float), np.asarray(tokens, dtype=float)
        return n / np.minimum(n, self.balanced_params(np.minimum(self.unique_tokens, d)))

    def optimum(self, budget_flops: ArrayLike, flops: FlopsPerToken | None = None) -> tuple:
        """(N, D) minimising the loss at C = flops(N) D (default 6 N D), for the point law or each draw: a
        log-spaced search from a thousandth to a thousand times the unconstrained optimum, narrowed 4 times."""
        c = float(budget_flops)
        flops = flops or FlopsPerToken()
        n0 = np.asarray(ParametricLaw(self.E, self.A, self.B, self.alpha, self.beta).optimum(c, flops)[0], float)
        centre, width = np.log(n0)[..., None], math.log(1000.0)
        for _ in range(4):  # each pass narrows the bracket around the best grid point
            grid = centre + np.linspace(-width, width, 201)
            params = np.exp(grid)
            losses = np.asarray(self._loss_draws(params, c / flops(params)))
            best = np.nanargmin(np.where(np.isfinite(losses), losses, np.nan), axis=-1)
            centre = np.take_along_axis(grid, best[..., None], axis=-1)
            width /= 20.0
        params = np.exp(centre[..., 0])
        tokens = c / flops(params)
        return (float(params), float(tokens)) if params.ndim == 0 else (params, tokens)

    def _loss_draws(self, params: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """The loss on a (K, G) grid for K draws (or (G,) for the point law): each draw's fields broadcast."""
        if np.ndim(self.E) == 0:
            return np.asarray(self.loss(params, tokens))
        fields = {k: np.asarray(getattr(self, k))[:, None] for k in ("E", "A", "B", "alpha", "beta")}
        return np.asarray(DataConstrainedLaw(**fields, unique_tokens=self.unique_tokens).loss(params, tokens))

    def tokens_for_loss(self, params: ArrayLike, loss: ArrayLike) -> float | np.ndarray:
        raise NotImplementedError("inference-aware sizing with unique tokens is not supported")


def epochs_note(law: DataConstrainedLaw, params: float, tokens: float) -> tuple[str, list[str]]:
    """(text, warnings): the plan's epochs over the unique data and what they are worth, and a warning past
    4 epochs and past the repetition or excess-parameter range the law was fitted on."""
    unique = law.unique_tokens
    epochs = tokens / unique
    worth = float(effective_tokens(tokens, unique)) / unique
    excess = float(law.excess(params, tokens))
    text = (
        f"data-constrained (Muennighoff et al. 2023): {epochs:.2f} epochs of {unique:.3g} unique tokens, worth "
        f"{worth:.2f} epochs of fresh data (R*_D {R_STAR_DATA:.1f}); the model is {excess:.2f}x the size the "
        f"unique data can feed (R*_N {R_STAR_PARAMS:.1f})"
    )
    warnings = []
    if epochs > EPOCHS_WARN:
        warnings.append(
            f"past about {EPOCHS_WARN:g} epochs ({epochs:.1f}) repeated tokens are worth much less than fresh "
            "ones: find more unique data or plan a smaller budget"
        )
    if epochs > EPOCHS_TESTED or excess > EXCESS_TESTED:
        warnings.append(
            f"{epochs:.0f} epochs and a {excess:.1f}x model extrapolate Muennighoff et al.'s law past the runs "
            f"it was fitted on (at most about {EPOCHS_TESTED:.0f} epochs and {EXCESS_TESTED:.0f}x for 1B+ unique "
            "tokens); its losses are optimistic there"
        )
    return text, warnings
