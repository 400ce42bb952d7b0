"""Hot rows inside Unified Embedding's shared table: the hottest training values own their K_f rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featmux.embeddings import Budget, EmbeddingSpec, Vocabulary, build_embedding, embedding_from_config
from featmux.embeddings.precision import Precision, row_bytes
from featmux.features import CategoricalFeature, Pooling, ValueEncoding
from featmux.sparse import Bag, SparseFeatures

DIM = 4
FEATURES = (
    CategoricalFeature("a", ValueEncoding.INT),
    CategoricalFeature("b", ValueEncoding.INT),
    CategoricalFeature("tags", ValueEncoding.INT, multivalent=True, pooling=Pooling.SUM),
)


def train_vocabulary() -> Vocabulary:
    vocab = Vocabulary([f.name for f in FEATURES])
    vocab.update("a", np.repeat(np.arange(100), np.arange(100, 0, -1)))  # value v seen 100 - v times
    vocab.update("b", np.arange(500))  # a flat tail: every value once
    vocab.update("tags", np.repeat(np.arange(20), np.arange(200, 0, -10)))  # tag t seen 200 - 10t times
    return vocab


def spec(budget: int = 3000, **options) -> EmbeddingSpec:
    return EmbeddingSpec("unified", DIM, Budget(bytes=budget), options={"hot_share": 0.4, **options})


def test_hot_values_are_the_hottest_training_values_within_the_budget():
    layer = build_embedding(FEATURES, spec(chunks={"a": 2}), train_vocabulary())
    hot = layer.shared.hot
    # a hot value of `a` costs 2 rows of 16 bytes and an 8-byte key (40); one of `tags` 24; b's are all cold
    assert hot["b"] == 0 and hot["a"] > 0 and hot["tags"] > 0
    assert hot["a"] * 40 + hot["tags"] * 24 <= 0.4 * 3000 < hot["a"] * 40 + hot["tags"] * 24 + 40
    assert layer.config()["hot"] == {n: h for n, h in hot.items() if h}
    hot_rows = 2 * hot["a"] + hot["tags"]
    assert layer.shared.num_rows == hot_rows + layer.unified_config.rows
    assert layer.memory_bytes() == layer.shared.num_rows * DIM * 4 + (hot["a"] + hot["tags"]) * 8
    assert layer.memory_bytes() <= 3000 < layer.memory_bytes() + DIM * 4  # exact to the row
    keys = layer.shared.hot_keys
    torch.testing.assert_close(keys[: hot["a"]], torch.arange(hot["a"]))  # a's values 0.. are hottest
    torch.testing.assert_close(keys[hot["a"] :], torch.arange(hot["tags"]))

    w = layer.shared.weight
    ids = torch.tensor([[3, 7], [hot["a"], 8]])
    bags = (Bag(torch.tensor([0, 19, 0]), torch.tensor([0, 2, 3])),)
    out = layer(SparseFeatures(ids, bags))  # [B, 2 + 1 + 1, D]: a#0, a#1, b#0, tags#0
    torch.testing.assert_close(out[0, :2], w[6:8])  # hot a=3: its own rows 2*3, 2*3 + 1
    cold = layer.shared.univalent_rows(ids)
    assert (cold[1, :2] >= hot_rows).all() and (cold[:, 2] >= hot_rows).all()  # a cold value, b: hashed
    tag_zero = 2 * hot["a"]  # the tags block follows a's
    tag_cold = layer.shared.bag_rows(0, torch.tensor([19]))[0, 0]
    assert tag_cold >= hot_rows
    torch.testing.assert_close(out[0, 3], w[tag_zero] + w[tag_cold])
    torch.testing.assert_close(out[1, 3], w[tag_zero])


def test_hot_sets_come_from_the_vocabulary_given_the_training_split_only():
    train = train_vocabulary()
    layer = build_embedding(FEATURES, spec(), train)
    # the same values, but the held-out rows are dominated by b's value 7 and a's tail
    later = train_vocabulary()
    later.update("b", np.full(10_000, 7))
    later.update("a", np.repeat(np.arange(90, 100), 1000))
    with_later = build_embedding(FEATURES, spec(), later)
    assert layer.shared.hot["b"] == 0 and with_later.shared.hot["b"] >= 1  # b's 7 only in `later`
    a_keys = layer.shared.hot_keys[: layer.shared.hot["a"]]
    assert a_keys.max() < 90  # a's hot set is the training head, not the held-out tail


def test_checkpoint_round_trip_keeps_hot_keys_and_output(tmp_path):
    layer = build_embedding(FEATURES, spec(chunks={"a": 2}, qat_bits=8), train_vocabulary())
    with torch.no_grad():
        layer.shared.weight.normal_()
    ids = torch.tensor([[0, 1], [2, 499], [99, 5]])
    bags = (Bag(torch.tensor([0, 1, 19]), torch.tensor([0, 1, 1, 3])),)
    out = layer(SparseFeatures(ids, bags))
    torch.save({"config": layer.config(), "state": layer.state_dict()}, tmp_path / "hot.pt")
    saved = torch.load(tmp_path / "hot.pt", weights_only=True)
    rebuilt = embedding_from_config(FEATURES, saved["config"])  # no vocabulary: keys from the state
    rebuilt.load_state_dict(saved["state"])
    torch.testing.assert_close(rebuilt.shared.hot_keys, layer.shared.hot_keys, rtol=0, atol=0)
    torch.testing.assert_close(rebuilt(SparseFeatures(ids, bags)), out, rtol=0, atol=0)
    assert layer.serving_bytes() <= 3000 < layer.serving_bytes() + row_bytes(Precision.INT8, DIM)


def test_hot_rows_need_counts_and_a_share_in_range():
    with pytest.raises(ValueError, match="need a vocabulary"):
        build_embedding(FEATURES, spec(), None)
    with pytest.raises(ValueError, match="hot_share must be in"):
        spec(hot_share=1.0)
    layer = build_embedding(FEATURES, spec(), train_vocabulary())
    short = Vocabulary([f.name for f in FEATURES])
    short.update("a", np.arange(3))
    with pytest.raises(ValueError, match="values for hot counts"):
        layer.fill_vocabulary(short)
