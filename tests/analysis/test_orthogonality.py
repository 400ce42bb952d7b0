from __future__ import annotations

import numpy as np
import pytest
import torch

from featmux.analysis.orthogonality import (
    FirstLayer,
    checkpoint_orthogonality,
    feature_columns,
    first_dense_weight,
    model_orthogonality,
    orthogonality,
    principal_angles,
)
from featmux.embeddings import UnifiedEmbedding, UnifiedEmbeddingConfig
from featmux.features import CategoricalFeature, NumericFeature, Schema, ValueEncoding
from featmux.models import build_model
from featmux.training.checkpoint import save_model

FEATURES = tuple(CategoricalFeature(n, ValueEncoding.INT) for n in ("user", "item", "city"))


def test_orthogonal_blocks_score_zero():
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(12, 12)))
    w = q[:, :9] @ np.diag(np.arange(1.0, 10.0))  # orthogonal columns, scaled: spaces still orthogonal
    report = orthogonality(w, {"a": np.arange(0, 3), "b": np.arange(3, 6), "c": np.arange(6, 9)})
    assert report.mean_score == pytest.approx(0.0, abs=1e-12)
    assert report.ranks == (3, 3, 3) and report.out_dim == 12
    np.testing.assert_allclose(report.angles[("a", "b")], [90.0, 90.0, 90.0])
    assert report.baseline[0, 1] == pytest.approx(3 / 12)


def test_identical_blocks_score_one():
    block = np.random.default_rng(1).normal(size=(10, 4))
    mix = np.random.default_rng(2).normal(size=(4, 4))  # same column space, different basis
    w = np.concatenate([block, block @ mix], axis=1)
    report = orthogonality(w, {"a": np.arange(4), "b": np.arange(4, 8)})
    assert report.mean_score == pytest.approx(1.0)
    np.testing.assert_allclose(report.angles[("a", "b")], 0.0, atol=1e-5)


def test_partial_overlap_by_hand():
    e = np.eye(5)
    w = np.stack([e[0], e[1], e[0], e[2]], axis=1)  # a = span(e0, e1), b = span(e0, e2)
    report = orthogonality(w, {"a": np.array([0, 1]), "b": np.array([2, 3])})
    assert report.scores[0, 1] == pytest.approx(0.5)  # angles 0 and 90 degrees
    np.testing.assert_allclose(np.sort(report.angles[("a", "b")]), [0.0, 90.0], atol=1e-6)
    assert report.pairs()[0] == pytest.approx(
        {
            "feature": "a",
            "other": "b",
            "score": 0.5,
            "baseline": 0.4,
            "min_angle_deg": 0.0,
            "mean_angle_deg": 45.0,
        }
    )


def test_rank_deficient_block_and_principal_angles():
    e = np.eye(4)
    a = np.stack([e[0], 2 * e[0]], axis=1)  # rank 1
    report = orthogonality(np.concatenate([a, e[:, 1:3]], axis=1), {"a": np.arange(2), "b": np.arange(2, 4)})
    assert report.ranks == (1, 2) and report.scores[0, 1] == pytest.approx(0.0)
    assert principal_angles(e[:, :1], (e[:, 0] + e[:, 1])[:, None])[0] == pytest.approx(np.pi / 4)


def test_random_subspaces_match_the_baseline():
    w = np.random.default_rng(3).normal(size=(400, 80))
    report = orthogonality(w, feature_columns([f"f{i}#0" for i in range(8)], 10))
    assert report.mean_baseline == pytest.approx(10 / 400)
    assert report.mean_score == pytest.approx(report.mean_baseline, rel=0.2)


def test_feature_columns_group_chunks():
    cols = feature_columns(("user#0", "user#1", "item#0"), 3)
    np.testing.assert_array_equal(cols["user"], np.arange(6))
    np.testing.assert_array_equal(cols["item"], np.arange(6, 9))


def _model(name="dcnv2", options=None):
    config = UnifiedEmbeddingConfig(rows=50, embedding_dim=4, chunks={"user": 2})
    emb = UnifiedEmbedding(FEATURES, config)
    return build_model(name, emb, 2, options if options is not None else {"cross_layers": 1, "hidden": [16]})


def test_model_first_layer_blocks():
    model = _model()  # slots user#0, user#1, item#0, city#0 of D = 4, then 2 numeric features
    weight = first_dense_weight(model)
    assert torch.equal(weight, model.mlp[0].weight) and weight.shape == (16, 4 * 4 + 2)
    with torch.no_grad():  # input column c feeds only output row c: every feature's block is orthogonal
        model.mlp[0].weight.copy_(torch.diag(torch.arange(1.0, 17.0)) @ torch.eye(16, 18))
    report = model_orthogonality(model)
    assert report.features == ("user", "item", "city") and report.ranks == (8, 4, 4)
    assert report.mean_score == pytest.approx(0.0)
    cross = model_orthogonality(model, FirstLayer.CROSS)
    assert cross.out_dim == 18 and torch.equal(
        first_dense_weight(model, FirstLayer.CROSS), model.cross.layers[0].weight
    )


def test_checkpoint_round_trip(tmp_path):
    model = _model()
    schema = Schema("label", FEATURES, (NumericFeature("x0"), NumericFeature("x1")))
    save_model(tmp_path / "model.pt", model, schema)
    report = checkpoint_orthogonality(tmp_path / "model.pt")
    np.testing.assert_allclose(report.scores, model_orthogonality(model).scores)


def test_models_without_a_slot_layer_are_refused():
    with pytest.raises(ValueError, match="no auto layer"):
        first_dense_weight(_model("dlrm", {}))
    with pytest.raises(ValueError, match="no cross layer"):
        first_dense_weight(_model("deepfm", {"hidden": [8]}), FirstLayer.CROSS)


def test_stacked_dcnv2_reads_the_cross_layer_and_refuses_the_mlp():
    # the stacked MLP reads the cross output, as wide as the slots: the widths alone cannot tell
    model = _model(options={"cross_layers": 1, "hidden": [16], "structure": "stacked"})
    assert model.mlp[0].in_features == model.cross.layers[0].in_features
    assert torch.equal(first_dense_weight(model), model.cross.layers[0].weight)
    with pytest.raises(ValueError, match="reads the cross network's output"):
        first_dense_weight(model, FirstLayer.MLP)
    parallel = _model(options={"cross_layers": 1, "hidden": [16], "structure": "parallel"})
    assert torch.equal(first_dense_weight(parallel, FirstLayer.MLP), parallel.mlp[0].weight)
