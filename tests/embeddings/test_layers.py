"""Parameter accounting, slot layout, chunking, pooling and save/load of every embedding method."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from featmux.embeddings import (
    Budget,
    CollisionlessEmbedding,
    EmbeddingSpec,
    HashingEmbedding,
    UnifiedEmbedding,
    UnifiedEmbeddingConfig,
    build_embedding,
    collisionless_parameters,
    embedding_from_config,
)
from featmux.hashing import feature_salt, salted_rows, splitmix64
from featmux.sparse import SparseFeatures

DIM = 8
FULL_ROWS = 1000 + 300 + 4 + 18 + 4  # the fixture vocabulary's cardinalities, plus one OOV row each


def test_collisionless_counts_and_lookup(features, vocabulary, sparse, cardinality):
    layer = CollisionlessEmbedding.from_vocabulary(features, vocabulary, DIM)
    assert layer.num_parameters() == FULL_ROWS * DIM == collisionless_parameters(features, vocabulary, DIM)
    assert layer.memory_bytes() == FULL_ROWS * DIM * 4 + sum(cardinality.values()) * 8 + 4 * 8
    out = layer(sparse)
    assert out.shape == (6, 4, DIM)
    # value v of feature user (known for v < 1000) reads row start + 1 + rank(v); unknown ones the OOV row
    ids = sparse.ids[:, 0]
    expected_rows = torch.where(ids < 1000, ids + 1, torch.zeros_like(ids))
    torch.testing.assert_close(out[:, 0], layer.weight[expected_rows])


def test_collisionless_min_count(features, vocabulary):
    vocabulary.update("user", torch.arange(10).numpy())  # user 0..9 now seen twice
    layer = CollisionlessEmbedding.from_vocabulary(features, vocabulary, DIM, min_count=2)
    assert layer.vocab_sizes == {"user": 10, "item": 0, "device": 0, "genres": 0}
    assert layer.num_parameters() == (11 + 1 + 1 + 1) * DIM


def test_hashing_rows_follow_budget(features, vocabulary, sparse):
    spec = EmbeddingSpec("hashing", DIM, Budget.parse("1/4"))
    layer = build_embedding(features, spec, vocabulary)
    assert isinstance(layer, HashingEmbedding)
    budget_rows = round(FULL_ROWS * DIM / 4) // DIM
    assert sum(layer.rows.values()) == budget_rows
    assert layer.num_parameters() == budget_rows * DIM
    # proportional to cardinality: 1000 : 300 : 4 : 18 of 331 rows
    assert layer.rows == {"user": 250, "item": 75, "device": 1, "genres": 5}
    out = layer(sparse)
    assert out.shape == (6, 4, DIM)
    # row of item value v: its block start + salted hash mod its size
    item = sparse.ids[:, 1]
    start = layer.rows["user"]
    rows = start + salted_rows(splitmix64(item), torch.tensor(feature_salt("item")), layer.rows["item"])
    torch.testing.assert_close(out[:, 1], layer.weight[rows])


@pytest.mark.parametrize("fraction", ["1/4", "1/16", "16"])
def test_unified_budget_is_exact(features, vocabulary, fraction):
    spec = EmbeddingSpec("unified", DIM, Budget.parse(fraction))
    if Budget.parse(fraction).fraction > 1:
        with pytest.warns(UserWarning, match="above the collisionless size"):
            layer = build_embedding(features, spec, vocabulary)
    else:
        layer = build_embedding(features, spec, vocabulary)
    # a fraction of the fp32 collisionless table's bytes; the shared table is all the layer stores
    budget_bytes = round(Budget.parse(fraction).fraction * FULL_ROWS * DIM * 4)
    assert layer.unified_config.rows == budget_bytes // (4 * DIM)
    assert layer.memory_bytes() == layer.num_parameters() * 4 == layer.unified_config.rows * DIM * 4


def test_unified_multi_chunk_concatenation(features, sparse):
    config = UnifiedEmbeddingConfig(
        rows=500, embedding_dim=DIM, num_tables=3, chunks={"user": 3, "genres": 2}
    )
    layer = UnifiedEmbedding(features, config)
    out = layer(sparse)
    assert layer.slot_names == ("user#0", "user#1", "user#2", "item#0", "device#0", "genres#0", "genres#1")
    assert out.shape == (6, 7, DIM)
    assert layer.num_parameters() == 500 * DIM
    shared = layer.shared
    # chunk c of `user` reads row start_t + hash(v; salt(user, c)) mod size_t: three different probes
    user = sparse.ids[:, 0]
    for c in range(3):
        size, start = shared.slot_sizes[c], shared.slot_starts[c]
        rows = start + salted_rows(splitmix64(user), torch.tensor(feature_salt("user", c)), size)
        torch.testing.assert_close(out[:, c], shared.weight[rows])
    assert not torch.equal(out[:, 0], out[:, 1])
    # the flattened output of a 3-chunk feature is the concatenation of its chunks
    flat = out.flatten(1)
    torch.testing.assert_close(flat[:, : 3 * DIM], torch.cat([out[:, 0], out[:, 1], out[:, 2]], dim=1))


def test_unified_sub_tables_partition_rows(features):
    config = UnifiedEmbeddingConfig(rows=1001, embedding_dim=DIM, num_tables=4, default_chunks=2)
    layer = UnifiedEmbedding(features, config)
    s = layer.shared
    bounds = {(int(a), int(b)) for a, b in zip(s.slot_starts, s.slot_sizes, strict=True)}
    assert bounds == {(0, 251), (251, 250), (501, 250), (751, 250)}
    # placed by name: a feature's two chunks go to consecutive sub-tables (h(name) + c) mod 4
    names = [n.rsplit("#", 1)[0] for n in s.slot_names]
    for k in range(0, len(names), 2):
        assert names[k] == names[k + 1] and s.slot_tables[k + 1] == (s.slot_tables[k] + 1) % 4
    assert set(s.slot_tables) == {0, 1, 2, 3}
    ids = torch.arange(-3000, 3000).reshape(-1, 3)
    rows = s.univalent_rows(ids)  # [B, 6]
    for j in range(rows.shape[1]):
        lo, size = int(s.slot_starts[j]), int(s.slot_sizes[j])
        assert rows[:, j].min() >= lo and rows[:, j].max() < lo + size


def test_unified_is_independent_of_feature_order(features, sparse):
    """Salts and placement come from names: permuting features permutes slots, never rehashes."""
    config = UnifiedEmbeddingConfig(rows=700, embedding_dim=DIM, num_tables=3, default_chunks=2)
    base = UnifiedEmbedding(features, config)
    base_rows = base.shared.univalent_rows(
        sparse.ids
    )  # [B, 6]: user#0, user#1, item#0, item#1, device#0, device#1
    uni = features[:3]
    for perm in itertools.permutations(range(3)):
        order = [uni[i] for i in perm] + [features[3]]
        layer = UnifiedEmbedding(order, config)
        rows = layer.shared.univalent_rows(sparse.ids[:, list(perm)])
        for k, i in enumerate(perm):
            torch.testing.assert_close(rows[:, 2 * k : 2 * k + 2], base_rows[:, 2 * i : 2 * i + 2])


def test_multivalent_mean_and_sum_pooling(features, sparse):
    from dataclasses import replace

    from featmux.features import Pooling

    for pooling in (Pooling.MEAN, Pooling.SUM):
        feats = (*features[:3], replace(features[3], pooling=pooling))
        layer = UnifiedEmbedding(
            feats, UnifiedEmbeddingConfig(rows=300, embedding_dim=DIM, chunks={"genres": 2})
        )
        out = layer(sparse)  # [6, 5, D]: user, item, device, genres#0, genres#1
        bag = sparse.bags[0]
        for c in range(2):
            rows = layer.shared.bag_rows(0, bag.values)[:, c]
            vecs = layer.shared.weight[rows]
            for b in range(6):
                lo, hi = int(bag.offsets[b]), int(bag.offsets[b + 1])
                if hi == lo:
                    expected = torch.zeros(DIM)  # empty bag pools to zeros
                else:
                    expected = vecs[lo:hi].mean(0) if pooling is Pooling.MEAN else vecs[lo:hi].sum(0)
                torch.testing.assert_close(out[b, 3 + c], expected)


def test_private_tables_for_tiny_features(features, vocabulary, sparse):
    spec = EmbeddingSpec("unified", DIM, Budget.parse("1/4"), options={"private_max_cardinality": 20})
    layer = build_embedding(features, spec, vocabulary)
    assert layer.unified_config.private == {"device": 4, "genres": 18}
    budget_bytes = round(FULL_ROWS * DIM * 4 / 4)
    # the private tables are paid first: their rows, their 4 + 18 vocabulary keys and 2 row starts
    private_bytes = (5 + 19) * DIM * 4 + (4 + 18) * 8 + 2 * 8
    assert layer.unified_config.rows == (budget_bytes - private_bytes) // (DIM * 4)
    assert layer.memory_bytes() == private_bytes + layer.unified_config.rows * DIM * 4 <= budget_bytes
    out = layer(sparse)
    assert layer.slot_names == ("user#0", "item#0", "device#0", "genres#0")
    assert out.shape == (6, 4, DIM)
    # device values 0..3 are all in the private vocabulary: each reads its own row
    private = layer.private
    torch.testing.assert_close(out[:, 2], private.weight[sparse.ids[:, 2] + 1])


@pytest.mark.parametrize(
    "spec",
    [
        EmbeddingSpec("collisionless", DIM),
        EmbeddingSpec("hashing", DIM, Budget.parse("1/8")),
        EmbeddingSpec(
            "unified",
            DIM,
            Budget.parse("1/8"),
            options={"num_tables": 2, "chunks": {"item": 2}, "private_max_cardinality": 5},
        ),
    ],
    ids=lambda s: s.method,
)
def test_save_load_gives_identical_output(features, vocabulary, sparse, spec, tmp_path):
    layer = build_embedding(features, spec, vocabulary)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    torch.save({"config": layer.config(), "state": layer.state_dict()}, tmp_path / "layer.pt")
    saved = torch.load(tmp_path / "layer.pt", weights_only=True)
    rebuilt = embedding_from_config(features, saved["config"])
    rebuilt.load_state_dict(saved["state"])
    torch.testing.assert_close(rebuilt(sparse), layer(sparse), rtol=0, atol=0)
    assert rebuilt.num_parameters() == layer.num_parameters()


def test_sparse_gradients_touch_only_looked_up_rows(features, sparse):
    layer = UnifiedEmbedding(features, UnifiedEmbeddingConfig(rows=10_000, embedding_dim=DIM))
    layer.set_sparse_gradients(True)
    layer(sparse).sum().backward()
    grad = layer.shared.weight.grad
    assert grad.is_sparse
    touched = grad.coalesce().indices()[0].unique()
    assert touched.numel() <= 6 * 3 + 7


def test_meta_device_allocates_nothing(features):
    layer = UnifiedEmbedding(
        features, UnifiedEmbeddingConfig(rows=10**9, embedding_dim=64), device=torch.device("meta")
    )
    assert layer.num_parameters() == 64 * 10**9
    assert layer.shared.weight.is_meta


def test_wrong_input_is_rejected(features, sparse):
    layer = UnifiedEmbedding(features, UnifiedEmbeddingConfig(rows=100, embedding_dim=DIM))
    with pytest.raises(ValueError, match="univalent id columns"):
        layer(SparseFeatures(sparse.ids[:, :2], sparse.bags))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rows": 2, "embedding_dim": 4, "num_tables": 3}, "at least num_tables"),
        ({"rows": 10, "embedding_dim": 0}, "embedding_dim"),
        ({"rows": 10, "embedding_dim": 4, "chunks": {"user": 0}}, "chunk counts"),
    ],
)
def test_unified_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        UnifiedEmbeddingConfig(**kwargs)


def test_unified_rejects_unknown_features(features):
    with pytest.raises(ValueError, match="unknown feature"):
        UnifiedEmbedding(features, UnifiedEmbeddingConfig(rows=10, embedding_dim=4, chunks={"nope": 2}))


def test_spec_rejects_options_of_other_methods():
    with pytest.raises(ValueError, match=r"unknown hashing option\(s\) \['num_tables'\]"):
        EmbeddingSpec("hashing", 8, Budget(0.5), options={"num_tables": 2})
    with pytest.raises(ValueError, match="fixed size"):
        EmbeddingSpec("collisionless", 8, Budget(0.5))


def test_embedding_bag_matches_functional(features, sparse):
    """Sanity check of the chunked pooling path against F.embedding_bag per chunk."""
    layer = UnifiedEmbedding(
        features, UnifiedEmbeddingConfig(rows=50, embedding_dim=DIM, chunks={"genres": 3})
    )
    out = layer(sparse)[:, 3:]
    rows = layer.shared.bag_rows(0, sparse.bags[0].values)
    for c in range(3):
        ref = F.embedding_bag(
            rows[:, c], layer.shared.weight, sparse.bags[0].offsets, mode="mean", include_last_offset=True
        )
        torch.testing.assert_close(out[:, c], ref)


def test_unified_placement_ignores_the_other_features(features, sparse):
    """Adding a feature or changing another feature's chunks moves no slot and changes no bucket id."""
    config = UnifiedEmbeddingConfig(rows=700, embedding_dim=DIM, num_tables=3, default_chunks=2)
    base = UnifiedEmbedding(features[:2], config).shared.univalent_rows(sparse.ids[:, :2])  # user, item
    more = UnifiedEmbedding(features, config).shared.univalent_rows(sparse.ids)  # + device, genres
    torch.testing.assert_close(more[:, :4], base)
    rechunked = replace_config(config, chunks={"item": 3})
    rows = UnifiedEmbedding(features[:2], rechunked).shared.univalent_rows(sparse.ids[:, :2])
    torch.testing.assert_close(rows[:, :2], base[:, :2])  # user's slots stay where they were
    torch.testing.assert_close(rows[:, 2:4], base[:, 2:4])  # item's first two chunks too


