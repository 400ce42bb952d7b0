"""Rows turned into model inputs: fingerprints, numeric features and labels as numpy arrays.

`encode_frame` is the single place where raw columns become numbers, whatever the reader. It expects
a polars frame with the schema's columns: the label (0/1, any numeric or boolean type), categorical
columns (string or integer), multivalent columns as lists, numeric columns (any numeric type, nulls
allowed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from featmux.features import NumericTransform, Schema
from featmux.hashing.fingerprint import fingerprint


@dataclass(frozen=True)
class EncodedBag:
    """One multivalent feature for n rows in CSR form: values [L] int64, offsets [n + 1] int64."""

    values: np.ndarray
    offsets: np.ndarray


@dataclass(frozen=True)
class EncodedChunk:
    """n encoded rows.

    Args:
        ids: int64 [n, F_u] fingerprints of the univalent features (schema order).
        bags: one `EncodedBag` per multivalent feature (schema order).
        dense: float32 [n, N] numeric features after their transforms, missing as 0.
        labels: float32 [n], 0 or 1.
    """

    ids: np.ndarray
    bags: tuple[EncodedBag, ...]
    dense: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return self.labels.shape[0]

    def take(self, index: np.ndarray) -> EncodedChunk:
        """The rows at `index` (in that order)."""
        bags = []
        for bag in self.bags:
            starts, ends = bag.offsets[index], bag.offsets[index + 1]
            lengths = ends - starts
            offsets = np.zeros(len(index) + 1, dtype=np.int64)
            np.cumsum(lengths, out=offsets[1:])
            # value positions of the selected rows, vectorized: start of each row + 0..len-1
            pos = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1], dtype=np.int64)
            bags.append(EncodedBag(bag.values[pos], offsets))
        return EncodedChunk(self.ids[index], tuple(bags), self.dense[index], self.labels[index])

    @staticmethod
    def concat(chunks: Sequence[EncodedChunk]) -> EncodedChunk:
        if len(chunks) == 1:
            return chunks[0]
        bags = []
        for j in range(len(chunks[0].bags)):
            parts = [c.bags[j] for c in chunks]
            shifts = np.cumsum([0] + [p.values.size for p in parts[:-1]])
            offsets = np.concatenate(
                [parts[0].offsets[:1]] + [p.offsets[1:] + s for p, s in zip(parts, shifts, strict=True)]
            )
            bags.append(EncodedBag(np.concatenate([p.values for p in parts]), offsets))
        return EncodedChunk(
            np.concatenate([c.ids for c in chunks]),
            tuple(bags),
            np.concatenate([c.dense for c in chunks]),
            np.concatenate([c.labels for c in chunks]),
        )


def _numeric(values: pl.Series, transform: NumericTransform) -> np.ndarray:
    x = values.cast(pl.Float64).fill_null(0.0).fill_nan(0.0).to_numpy()
    if transform is NumericTransform.LOG1P:
        x = np.sign(x) * np.log1p(np.abs(x))
    return x.astype(np.float32)


def encode_frame(frame: pl.DataFrame, schema: Schema) -> EncodedChunk:
    """Encode a frame of raw rows (see the module docstring for the expected columns)."""
    missing = [
        c
        for c in (schema.label, *schema.feature_names, *(f.name for f in schema.numeric))
        if c not in frame.columns
    ]
    if missing:
        raise ValueError(f"frame lacks column(s) {missing}; it has {frame.columns}")
    n = frame.height
    uni = schema.univalent
    ids = np.empty((n, len(uni)), dtype=np.int64)
    for i, f in enumerate(uni):
        ids[:, i] = fingerprint(frame.get_column(f.name), f.encoding)
    bags = []
    for f in schema.multivalent:
        column = frame.get_column(f.name)
        if column.dtype == pl.String:
            column = column.str.split(f.separator)
        lengths = column.list.len().fill_null(0).to_numpy().astype(np.int64)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        values = column.explode().drop_nulls()
        if values.dtype == pl.String:
            values = values.filter(values != "")
        if values.len() != offsets[-1]:  # empty strings or nulls inside lists: recount without them
            column = column.list.eval(
                pl.element().filter(pl.element().is_not_null() & (pl.element().cast(pl.String) != ""))
            )
            lengths = column.list.len().fill_null(0).to_numpy().astype(np.int64)
            np.cumsum(lengths, out=offsets[1:])
            values = column.explode().drop_nulls()
        bags.append(EncodedBag(fingerprint(values, f.encoding), offsets))
    dense = np.empty((n, len(schema.numeric)), dtype=np.float32)
    for i, f in enumerate(schema.numeric):
        dense[:, i] = _numeric(frame.get_column(f.name), f.transform)
    labels = frame.get_column(schema.label).cast(pl.Float32).to_numpy()
    return EncodedChunk(ids, tuple(bags), dense, labels.astype(np.float32, copy=False))
