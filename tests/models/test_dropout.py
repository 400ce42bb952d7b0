"""FastDropout: nn.Dropout's distribution and gradient, a cheaper mask, deterministic under the seed."""

from __future__ import annotations

import pytest
import torch

from featmux.models.dropout import FastDropout, keep_mask
from featmux.models.layers import MLP


def test_keeps_the_requested_share_and_preserves_the_mean():
    torch.manual_seed(0)
    layer = FastDropout(0.4)
    y = layer(torch.ones(1000, 1000))
    kept = y > 0
    assert kept.float().mean().item() == pytest.approx(0.6, abs=0.002)  # 1M draws: std 0.0005
    assert y.mean().item() == pytest.approx(1.0, abs=0.004)
    assert torch.all(y[kept] == 65536 / layer.keep_levels)  # inverse of the rounded keep probability


def test_gradient_is_the_same_mask_and_scale():
    torch.manual_seed(1)
    x = torch.randn(64, 32, requires_grad=True)
    y = FastDropout(0.5)(x)
    y.sum().backward()
    mask = y.detach() != 0
    torch.testing.assert_close(x.grad, mask.float() * 2.0)
    torch.testing.assert_close(y.detach(), x.detach() * mask * 2.0)


def test_bf16_input_keeps_its_dtype_and_eval_is_identity():
    layer = FastDropout(0.3)
    x = torch.randn(8, 16, dtype=torch.bfloat16)
    assert layer(x).dtype == torch.bfloat16
    layer.eval()
    assert layer(x) is x
    assert FastDropout(0.0)(x) is x
    assert torch.all(FastDropout(1.0)(x) == 0)


def test_same_seed_same_mask_and_bits_are_uniform():
    torch.manual_seed(5)
    a = keep_mask(torch.Size([7, 9]), 30000, torch.device("cpu"))
    torch.manual_seed(5)
    b = keep_mask(torch.Size([7, 9]), 30000, torch.device("cpu"))
    assert torch.equal(a, b) and a.shape == (7, 9)
    share = keep_mask(torch.Size([400_000]), 16384, torch.device("cpu")).float().mean().item()
    assert share == pytest.approx(0.25, abs=0.003)  # every one of the four int16 lanes is used
    with pytest.raises(ValueError, match="dropout probability"):
        FastDropout(1.5)


def test_mlp_uses_it():
    mlp = MLP(4, [8, 8], dropout=0.2)
    assert sum(isinstance(m, FastDropout) for m in mlp) == 2
