from __future__ import annotations

import numpy as np

from featmux.data.cache import EncodedDataset


def _labels_and_ids(batches):
    ids = np.concatenate([b.sparse.ids.numpy() for b in batches])
    tags = [b.sparse.bags[0] for b in batches]
    return ids, tags


def test_shards_and_roundtrip(planted):
    _, train, _ = planted
    assert train.shard_rows == [1500, 1500, 1000]
    assert len(train) == 4000
    reopened = EncodedDataset(train.path)
    assert reopened.schema == train.schema


def test_every_row_once_per_epoch_and_deterministic(planted):
    _, train, _ = planted
    plain = np.concatenate([c.ids for c in train.chunks()])
    epoch0 = list(train.batches(512, shuffle=True, seed=7, epoch=0))
    ids0, _ = _labels_and_ids(epoch0)
    assert sorted(map(tuple, ids0)) == sorted(map(tuple, plain))  # a permutation of all rows
    assert sum(len(b) for b in epoch0) == 4000 and len(epoch0) == train.num_batches(512)
    again, _ = _labels_and_ids(train.batches(512, shuffle=True, seed=7, epoch=0))
    other, _ = _labels_and_ids(train.batches(512, shuffle=True, seed=7, epoch=1))
    assert np.array_equal(ids0, again) and not np.array_equal(ids0, other)


def test_start_batch_skips_exactly(planted):
    _, train, _ = planted
    full = list(train.batches(700, shuffle=True, seed=3, epoch=2))
    tail = list(train.batches(700, shuffle=True, seed=3, epoch=2, start_batch=3))
    assert len(tail) == len(full) - 3
    for a, b in zip(full[3:], tail, strict=True):
        assert np.array_equal(a.sparse.ids.numpy(), b.sparse.ids.numpy())
        assert np.array_equal(a.sparse.bags[0].values.numpy(), b.sparse.bags[0].values.numpy())
        assert np.array_equal(a.sparse.bags[0].offsets.numpy(), b.sparse.bags[0].offsets.numpy())
        assert np.array_equal(a.labels.numpy(), b.labels.numpy())


def test_bags_stay_aligned_with_rows_across_shard_boundaries(planted):
    _, train, _ = planted
    # reference: (row ids) -> tags, from the unshuffled chunks
    ref = {}
    for c in train.chunks():
        for r in range(len(c)):
            key = (*tuple(c.ids[r]), float(c.dense[r, 0]))
            ref[key] = tuple(c.bags[0].values[c.bags[0].offsets[r] : c.bags[0].offsets[r + 1]])
    for b in train.batches(1100, shuffle=True, seed=1):
        off, vals = b.sparse.bags[0].offsets.numpy(), b.sparse.bags[0].values.numpy()
        for r in range(len(b)):
            key = (*tuple(b.sparse.ids.numpy()[r]), float(b.dense.numpy()[r, 0]))
            assert ref[key] == tuple(vals[off[r] : off[r + 1]])


def test_vocabulary_counts(planted):
    _, train, _ = planted
    vocab = train.fit_vocabulary()
    ids = np.concatenate([c.ids for c in train.chunks()])
    assert vocab.cardinality("a") == len(np.unique(ids[:, 0]))
    assert int(vocab["a"].counts.sum()) == 4000
