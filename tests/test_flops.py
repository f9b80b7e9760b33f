"""The FLOP rule against torch's own count of one training step (forward + backward)."""

from __future__ import annotations

import pytest

from workbench.model import flops
from workbench.model.shapes import shape_for


@pytest.mark.parametrize(
    ("n_layers", "d_model", "vocab", "seq_len"), [(2, 64, 256, 128), (4, 256, 512, 256), (6, 512, 1024, 512)]
)
def test_flops_per_token_matches_torch_flop_counter(n_layers, d_model, vocab, seq_len):
    """torch.utils.flop_counter counts every matmul of a training step; the attention through the math
    kernel (the CPU's fused kernel is not counted) computes the full T x T scores: the unhalved 12 L T d."""
    torch = pytest.importorskip("torch")
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from workbench.model.config import ModelConfig
    from workbench.model.transformer import build

    shape = shape_for(n_layers, d_model, vocab)
    model = build(ModelConfig.from_shape(shape), max_seq_len=seq_len)
    tokens = torch.randint(0, vocab, (2, seq_len), generator=torch.Generator().manual_seed(0))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(tokens, tokens).backward()
    counted = counter.get_total_flops() / tokens.numel()
    assert flops.flops_per_token(shape, seq_len) == pytest.approx(counted, rel=0.02)
    # and the halved convention would be off by more than the tolerance at these lengths
    halved = flops.flops_per_token(shape, seq_len) - 6 * n_layers * seq_len * d_model
    assert abs(halved / counted - 1) > 0.02


def test_rule_terms():
    shape = shape_for(4, 256, 512)
    assert flops.flops_per_token(shape, 256, "6N") == 6 * shape.params
    assert flops.flops_per_token(shape, 256) == 6 * shape.params + 12 * 4 * 256 * 256
    assert flops.tokens_for_budget(shape, 1e15, 256) == int(1e15 // flops.flops_per_token(shape, 256))
