"""Parameter and FLOP accounting for the Llama-3-style decoder. Pure arithmetic: no torch.

Conventions (also in the README):
- params_total counts every weight: input embedding, blocks, final norm, output projection.
- N ("params", what fits and plans use) = params_total minus the input embedding table. The output
  projection counts: it does a matmul per token; the embedding is a lookup.
- FLOPs per token = 6 N + 6 n_layers seq_len d_model: 6N for the weight matmuls (2 forward, 4 backward)
  plus the attention scores QK^T and the weighted values AV (2 * 2 * T * d forward per layer, x3 with
  backward), causal masking not halved (the Chinchilla convention). The rule `6N` drops the second term.
- C = FLOPs per token x D, where D is the number of training tokens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from workbench.shapes import ModelShape

FlopRule = Literal["6N+attn", "6N"]


def layer_params(d_model: int, n_heads: int, n_kv_heads: int, ffn_dim: int) -> int:
    """Weights of one block: q, k, v, o projections, SwiGLU (w1, w3, w2) and two RMSNorm gains."""
    head_dim = d_model // n_heads
    attention = 2 * d_model * d_model + 2 * d_model * n_kv_heads * head_dim
    ffn = 3 * d_model * ffn_dim
    return attention + ffn + 2 * d_model


def params_total(shape: ModelShape) -> int:
    """Every weight of the model, embedding and output projection included."""
    blocks = shape.n_layers * layer_params(shape.d_model, shape.n_heads, shape.n_kv_heads, shape.ffn_dim)
    return 2 * shape.vocab_size * shape.d_model + blocks + shape.d_model


def params_non_embedding(shape: ModelShape) -> int:
    """N: all weights but the input embedding table (the output projection counts)."""
    return params_total(shape) - shape.vocab_size * shape.d_model


def flops_per_token(shape: ModelShape, seq_len: int, rule: FlopRule = "6N+attn") -> float:
    """Training FLOPs per token (forward + backward) under `rule`."""
    six_n = 6.0 * params_non_embedding(shape)
    if rule == "6N":
        return six_n
    if rule == "6N+attn":
        return six_n + 6.0 * shape.n_layers * seq_len * shape.d_model
    raise ValueError(f"unknown FLOP rule {rule!r}")


def tokens_for_budget(shape: ModelShape, budget_flops: float, seq_len: int, rule: FlopRule = "6N+attn") -> int:
    """Training tokens D such that D x FLOPs per token = budget_flops (rounded down)."""
    return int(budget_flops // flops_per_token(shape, seq_len, rule))


def training_flops(shape: ModelShape, tokens: float, seq_len: int, rule: FlopRule = "6N+attn") -> float:
    """C for training `shape` on `tokens` tokens."""
    return flops_per_token(shape, seq_len, rule) * tokens
