"""Scaling laws for planning: the built-in published laws and laws read from a fit (fits/NAME.json).

Pure: no torch and no file access here; `law_from_fit` takes the already-parsed JSON object.

- Parametric (Chinchilla approach 3): L(N, D) = E + A / N^alpha + B / D^beta, N non-embedding
  parameters, D training tokens, L in nats per token. Compute-optimal at C = 6 N D (DESIGN.md):
  N_opt = G (C/6)^(beta/(alpha+beta)), G = (alpha A / (beta B))^(1/(alpha+beta)), D_opt = C / (6 N_opt).
- Token law (Llama 3): D*(C) = A C^alpha tokens, and N* = C / (6 D*). It predicts no loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from workbench.errors import WorkbenchError


def _exp(x: float) -> float:
    return math.exp(x) if x < 700 else math.inf


@dataclass(frozen=True)
class ParametricLaw:
    """L(N, D) = E + A / N^alpha + B / D^beta (loss in nats/token)."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def loss(self, params: float, tokens: float) -> float:
        """Predicted loss of `params` non-embedding parameters trained on `tokens` tokens."""
        # in logs: an extreme bootstrap draw gives inf, not an OverflowError
        if not (0 < params < math.inf and 0 < tokens < math.inf):
            return math.inf
        return (
            self.E
            + _exp(math.log(self.A) - self.alpha * math.log(params))
            + _exp(math.log(self.B) - self.beta * math.log(tokens))
        )

    def optimum(self, budget_flops: float) -> tuple[float, float]:
        """(N_opt params, D_opt tokens) minimising the loss at C = 6 N D (closed form)."""
        total = self.alpha + self.beta
        log_g = (math.log(self.alpha * self.A) - math.log(self.beta * self.B)) / total
        params = _exp(log_g + self.beta / total * math.log(budget_flops / 6.0))
        return params, budget_flops / (6.0 * params)

    def tokens_for_loss(self, params: float, loss: float) -> float:
        """Tokens D with L(params, D) = loss; inf when `params` cannot reach that loss."""
        room = loss - self.E - self.A / params**self.alpha
        if room <= 0:
            return math.inf
        log_tokens = (math.log(self.B) - math.log(room)) / self.beta
        return math.exp(log_tokens) if log_tokens < 700 else math.inf


@dataclass(frozen=True)
class PowerLaw:
    """y = coef * x^exp (tokens from FLOPs, batch tokens from FLOPs, LR from FLOPs)."""

    coef: float
    exp: float

    def __call__(self, x: float) -> float:
        return self.coef * x**self.exp


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
    draws: tuple[ParametricLaw, ...] = ()
    isoflop: tuple[PowerLaw, PowerLaw] | None = None  # (N*(C), D*(C)), a cross-check from a fit
    hparams: HparamLaws | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def optimum(self, budget_flops: float) -> tuple[float, float]:
        """(N* params, D* tokens) at `budget_flops` FLOPs."""
        if self.parametric is not None:
            return self.parametric.optimum(budget_flops)
        if self.isoflop is not None and self.token_law is None:  # an isoFLOP law: N*(C) and D*(C) as fitted
            n_law, d_law = self.isoflop
            return n_law(budget_flops), d_law(budget_flops)
        tokens = self.token_law(budget_flops)
        return budget_flops / (6.0 * tokens), tokens


CHINCHILLA = Law(
    "chinchilla",
    "Hoffmann et al. 2022, Training Compute-Optimal Large Language Models, approach 3",
    ParametricLaw(1.69, 406.4, 410.7, 0.34, 0.28),
)
EPOCH = Law(
    "epoch",
    "Besiroglu et al. 2024, Chinchilla Scaling: A replication attempt (maximum-likelihood refit)",
    ParametricLaw(1.82, 482.01, 2085.43, 0.3478, 0.3658),
    notes=("their Huber grid fit on 240 points gives E 1.8172, A 477.8, B 2143, alpha 0.3473, beta 0.3672",),
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
    )


BUILTIN = ("chinchilla", "epoch", "llama3")


def builtin_law(name: str, budget_flops: float) -> Law:
    """A built-in law by name (chinchilla, epoch, llama3)."""
    key = name.strip().lower()
    if key == "chinchilla":
        return CHINCHILLA
    if key == "epoch":
        return EPOCH
    if key == "llama3":
        return llama3_law(budget_flops)
    raise WorkbenchError(f"--law: unknown law {name!r}", f"Use {', '.join(BUILTIN)} or a fit file fits/NAME.json.")


