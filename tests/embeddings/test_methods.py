"""The contract every registered embedding method keeps (a new method gets these tests for free).

Shape, gradients, exact stored bytes, determinism, checkpoint round trip, multivalent features, and a
budget that is never exceeded.
"""

from __future__ import annotations

import pytest
import torch

from featmux.embeddings import (
    Budget,
    EmbeddingSpec,
    build_embedding,
    embedding_from_config,
    get_method,
    method_names,
)
from featmux.embeddings.registry import BudgetUnit

DIM = 8
FULL_PARAMS = (1000 + 300 + 4 + 18 + 4) * DIM  # the fixture vocabulary's collisionless table
BUDGETS = ["1", "1/4", "1/8"]


def _spec(name: str, budget: str) -> EmbeddingSpec:
    return EmbeddingSpec(name, DIM, Budget.parse(budget) if get_method(name).budgeted else None)


def _layers(name, features, vocabulary):
    """The method's layer at each budget it can meet (at least one), seeded."""
    layers = []
    for budget in BUDGETS if get_method(name).budgeted else ["1"]:
        torch.manual_seed(0)
        try:
            layers.append((budget, build_embedding(features, _spec(name, budget), vocabulary)))
        except ValueError as err:
            assert "too small" in str(err)
    assert layers, f"{name} meets none of the budgets {BUDGETS}"
    return layers


@pytest.mark.parametrize("name", method_names())
def test_shape_gradients_and_multivalent_pooling(name, features, vocabulary, sparse):
    for _, layer in _layers(name, features, vocabulary):
        out = layer(sparse)
        assert out.shape == (6, layer.num_slots, DIM) and len(layer.slot_names) == layer.num_slots
        assert torch.isfinite(out).all()
        assert {s.split("#")[0] for s in layer.slot_names} == {f.name for f in features}
        (out * torch.randn_like(out)).sum().backward()
        for pname, p in layer.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}: no gradient reaches {pname}"
        # the multivalent feature's empty bags (rows 1 and 4) pool to zeros; the others do not
        genres = [i for i, s in enumerate(layer.slot_names) if s.startswith("genres#")]
        assert torch.equal(out[[1, 4]][:, genres], torch.zeros(2, len(genres), DIM))
        assert out[0, genres].abs().sum() > 0


@pytest.mark.parametrize("name", method_names())
def test_memory_bytes_are_the_stored_tensors_and_within_budget(name, features, vocabulary):
    for budget, layer in _layers(name, features, vocabulary):
        stored = sum(t.numel() * t.element_size() for t in layer.state_dict().values())
        assert layer.memory_bytes() == stored
        assert layer.num_parameters() == sum(p.numel() for p in layer.parameters())
        if get_method(name).budgeted:
            assert layer.memory_bytes() <= round(Budget.parse(budget).fraction * FULL_PARAMS * 4)


@pytest.mark.parametrize("name", method_names())
def test_deterministic_given_the_seed(name, features, vocabulary, sparse):
    first = _layers(name, features, vocabulary)
    second = _layers(name, features, vocabulary)
    for (_, a), (_, b) in zip(first, second, strict=True):
        assert a.config() == b.config()
        torch.testing.assert_close(a(sparse), b(sparse), rtol=0, atol=0)


@pytest.mark.parametrize("name", method_names())
def test_checkpoint_round_trip_gives_identical_output(name, features, vocabulary, sparse, tmp_path):
    for budget, layer in _layers(name, features, vocabulary):
        with torch.no_grad():
            for p in layer.parameters():
                p.add_(torch.randn_like(p))
        path = tmp_path / f"{budget.replace('/', '_')}.pt"
        torch.save({"config": layer.config(), "state": layer.state_dict()}, path)
        saved = torch.load(path, weights_only=True)
        rebuilt = embedding_from_config(features, saved["config"])
        rebuilt.load_state_dict(saved["state"])
        torch.testing.assert_close(rebuilt(sparse), layer(sparse), rtol=0, atol=0)
        assert rebuilt.memory_bytes() == layer.memory_bytes()


@pytest.mark.parametrize("name", [n for n in method_names() if get_method(n).budgeted])
@pytest.mark.parametrize("budget", ["1/2", "1/3", "1/5", "1/7", "bytes:20000", "bytes:9999", "params:3000"])
def test_solve_never_exceeds_the_budget(name, budget, features, vocabulary):
    spec = EmbeddingSpec(name, DIM, Budget.parse(budget))
    try:
        layer = build_embedding(features, spec, vocabulary)
    except ValueError as err:
        assert "too small" in str(err)
        return
    target = Budget.parse(budget).target(FULL_PARAMS, DIM)
    cost = layer.memory_bytes() if target.unit is BudgetUnit.BYTES else layer.num_parameters()
    assert cost <= target.amount


@pytest.mark.parametrize("name", method_names())
def test_every_method_trains_end_to_end_from_the_cli(name, tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    from featmux.cli.main import app

    monkeypatch.setenv("FEATMUX_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "result.json"
    budget = ["--budget", "1/4"] if get_method(name).budgeted else []
    args = ["train", "--dataset-option", "rows=1500", "--dataset-option", "cardinalities=[10, 100, 1000]"]
    args += ["--model", "dcnv2", "--model-option", "hidden=[16]", "--embedding", name, *budget]
    args += ["--batch-size", "256", "--epochs", "1", "--threads", "1", "--no-progress", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["embedding"] == name and 0.0 <= data["test_auc"] <= 1.0
    if get_method(name).budgeted:
        assert data["embedding_bytes"] <= data["budget_target"]["amount"]
