"""The Trainer's ROW_ADAM option: the same run as SPARSE_ADAM, faster; resumable; bf16 autocast runs."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import PLANTED_SCHEMA, planted_chunk

from featmux.data.cache import EncodedDataset
from featmux.embeddings import Budget, EmbeddingSpec, build_embedding
from featmux.models import build_model
from featmux.training.config import OptimizerKind, TrainConfig
from featmux.training.trainer import Trainer

SCHEMA = PLANTED_SCHEMA


@pytest.fixture
def data(tmp_path):
    """Planted-logit rows whose tags carry no signal; train in 3 shards."""
    train = EncodedDataset.write(tmp_path / "train", SCHEMA, [planted_chunk(2000, 1, 0.0)], shard_rows=700)
    valid = EncodedDataset.write(tmp_path / "valid", SCHEMA, [planted_chunk(500, 2, 0.0)])
    return train, valid


def _model(train, method: str):
    torch.manual_seed(0)
    budget = None if method == "collisionless" else Budget(fraction=1.0)
    emb = build_embedding(SCHEMA.categorical, EmbeddingSpec(method, 8, budget), train.fit_vocabulary())
    return build_model("deepfm", emb, 1, {"hidden": [16]})


CONFIG = TrainConfig(
    epochs=2, batch_size=128, learning_rate=3e-3, progress=False, seed=1, threads=1, patience=5
)


@pytest.mark.parametrize("method", ["collisionless", "hashing", "unified"])
def test_row_adam_trains_like_sparse_adam(data, method):
    train, valid = data
    reference = _model(train, method)
    model = copy.deepcopy(reference)
    sparse = TrainConfig(**{**CONFIG.__dict__, "optimizer": OptimizerKind.SPARSE_ADAM, "embedding_l2": 1e-3})
    rows = TrainConfig(**{**sparse.__dict__, "optimizer": OptimizerKind.ROW_ADAM})
    expected = Trainer(reference, sparse, SCHEMA).fit(train, valid)
    got = Trainer(model, rows, SCHEMA).fit(train, valid)
    assert got.steps == expected.steps
    assert got.best_valid.auc == pytest.approx(expected.best_valid.auc, abs=2e-3)
    for a, b in zip(reference.state_dict().values(), model.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4)


def test_row_adam_resumes_bit_identically(data, tmp_path):
    train, valid = data
    cfg = TrainConfig(**{**CONFIG.__dict__, "optimizer": OptimizerKind.ROW_ADAM, "epochs": 2})
    whole = _model(train, "unified")
    Trainer(whole, cfg, SCHEMA).fit(train, valid)
    first = _model(train, "unified")
    Trainer(first, TrainConfig(**{**cfg.__dict__, "epochs": 1}), SCHEMA, tmp_path / "ck").fit(train, valid)
    resumed = _model(train, "unified")
    Trainer(resumed, cfg, SCHEMA, tmp_path / "ck").fit(train, valid)
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_bf16_autocast_trains_like_float32(data):
    train, valid = data
    results = []
    for bf16 in (False, True):
        model = _model(train, "unified")
        options = {
            "optimizer": OptimizerKind.ROW_ADAM,
            "autocast_bf16": bf16,
            "learning_rate": 2e-2,
            "epochs": 4,
        }
        results.append(
            Trainer(model, TrainConfig(**{**CONFIG.__dict__, **options}), SCHEMA).fit(train, valid)
        )
        assert all(p.dtype == torch.float32 for p in model.parameters())
    fp32, bf16 = (r.best_valid.auc for r in results)
    assert fp32 > 0.75
    assert bf16 == pytest.approx(fp32, abs=0.02)
