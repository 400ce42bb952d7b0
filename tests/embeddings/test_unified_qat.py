"""Quantization-aware Unified Embedding: the trained rows are the served int8 / int4 rows, at the budget."""

from __future__ import annotations

import pytest
import torch

from featmux.embeddings import Budget, EmbeddingSpec, build_embedding, embedding_from_config
from featmux.embeddings.precision import Precision, quantize_embedding, row_bytes
from featmux.training.experiment import ExperimentConfig

DIM = 8


def spec(bits: int, budget: str = "1/4") -> EmbeddingSpec:
    options = {"chunks": {"genres": 2}, "private_max_cardinality": 5, "qat_bits": bits}
    return EmbeddingSpec("unified", DIM, Budget.parse(budget), options=options)


@pytest.mark.parametrize("bits", [8, 4])
def test_rows_are_solved_from_the_served_bytes(features, vocabulary, bits):
    layer = build_embedding(features, spec(bits), vocabulary)
    fp32 = build_embedding(features, spec(0), vocabulary)
    target = Budget.parse("1/4").target(sum(n + 1 for n in vocabulary_cards(vocabulary)) * DIM, DIM).amount
    precision = Precision.INT8 if bits == 8 else Precision.INT4
    assert layer.serving_bytes() <= target
    assert target - layer.serving_bytes() < row_bytes(precision, DIM)  # no further row fits
    # the shared table holds (4 D) / (served row bytes) times the fp32 rows, less the private tables' share
    ratio = layer.shared.num_rows / fp32.shared.num_rows
    assert ratio == pytest.approx(4 * DIM / row_bytes(precision, DIM), rel=0.02)
    keys = fp32.memory_bytes() - fp32.num_parameters() * 4  # the private tables' vocabulary keys
    assert layer.memory_bytes() == layer.num_parameters() * 4 + keys  # training: fp32 master rows
    assert layer.config()["qat"] == precision.value
    serving = layer.serving_bytes()
    assert quantize_embedding(layer, precision).memory_bytes() == serving


def test_a_parameter_budget_still_buys_its_rows(features, vocabulary):
    layer = build_embedding(features, EmbeddingSpec("unified", DIM, Budget.parse("rows:700")), vocabulary)
    assert layer.shared.num_rows == 700 and layer.num_parameters() == 700 * DIM


def vocabulary_cards(vocabulary):
    return [vocabulary.cardinality(name) for name in ("user", "item", "device", "genres")]


@pytest.mark.parametrize("bits", [8, 4])
def test_training_output_is_the_served_output(features, vocabulary, sparse, bits, tmp_path):
    layer = build_embedding(features, spec(bits), vocabulary)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    out = layer(sparse)
    out.square().sum().backward()
    assert layer.shared.weight.grad is not None and layer.shared.weight.grad.abs().sum() > 0
    assert layer.private is not None and layer.private.weight.grad.abs().sum() > 0
    layer.set_row_updates(True)  # the row-optimizer path reads the same rounded rows
    rows_out = layer(sparse)
    torch.testing.assert_close(rows_out, out, rtol=0, atol=0)
    rows_out.square().sum().backward()
    lookups = [lk for t in layer.table_modules() for lk in t.take_lookups()]
    assert lookups and all(lk.values.grad.abs().sum() > 0 for lk in lookups)
    layer.set_row_updates(False)
    torch.save({"config": layer.config(), "state": layer.state_dict()}, tmp_path / "qat.pt")
    saved = torch.load(tmp_path / "qat.pt", weights_only=True)
    rebuilt = embedding_from_config(features, saved["config"])
    rebuilt.load_state_dict(saved["state"])
    torch.testing.assert_close(rebuilt(sparse), out, rtol=0, atol=0)
    served = quantize_embedding(rebuilt, saved["config"]["qat"])
    torch.testing.assert_close(served(sparse), out.detach(), rtol=0, atol=1e-6)  # the STE's float rounding


def test_options_and_serving_flags_are_checked():
    with pytest.raises(ValueError, match="qat_bits must be one of"):
        spec(3)
    with pytest.raises(ValueError, match="--precision only as int8"):
        ExperimentConfig(embedding="unified", embedding_options={"qat_bits": 8}, precision="int4")
    with pytest.raises(ValueError, match="give no --prune"):
        ExperimentConfig(embedding="unified", embedding_options={"qat_bits": 4}, prune=0.5)
    assert ExperimentConfig(embedding="unified", embedding_options={"qat_bits": 8}, precision="int8")


def test_the_cli_trains_int8_auto_chunk_hot_unified_and_serves_it_int8(tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    from featmux.cli.main import app

    monkeypatch.setenv("FEATMUX_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "result.json"
    args = ["train", "--dataset-option", "rows=1500", "--dataset-option", "cardinalities=[10, 100, 1000]"]
    args += ["--model", "dcnv2", "--model-option", "hidden=[16]", "--embedding", "unified", "--budget", "1/8"]
    args += ["--chunks", "auto", "--embedding-option", "qat_bits=8", "--embedding-option", "hot_share=0.2"]
    args += ["--batch-size", "256", "--epochs", "1", "--threads", "1", "--no-progress", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    config = data["embedding_config"]
    assert config["qat"] == "int8" and config["precision"] == "int8" and sum(config["hot"].values()) > 0
    assert set(config["chunks"]) == {"C1", "C2", "C3"}  # auto: the choice recorded per feature
    assert config["chunks"]["C1"] == 1 and config["chunks"]["C3"] >= 2  # 10 values: 1; 1000 values: more
    assert data["embedding_bytes"] <= data["budget_target"]["amount"] < data["fp32"]["embedding_bytes"]
    bad = CliRunner().invoke(app, [*args[:-2], "--precision", "int4", "--out", str(out)])
    assert bad.exit_code == 2 and "qat_bits trains the tables for int8" in bad.output
