"""Low-precision serving tables: post-training row-wise quantization of any table method.

`quantize_embedding(layer, "int8")` turns every table of a trained table-based layer (collisionless,
hashing, unified, adaptive: the `TableEmbedding` ones) into stored codes and reads rows by
dequantizing only the rows a batch looks up:

    fp16   the rows as float16 (2 bytes a value)
    int8   uint8 codes, one float16 scale and bias per row: row = bias + scale * code (D + 4 bytes a row)
    int4   two 4-bit codes a byte, the same per-row scale and bias (ceil(D / 2) + 4 bytes a row)

`memory_bytes()` then counts the codes, scales and biases. The result is for evaluation and serving;
the quantized tables are not trained further.
"""

from __future__ import annotations

from enum import Enum, unique
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from featmux.embeddings.base import FeatureEmbedding, TableEmbedding, _chunk_offsets
from featmux.features import Pooling
from featmux.sparse import SparseFeatures


@unique
class Precision(Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"
    INT4 = "int4"


def _levels(precision: Precision) -> int:
    return 255 if precision is Precision.INT8 else 15


def quantize_rows(weight: torch.Tensor, precision: Precision) -> dict[str, torch.Tensor]:
    """Row-wise codes of a [R, D] float table (`codes`, plus `scale` and `bias` [R] for int8 / int4)."""
    w = weight.detach().float()
    if precision is Precision.FP16:
        return {"codes": w.half()}
    lo, hi = w.min(dim=1).values, w.max(dim=1).values  # [R]
    scale = ((hi - lo) / _levels(precision)).half()
    bias = lo.half()
    step = scale.float().clamp_min(torch.finfo(torch.float16).tiny).unsqueeze(1)
    codes = torch.round((w - bias.float().unsqueeze(1)) / step).clamp_(0, _levels(precision)).to(torch.uint8)
    if precision is Precision.INT4:
        if codes.shape[1] % 2:
            codes = F.pad(codes, (0, 1))
        codes = codes[:, 0::2] | (codes[:, 1::2] << 4)  # [R, ceil(D / 2)]
    return {"codes": codes, "scale": scale, "bias": bias}


def dequantize_rows(
    codes: torch.Tensor, scale: torch.Tensor | None, bias: torch.Tensor | None, precision: Precision, dim: int
) -> torch.Tensor:
    """Float rows [..., D] from codes [..., D'] (and scales, biases [...])."""
    if precision is Precision.FP16:
        return codes.float()
    if precision is Precision.INT4:
        codes = torch.stack([codes & 0x0F, codes >> 4], dim=-1).flatten(-2)[..., :dim]
    assert scale is not None and bias is not None
    return bias.float().unsqueeze(-1) + scale.float().unsqueeze(-1) * codes.float()


class _QuantizedTable(nn.Module):
    """A `TableEmbedding`'s table as codes; reads the rows a batch needs, dequantized."""

    def __init__(self, table: TableEmbedding, precision: Precision) -> None:
        super().__init__()
        self.precision = precision
        self.dim = table.embedding_dim
        for name, tensor in quantize_rows(table.weight, precision).items():
            self.register_buffer(name, tensor)

    def read(self, rows: torch.Tensor) -> torch.Tensor:
        scale = getattr(self, "scale", None)
        bias = getattr(self, "bias", None)
        return dequantize_rows(
            self.codes[rows],
            scale[rows] if scale is not None else None,
            bias[rows] if bias is not None else None,
            self.precision,
            self.dim,
        )

    def embed(self, table: TableEmbedding, sparse: SparseFeatures) -> torch.Tensor:
        """`TableEmbedding.forward` with rows read from these codes: [B, S, D]."""
        parts = []
        if table.univalent:
            parts.append(self.read(table.univalent_rows(sparse.ids)))  # [B, S_u, D]
        for j, (feature, bag) in enumerate(zip(table.multivalent, sparse.bags, strict=True)):
            rows = table.bag_rows(j, bag.values)  # [L, K]
            num_values, chunks = rows.shape
            vectors = self.read(rows.t().reshape(-1))  # [K * L, D], chunk-major
            pooled = F.embedding_bag(
                torch.arange(vectors.shape[0], device=vectors.device),
                vectors,
                _chunk_offsets(bag.offsets, num_values, chunks),
                mode=Pooling(feature.pooling).value,
                include_last_offset=True,
            )  # [K * B, D]
            parts.append(pooled.view(chunks, bag.offsets.numel() - 1, -1).transpose(0, 1))  # [B, K, D]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)  # [B, S, D]


class QuantizedEmbedding(FeatureEmbedding):
    """A trained table-based layer whose tables are stored at `precision` (see the module docstring).

    Args:
        layer: the layer; its tables are quantized in place (their float weights are dropped).
        precision: fp16, int8 or int4.

    Example:
        >>> served = QuantizedEmbedding(trained_layer, Precision.INT8)
        >>> served.memory_bytes() < trained_layer_bytes
        True
    """

    def __init__(self, layer: FeatureEmbedding, precision: Precision | str) -> None:
        super().__init__(layer.features, layer.embedding_dim)
        self.precision = Precision(precision)
        if self.precision is Precision.FP32:
            raise ValueError("fp32 is the trained precision: there is nothing to quantize")
        tables = layer.table_modules()
        covered = {id(t.weight) for t in tables}
        other = [n for n, p in layer.named_parameters() if id(p) not in covered]
        if not tables or other:
            raise ValueError(
                f"--precision quantizes table methods (collisionless, hashing, unified, adaptive); "
                f"{layer.method or type(layer).__name__} stores other parameters ({other[:3]})"
            )
        for table in tables:
            table.quantized = _QuantizedTable(table, self.precision)
            del table.weight  # the codes replace it
        self.inner = layer
        self.method = layer.method

    @property
    def slot_names(self) -> tuple[str, ...]:
        return self.inner.slot_names

    def forward(self, sparse: SparseFeatures) -> torch.Tensor:
        """Embed a batch: [B, F_u] ids and bags -> [B, S, D], rows dequantized."""
        return self.inner(sparse)

    def config(self) -> dict[str, Any]:
        return {**self.inner.config(), "precision": self.precision.value}


def quantize_embedding(layer: FeatureEmbedding, precision: Precision | str) -> FeatureEmbedding:
    """`layer` with its tables stored at `precision` (the layer itself for fp32)."""
    if Precision(precision) is Precision.FP32:
        return layer
    return QuantizedEmbedding(layer, precision)
