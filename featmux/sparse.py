"""The model-side input of categorical features: fingerprints of univalent and multivalent features.

    ids:  [B, F_u] int64, one column per univalent feature (schema order)
    bags: one `Bag` per multivalent feature (schema order), values [L_total] and offsets [B + 1]

Example, B = 2, one multivalent feature `genres` with rows [a, b] and []:
    Bag(values=tensor([fp(a), fp(b)]), offsets=tensor([0, 2, 2]))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Bag:
    """Values of one multivalent feature for a batch, in CSR form.

    Args:
        values: int64 fingerprints of all values, row after row, [L_total].
        offsets: int64 [B + 1]; row b owns values[offsets[b]:offsets[b + 1]].
    """

    values: torch.Tensor
    offsets: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.offsets.numel() - 1

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Bag:
        return Bag(
            self.values.to(device, non_blocking=non_blocking),
            self.offsets.to(device, non_blocking=non_blocking),
        )


@dataclass(frozen=True)
class SparseFeatures:
    """Fingerprints of every categorical feature of a batch.

    Args:
        ids: int64 [B, F_u] fingerprints of the univalent features.
        bags: one `Bag` per multivalent feature.
    """

    ids: torch.Tensor
    bags: tuple[Bag, ...] = ()

    @property
    def batch_size(self) -> int:
        return self.ids.shape[0]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> SparseFeatures:
        return SparseFeatures(
            self.ids.to(device, non_blocking=non_blocking),
            tuple(b.to(device, non_blocking) for b in self.bags),
        )
