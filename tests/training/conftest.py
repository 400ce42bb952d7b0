from __future__ import annotations

import numpy as np
import pytest

from featmux.data.cache import EncodedDataset
from featmux.data.encoded import EncodedBag, EncodedChunk
from featmux.features import CategoricalFeature, NumericFeature, Schema, ValueEncoding

SCHEMA = Schema(
    "label",
    (
        CategoricalFeature("a", ValueEncoding.INT),
        CategoricalFeature("b", ValueEncoding.INT),
        CategoricalFeature("tags", ValueEncoding.INT, multivalent=True),
    ),
    (NumericFeature("x"),),
)


def planted_chunk(n: int, seed: int) -> EncodedChunk:
    """Rows whose label follows a planted logit: per-value effects of a, b and tags, plus x."""
    rng = np.random.default_rng(seed)
    effect = np.random.default_rng(99).normal(0, 1.5, size=(3, 50))
    a, b = rng.integers(0, 50, n), rng.integers(0, 50, n)
    lengths = rng.integers(0, 4, n)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tags = rng.integers(0, 50, offsets[-1])
    tag_effect = np.add.reduceat(np.append(effect[2][tags], 0.0), offsets[:-1]) * (lengths > 0)
    x = rng.normal(size=n).astype(np.float32)
    logit = effect[0][a] + effect[1][b] + 0.5 * tag_effect + x - 0.5
    labels = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    return EncodedChunk(
        np.stack([a, b], 1).astype(np.int64),
        (EncodedBag(tags.astype(np.int64), offsets),),
        x[:, None],
        labels,
    )


@pytest.fixture
def planted(tmp_path):
    """(schema, train, valid) encoded datasets; train has several shards to exercise shard shuffling."""
    train = EncodedDataset.write(
        tmp_path / "train", SCHEMA, [planted_chunk(3000, 1), planted_chunk(1000, 2)], shard_rows=1500
    )
    valid = EncodedDataset.write(tmp_path / "valid", SCHEMA, [planted_chunk(2000, 3)])
    return SCHEMA, train, valid
