"""Deep hash embeddings: dense hash codes, the MLP, both layouts and the width search."""

from __future__ import annotations

import pytest
import torch

from featmux.embeddings import Budget, EmbeddingSpec, build_embedding
from featmux.embeddings.dhe import DeepHashEmbedding, mlp_parameters
from featmux.features import CategoricalFeature, ValueEncoding
from featmux.sparse import SparseFeatures

DIM = 8
FULL_FLOATS = (1000 + 300 + 4 + 18 + 4) * DIM


def test_codes_are_in_range_and_distinguish_values_and_features():
    features = [CategoricalFeature("a", ValueEncoding.INT), CategoricalFeature("b", ValueEncoding.INT)]
    layer = DeepHashEmbedding(features, DIM, codes=(16, 1000), widths=[5, 5])
    ids = torch.tensor([[1, 1], [2, 1]])
    codes = layer._codes(ids, slice(0, 2))  # [2, 2, 16]
    assert codes.min() >= -1 and codes.max() <= 1
    assert not torch.equal(codes[0, 0], codes[1, 0]) and not torch.equal(codes[0, 0], codes[0, 1])
    out = layer(SparseFeatures(ids))
    assert out.shape == (2, 2, DIM)
    assert (
        layer.num_parameters() == mlp_parameters(16, 5, 2, DIM)
        and layer.memory_bytes() == 4 * layer.num_parameters()
    )


@pytest.mark.parametrize("layout", ["unified", "per_feature"])
def test_solve_takes_the_widest_mlp_that_fits(features, vocabulary, layout):
    options = {"hashes": 32, "hidden_layers": 2, "layout": layout}
    layer = build_embedding(
        features, EmbeddingSpec("dhe", DIM, Budget.parse("1/4"), options=options), vocabulary
    )
    (width,) = set(layer.widths)
    copies = 4 if layout == "per_feature" else 1
    assert len(layer.mlps) == copies
    limit = FULL_FLOATS // 4
    assert (
        copies * mlp_parameters(32, width, 2, DIM) <= limit < copies * mlp_parameters(32, width + 1, 2, DIM)
    )
    assert layer.memory_bytes() == 4 * copies * mlp_parameters(32, width, 2, DIM)
    with pytest.raises(ValueError, match="too small for dhe"):
        build_embedding(features, EmbeddingSpec("dhe", DIM, Budget(params=40), options=options), vocabulary)
