"""ROBE-Z: signed blocks at hashed offsets of one circular array, sized to the budget to the float."""

from __future__ import annotations

import pytest
import torch

from featmux.embeddings import Budget, EmbeddingSpec, build_embedding
from featmux.embeddings.robe import RobeEmbedding
from featmux.features import CategoricalFeature, ValueEncoding
from featmux.hashing import feature_salt, salted_rows, splitmix64
from featmux.sparse import SparseFeatures

DIM = 8


def test_a_value_reads_signed_blocks_that_wrap_around():
    features = [CategoricalFeature("a", ValueEncoding.INT), CategoricalFeature("b", ValueEncoding.INT)]
    layer = RobeEmbedding(features, DIM, size=11, block=4)  # tiny array: many blocks wrap past the end
    ids = torch.arange(0, 200).reshape(-1, 2)
    out = layer(SparseFeatures(ids))
    mixed = splitmix64(ids[:, 1])
    for b in range(2):
        start = salted_rows(mixed, torch.tensor(feature_salt("b", b)), 11)
        sign = salted_rows(mixed, torch.tensor(feature_salt("b", 2 + b)), 2) * 2 - 1
        at = (start.unsqueeze(1) + torch.arange(4)) % 11
        torch.testing.assert_close(out[:, 1, 4 * b : 4 * b + 4], layer.weight[at] * sign.unsqueeze(1))
    assert layer.memory_bytes() == 11 * 4


@pytest.mark.parametrize("budget", ["1/4", "1/64", "bytes:4001", "params:999"])
def test_the_array_is_the_budget_to_the_float(features, vocabulary, budget):
    layer = build_embedding(features, EmbeddingSpec("robe", DIM, Budget.parse(budget)), vocabulary)
    target = Budget.parse(budget).target((1000 + 300 + 4 + 18 + 4) * DIM, DIM)
    assert layer.size == (target.amount // 4 if target.unit.value == "bytes" else target.amount)
    with pytest.raises(ValueError, match="divide embedding_dim"):
        build_embedding(
            features, EmbeddingSpec("robe", DIM, Budget.parse(budget), options={"block": 3}), vocabulary
        )