def replace_config(config, **changes):
    from dataclasses import replace

    return replace(config, **changes)


def test_unified_refuses_empty_sub_tables(features):
    config = UnifiedEmbeddingConfig(rows=700, embedding_dim=DIM, num_tables=9)  # 4 slots
    with pytest.raises(ValueError, match=r"num_tables \(9\) exceeds the 4 \(feature, chunk\) slots"):
        UnifiedEmbedding(features, config)
    from featmux.embeddings.unified import check_placement

    with pytest.raises(ValueError, match=r"sub-table\(s\) \[1\] of 3 empty"):
        check_placement({("a", 0): 0, ("b", 0): 2, ("c", 0): 0}, 3)


def test_unified_old_layout_still_loads(features, sparse):
    """A config without `placement` (written before layout version 2) rebuilds the old round-robin."""
    from featmux.embeddings import embedding_from_config
    from featmux.embeddings.unified import PLACEMENT_VERSION, placement

    config = UnifiedEmbeddingConfig(rows=700, embedding_dim=DIM, num_tables=3, default_chunks=2)
    layer = UnifiedEmbedding(features, config)
    assert layer.config()["placement"] == PLACEMENT_VERSION == 2
    old = {k: v for k, v in layer.config().items() if k != "placement"}
    rebuilt = embedding_from_config(features, old)
    slots = [(n.rsplit("#", 1)[0], int(n.rsplit("#", 1)[1])) for n in rebuilt.shared.slot_names]
    legacy = placement(slots, 3, version=1)
    assert rebuilt.shared.slot_tables == tuple(legacy[s] for s in slots)
    assert rebuilt.config()["placement"] == 1
    same = embedding_from_config(features, layer.config())
    assert same.shared.slot_tables == layer.shared.slot_tables
    with pytest.raises(ValueError, match="placement layout version 7"):
        config.with_placement(7)
