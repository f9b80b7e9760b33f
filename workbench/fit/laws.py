"""Scaling laws: the one definition of the parametric loss law, the power laws, the published
constants, and laws read from a fit record. Pure numpy: no torch, no file access.

Every function is vectorised: the law's parameters may be floats (the point estimate) or arrays of K
bootstrap draws, and N (non-embedding parameters), D (tokens) and C (FLOPs) broadcast against them. A
scalar call is the size-1 case and returns a float.

- Parametric (Chinchilla approach 3): L(N, D) = E + A / N^alpha + B / D^beta, L in nats per token.
  Compute-optimal at C = 6 N D (DESIGN.md): N_opt = G (C/6)^(beta/(alpha+beta)),
  G = (alpha A / (beta B))^(1/(alpha+beta)), D_opt = C / (6 N_opt). Evaluated in logs, so an extreme
  bootstrap draw gives inf, not an overflow.
- Power law y = coef x^exp: the isoFLOP laws N*(C) = G C^a and D*(C) = H C^b, the Llama 3 token law
  D*(C) = A C^alpha (N* = C / (6 D*), no loss), and the batch and LR laws of the compute budget.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from workbench.core.errors import WorkbenchError
from workbench.records import PARAM_NAMES, FitRecord, HparamsBlock


def _out(value: np.ndarray) -> float | np.ndarray:
    """A float for a 0-d result (scalar inputs), else the array."""
    return float(value) if np.ndim(value) == 0 else value


def _log(x: ArrayLike) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(np.asarray(x, dtype=float))


def _exp(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return np.exp(x)


@dataclass(frozen=True)
class FlopsPerToken:
    """Training FLOPs per token as a function of N: 6 N (1 + rho N^-kappa), the weight matmuls (6N) and the
    attention term as a share of them (workbench.model.flops: 12 L T d, a share of about T / (6 d) that falls
    as models widen). Fitted on runs (`fit`: their FLOPs / tokens against N), or on the size rule's shapes at
    a sequence length (the plan); rho 0 is C = 6 N D. Every conversion of a budget C into N and D goes through
    one (ParametricLaw.optimum), so that budgets counted with the attention term are solved with it."""

    rho: float = 0.0
    kappa: float = 0.0

    def __call__(self, params: ArrayLike) -> np.ndarray:
        n = np.asarray(params, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return 6.0 * n * (1.0 + self.rho * n ** (-self.kappa))

    def share(self, params: ArrayLike) -> np.ndarray:
        """The attention term's share of the FLOPs per token at N."""
        r = self.rho * np.asarray(params, dtype=float) ** (-self.kappa)
        return r / (1.0 + r)

    def as_dict(self) -> dict[str, float]:
        return {"rho": float(self.rho), "kappa": float(self.kappa)}

    @classmethod
    def of(cls, block: Mapping[str, object] | None) -> FlopsPerToken:
        """From a record's {rho, kappa} block; None or an empty block is C = 6 N D."""
        if not block:
            return SIX_N
        return cls(float(block.get("rho") or 0.0), float(block.get("kappa") or 0.0))

    @classmethod
    def fit(cls, params: ArrayLike, flops_per_token: ArrayLike) -> FlopsPerToken:
        """Least squares of log(fpt / 6N - 1) on log N over the runs whose FLOPs exceed 6 N D by more than
        0.1%; C = 6 N D when none does (FLOPs counted with the 6N rule, or no FLOPs column)."""
        n, fpt = np.asarray(params, dtype=float), np.asarray(flops_per_token, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            extra = fpt / (6.0 * n) - 1.0
        keep = np.isfinite(extra) & (extra > 1e-3) & (n > 0)
        if keep.sum() < max(2, 0.5 * len(n)):
            return SIX_N
        x, y = np.log(n[keep]), np.log(extra[keep])
        if np.ptp(x) < 1e-9:
            return cls(float(np.exp(y.mean())), 0.0)
        slope, intercept = np.polyfit(x, y, 1)
        return cls(float(np.exp(intercept)), float(-slope))


SIX_N = FlopsPerToken()  # C = 6 N D: published laws, and budgets counted without the attention term


@dataclass(frozen=True)
class ParametricLaw:
    """L(N, D) = E + A / N^alpha + B / D^beta (loss in nats/token); fields are floats or arrays of draws."""

    E: float | np.ndarray
    A: float | np.ndarray
    B: float | np.ndarray
    alpha: float | np.ndarray
    beta: float | np.ndarray

    @classmethod
    def of(cls, params: Mapping[str, object]) -> ParametricLaw:
        """The law of a mapping with keys E, A, B, alpha, beta (floats or lists of draws)."""
        values = [np.asarray(params[k], dtype=float) for k in PARAM_NAMES]
        return cls(*(float(v) if v.ndim == 0 else v for v in values))

    def as_dict(self) -> dict[str, float | np.ndarray]:
        """{E, A, B, alpha, beta}."""
        return {k: getattr(self, k) for k in PARAM_NAMES}

    @property
    def size(self) -> int:
        """Number of draws (1 for a point estimate)."""
        return int(np.size(self.E))

    def row(self, i: int) -> ParametricLaw:
        """Draw i as a scalar law."""
        return ParametricLaw(*(float(np.asarray(getattr(self, k))[i]) for k in PARAM_NAMES))

    def loss(self, params: ArrayLike, tokens: ArrayLike) -> float | np.ndarray:
        """Predicted loss of `params` non-embedding parameters trained on `tokens` tokens (inf where
        N or D is not a positive finite number)."""
        n, d = np.asarray(params, dtype=float), np.asarray(tokens, dtype=float)
        log_n, log_d = _log(n), _log(d)
        with np.errstate(over="ignore", invalid="ignore"):
            value = (
                self.E
                + _exp(_log(self.A) - np.asarray(self.alpha) * log_n)
                + _exp(_log(self.B) - np.asarray(self.beta) * log_d)
            )
        ok = (n > 0) & (n < np.inf) & (d > 0) & (d < np.inf)
        return _out(np.where(ok, value, np.inf))

    def optimum(
        self, budget_flops: ArrayLike, flops: FlopsPerToken | None = None
    ) -> tuple[float | np.ndarray, float | np.ndarray]:
        """(N_opt params, D_opt tokens) minimising the loss at C = flops(N) D: the closed form for C = 6 N D
        (flops None or rho 0), else the root of dL/dlog N along the budget by bisection from a bracket of 30x
        about the closed form (the derivative rises through zero once: the loss is unimodal in log N)."""
        alpha, beta = np.asarray(self.alpha, dtype=float), np.asarray(self.beta, dtype=float)
        total = alpha + beta
        c = np.asarray(budget_flops, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_g = (_log(alpha * self.A) - _log(beta * self.B)) / total
            log_n = log_g + beta / total * _log(c / 6.0)
        if flops is None or flops.rho == 0.0:
            params = _exp(log_n)
            with np.errstate(divide="ignore", invalid="ignore"):
                return _out(params), _out(c / (6.0 * params))
        lo, hi = log_n - np.log(30.0), log_n + np.log(30.0)
        for _ in range(64):
            mid = 0.5 * (lo + hi)
            rising = self._slope(mid, c, flops) > 0
            lo, hi = np.where(rising, lo, mid), np.where(rising, mid, hi)
        params = _exp(0.5 * (lo + hi))
        with np.errstate(divide="ignore", invalid="ignore"):
            return _out(params), _out(c / flops(params))

    def _slope(self, log_n: np.ndarray, c: np.ndarray, flops: FlopsPerToken) -> np.ndarray:
        """dL/dlog N along C = flops(N) D."""
        n = _exp(log_n)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            log_d = _log(c) - _log(flops(n))
            dlog_d = -(1.0 - flops.kappa * flops.share(n))  # dlog D / dlog N
            term_n = np.asarray(self.alpha) * _exp(_log(self.A) - np.asarray(self.alpha) * log_n)
            term_d = np.asarray(self.beta) * _exp(_log(self.B) - np.asarray(self.beta) * log_d)
            return -term_n - term_d * dlog_d

    def optimal_loss(self, budget_flops: ArrayLike, flops: FlopsPerToken | None = None) -> float | np.ndarray:
        """L*(C): the loss at the compute-optimal allocation for C FLOPs (counted by `flops`, default 6ND)."""
        return self.loss(*self.optimum(budget_flops, flops))

    def tokens_for_loss(self, params: ArrayLike, loss: ArrayLike) -> float | np.ndarray:
        """Tokens D with L(params, D) = loss; inf where `params` cannot reach that loss."""
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            room = np.asarray(loss, dtype=float) - self.E - self.A / np.asarray(params, dtype=float) ** self.alpha
            log_tokens = (_log(self.B) - _log(np.where(room > 0, room, 1.0))) / self.beta
            return _out(np.where(room > 0, _exp(log_tokens), np.inf))


@dataclass(frozen=True)
class PowerLaw:
    """y = coef * x^exp (tokens from FLOPs, batch tokens from FLOPs, LR from FLOPs); coef, exp may be draws."""

    coef: float | np.ndarray
    exp: float | np.ndarray

    def __call__(self, x: ArrayLike) -> float | np.ndarray:
        with np.errstate(over="ignore", invalid="ignore"):
            return _out(np.asarray(self.coef) * np.asarray(x, dtype=float) ** np.asarray(self.exp))


# --- the same laws on mappings (a fit record's `parametric` / `isoflop` block or its draws) ---


def predict_loss(params: Mapping[str, object], N: ArrayLike, D: ArrayLike) -> np.ndarray:
    """L(N, D) of the law in `params` (keys E, A, B, alpha, beta: floats or draws)."""
    return np.asarray(ParametricLaw.of(params).loss(N, D))


def optimal_allocation(
    params: Mapping[str, object], C: ArrayLike, flops: FlopsPerToken | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(N_opt params, D_opt tokens) of the law in `params` at C FLOPs counted by `flops` (default C = 6 N D)."""
    n_opt, d_opt = ParametricLaw.of(params).optimum(C, flops)
    return np.asarray(n_opt), np.asarray(d_opt)


EXPONENT_RANGE = (0.05, 2.5)  # a fitted alpha or beta outside this is no power law of the data (a step or a constant)
MIN_E = 0.01  # nats: an irreducible loss below this is a fit that sent E to 0, not a measured floor


def degenerate_reasons(
    params: Mapping[str, object], sizes: tuple[float, float] | None = None, budgets_flops: ArrayLike = ()
) -> list[str]:
    """Why a fitted parametric law cannot be planned with, one phrase each (empty: none): an exponent outside
    EXPONENT_RANGE, E below MIN_E, or its N* at a fitted budget outside the swept sizes (min, max)."""
    law = ParametricLaw.of(params)
    reasons = [
        f"{name} {value:.3g} is outside [{EXPONENT_RANGE[0]:g}, {EXPONENT_RANGE[1]:g}]"
        for name, value in (("alpha", law.alpha), ("beta", law.beta))
        if not EXPONENT_RANGE[0] <= value <= EXPONENT_RANGE[1]
    ]
    if law.E < MIN_E:
        reasons.append(f"E {law.E:.2g} is below {MIN_E:g} nats (the fit sent the irreducible loss to 0)")
    budgets = np.atleast_1d(np.asarray(budgets_flops, dtype=float))
    if sizes is not None and budgets.size and not reasons:
        n_opt = np.atleast_1d(law.optimum(budgets)[0])
        outside = [(c, n) for c, n in zip(budgets, n_opt, strict=True) if not sizes[0] <= n <= sizes[1]]
        if outside:
            c, n = outside[0]
            reasons.append(
                f"its N* at {c:.3g} FLOPs ({n:.3g}) lies outside the swept sizes [{sizes[0]:.3g}, {sizes[1]:.3g}]"
                + (f" (and at {len(outside) - 1} more budgets)" if len(outside) > 1 else "")
            )
    return reasons


def optimal_loss(params: Mapping[str, object], C: ArrayLike, flops: FlopsPerToken | None = None) -> np.ndarray:
    """L*(C) of the law in `params` at C FLOPs counted by `flops` (default C = 6 N D)."""
    return np.asarray(ParametricLaw.of(params).optimal_loss(C, flops))


def isoflop_allocation(
    params: Mapping[str, object], C: ArrayLike, flops: FlopsPerToken | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(N*(C) = G C^a params, D*(C) tokens) from the isoFLOP power laws in `params`: D* = C / flops(N*) when
    the budgets' FLOPs per token is given (where it counts attention, D*(C) is no power law), else H C^b."""
    n_law = PowerLaw(np.asarray(params["G"], dtype=float), np.asarray(params["a"], dtype=float))
    n_opt = np.asarray(n_law(C))
    if flops is not None and flops.rho != 0.0:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return n_opt, np.asarray(np.asarray(C, dtype=float) / flops(n_opt))
    d_law = PowerLaw(np.asarray(params["H"], dtype=float), np.asarray(params["b"], dtype=float))
    return n_opt, np.asarray(d_law(C))


@dataclass(frozen=True)
class HparamLaws:
    """Batch size (tokens) and peak LR as power laws of the compute budget (FLOPs), with their source."""

    batch_tokens: PowerLaw
    lr_peak: PowerLaw
    source: str


# DeepSeek LLM (DeepSeek-AI 2024, arXiv:2401.02954, Sec. 3.1): fitted on budgets 1e17 to 3e20 FLOPs.
DEEPSEEK_HPARAMS = HparamLaws(
    PowerLaw(0.2920, 0.3271),
    PowerLaw(0.3118, -0.1250),
    "DeepSeek LLM (2024) Sec. 3.1: B_opt = 0.292 C^0.3271 tokens, lr_opt = 0.3118 C^-0.125",
)
DEEPSEEK_RANGE_FLOPS = (1e17, 3e20)


@dataclass(frozen=True)
class Law:
    """A law to plan with: a parametric loss law and/or a token law, bootstrap draws, and its sources."""

    name: str
    source: str
    parametric: ParametricLaw | None = None
    token_law: PowerLaw | None = None
    draws: ParametricLaw | None = None  # the bootstrap draws as one law of arrays
    isoflop: tuple[PowerLaw, PowerLaw] | None = None  # (N*(C), D*(C)), a cross-check from a fit
    hparams: HparamLaws | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    convention: str = ""  # which parameters the law's N counts, and how its FLOPs were counted
    flops: FlopsPerToken = field(default_factory=lambda: SIX_N)  # how the law's budgets were counted

    def optimum(self, budget_flops: float) -> tuple[float, float]:
        """(N* params, D* tokens) at `budget_flops` FLOPs, counted as the law's budgets were (`flops`)."""
        if self.parametric is not None:
            return self.parametric.optimum(budget_flops, self.flops)
        if self.isoflop is not None and self.token_law is None:  # an isoFLOP law: N*(C) and D*(C) as fitted
            n_law, d_law = self.isoflop
            return n_law(budget_flops), d_law(budget_flops)
        tokens = self.token_law(budget_flops)
        return budget_flops / (6.0 * tokens), tokens


# Published laws, defined once (fit/synthetic.py draws its test sweeps from these)
CHINCHILLA_LAW = ParametricLaw(1.69, 406.4, 410.7, 0.34, 0.28)
EPOCH_LAW = ParametricLaw(1.82, 482.01, 2085.43, 0.3478, 0.3658)
HOFFMANN_CONVENTION = (
    "N counts all parameters, embeddings included (Hoffmann et al.'s count); C = 6 N D. This workbench's N "
    "leaves out the input embedding: for one model the law counts more (its input embedding), which matters at small N"
)
CHINCHILLA = Law(
    "chinchilla",
    "Hoffmann et al. 2022, Training Compute-Optimal Large Language Models, approach 3 as published "
    "(E 1.69, A 406.4, B 410.7, alpha 0.34, beta 0.28)",
    CHINCHILLA_LAW,
    notes=(
        "the published approach-3 fit is rounded and, as Besiroglu et al. 2024 showed, inconsistent with "
        "Hoffmann's own approaches 1 and 2 (about 20 tokens/parameter): it gives about 50 tokens/parameter "
        "at 1e21 FLOPs and 139 at 3.8e25; use --law epoch for the refit",
    ),
    convention=HOFFMANN_CONVENTION,
)
EPOCH = Law(
    "epoch",
    "Besiroglu et al. 2024, Chinchilla Scaling: A replication attempt (maximum-likelihood refit of "
    "Hoffmann et al.'s data: E 1.82, A 482.01, B 2085.43, alpha 0.3478, beta 0.3658)",
    EPOCH_LAW,
    notes=("their Huber grid fit on 240 points gives E 1.8172, A 477.8, B 2143, alpha 0.3473, beta 0.3672",),
    convention=HOFFMANN_CONVENTION + " (the refit uses Hoffmann et al.'s data, so the same count)",
)
DEFAULT_LAW = "epoch"
DEFAULT_REASON = (
    "default law epoch (Besiroglu et al. 2024's refit of Hoffmann et al.'s data): it agrees with Hoffmann's "
    "approaches 1 and 2 and with Llama 3's isoFLOP law (about 20 tokens/parameter at 1e21 FLOPs: 21.6 vs 19.2), "
    "while the published approach-3 fit (--law chinchilla) gives 50, from rounded constants the refit "
    "could not reproduce"
)
LLAMA3_FIGURE = PowerLaw(0.299, 0.537)  # Figure 3 legend of the Llama 3 report
LLAMA3_TEXT = PowerLaw(0.29, 0.53)  # the same law as rounded in the report's text


def llama3_law(budget_flops: float) -> Law:
    """The Llama 3 token law D*(C) = A C^alpha (Figure 3's coefficients), with the coefficient note at C."""
    text_tokens, figure_tokens = LLAMA3_TEXT(budget_flops), LLAMA3_FIGURE(budget_flops)
    note = (
        f"the report's text rounds (A, alpha) to (0.29, 0.53), which gives {text_tokens:.3g} tokens at "
        f"{budget_flops:.3g} FLOPs; its Figure 3 legend has (0.299, 0.537), used here, which gives "
        f"{figure_tokens:.3g} (at 3.8e25: 10.5T vs 16.3T, the report states 16.55T); and "
        "6 x 402B x 16.55T = 3.99e25, not the 3.8e25 the report names"
    )
    return Law(
        "llama3",
        "Llama 3 Herd of Models (2024) Sec. 3.2.1, Figure 3: D*(C) = A C^alpha; N* = C / (6 D*)",
        token_law=LLAMA3_FIGURE,
        notes=(note, "the law gives tokens only: no predicted loss and no inference-aware sizing"),
        convention="a token law D*(C) fitted on isoFLOP minima (6e18..1e22 FLOPs); N* = C / (6 D*) here, the "
        "report does not say which parameters its FLOPs count",
    )


BUILTIN = ("chinchilla", "epoch", "llama3")
ALIASES = {"hoffmann": "chinchilla", "besiroglu": "epoch"}


def builtin_law(name: str, budget_flops: float) -> Law:
    """A built-in law by name (chinchilla or hoffmann, epoch or besiroglu, llama3)."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key == "chinchilla":
        return CHINCHILLA
    if key == "epoch":
        return EPOCH
    if key == "llama3":
        return llama3_law(budget_flops)
    raise WorkbenchError(f"--law: unknown law {name!r}", f"Use {', '.join(BUILTIN)} or a fit file fits/NAME.json.")


def hparam_laws(block: HparamsBlock, source: str) -> HparamLaws:
    """Batch and LR laws of a validated `hparams` block; exp null (tuned at one budget) is a constant."""
    batch, lr = block.batch, block.lr
    if batch.exp is None or lr.exp is None:
        text = f"batch {batch.coef:.4g} tokens, lr {lr.coef:.4g} (tuned at one budget: no exponent, constant)"
    else:
        text = f"batch {batch.coef:.4g} C^{batch.exp:.4g} tokens, lr {lr.coef:.4g} C^{lr.exp:.4g}"
    return HparamLaws(
        PowerLaw(batch.coef, batch.exp or 0.0),
        PowerLaw(lr.coef, lr.exp or 0.0),
        f"fitted hparams law in {source}: {text}",
    )


def law_from_fit(record: FitRecord, source: str) -> Law:
    """The Law of a validated fit record (`source` names the file in messages)."""
    if record.parametric is None:
        raise WorkbenchError(
            f"{source} has no parametric law",
            "Refit with `workbench fit --method parametric` (or all), or use --law chinchilla|epoch|llama3.",
        )
    par = record.parametric
    draws = ParametricLaw.of(par.good_draws())
    iso = record.isoflop
    isoflop = (PowerLaw(iso.G, iso.a), PowerLaw(iso.H, iso.b)) if iso is not None and iso.has_laws else None
    sweep = f" of sweep {record.sweep}" if record.sweep else ""
    return Law(
        record.name or source,
        f"parametric fit {source}{sweep} ({draws.size} bootstrap draws)",
        ParametricLaw(par.E, par.A, par.B, par.alpha, par.beta),
        draws=draws if draws.size else None,
        isoflop=isoflop,
        hparams=hparam_laws(record.hparams, source) if record.hparams else None,
        flops=FlopsPerToken.of(record.flops_per_token),
    )


def isoflop_law(record: FitRecord, hparams: HparamLaws | None = None) -> Law:
    """The isoFLOP law of a fit (Llama 3's method): N*(C) and D*(C) from the parabolas' vertices."""
    iso = record.isoflop
    if iso is None or not iso.has_laws:
        raise WorkbenchError(f"fit {record.name} has no isoFLOP law", "Refit with `workbench fit --method isoflop`.")
    return Law(
        f"{record.name}-isoflop",
        f"fits/{record.name}.json: isoFLOP minima of {len(iso.minima)} budgets (Llama 3 / Chinchilla approach 2)",
        isoflop=(PowerLaw(iso.G, iso.a), PowerLaw(iso.H, iso.b)),
        hparams=hparams,
    )
