"""Shared fixtures. Real-data tests read ../shared/data (or $FEATMUX_DATA); where it is absent they skip,
unless FEATMUX_REQUIRE_DATA=1 (set by .ci/run), which turns such a skip into a failure."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from featmux.embeddings import Vocabulary
from featmux.features import CategoricalFeature, ValueEncoding
from featmux.sparse import Bag, SparseFeatures

REPO = Path(__file__).resolve().parents[1]

# `from helpers import ...` in any test module (--import-mode=importlib puts no test directory on sys.path)
HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)


def _data_root() -> Path:
    return Path(os.environ.get("FEATMUX_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the shared real datasets; skips (or fails under FEATMUX_REQUIRE_DATA=1) when absent."""
    root = _data_root()
    if not root.is_dir():
        message = f"real datasets not found at {root} (set FEATMUX_DATA)"
        if os.environ.get("FEATMUX_REQUIRE_DATA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return root


# -- small embedding inputs (tests/embeddings, tests/speed; tests/distributed has its own) -----------------
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
