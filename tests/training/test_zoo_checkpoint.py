"""A trained model of a compression method, or served quantized / pruned, reloads from model.pt."""

from __future__ import annotations

import pytest

from featmux.data.prepare import prepare
from featmux.training.checkpoint import load_model
from featmux.training.experiment import ExperimentConfig, run_experiment
from featmux.training.trainer import evaluate


@pytest.mark.parametrize(
    ("embedding", "extra"), [("qr", {}), ("hashing", {"precision": "int8"}), ("unified", {"prune": 0.5})]
)
def test_saved_model_reloads_with_the_same_test_auc(tmp_path, monkeypatch, embedding, extra):
    monkeypatch.setenv("FEATMUX_CACHE", str(tmp_path / "cache"))
    options = {"rows": 1200, "cardinalities": [10, 100, 1000]}
    config = ExperimentConfig(
        dataset_options=options,
        embedding=embedding,
        budget="1/4",
        embedding_dim=4,
        epochs=1,
        batch_size=256,
        threads=1,
        progress=False,
        checkpoint_dir=tmp_path / "run",
        **extra,
    )
    result = run_experiment(config)
    model, _ = load_model(tmp_path / "run" / "model.pt")
    assert model.embedding.config() == result["embedding_config"]
    test = prepare("synthetic", None, options, None, False, lambda _m: None).test
    assert evaluate(model, test).auc == result["test_auc"]
