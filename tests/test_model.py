"""Properties of the decoder on CPU with tiny shapes."""

import math

import pytest
import torch
import torch.nn.functional as F

from workbench.model.config import ModelConfig
from workbench.model.transformer import apply_rope, build, rope_tables


def tiny(**overrides) -> ModelConfig:
    base = dict(n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, ffn_dim=96, vocab_size=64)
    return ModelConfig(**{**base, **overrides})


def test_causal_future_tokens_do_not_change_past_logits():
    torch.manual_seed(0)
    model = build(tiny(), max_seq_len=32).eval()
    tokens = torch.randint(0, 64, (2, 16))
    changed = tokens.clone()
    changed[:, 9] = (changed[:, 9] + 1) % 64
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    assert torch.equal(a[:, :9], b[:, :9])
    assert not torch.allclose(a[:, 9:], b[:, 9:])


def reference_mha(attn, x, cos, sin):
    """Plain multi-head attention written out: every head has its own K and V."""
    batch, seq, _ = x.shape
    hd = attn.head_dim
    q = attn.wq(x).view(batch, seq, attn.n_heads, hd).transpose(1, 2)
    k = attn.wk(x).view(batch, seq, -1, hd).transpose(1, 2)
    v = attn.wv(x).view(batch, seq, -1, hd).transpose(1, 2)
    groups = attn.n_heads // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
    scores = scores.masked_fill(torch.ones(seq, seq, dtype=torch.bool).triu(1), float("-inf"))
    out = F.softmax(scores, dim=-1) @ v
    return attn.wo(out.transpose(1, 2).reshape(batch, seq, -1))


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])
def test_attention_equals_plain_multi_head_attention(n_kv_heads):
    torch.manual_seed(1)
    model = build(tiny(n_kv_heads=n_kv_heads), max_seq_len=32)
    attn = model.layers[0].attention
    x = torch.randn(2, 12, 32)
    with torch.no_grad():
        ours = attn(x, model.rope_cos, model.rope_sin)
        ref = reference_mha(attn, x, model.rope_cos, model.rope_sin)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


def test_gqa_equals_mha_with_duplicated_kv_weights():
    torch.manual_seed(2)
    gqa = build(tiny(n_kv_heads=1), max_seq_len=32)
    mha = build(tiny(n_kv_heads=4), max_seq_len=32)
    state = gqa.state_dict()
    for key, value in list(state.items()):
        if key.endswith(("wk.weight", "wv.weight")):  # one KV head shared by 4 query heads
            state[key] = value.repeat(4, 1)
    mha.load_state_dict(state)
    tokens = torch.randint(0, 64, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(gqa(tokens), mha(tokens), rtol=1e-5, atol=1e-5)


def test_rope_scores_depend_only_on_relative_position():
    torch.manual_seed(3)
    hd = 16
    cos, sin = rope_tables(hd, 64, 500000.0)
    q, k = torch.randn(hd), torch.randn(hd)

    def score(m, n):
        qm = apply_rope(q.expand(1, 1, 64, hd), cos, sin)[0, 0, m]
        kn = apply_rope(k.expand(1, 1, 64, hd), cos, sin)[0, 0, n]
        return (qm * kn).sum()

    for offset in (0, 5, 17):
        torch.testing.assert_close(score(3 + offset, 1 + offset), score(3, 1), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(score(3, 1), score(3, 2))


def test_loss_at_init_is_close_to_log_vocab():
    torch.manual_seed(4)
    cfg = tiny(vocab_size=256, d_model=64, n_heads=4, n_kv_heads=2, ffn_dim=192)
    model = build(cfg, max_seq_len=64)
    tokens = torch.randint(0, 256, (8, 65))
    with torch.no_grad():
        loss = model(tokens[:, :-1], tokens[:, 1:]).item()
    assert abs(loss - math.log(256)) < 0.05


def test_no_biases_untied_output_and_init_scales():
    cfg = tiny(n_layers=8)
    model = build(cfg, max_seq_len=16)
    names = [n for n, _ in model.named_parameters()]
    assert not any(n.endswith("bias") for n in names)
    assert model.output.weight.data_ptr() != model.tok_embeddings.weight.data_ptr()
    wo = torch.cat([layer.attention.wo.weight.flatten() for layer in model.layers])
    wq = torch.cat([layer.attention.wq.weight.flatten() for layer in model.layers])
    assert wq.std().item() == pytest.approx(0.02, rel=0.1)
    assert wo.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.1)


def test_backward_runs_and_gradients_are_finite():
    torch.manual_seed(5)
    model = build(tiny(), max_seq_len=32)
    tokens = torch.randint(0, 64, (2, 17))
    loss = model(tokens[:, :-1], tokens[:, 1:])
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
