"""Helpers for the data reader tests."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import polars as pl
import pytest

from featmux.data.encoded import EncodedChunk, encode_frame
from featmux.features import Schema


def _encode_all(frames: Iterable[pl.DataFrame], schema: Schema) -> EncodedChunk:
    chunks = [encode_frame(frame, schema) for frame in frames]
    assert chunks, "no frames"
    return EncodedChunk.concat(chunks)


def _assert_same(a: EncodedChunk, b: EncodedChunk) -> None:
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.dense, b.dense)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert len(a.bags) == len(b.bags)
    for x, y in zip(a.bags, b.bags, strict=True):
        np.testing.assert_array_equal(x.values, y.values)
        np.testing.assert_array_equal(x.offsets, y.offsets)


@pytest.fixture
def encode_all() -> Callable[[Iterable[pl.DataFrame], Schema], EncodedChunk]:
    """encode_all(frames, schema): every frame through `encode_frame`, concatenated."""
    return _encode_all


@pytest.fixture
def assert_same_encoding() -> Callable[[EncodedChunk, EncodedChunk], None]:
    """assert_same_encoding(a, b): identical ids, bags, dense features and labels."""
    return _assert_same
