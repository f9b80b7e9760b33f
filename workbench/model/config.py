"""The decoder's config (`model:` of a run config): its shape and numerics, validated once."""

from __future__ import annotations

from pydantic import Field, model_validator

from workbench.core.configfile import Count, Number, Strict
from workbench.model.shapes import ModelShape


class ModelConfig(Strict):
    """The decoder shape (see workbench.model.shapes) and its numerics."""

    n_layers: Count = Field(gt=0)
    d_model: Count = Field(gt=0)
    n_heads: Count = Field(gt=0)
    n_kv_heads: Count = Field(gt=0)
    ffn_dim: Count = Field(gt=0)
    vocab_size: Count = Field(gt=1)
    rope_theta: Number = 500000.0
    norm_eps: Number = 1e-5
    init_std: Number = 0.02

    @model_validator(mode="after")
    def _heads_fit(self) -> ModelConfig:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_kv_heads {self.n_kv_heads} does not divide n_heads {self.n_heads}")
        if (self.d_model // self.n_heads) % 2:
            raise ValueError("head_dim (d_model / n_heads) must be even for RoPE")
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
