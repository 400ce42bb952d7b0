"""PEP learned-threshold pruning: the soft threshold, gradients to the thresholds, the sparsity reached,
the final cut to the target, CSR bytes exact, round trips, and the CLI flags."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import planted_chunk

from featmux.data.cache import EncodedDataset
from featmux.embeddings import Budget, EmbeddingSpec, build_embedding, embedding_from_config
from featmux.embeddings.pep import LearnedPruningEmbedding
from featmux.models import build_model
from featmux.training.config import OptimizerKind, TrainConfig
from featmux.training.experiment import ExperimentConfig
from featmux.training.trainer import Trainer

DIM = 8
SPECS = [
    EmbeddingSpec("hashing", DIM, Budget.parse("1/4")),
    EmbeddingSpec("unified", DIM, Budget.parse("1/4"), options={"chunks": {"genres": 2}}),
    EmbeddingSpec("collisionless", DIM),
]


def _pep(spec, features, vocabulary, scale=1.0):
    """A PEP layer with N(0, 1) entries and per-row thresholds sigmoid(s) spread over (0.05, 0.9)."""
    torch.manual_seed(0)
    layer = LearnedPruningEmbedding(build_embedding(features, spec, vocabulary), init=-10.0)
    with torch.no_grad():
        for table in layer.inner.table_modules():
            table.weight.normal_()
            table.pep.logits.uniform_(-3.0, 2.0)
    return layer


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.method)
def test_rows_are_soft_thresholded_and_gradients_reach_the_thresholds(spec, features, vocabulary, sparse):
    layer = _pep(spec, features, vocabulary)
    out = layer(sparse)
    table = layer.inner.table_modules()[0]
    if spec.method == "collisionless":  # the univalent slots read known rows: check the formula there
        rows = table.univalent_rows(sparse.ids)  # [B, F_u]
        w, g = table.weight[rows], torch.sigmoid(table.pep.logits[rows]).unsqueeze(-1)
        expected = torch.sign(w) * torch.clamp(w.abs() - g, min=0)
        torch.testing.assert_close(out[:, : rows.shape[1]], expected, rtol=0, atol=0)
        assert (out == 0).float().mean() > 0.2  # the thresholds zero a good share
    (out * torch.randn_like(out)).sum().backward()
    for t in layer.inner.table_modules():
        assert t.pep.logits.grad is not None and t.pep.logits.grad.abs().sum() > 0
        assert t.weight.grad is not None and t.weight.grad.abs().sum() > 0
    assert set(map(id, layer.table_parameters())) == {id(t.weight) for t in layer.inner.table_modules()}


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.method)
@pytest.mark.parametrize("target", [0.1, 0.8])
def test_pruned_at_the_sparsity_reached_or_cut_to_the_target(
    spec, target, features, vocabulary, sparse, tmp_path
):
    layer = _pep(spec, features, vocabulary)
    tables = layer.inner.table_modules()
    dense = layer.thresholded()
    reached = layer.sparsity()
    nonzero = [int(torch.count_nonzero(w)) for w in dense]
    assert reached == pytest.approx(1 - sum(nonzero) / sum(w.numel() for w in dense))
    assert 0.2 < reached < 0.8  # so that 0.1 keeps PEP's own zeros and 0.8 cuts further
    keys = layer.unpruned_bytes() - sum(t.weight.numel() for t in tables) * 4
    assert layer.memory_bytes() - layer.unpruned_bytes() == sum(t.weight.shape[0] for t in tables) * 4
    rows = sum(t.weight.shape[0] for t in tables)
    served = layer.pruned(target)
    kept = served.config()["prune_kept"]
    for w, k, n in zip(dense, kept, nonzero, strict=True):
        assert k == min(n, w.numel() - round(target * w.numel()))
    # CSR: value + uint8 column per kept entry, int32 row pointers, the layer's keys as they were
    assert served.memory_bytes() == sum(kept) * (4 + 1) + (rows + len(tables)) * 4 + keys
    stored = sum(t.numel() * t.element_size() for t in served.state_dict().values())
    assert served.memory_bytes() == stored
    for table, w, k in zip(served.inner.table_modules(), dense, kept, strict=True):
        read = table.served.read(torch.arange(w.shape[0]))
        if target < reached:  # the learned zeros, exactly
            torch.testing.assert_close(read, w, rtol=0, atol=0)
        else:  # the k largest entries of w'
            cut = w.abs().flatten().topk(k).values.min()
            torch.testing.assert_close(
                read, torch.where(w.abs() >= cut, w, torch.zeros_like(w)), rtol=0, atol=0
            )
    out = served(sparse)
    torch.save({"config": served.config(), "state": served.state_dict()}, tmp_path / "p.pt")
    saved = torch.load(tmp_path / "p.pt", weights_only=True)
    rebuilt = embedding_from_config(features, saved["config"])
    rebuilt.load_state_dict(saved["state"])
    torch.testing.assert_close(rebuilt(sparse), out, rtol=0, atol=0)
    assert rebuilt.memory_bytes() == served.memory_bytes()


def test_training_form_round_trips_with_its_thresholds(features, vocabulary, sparse, tmp_path):
    layer = _pep(SPECS[1], features, vocabulary)
    torch.save({"config": layer.config(), "state": layer.state_dict()}, tmp_path / "t.pt")
    saved = torch.load(tmp_path / "t.pt", weights_only=True)
    assert saved["config"]["pep_init"] == -10.0
    rebuilt = embedding_from_config(features, saved["config"])
    rebuilt.load_state_dict(saved["state"])
    torch.testing.assert_close(rebuilt(sparse), layer(sparse), rtol=0, atol=0)


def test_pep_refuses_layers_that_are_not_tables(features, vocabulary):
    dhe = build_embedding(features, EmbeddingSpec("dhe", DIM, Budget.parse("1/4")), vocabulary)
    with pytest.raises(ValueError, match="pep applies to fp32 table methods"):
        LearnedPruningEmbedding(dhe)
    with pytest.raises(ValueError, match="needs a target sparsity"):
        ExperimentConfig(prune_method="pep")


@pytest.mark.parametrize("optimizer", [OptimizerKind.ADAM, OptimizerKind.ROW_ADAM])
def test_thresholds_train_with_the_model(optimizer, tmp_path):
    from helpers import PLANTED_SCHEMA

    train = EncodedDataset.write(tmp_path / "train", PLANTED_SCHEMA, [planted_chunk(2000, 1)])
    torch.manual_seed(0)
    spec = EmbeddingSpec("collisionless", DIM)
    emb = LearnedPruningEmbedding(
        build_embedding(PLANTED_SCHEMA.categorical, spec, train.fit_vocabulary()), -6.0
    )
    model = build_model("deepfm", emb, 1, {"hidden": [16]})
    logits = emb.inner.table_modules()[0].pep.logits
    before = logits.detach().clone()
    config = TrainConfig(epochs=2, batch_size=256, learning_rate=1e-2, progress=False, optimizer=optimizer)
    Trainer(model, config, PLANTED_SCHEMA).fit(train)
    assert (logits.detach() - before).abs().max() > 1e-3  # the thresholds moved with the loss
    assert emb.sparsity() > 0


def test_cli_trains_with_pep_and_reports_the_sparsity(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from featmux.cli.main import app

    monkeypatch.setenv("FEATMUX_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "result.json"
    args = ["train", "--dataset-option", "rows=1500", "--dataset-option", "cardinalities=[10, 100, 1000]"]
    args += ["--model", "dcnv2", "--model-option", "hidden=[16]", "--embedding", "hashing", "--budget", "1/4"]
    args += ["--prune", "0.6", "--prune-method", "pep", "--pep-init", "-6"]
    args += ["--batch-size", "256", "--epochs", "1", "--threads", "1", "--no-progress", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["embedding_config"]["prune_method"] == "pep" and 0 <= data["fp32"]["pep_sparsity"] < 1
    assert data["embedding_bytes"] < data["fp32"]["embedding_bytes"] and 0 <= data["test_auc"] <= 1


def test_online_runs_refuse_pep():
    from featmux.training.online import OnlineConfig

    with pytest.raises(ValueError, match="online runs prune by magnitude"):
        OnlineConfig(
            embedding="hashing", budget="1/4", prune=0.5, prune_method="pep", partition_rows=100, partitions=2
        )
