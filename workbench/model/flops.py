"""Parameter and FLOP accounting for the Llama-3-style decoder. Pure arithmetic: no torch.

Conventions (also in the README):
- params_total counts every weight: input embedding, blocks, final norm, output projection.
- N ("params", what fits and plans use) = params_total minus the input embedding table. The output
  projection counts: it does a matmul per token; the embedding is a lookup.
- FLOPs per token = 6 N + 12 n_layers seq_len d_model, the one rule of the trainer, the sweeps and the
  plan: 6N for the weight matmuls (2 forward, 4 backward) plus the attention scores QK^T and the
  weighted values AV, 2 * 2 * T * d per token and layer forward, x3 with backward = 12 L T d, NOT
  halved for the causal mask. This is the convention of the MFU figures we compare with (PaLM's
  appendix B, torchtitan, Llama 3's Table 4), of Chinchilla's FLOP count, and what
  torch.utils.flop_counter counts for a training step (tests/test_flops.py checks it within 2%). A
  causal kernel skips about half of the score work, so this counts ~6 L T d FLOPs per token that the
  GPU never does: MFU is "model FLOPs", not hardware FLOPs. The rule `6N` drops the attention term.
- C = FLOPs per token x D, where D is the number of training tokens.
"""

from __future__ import annotations

from typing import Literal, Protocol


class ModelShape(Protocol):
    """What the accounting reads of a shape (workbench.model.shapes.ModelShape has it; so does a ModelConfig)."""

    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    ffn_dim: int
    vocab_size: int


FlopRule = Literal["6N+attn", "6N"]
# QK^T and AV: 2 matmuls x 2 FLOPs per multiply-add x T x d forward, x3 with backward; causal not halved
ATTENTION_FLOPS_PER_TOKEN_LAYER = 12


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
        return six_n + ATTENTION_FLOPS_PER_TOKEN_LAYER * shape.n_layers * seq_len * shape.d_model
    raise ValueError(f"unknown FLOP rule {rule!r}")


def tokens_for_budget(shape: ModelShape, budget_flops: float, seq_len: int, rule: FlopRule = "6N+attn") -> int:
    """Training tokens D such that D x FLOPs per token = budget_flops (rounded down)."""
    return int(budget_flops // flops_per_token(shape, seq_len, rule))


def training_flops(shape: ModelShape, tokens: float, seq_len: int, rule: FlopRule = "6N+attn") -> float:
    """C for training `shape` on `tokens` tokens."""
    return flops_per_token(shape, seq_len, rule) * tokens
