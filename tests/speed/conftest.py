from __future__ import annotations

import numpy as np
import pytest
import torch

from featmux.embeddings import Vocabulary
from featmux.features import CategoricalFeature, ValueEncoding
from featmux.sparse import Bag, SparseFeatures

FEATURES = (
    CategoricalFeature("user", ValueEncoding.INT),
    CategoricalFeature("item", ValueEncoding.INT),
    CategoricalFeature("device", ValueEncoding.INT),
    CategoricalFeature("genres", ValueEncoding.INT, multivalent=True),
)
CARDINALITY = {"user": 1000, "item": 300, "device": 4, "genres": 18}


@pytest.fixture
def cardinality():
    return dict(CARDINALITY)


@pytest.fixture
def features():
    return FEATURES


@pytest.fixture
def vocabulary():
    vocab = Vocabulary([f.name for f in FEATURES])
    for name, n in CARDINALITY.items():
        vocab.update(name, np.arange(n, dtype=np.int64))
    return vocab


@pytest.fixture
def sparse():
    g = torch.Generator().manual_seed(1)
    ids = torch.stack(
        [
            torch.randint(0, 1200, (6,), generator=g),
            torch.randint(0, 300, (6,), generator=g),
            torch.randint(0, 4, (6,), generator=g),
        ],
        dim=1,
    )
    bag = Bag(torch.tensor([1, 2, 3, 4, 5, 17, 2]), torch.tensor([0, 2, 2, 3, 6, 6, 7]))  # row 1 and 4 empty
    return SparseFeatures(ids, (bag,))
