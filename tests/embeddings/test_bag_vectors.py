"""Unpooled bag lookups (`bag_vectors`, for sequence models): the vectors the pooled slot averages."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featmux.embeddings import EmbeddingSpec, Vocabulary, build_embedding
from featmux.features import CategoricalFeature, ValueEncoding
from featmux.sparse import Bag, SparseFeatures

INT = ValueEncoding.INT
FEATURES = (CategoricalFeature("user", INT), CategoricalFeature("hist", INT, multivalent=True))


def layer(method: str):
    vocab = Vocabulary(["user", "hist"])
    for name in ("user", "hist"):
        vocab.update(name, np.arange(50, dtype=np.int64))
    spec = EmbeddingSpec(method, 4)
    return build_embedding(FEATURES, spec, vocab)


@pytest.mark.parametrize("method", ["collisionless", "hashing", "unified"])
def test_bag_vectors_are_the_vectors_a_bag_of_one_value_pools(method):
    torch.manual_seed(0)
    emb = layer(method)
    values = torch.tensor([3, 7, 7, 49, 1000])
    sparse = SparseFeatures(torch.zeros(5, 1, dtype=torch.int64), (Bag(values, torch.arange(6)),))
    out = emb(sparse)  # [L, S, D]
    hist = [i for i, s in enumerate(emb.slot_names) if s.startswith("hist#")]
    torch.testing.assert_close(emb.bag_vectors("hist", values), out[:, hist])
    with pytest.raises(ValueError, match="not a multivalent feature"):
        emb.bag_vectors("user", values)


def test_bag_vectors_in_row_update_mode_records_the_rows_it_reads():
    emb = layer("hashing")
    emb.set_row_updates(True)
    emb.bag_vectors("hist", torch.tensor([1, 2, 1])).sum().backward()
    (lookup,) = emb.take_lookups()
    assert lookup.rows.numel() == 2 and lookup.values.grad is not None
    assert emb.weight.grad is None
