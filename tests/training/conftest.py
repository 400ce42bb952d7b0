from __future__ import annotations

import pytest
from helpers import PLANTED_SCHEMA, planted_chunk

from featmux.data.cache import EncodedDataset


@pytest.fixture
def planted(tmp_path):
    """(schema, train, valid) encoded datasets; train has several shards to exercise shard shuffling."""
    train = EncodedDataset.write(
        tmp_path / "train", PLANTED_SCHEMA, [planted_chunk(3000, 1), planted_chunk(1000, 2)], shard_rows=1500
    )
    valid = EncodedDataset.write(tmp_path / "valid", PLANTED_SCHEMA, [planted_chunk(2000, 3)])
    return PLANTED_SCHEMA, train, valid
