"""Row-wise 8-bit tables: each row stored as uint8 codes with its own fp32 scale and bias.

    w[r, d] ~= scale[r] * q[r, d] + bias[r],   q in 0..255,   bias[r] = min_d w[r, d]

the layout of fbgemm's 8-bit row-wise tables. Lookups dequantize only the rows they read, inside the
graph, so a table costs D + 8 bytes per row instead of 4 D. The error of one value is at most
scale[r] / 2 = (max_d w[r, d] - min_d w[r, d]) / 510.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from featmux.embeddings.base import TableEmbedding, _chunk_offsets
from featmux.models import CTRModel
from featmux.sparse import SparseFeatures

LEVELS = 255


class Int8Table(nn.Module):
    """A `TableEmbedding` whose [R, D] table is replaced by row-wise 8-bit codes (same rows, same slots).

    Args:
        table: the fp32 table layer; it keeps computing which rows are read (salts, vocabularies), its
            weight is quantized and dropped. It is modified: pass a copy (see `quantize_int8`).

    Example:
        >>> layer = Int8Table(copy.deepcopy(model.embedding))
        >>> layer(sparse).shape  # [B, S, D], as the fp32 layer
    """

    def __init__(self, table: TableEmbedding) -> None:
        super().__init__()
        weight = table.weight.detach().float()
        low = weight.min(dim=1).values
        span = weight.max(dim=1).values - low
        scale = torch.where(span > 0, span / LEVELS, torch.ones_like(span))
        codes = torch.round((weight - low[:, None]) / scale[:, None]).clamp_(0, LEVELS).to(torch.uint8)
        del table.weight  # the codes replace it; the layer keeps its row logic and buffers
        self.table = table
        self.register_buffer("codes", codes)  # [R, D] uint8
        self.register_buffer("scale", scale)  # [R]
        self.register_buffer("bias", low)  # [R]

    def _vectors(self, rows: torch.Tensor) -> torch.Tensor:
        """Dequantized rows: int64 [...] -> float32 [..., D]."""
        flat = rows.reshape(-1)
        values = self.codes.index_select(0, flat).float() * self.scale.index_select(0, flat).unsqueeze(1)
        values = values + self.bias.index_select(0, flat).unsqueeze(1)
        return values.view(*rows.shape, self.codes.shape[1])

    def forward(self, sparse: SparseFeatures) -> torch.Tensor:
        """Embed a batch: ids [B, F_u] and bags -> [B, S, D] from the dequantized rows."""
        table = self.table
        parts = []
        if table.univalent:
            parts.append(self._vectors(table.univalent_rows(sparse.ids)))  # [B, S_u, D]
        for j, (feature, bag) in enumerate(zip(table.multivalent, sparse.bags, strict=True)):
            rows = table.bag_rows(j, bag.values)  # [L, K]
            num_values, chunks = rows.shape
            vectors = self._vectors(rows.t().reshape(-1))  # [K * L, D], chunk-major
            pooled = F.embedding_bag(
                torch.arange(vectors.shape[0], device=vectors.device),
                vectors,
                _chunk_offsets(bag.offsets, num_values, chunks),
                mode=feature.pooling.value,
                include_last_offset=True,
            )  # [K * B, D]
            parts.append(pooled.view(chunks, bag.offsets.numel() - 1, -1).transpose(0, 1))  # [B, K, D]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)  # [B, S, D]


def quantize_int8(model: CTRModel) -> CTRModel:
    """A copy of `model` with every embedding table row-wise 8-bit (`Int8Table`); dense layers stay fp32.

    Args:
        model: a trained model (left unchanged).

    Returns:
        The quantized copy, in eval mode.
    """
    quantized = copy.deepcopy(model).eval()
    tables = [(name, m) for name, m in quantized.named_modules() if isinstance(m, TableEmbedding)]
    for name, module in tables:
        parent_name, _, attr = name.rpartition(".")
        parent = quantized.get_submodule(parent_name) if parent_name else quantized
        setattr(parent, attr, Int8Table(module))
    return quantized
