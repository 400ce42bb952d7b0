"""Each rank's share of the stream is its slice of exactly the single-process global batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featmux.data.cache import Batch, EncodedDataset
from featmux.data.encoded import EncodedBag, EncodedChunk
from featmux.distributed import rank_batches
from featmux.features import CategoricalFeature, NumericFeature, Schema, ValueEncoding

SCHEMA = Schema(
    "label",
    (
        CategoricalFeature("a", ValueEncoding.INT),
        CategoricalFeature("tags", ValueEncoding.INT, multivalent=True),
    ),
    (NumericFeature("x"),),
)


def _chunk(n: int, seed: int) -> EncodedChunk:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 4, n)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return EncodedChunk(
        rng.integers(0, 10**6, (n, 1)).astype(np.int64),
        (EncodedBag(rng.integers(0, 100, offsets[-1]).astype(np.int64), offsets),),
        rng.normal(size=(n, 1)).astype(np.float32),
        (rng.random(n) < 0.3).astype(np.float32),
    )


@pytest.fixture
def dataset(tmp_path):
    return EncodedDataset.write(tmp_path / "d", SCHEMA, [_chunk(700, 1), _chunk(303, 2)], shard_rows=256)


def _rows(batch: Batch, keep: torch.Tensor) -> list[tuple]:
    """Row-wise view (id, tag values, x, label) of the kept rows, for exact comparison."""
    offsets = batch.sparse.bags[0].offsets
    values = batch.sparse.bags[0].values
    out = []
    for i in torch.nonzero(keep).flatten().tolist():
        tags = tuple(values[offsets[i] : offsets[i + 1]].tolist())
        out.append((int(batch.sparse.ids[i, 0]), tags, float(batch.dense[i, 0]), float(batch.labels[i])))
    return out


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize(("shuffle", "epoch", "start"), [(False, 0, 0), (True, 1, 0), (True, 2, 3)])
def test_ranks_together_read_the_global_batches(dataset, world, shuffle, epoch, start):
    size = 100  # 1003 rows: the last global batch is short, so padding happens
    expected = list(dataset.batches(size, shuffle=shuffle, seed=5, epoch=epoch, start_batch=start))
    parts = [list(rank_batches(dataset, size, r, world, shuffle, 5, epoch, start)) for r in range(world)]
    assert all(len(p) == len(expected) for p in parts)  # every rank takes part in every step
    for k, global_batch in enumerate(expected):
        sizes = {len(p[k].batch) for p in parts}
        assert len(sizes) == 1  # same local batch size on every rank
        assert all(p[k].global_rows == len(global_batch) for p in parts)
        got = [row for p in parts for row in _rows(p[k].batch, p[k].mask > 0)]
        assert got == _rows(global_batch, torch.ones(len(global_batch), dtype=torch.bool))


def test_padding_is_masked_and_rank_checked(dataset):
    last = list(rank_batches(dataset, 1000, 2, 3))[-1]  # global batch of 3 rows over 3 ranks
    assert last.global_rows == 3 and len(last.batch) == 1 and last.real_rows == 1
    tiny = list(rank_batches(dataset, 1002, 1, 2))[-1]  # 1 row left for 2 ranks: rank 1 gets padding only
    assert tiny.global_rows == 1 and tiny.real_rows == 0 and len(tiny.batch) == 1
    with pytest.raises(ValueError, match="outside world"):
        next(rank_batches(dataset, 10, 2, 2))


def test_ranks_map_shards_instead_of_loading_them(dataset, monkeypatch):
    """Each rank maps the shards (reading only the pages of its rows), never decodes a whole shard."""
    opened = []
    shard = EncodedDataset.shard

    def spy(self, index, mmap=False):
        chunk = shard(self, index, mmap)
        opened.append(isinstance(chunk.ids, np.memmap) and isinstance(chunk.bags[0].values, np.memmap))
        return chunk

    monkeypatch.setattr(EncodedDataset, "shard", spy)
    parts = list(rank_batches(dataset, 100, 1, 2))
    assert opened and all(opened)
    assert not isinstance(parts[0].batch.sparse.ids, np.memmap)  # the rows taken are copied out
    assert sum(p.real_rows for p in parts) == 10 * 50 + 1  # 50 of each 100-row batch, 1 of the last 3
