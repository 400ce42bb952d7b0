"""Frequency-aware embeddings: the hot set comes from training counts; hot rows are exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featmux.embeddings import Budget, EmbeddingSpec, Vocabulary, build_embedding
from featmux.features import CategoricalFeature, ValueEncoding
from featmux.hashing import feature_salt, salted_rows, splitmix64
from featmux.sparse import SparseFeatures

DIM = 4
FEATURES = [CategoricalFeature("a", ValueEncoding.INT), CategoricalFeature("b", ValueEncoding.INT)]


def _vocabulary() -> Vocabulary:
    vocab = Vocabulary(["a", "b"])
    vocab.update("a", np.repeat(np.arange(100), np.arange(100, 0, -1)))  # value v seen 100 - v times
    vocab.update("b", np.arange(500))  # a flat tail: every value once
    return vocab


def test_the_hottest_training_values_get_exact_rows():
    vocab = _vocabulary()
    # (100 + 500) values: the full table is 602 rows of 4 floats = 9632 bytes
    spec = EmbeddingSpec("adaptive", DIM, Budget(bytes=2400), options={"hot_share": 0.5})
    layer = build_embedding(FEATURES, spec, vocab)
    hot = 1200 // (DIM * 4 + 8)  # 50 hot values: each costs a row and an int64 key
    assert sum(layer.hot.values()) == hot and layer.hot["a"] == hot  # a's head beats b's flat tail
    assert layer.shared_rows == (2400 - hot * (DIM * 4 + 8)) // (DIM * 4)
    assert layer.memory_bytes() == (hot + layer.shared_rows) * DIM * 4 + hot * 8 <= 2400
    torch.testing.assert_close(layer.keys, torch.arange(hot))  # a's values 0..49 are the hottest
    ids = torch.tensor([[3, 7], [49, 8], [50, 9]])
    out = layer(SparseFeatures(ids))
    torch.testing.assert_close(out[0, 0], layer.weight[3])  # hot: its own row
    torch.testing.assert_close(out[1, 0], layer.weight[49])
    cold = hot + salted_rows(
        splitmix64(torch.tensor([50])), torch.tensor(feature_salt("a")), layer.shared_rows
    )
    torch.testing.assert_close(out[2, 0], layer.weight[cold[0]])  # cold: a shared hashed row


def test_adaptive_needs_the_counts_and_a_share_in_range():
    with pytest.raises(ValueError, match="needs a vocabulary"):
        build_embedding(FEATURES, EmbeddingSpec("adaptive", DIM, Budget(bytes=2400)), None)
    with pytest.raises(ValueError, match="hot_share must be in"):
        EmbeddingSpec("adaptive", DIM, Budget(bytes=2400), options={"hot_share": 1.0})
