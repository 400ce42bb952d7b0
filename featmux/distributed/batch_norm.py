"""Batch norm over the global batch: statistics from every rank's real rows, padding left out.

A one-process model normalizes each batch by its own mean and variance. Under DistributedModelParallel
each rank sees only its part of the global batch (plus padding rows, see `featmux.distributed.data`),
and TorchRec's DDP wrapper does not sync batch-norm buffers, so every rank would keep its own
statistics. torch's `SyncBatchNorm` does not help on CPU (it raises for non-GPU tensors) and counts
padding rows. `GlobalBatchNorm` replaces each `nn.BatchNorm1d` of the model (same parameters and
buffers, so checkpoints and exported models are unchanged): in training it all-reduces the masked
sums [sum x, sum x^2, n] of its input (autograd-aware: the backward all-reduces their gradients), so
every rank normalizes with the statistics of the one-process batch and updates the same running
statistics (unbiased variance, as torch does). In evaluation it uses the running statistics.

    rank r: x_r [b, C], mask m_r [b]          S1 = sum_r sum_i m x,  S2 = sum_r sum_i m x^2,  N = sum m
    mean = S1 / N,   var = S2 / N - mean^2,   y = (x - mean) / sqrt(var + eps) * weight + bias
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn


class GlobalBatchNorm(nn.BatchNorm1d):
    """`nn.BatchNorm1d` whose training statistics cover the real rows of every rank (see the module).

    Set `mask` (float [b], 1 for real rows) before each training forward; without it every row counts.

    Args:
        num_features: C.
        eps: added to the variance.
        momentum: running-statistics momentum (None: cumulative average).

    Example:
        >>> names = GlobalBatchNorm.convert(model)  # before DistributedModelParallel wraps it
        >>> for norm in GlobalBatchNorm.modules_of(model): norm.mask = part.mask
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.mask: torch.Tensor | None = None

    @classmethod
    def convert(cls, model: nn.Module) -> list[str]:
        """Replace every `nn.BatchNorm1d` of `model` in place (weights and buffers kept); their names.

        Raises:
            ValueError: for other batch-norm kinds (2-D/3-D, no affine or running statistics).
        """
        names = []
        for name, module in list(model.named_modules()):
            if isinstance(module, cls) or not isinstance(module, nn.modules.batchnorm._BatchNorm):
                continue
            if type(module) is not nn.BatchNorm1d or not (module.affine and module.track_running_stats):
                raise ValueError(f"{name}: only BatchNorm1d with affine weights and running statistics syncs")
            norm = cls(module.num_features, module.eps, module.momentum)
            norm.load_state_dict(module.state_dict())
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, norm)
            names.append(name)
        return names

    @staticmethod
    def modules_of(model: nn.Module) -> list[GlobalBatchNorm]:
        """The `GlobalBatchNorm` modules inside `model`."""
        return [m for m in model.modules() if isinstance(m, GlobalBatchNorm)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize x [b, C] (statistics of the global batch in training, running ones in evaluation)."""
        if not self.training:
            return super().forward(x)
        x = x.float()
        c = x.shape[1]
        # float64 sums: E[x^2] - E[x]^2 cancels badly in float32 when |mean| >> std (small embeddings
        # behind a biased Linear), and the error would reach the gradients
        x64 = x.double()
        m = (self.mask if self.mask is not None else torch.ones(x.shape[0])).to(x.device, torch.float64)
        m = m.unsqueeze(1)  # [b, 1]
        local = torch.cat([(x64 * m).sum(0), (x64 * x64 * m).sum(0), m.sum().reshape(1)])  # [2C + 1]
        grouped = dist.is_initialized() and dist.get_world_size() > 1
        total = dist_fn.all_reduce(local) if grouped else local  # backward all-reduces the gradient
        n = total[-1]
        mean = total[:c] / n
        var = (total[c : 2 * c] / n - mean * mean).clamp(min=0)
        scale = (torch.rsqrt(var + self.eps)).float()
        y = (x - mean.float()) * scale * self.weight + self.bias
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            f = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            unbiased = (var * (n / (n - 1).clamp(min=1))).float()
            self.running_mean.mul_(1 - f).add_(mean.float(), alpha=f)
            self.running_var.mul_(1 - f).add_(unbiased, alpha=f)
        return y