def _positive(block: dict, key: str, where: str) -> float:
    value = block.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        got = "missing" if key not in block else f"{value!r}"
        raise WorkbenchError(f"{where}.{key} must be a positive number (got {got})", "Refit with `workbench fit`.")
    return float(value)


def _draws(block: dict, keys: tuple[str, ...], where: str) -> list[tuple[float, ...]]:
    """Rows of bootstrap draws; rows with a missing, non-finite or non-positive value (failed resamples) drop."""
    draws = block.get("draws")
    if draws is None:
        return []
    if not isinstance(draws, dict) or any(not isinstance(draws.get(k), list) for k in keys):
        raise WorkbenchError(f"{where}.draws must map each of {', '.join(keys)} to a list", "Refit with workbench fit.")
    lengths = {len(draws[k]) for k in keys}
    if len(lengths) != 1:
        raise WorkbenchError(f"{where}.draws lists differ in length ({sorted(lengths)})", "Refit with `workbench fit`.")

    def good(x: object) -> bool:
        return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) and x > 0

    rows = zip(*(draws[k] for k in keys), strict=True)
    return [tuple(float(x) for x in row) for row in rows if all(good(x) for x in row)]


def _hparams(data: dict, source: str) -> HparamLaws | None:
    """The `hparams` block ({batch, lr}: {coef, exp}); exp null (a tune study at one budget) is a constant."""
    block = data.get("hparams")
    if block is None:
        return None
    if not isinstance(block, dict) or not all(isinstance(block.get(k), dict) for k in ("batch", "lr")):
        raise WorkbenchError(f"{source}: hparams must have batch and lr laws {{coef, exp}}", "Refit the tune sweep.")
    batch, lr = block["batch"], block["lr"]
    for where, law in (("hparams.batch", batch), ("hparams.lr", lr)):
        _positive(law, "coef", f"{source}: {where}")
        exp = law.get("exp")
        if exp is not None and (isinstance(exp, bool) or not isinstance(exp, int | float) or not math.isfinite(exp)):
            raise WorkbenchError(f"{source}: {where}.exp must be a number or null", "Refit the tune sweep.")
    if batch.get("exp") is None or lr.get("exp") is None:
        text = f"batch {batch['coef']:.4g} tokens, lr {lr['coef']:.4g} (tuned at one budget: no exponent, constant)"
    else:
        text = f"batch {batch['coef']:.4g} C^{batch['exp']:.4g} tokens, lr {lr['coef']:.4g} C^{lr['exp']:.4g}"
    return HparamLaws(
        PowerLaw(float(batch["coef"]), float(batch.get("exp") or 0.0)),
        PowerLaw(float(lr["coef"]), float(lr.get("exp") or 0.0)),
        f"fitted hparams law in {source}: {text}",
    )


def hparams_from_json(data: object, source: str) -> HparamLaws:
    """Batch and LR laws from the parsed JSON of fits/SWEEP-hparams.json (`workbench sweep tune`)."""
    laws = _hparams(data, source) if isinstance(data, dict) else None
    if laws is None:
        raise WorkbenchError(
            f"{source} has no hparams laws", "Use the fits/SWEEP-hparams.json of `workbench sweep tune`."
        )
    return laws


def law_from_fit(data: object, source: str) -> Law:
    """A Law from the parsed JSON of fits/NAME.json (`source` names the file in errors)."""
    if not isinstance(data, dict):
        raise WorkbenchError(f"{source}: expected a JSON object at the top level", "Use a file from `workbench fit`.")
    block = data.get("parametric")
    if not isinstance(block, dict):
        raise WorkbenchError(
            f"{source} has no parametric law",
            "Refit with `workbench fit --method parametric` (or all), or use --law chinchilla|epoch|llama3.",
        )
    keys = ("E", "A", "B", "alpha", "beta")
    point = ParametricLaw(*(_positive(block, k, f"{source}: parametric") for k in keys))
    draws = tuple(ParametricLaw(*row) for row in _draws(block, keys, f"{source}: parametric"))
    isoflop = None
    iso = data.get("isoflop")
    if isinstance(iso, dict) and all(isinstance(iso.get(k), int | float) for k in ("G", "a", "H", "b")):
        isoflop = (PowerLaw(float(iso["G"]), float(iso["a"])), PowerLaw(float(iso["H"]), float(iso["b"])))
    name = str(data.get("name") or source)
    sweep = data.get("sweep")
    return Law(
        name,
        f"parametric fit {source}" + (f" of sweep {sweep}" if sweep else "") + f" ({len(draws)} bootstrap draws)",
        point,
        draws=draws,
        isoflop=isoflop,
        hparams=_hparams(data, source),
    )
