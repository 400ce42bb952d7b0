"""Clustered compositional embeddings: byte accounting, pointers vs hashing, k-means re-clustering."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from featmux.embeddings import Budget, EmbeddingSpec, Vocabulary, build_embedding, embedding_from_config
from featmux.embeddings.budget import split_rows
from featmux.embeddings.cce import ClusteredEmbedding
from featmux.embeddings.kmeans import kmeans
from featmux.hashing.mixer import feature_salt, salted_rows, splitmix64

DIM = 8
FULL_BYTES = (1000 + 300 + 4 + 18 + 4) * DIM * 4  # the fixture vocabulary's collisionless table


@pytest.fixture
def skewed(features, cardinality):
    """The fixture's values with Zipf-like counts (value r of a feature seen ceil(1000 / (r + 1)) times)."""
    vocab = Vocabulary([f.name for f in features])
    for name, n in cardinality.items():
        vocab.update(name, np.repeat(np.arange(n), -(-1000 // np.arange(1, n + 1))))
    return vocab


def _cce(features, vocabulary, budget="1/4", **options) -> ClusteredEmbedding:
    torch.manual_seed(0)
    layer = build_embedding(
        features, EmbeddingSpec("cce", DIM, Budget.parse(budget), options=options), vocabulary
    )
    assert isinstance(layer, ClusteredEmbedding)
    return layer


def _known_embeddings(layer: ClusteredEmbedding, name: str) -> torch.Tensor:
    slot = [f.name for f in (*layer.univalent, *layer.multivalent)].index(name)
    lo, hi = layer._key_slices[slot]
    return layer.embed(layer.keys[lo:hi], slot).detach()  # [H_f, D]


@pytest.mark.parametrize("budget", ["1/4", "1/8", "bytes:7000"])
def test_bytes_count_rows_keys_pointers_and_salts_and_fill_the_budget(features, vocabulary, budget):
    layer = _cce(features, vocabulary, budget)
    c, rows, known = layer.columns, sum(layer.rows.values()), sum(layer.known.values())
    assert layer.memory_bytes() == c * rows * DIM * 4 + known * (8 + 4 * c) + len(features) * c * 8
    target = Budget.parse(budget).target(FULL_BYTES // 4, DIM).amount
    assert layer.memory_bytes() <= target
    assert target - layer.memory_bytes() < c * DIM * 4  # one more row in every column would not fit
    # at most pointer_share (0.5) of the budget goes to the known values' keys and pointers
    assert 0 < known * (8 + 4 * c) <= 0.5 * target


def test_rows_follow_the_square_root_of_cardinality(features, vocabulary):
    layer = _cce(features, vocabulary, "1/4")
    caps = [1001, 301, 5, 19]
    total = sum(layer.rows.values())
    assert list(layer.rows.values()) == split_rows(total, caps, weights=[c**0.5 for c in caps])
    assert split_rows(total, caps)[2] == 1 < layer.rows["device"]  # by cardinality: one row for 4 values


def test_a_parameter_budget_makes_every_value_known(features, vocabulary):
    layer = _cce(features, vocabulary, "params:3000")
    assert layer.known == {"user": 1000, "item": 300, "device": 4, "genres": 18}
    assert 3000 - 2 * DIM < layer.num_parameters() <= 3000


def test_the_most_frequent_values_get_pointers(features):
    vocab = Vocabulary([f.name for f in features])
    for f in features:
        vocab.update(f.name, np.arange(50))
    vocab.update("user", np.repeat(np.arange(100, 110), 5))  # ten hot users
    layer = build_embedding(features, EmbeddingSpec("cce", DIM, Budget(bytes=1500)), vocab)
    user = [f.name for f in features].index("user")
    lo, hi = layer._key_slices[user]
    assert hi - lo >= 10 and set(range(100, 110)) <= set(layer.keys[lo:hi].tolist())


def test_known_values_read_their_pointers_and_others_their_hashes(features, vocabulary, sparse):
    layer = _cce(features, vocabulary)
    lo, hi = layer._key_slices[0]  # user
    known, unseen = layer.keys[lo], torch.tensor(5000)
    assert unseen not in layer.keys[lo:hi]
    table = layer.weight.view(layer.columns, layer.total_rows, DIM)
    hashed = salted_rows(splitmix64(unseen).unsqueeze(-1), layer.salts[0], layer.rows["user"])
    expected = table[torch.arange(layer.columns), hashed].sum(0)
    torch.testing.assert_close(layer.embed(unseen.view(1), 0)[0], expected, rtol=0, atol=0)
    # filled pointers start as the hashes; pointing a known value elsewhere moves only that value
    before = layer(sparse)
    with torch.no_grad():
        layer.pointers[lo] = (layer.pointers[lo] + 1) % layer.rows["user"]
    moved = table[torch.arange(layer.columns), layer.pointers[lo].long()].sum(0)
    torch.testing.assert_close(layer.embed(known.view(1), 0)[0], moved, rtol=0, atol=0)
    torch.testing.assert_close(layer(sparse), before, rtol=0, atol=0)  # the batch has no user 0


def test_kmeans_loss_never_increases_and_is_seeded():
    points = torch.randn(500, 4, generator=torch.Generator().manual_seed(0))
    first = kmeans(points, 12, 6, torch.Generator().manual_seed(3))
    assert all(b <= a * (1 + 1e-6) for a, b in itertools.pairwise(first.losses))
    assert first.losses[-1] < 0.8 * first.losses[0]
    dist = (points - first.centroids[first.assignments]).pow(2).sum()
    assert float(dist) == pytest.approx(first.losses[-1], rel=1e-4)
    again = kmeans(points, 12, 6, torch.Generator().manual_seed(3))
    assert torch.equal(again.centroids, first.centroids) and torch.equal(again.assignments, first.assignments)
    other = kmeans(points, 12, 6, torch.Generator().manual_seed(4))
    assert not torch.equal(other.assignments, first.assignments)
    with pytest.raises(ValueError, match="1 <= k <= n"):
        kmeans(points, 501, 1, torch.Generator())


def test_reclustering_turns_one_column_into_centroids_and_rehashes_the_other(features, skewed, sparse):
    layer = _cce(features, skewed, fit_residual=False)  # the paper's: the re-hashed column restarts at zero
    with torch.no_grad():
        layer.weight.normal_()  # embeddings as training might leave them: spread, not clustered
    before = _known_embeddings(layer, "user")
    salts = layer.salts.clone()
    losses = layer.recluster(0)
    assert set(losses) == {"user", "item", "device", "genres"}
    user = losses["user"]
    assert user[-1] < user[0] and all(b <= a * (1 + 1e-6) for a, b in itertools.pairwise(user))
    after = _known_embeddings(layer, "user")
    # every known value now reads its centroid: the distortion is the final k-means loss
    assert float((before - after).pow(2).sum()) == pytest.approx(user[-1], rel=1e-4)
    k = layer.rows["user"]
    assert torch.unique(after, dim=0).shape[0] <= k < before.shape[0]
    table = layer.weight.view(layer.columns, layer.total_rows, DIM)
    assert torch.equal(table[1, :k], torch.zeros(k, DIM))  # the residual column restarts at zero
    assert torch.equal(layer.salts[:, 0], salts[:, 0]) and not torch.equal(layer.salts[:, 1], salts[:, 1])
    assert layer.salts[0, 1] == feature_salt("user", 3)  # column 1, round 0 of c = 2 columns
    lo, hi = layer._key_slices[0]
    rehashed = salted_rows(splitmix64(layer.keys[lo:hi]), layer.salts[0, 1], k)
    assert torch.equal(layer.pointers[lo:hi, 1].long(), rehashed)
    # round 1 clusters into column 1 and re-hashes column 0
    layer.recluster(1)
    assert layer.salts[0, 0] == feature_salt("user", 4) and layer.salts[0, 1] == feature_salt("user", 3)
    assert torch.isfinite(layer(sparse)).all()


def test_the_rehashed_column_starts_at_the_least_squares_fit_of_the_residual(features, skewed):
    layer = _cce(features, skewed)  # fit_residual=True, the default
    with torch.no_grad():
        layer.weight.normal_()
    before = _known_embeddings(layer, "user")
    loss = layer.recluster(0)["user"][-1]
    after = _known_embeddings(layer, "user")
    distortion = float((before - after).pow(2).sum())
    assert distortion < 0.9 * loss  # below what the centroids alone leave (the zero start)
    # the fit is a least-squares optimum: nudging the re-hashed rows only adds distortion
    table = layer.weight.view(layer.columns, layer.total_rows, DIM)
    k = layer.rows["user"]
    with torch.no_grad():
        table[1, :k] += 0.01
    assert float((before - _known_embeddings(layer, "user")).pow(2).sum()) > distortion


def test_reclustering_is_deterministic_given_the_seed(features, skewed):
    def clustered(seed: int) -> ClusteredEmbedding:
        layer = _cce(features, skewed, seed=seed)
        with torch.no_grad():
            layer.weight.normal_(generator=torch.Generator().manual_seed(7))
        layer.recluster(0)
        return layer

    a, b, other = clustered(0), clustered(0), clustered(1)
    assert torch.equal(a.pointers, b.pointers) and torch.equal(a.weight, b.weight)
    assert not torch.equal(a.pointers, other.pointers)


def test_on_train_step_follows_the_schedule(features, vocabulary, monkeypatch):
    layer = _cce(features, vocabulary, recluster_every=10, reclusters=2)
    rounds = []
    monkeypatch.setattr(layer, "recluster", rounds.append)
    for step in range(1, 61):
        layer.on_train_step(step)
    assert rounds == [0, 1]
    never = _cce(features, vocabulary, recluster_every=0)
    monkeypatch.setattr(never, "recluster", rounds.append)
    never.on_train_step(1000)
    assert rounds == [0, 1]


def test_checkpoint_round_trip_restores_pointers_and_salts(features, skewed, sparse, tmp_path):
    layer = _cce(features, skewed, columns=3)
    with torch.no_grad():
        layer.weight.normal_()
    layer.recluster(0)
    layer.recluster(1)
    torch.save({"config": layer.config(), "state": layer.state_dict()}, tmp_path / "cce.pt")
    saved = torch.load(tmp_path / "cce.pt", weights_only=True)
    rebuilt = embedding_from_config(features, saved["config"])
    rebuilt.load_state_dict(saved["state"])
    for name in ("keys", "pointers", "salts"):
        assert torch.equal(getattr(rebuilt, name), getattr(layer, name)), name
    torch.testing.assert_close(rebuilt(sparse), layer(sparse), rtol=0, atol=0)
    assert rebuilt.config() == layer.config() and rebuilt.memory_bytes() == layer.memory_bytes()


def test_a_feature_with_no_more_known_values_than_rows_clusters_exactly(features, skewed):
    rows = {"user": 40, "item": 20, "device": 6, "genres": 5}
    known = {"user": 100, "item": 50, "device": 4, "genres": 0}
    layer = embedding_from_config(features, {**_cce(features, skewed).config(), "rows": rows, "known": known})
    layer.fill_vocabulary(skewed)
    with torch.no_grad():
        layer.weight.normal_()
    before = _known_embeddings(layer, "device")
    losses = layer.recluster(0)
    assert set(losses) == {"user", "item", "device"}  # genres has no known value: left to its hashes
    assert losses["device"][-1] == pytest.approx(0.0, abs=1e-4)
    torch.testing.assert_close(_known_embeddings(layer, "device"), before)


def test_options_are_validated(features, vocabulary):
    with pytest.raises(ValueError, match="columns must be >= 1"):
        EmbeddingSpec("cce", DIM, Budget.parse("1/4"), options={"columns": 0})
    with pytest.raises(ValueError, match="pointer_share"):
        EmbeddingSpec("cce", DIM, Budget.parse("1/4"), options={"pointer_share": 1.0})
    with pytest.raises(ValueError, match="too small for cce"):
        build_embedding(features, EmbeddingSpec("cce", DIM, Budget(bytes=300)), vocabulary)
    with pytest.raises(ValueError, match="needs a vocabulary"):
        build_embedding(features, EmbeddingSpec("cce", DIM, Budget(bytes=30000)), None)
