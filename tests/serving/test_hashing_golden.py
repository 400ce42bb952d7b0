"""Golden vectors of the hashing: fixed fingerprints -> fixed rows, in eager torch and in torch.export graphs.

The rows were computed once and written down; a change to the fingerprints, salts, mixing or row layout
(in either graph) changes them and fails here, since it would silently rehash every trained model.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from featmux.embeddings import HashingEmbedding, UnifiedEmbedding, UnifiedEmbeddingConfig
from featmux.embeddings.base import TableEmbedding
from featmux.features import CategoricalFeature, ValueEncoding
from featmux.hashing import MISSING, string_fingerprint

FEATURES = (CategoricalFeature("user", ValueEncoding.INT), CategoricalFeature("site"))
FINGERPRINTS = [
    [0, -1817709641818812897],
    [-1, -7181877057486046819],
    [(1 << 63) - 1, -606849052844159821],
    [-(1 << 63), 12345678901234],
]
HASHING_ROWS = [[601, 1029], [941, 1043], [722, 1008], [314, 1020]]  # user: 1000 rows, site: 77 after
UNIFIED_ROWS = [[602, 198, 480], [942, 178, 178], [723, 385, 260], [815, 223, 171]]  # user#0, user#1, site#0


class Rows(nn.Module):
    """ids [B, F] -> the table rows they read [B, S] (the hashing part of the scoring graph)."""

    def __init__(self, table: TableEmbedding) -> None:
        super().__init__()
        self.table = table

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table.univalent_rows(ids)


def test_fingerprints_are_the_documented_ones():
    assert string_fingerprint("a") == FINGERPRINTS[0][1]
    assert FINGERPRINTS[1][1] == MISSING
    assert string_fingerprint("é") == FINGERPRINTS[2][1]


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        (HashingEmbedding(FEATURES, 2, {"user": 1000, "site": 77}), HASHING_ROWS),
        (
            UnifiedEmbedding(
                FEATURES, UnifiedEmbeddingConfig(rows=1001, embedding_dim=2, num_tables=2, chunks={"user": 2})
            ).shared,
            UNIFIED_ROWS,
        ),
    ],
    ids=["hashing", "unified"],
)
def test_rows_are_golden_in_eager_and_exported_graphs(table, expected):
    ids = torch.tensor(FINGERPRINTS, dtype=torch.int64)
    assert table.univalent_rows(ids).tolist() == expected
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    program = torch.export.export(Rows(table), (ids,), dynamic_shapes={"ids": {0: batch}})
    assert program.module()(ids).tolist() == expected
    assert program.module()(ids[[3, 0, 2]]).tolist() == [expected[3], expected[0], expected[2]]  # any B
