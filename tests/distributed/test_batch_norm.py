"""GlobalBatchNorm in one process: BatchNorm1d's numbers, padding rows left out, a drop-in state."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from featmux.distributed.batch_norm import GlobalBatchNorm


def _pair():
    torch.manual_seed(0)
    plain = nn.BatchNorm1d(6)
    with torch.no_grad():
        plain.weight.uniform_(0.5, 1.5)
        plain.bias.uniform_(-0.5, 0.5)
    synced = GlobalBatchNorm(6)
    synced.load_state_dict(plain.state_dict())
    return plain, synced


def test_training_and_evaluation_match_batch_norm():
    plain, synced = _pair()
    exact = plain.double()  # the reference: float64 BatchNorm1d (float32 has its own rounding here)
    x = torch.randn(37, 6) * 0.003 + 0.1  # |mean| >> std: where float32 sums would cancel
    weights = torch.randn(37, 6)
    a, b = x.double().requires_grad_(), x.clone().requires_grad_()
    (exact(a) * weights.double()).sum().backward()
    (synced(b) * weights).sum().backward()
    torch.testing.assert_close(b.grad, a.grad.float(), rtol=0, atol=1e-3)  # gradients ~ 1 / std = 300
    torch.testing.assert_close(synced.weight.grad, exact.weight.grad.float(), rtol=0, atol=1e-5)
    torch.testing.assert_close(synced.running_var, exact.running_var.float())
    torch.testing.assert_close(synced.running_mean, exact.running_mean.float())
    exact.eval(), synced.eval()
    torch.testing.assert_close(synced(x), exact(x.double()).float())


def test_padding_rows_are_left_out_of_the_statistics():
    plain, synced = _pair()
    x = torch.randn(10, 6)
    padded = torch.cat([x, x[:3]])  # 3 padding rows, copies of real ones
    synced.mask = torch.cat([torch.ones(10), torch.zeros(3)])
    torch.testing.assert_close(synced(padded)[:10], plain(x))
    torch.testing.assert_close(synced.running_var, plain.running_var)  # unbiased over the 10 real rows


def test_convert_keeps_the_state_and_refuses_other_norms():
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU())
    with torch.no_grad():
        model[1].running_mean.fill_(0.25)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert GlobalBatchNorm.convert(model) == ["1"]
    assert isinstance(model[1], GlobalBatchNorm) and GlobalBatchNorm.modules_of(model) == [model[1]]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    with pytest.raises(ValueError, match="only BatchNorm1d"):
        GlobalBatchNorm.convert(nn.Sequential(nn.BatchNorm2d(3)))
