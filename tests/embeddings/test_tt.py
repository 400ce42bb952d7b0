"""TT-Rec: factorizations, the core contraction against a dense reconstruction, and the rank search."""

from __future__ import annotations

import pytest
import torch

from featmux.embeddings import Budget, EmbeddingSpec, build_embedding
from featmux.embeddings.tt import TTEmbedding, dim_factors, row_factors, tt_floats
from featmux.features import CategoricalFeature, ValueEncoding
from featmux.hashing import feature_salt, salted_rows, splitmix64
from featmux.sparse import SparseFeatures

DIM = 8
FULL_BYTES = (1000 + 300 + 4 + 18 + 4) * DIM * 4


def test_factorizations():
    assert dim_factors(8) == (2, 2, 2) and dim_factors(16) == (2, 2, 4) and dim_factors(10) == (1, 2, 5)
    assert dim_factors(7) == (1, 1, 7)
    for rows in (1, 7, 1001, 10**6 + 3):
        n1, n2, n3 = row_factors(rows)
        assert n1 * n2 * n3 >= rows and n1 * n2 * n3 < 2 * rows + 8


def test_a_row_is_the_contraction_of_its_three_cores():
    feature = CategoricalFeature("a", ValueEncoding.INT)
    layer = TTEmbedding([feature], DIM, {"a": 60}, rank=3)  # 60 -> 4 x 4 x 4 virtual rows
    n1, n2, n3 = row_factors(60)
    g1 = layer.core1.view(n1, 2, 3)
    g2 = layer.core2.view(n2, 3, 2, 3)
    g3 = layer.core3.view(n3, 3, 2)
    dense = torch.einsum("iar,jrbs,ksc->ijkabc", g1, g2, g3).reshape(n1 * n2 * n3, DIM)  # the virtual table
    ids = torch.arange(100).reshape(-1, 1)
    rows = salted_rows(splitmix64(ids[:, 0]), torch.tensor(feature_salt("a")), n1 * n2 * n3)
    torch.testing.assert_close(layer(SparseFeatures(ids))[:, 0], dense[rows])
    assert layer.num_parameters() == tt_floats(60, DIM, 3)


def test_solve_takes_the_largest_rank_that_fits(features, vocabulary):
    layer = build_embedding(features, EmbeddingSpec("tt", DIM, Budget.parse("1/8")), vocabulary)
    config = layer.config()
    limit = FULL_BYTES // 8
    assert layer.memory_bytes() <= limit
    rank = config["rank"]
    full = config.get("full", {})
    more = sum(tt_floats(m, DIM, rank + 1) for m in config["rows"].values()) * 4
    assert more + sum((n + 1) * DIM * 4 + (n + 1) * 8 for n in full.values()) > limit
    with pytest.raises(ValueError, match="too small for tt"):
        build_embedding(features, EmbeddingSpec("tt", DIM, Budget(params=30)), vocabulary)


def test_the_unified_layout_shares_one_set_of_cores(features, vocabulary, sparse):
    spec = EmbeddingSpec("tt", DIM, Budget.parse("1/8"), options={"layout": "unified"})
    layer = build_embedding(features, spec, vocabulary)
    assert isinstance(layer, TTEmbedding) and layer.shared
    virtual = 1001 + 301 + 5 + 19
    assert layer.config()["rows"] == virtual
    assert layer.memory_bytes() == tt_floats(virtual, DIM, layer.rank) * 4 <= FULL_BYTES // 8
    assert tt_floats(virtual, DIM, layer.rank + 1) * 4 > FULL_BYTES // 8
    assert layer(sparse).shape == (6, 4, DIM)
