"""The decoder's config (`model:` of a run config): its shape and numerics, validated once."""

from __future__ import annotations

from pydantic import Field, model_validator

from workbench.core.configfile import Count, Number, Strict
from workbench.core.files import env_number
from workbench.model.shapes import ModelShape

# The largest model a config may build: 10T parameters (embeddings included), 10x the largest shape `plan` can
# pick (the size rule's top rung, ~1.03T) and 25x the 405B preset. WORKBENCH_MAX_PARAMS raises it.
MAX_PARAMS = 1e13
MAX_VOCAB = 1 << 32  # token ids are stored as uint32 at most


def max_params() -> float:
    """The cap on a model's total parameters: env WORKBENCH_MAX_PARAMS, else MAX_PARAMS (docs/LIMITS.md)."""
    return env_number("WORKBENCH_MAX_PARAMS", MAX_PARAMS)


class ModelConfig(Strict):
    """The decoder shape (see workbench.model.shapes) and its numerics."""

    n_layers: Count = Field(gt=0)
    d_model: Count = Field(gt=0)
    n_heads: Count = Field(gt=0)
    n_kv_heads: Count = Field(gt=0)
    ffn_dim: Count = Field(gt=0)
    vocab_size: Count = Field(gt=1, le=MAX_VOCAB)
    rope_theta: Number = Field(default=500000.0, gt=0)
    norm_eps: Number = Field(default=1e-5, gt=0, lt=1)
    init_std: Number = Field(default=0.02, gt=0, le=10)

    @model_validator(mode="after")
    def _heads_fit(self) -> ModelConfig:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_kv_heads {self.n_kv_heads} does not divide n_heads {self.n_heads}")
        if (self.d_model // self.n_heads) % 2:
            raise ValueError("head_dim (d_model / n_heads) must be even for RoPE")
        total, cap = self.shape().params_total, max_params()
        if total > cap:
            raise ValueError(
                f"the model has {total:.3g} parameters, above the cap of {cap:.3g} (docs/LIMITS.md); "
                "set WORKBENCH_MAX_PARAMS to build a larger one"
            )
        return self

    @classmethod
    def from_shape(cls, shape, **numerics) -> ModelConfig:
        """The config of a workbench.model.shapes.ModelShape (plus rope_theta, norm_eps, init_std overrides)."""
        fields = ("n_layers", "d_model", "n_heads", "n_kv_heads", "ffn_dim", "vocab_size")
        return cls(**{f: getattr(shape, f) for f in fields}, **numerics)

    def shape(self, name: str = "model"):
        """The pure ModelShape for parameter and FLOP accounting."""
        return ModelShape(
            name, self.n_layers, self.d_model, self.n_heads, self.n_kv_heads, self.ffn_dim, self.vocab_size
        )
