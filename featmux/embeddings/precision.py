"""Low-precision serving tables: post-training row-wise quantization of any table method.

`quantize_embedding(layer, "int8")` turns every table of a trained table-based layer (collisionless,
hashing, unified, adaptive: the `TableEmbedding` ones) into stored codes and reads rows by
dequantizing only the rows a batch looks up:

    fp16   the rows as float16 (2 bytes a value)
    int8   uint8 codes, one float16 scale and bias per row: row = bias + scale * code (D + 4 bytes a row)
    int4   two 4-bit codes a byte, the same per-row scale and bias (ceil(D / 2) + 4 bytes a row)

`memory_bytes()` then counts the codes, scales and biases (`featmux.embeddings.served`).
"""

from __future__ import annotations

from enum import Enum, unique

import torch
import torch.nn.functional as F

from featmux.embeddings.base import FeatureEmbedding, TableEmbedding, nonzero_step
from featmux.embeddings.served import ServedEmbedding, ServingTable


@unique
class Precision(Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"
    INT4 = "int4"


def levels(precision: Precision) -> int:
    """The largest code of int8 (255) or int4 (15) rows."""
    return 255 if precision is Precision.INT8 else 15


def quantize_rows(weight: torch.Tensor, precision: Precision) -> dict[str, torch.Tensor]:
    """Row-wise codes of a [R, D] float table (`codes`, plus `scale` and `bias` [R] for int8 / int4)."""
    w = weight.detach().float()
    if precision is Precision.FP16:
        return {"codes": w.half()}
    lo, hi = w.min(dim=1).values, w.max(dim=1).values  # [R]
    scale = ((hi - lo) / levels(precision)).half()
    bias = lo.half()
    # divide by the stored (float16, possibly subnormal) step itself, so that codes and reads agree
    step = nonzero_step(scale.float()).unsqueeze(1)
    codes = torch.round((w - bias.float().unsqueeze(1)) / step).clamp_(0, levels(precision)).to(torch.uint8)
    if precision is Precision.INT4:
        if codes.shape[1] % 2:
            codes = F.pad(codes, (0, 1))
        codes = codes[:, 0::2] | (codes[:, 1::2] << 4)  # [R, ceil(D / 2)]
    return {"codes": codes, "scale": scale, "bias": bias}


def row_bytes(precision: Precision, dim: int) -> int:
    """Bytes one served row of width `dim` takes at `precision` (codes plus float16 scale and bias)."""
    if precision is Precision.FP32:
        return 4 * dim
    if precision is Precision.FP16:
        return 2 * dim
    codes = dim if precision is Precision.INT8 else (dim + 1) // 2
    return codes + 4


def served_bytes(layer: FeatureEmbedding, precision: Precision) -> int:
    """`memory_bytes()` of `quantize_embedding(layer, precision)`, without quantizing anything.

    Every table's fp32 rows are replaced by `row_bytes(precision, D)` each; other stored tensors
    (vocabulary keys, hot-value keys) are counted as they are. Works on `meta` layers (for `solve`).
    """
    tables = layer.table_modules()
    fp32 = sum(t.weight.numel() * t.weight.element_size() for t in tables)
    codes = sum(t.num_rows * row_bytes(precision, t.embedding_dim) for t in tables)
    return layer.memory_bytes() - fp32 + codes


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


class QuantizedTable(ServingTable):
    """A `TableEmbedding`'s table as codes; reads the rows a batch needs, dequantized.

    Args:
        table: the trained table (its weight is read, not changed).
        precision: fp16, int8 or int4.

    Example:
        >>> QuantizedTable(layer.table_modules()[0], Precision.INT8).read(torch.tensor([0, 5])).shape
        torch.Size([2, D])
    """

    def __init__(self, table: TableEmbedding, precision: Precision) -> None:
        super().__init__()
        self.precision = precision
        self.dim = table.embedding_dim
        for name, tensor in quantize_rows(table.weight, precision).items():
            self.register_buffer(name, tensor)

    @property
    def num_rows(self) -> int:
        return self.codes.shape[0]

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


def quantize_embedding(layer: FeatureEmbedding, precision: Precision | str) -> FeatureEmbedding:
    """`layer` with its tables stored at `precision` (the layer itself for fp32)."""
    p = Precision(precision)
    if p is Precision.FP32:
        return layer
    return ServedEmbedding(
        layer, lambda table: QuantizedTable(table, p), {"precision": p.value}, "--precision"
    )
