"""Row-update mode and row optimizers: same results as the standard lookup and torch's SparseAdam."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from featmux.embeddings import (
    CollisionlessEmbedding,
    FeatureEmbedding,
    HashingEmbedding,
    UnifiedEmbedding,
    UnifiedEmbeddingConfig,
)
from featmux.hashing.mixer import salted_rows, splitmix64
from featmux.sparse import Bag, SparseFeatures
from featmux.training.optim import RowAdam, RowWiseAdagrad


def _layers(features, vocabulary) -> dict[str, FeatureEmbedding]:
    torch.manual_seed(0)
    unified = UnifiedEmbedding(
        features,
        UnifiedEmbeddingConfig(
            rows=64, embedding_dim=4, num_tables=2, chunks={"user": 2}, private={"device": 4}
        ),
    )
    unified.fill_private_vocabulary(vocabulary)
    return {
        "unified": unified,
        "hashing": HashingEmbedding(features, 4, {"user": 40, "item": 30, "device": 4, "genres": 8}),
        "collisionless": CollisionlessEmbedding.from_vocabulary(features, vocabulary, 4),
    }


def _batch(seed: int) -> SparseFeatures:
    g = torch.Generator().manual_seed(seed)
    ids = torch.stack(
        [torch.randint(0, 50, (32,), generator=g), torch.randint(0, 20, (32,), generator=g),
         torch.randint(0, 4, (32,), generator=g)],
        dim=1,
    )  # fmt: skip
    lengths = torch.randint(0, 4, (32,), generator=g)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    values = torch.randint(0, 18, (int(offsets[-1]),), generator=g)
    return SparseFeatures(ids, (Bag(values, offsets),))


def _loss(layer: FeatureEmbedding, sparse: SparseFeatures) -> torch.Tensor:
    out = layer(sparse)  # [B, S, D]
    target = torch.linspace(-1, 1, out[0].numel()).view_as(out[0])
    return F.mse_loss(out, target.expand_as(out), reduction="sum")


@pytest.mark.parametrize("method", ["unified", "hashing", "collisionless"])
def test_row_forward_matches_standard_forward_and_gradient(features, vocabulary, method):
    layer = _layers(features, vocabulary)[method]
    sparse = _batch(3)
    expected = layer(sparse)
    _loss(layer, sparse).backward()
    dense_grads = [t.weight.grad.clone() for t in layer.table_modules()]
    layer.zero_grad()
    layer.set_row_updates(True)
    got = layer(sparse)
    torch.testing.assert_close(got, expected)
    _loss(layer, sparse).backward()
    for table, dense in zip(layer.table_modules(), dense_grads, strict=True):
        assert table.weight.grad is None
        lookups = table.take_lookups()
        assert len(lookups) == 2  # two forwards with gradients since the last take
        rows, values = lookups[1]
        assert torch.equal(rows, torch.unique(rows))
        torch.testing.assert_close(values.grad, dense[rows])
        untouched = torch.ones(dense.shape[0], dtype=torch.bool)
        untouched[rows] = False
        assert torch.count_nonzero(dense[untouched]) == 0


def test_no_lookups_recorded_without_gradients(features, vocabulary):
    layer = _layers(features, vocabulary)["unified"]
    layer.set_row_updates(True)
    with torch.no_grad():
        layer(_batch(1))
    assert all(not t.take_lookups() for t in layer.table_modules())


@pytest.mark.parametrize("method", ["unified", "hashing", "collisionless"])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_row_adam_matches_sparse_adam(features, vocabulary, method, weight_decay):
    reference = _layers(features, vocabulary)[method]
    layer = copy.deepcopy(reference)
    reference.set_sparse_gradients(True)
    sparse_adam = torch.optim.SparseAdam([t.weight for t in reference.table_modules()], lr=0.01)
    row_adam = RowAdam(layer.table_modules(), lr=0.01, weight_decay=weight_decay)
    for step in range(5):
        batch = _batch(step)
        sparse_adam.zero_grad()
        _loss(reference, batch).backward()
        if weight_decay:  # lazy L2 as the Trainer adds it for sparse gradients
            for t in reference.table_modules():
                grad = t.weight.grad.coalesce()
                rows = grad.indices()[0]
                t.weight.grad = torch.sparse_coo_tensor(
                    grad.indices(),
                    grad.values() + weight_decay * t.weight.detach()[rows],
                    grad.shape,
                    check_invariants=False,
                )
        sparse_adam.step()
        row_adam.zero_grad()
        _loss(layer, batch).backward()
        row_adam.step()
    for a, b in zip(reference.table_modules(), layer.table_modules(), strict=True):
        torch.testing.assert_close(b.weight, a.weight, rtol=1e-5, atol=1e-6)


def test_gradient_accumulation_merges_lookups(features, vocabulary):
    reference = _layers(features, vocabulary)["hashing"]
    layer = copy.deepcopy(reference)
    reference.set_sparse_gradients(True)
    sparse_adam = torch.optim.SparseAdam(reference.table_parameters(), lr=0.01)
    row_adam = RowAdam(layer.table_modules(), lr=0.01)
    for layer_, opt in ((reference, sparse_adam), (layer, row_adam)):
        opt.zero_grad()
        (_loss(layer_, _batch(1)) + _loss(layer_, _batch(2))).backward()
        opt.step()
    torch.testing.assert_close(layer.weight, reference.weight, rtol=1e-5, atol=1e-6)


def test_zero_grad_drops_stale_lookups_and_state_round_trips(features, vocabulary):
    layer = _layers(features, vocabulary)["unified"]
    opt = RowAdam(layer.table_modules(), lr=0.01)
    _loss(layer, _batch(1)).backward()  # never stepped
    opt.zero_grad()
    assert all(not t._lookups for t in layer.table_modules())
    _loss(layer, _batch(2)).backward()
    opt.step()
    twin = copy.deepcopy(layer)
    twin_opt = RowAdam(twin.table_modules(), lr=0.01)
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    for layer_, opt_ in ((layer, opt), (twin, twin_opt)):
        opt_.zero_grad()
        _loss(layer_, _batch(3)).backward()
        opt_.step()
    for a, b in zip(layer.table_modules(), twin.table_modules(), strict=True):
        torch.testing.assert_close(a.weight, b.weight)


def test_rowwise_adagrad_reference(features, vocabulary):
    layer = _layers(features, vocabulary)["hashing"]
    start = layer.weight.detach().clone()
    opt = RowWiseAdagrad(layer.table_modules(), lr=0.1)
    batch = _batch(4)
    probe = copy.deepcopy(layer)
    probe.set_row_updates(False)  # the plain lookup: a dense gradient to compare with
    _loss(probe, batch).backward()
    grad = probe.weight.grad
    _loss(layer, batch).backward()
    opt.step()
    acc = grad.square().mean(dim=1, keepdim=True)
    touched = grad.abs().sum(dim=1) > 0
    expected = start - 0.1 * grad / (acc.sqrt() + 1e-8)
    torch.testing.assert_close(layer.weight[touched], expected[touched])
    torch.testing.assert_close(layer.weight[~touched], start[~touched])


def test_in_place_mixing_leaves_inputs_alone():
    x = torch.tensor([[0, 1, -5], [1 << 40, -(1 << 62), 7]], dtype=torch.int64)
    before = x.clone()
    premixed = splitmix64(x)
    assert torch.equal(x, before)
    kept = premixed.clone()
    rows = salted_rows(premixed, torch.tensor([3, 4, 5]), torch.tensor([10, 20, 30]))
    assert torch.equal(premixed, kept)
    assert bool(((rows >= 0) & (rows < torch.tensor([10, 20, 30]))).all())
