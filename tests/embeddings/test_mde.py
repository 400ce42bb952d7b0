"""Mixed-dimension embeddings: power-law widths, projections, and the alpha search."""

from __future__ import annotations

import numpy as np
import pytest

from featmux.embeddings import Budget, EmbeddingSpec, build_embedding
from featmux.embeddings.mde import mde_floats, mixed_dims

DIM = 8
CARDS = np.array([1000, 300, 4, 18])
FULL_FLOATS = int((CARDS + 1).sum()) * DIM


def test_dims_follow_the_power_law_of_cardinality():
    assert mixed_dims(CARDS, DIM, 0.0).tolist() == [8, 8, 8, 8]
    # D * (n / 4)^-0.5: 1000 -> 0.506, 300 -> 0.92, 18 -> 3.77 (rounded, at least 1)
    assert mixed_dims(CARDS, DIM, 0.5).tolist() == [1, 1, 8, 4]
    assert mde_floats(CARDS, np.array([1, 1, 8, 4]), DIM) == 1001 + 301 + 5 * 8 + 19 * 4 + (1 + 1 + 4) * DIM


@pytest.mark.parametrize("budget", ["1/2", "1/3", "1/5"])
def test_solve_finds_the_smallest_alpha_that_fits(features, vocabulary, budget):
    layer = build_embedding(features, EmbeddingSpec("mde", DIM, Budget.parse(budget)), vocabulary)
    limit = round(Budget.parse(budget).fraction * FULL_FLOATS * 4)
    assert layer.memory_bytes() <= limit
    dims = np.array([layer.dims[n] for n in ("user", "item", "device", "genres")])
    assert dims[2] == DIM and dims[0] <= dims[1]  # the smallest vocabulary keeps the full width
    assert "2" not in layer.projections  # device (slot 2) needs no projection
    # a slightly smaller alpha widens some feature and no longer fits
    alpha = next(
        a
        for a in np.linspace(0, 16, 160001)
        if mde_floats(CARDS, mixed_dims(CARDS, DIM, a), DIM) * 4 <= limit
    )
    assert mixed_dims(CARDS, DIM, alpha).tolist() == dims.tolist()


def test_too_small_a_budget_is_refused(features, vocabulary):
    with pytest.raises(ValueError, match="too small for mde"):
        build_embedding(features, EmbeddingSpec("mde", DIM, Budget.parse("1/16")), vocabulary)
