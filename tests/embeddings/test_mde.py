"""Mixed-dimension embeddings: power-law widths, projections, and the alpha search."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featmux.embeddings import Budget, EmbeddingSpec, build_embedding, embedding_from_config
from featmux.embeddings.layout import Layout
from featmux.embeddings.mde import MixedDimEmbedding, mde_floats, mixed_dims

DIM = 8
CARDS = np.array([1000, 300, 4, 18])
FULL_FLOATS = int((CARDS + 1).sum()) * DIM
NAMES = ("user", "item", "device", "genres")


def test_dims_follow_the_power_law_of_cardinality():
    assert mixed_dims(CARDS, DIM, 0.0).tolist() == [8, 8, 8, 8]
    # D * (n / 4)^-0.5: 1000 -> 0.506, 300 -> 0.92, 18 -> 3.77 (rounded, at least 1)
    assert mixed_dims(CARDS, DIM, 0.5).tolist() == [1, 1, 8, 4]
    assert mde_floats(CARDS, np.array([1, 1, 8, 4]), DIM) == 1001 + 301 + 5 * 8 + 19 * 4 + (1 + 1 + 4) * DIM


@pytest.mark.parametrize("budget", ["1/2", "1/3", "1/5"])
def test_solve_finds_the_smallest_alpha_that_fits(features, vocabulary, budget):
    layer = build_embedding(features, EmbeddingSpec("mde", DIM, Budget.parse(budget)), vocabulary)
    limit = round(Budget.parse(budget).fraction * FULL_FLOATS * 4)
    assert layer.memory_bytes() <= limit
    dims = np.array([layer.dims[n] for n in ("user", "item", "device", "genres")])
    assert dims[2] == DIM and dims[0] <= dims[1]  # the smallest vocabulary keeps the full width
    assert "2" not in layer.projections  # device (slot 2) needs no projection
    # a slightly smaller alpha widens some feature and no longer fits
    alpha = next(
        a
        for a in np.linspace(0, 16, 160001)
        if mde_floats(CARDS, mixed_dims(CARDS, DIM, a), DIM) * 4 <= limit
    )
    assert mixed_dims(CARDS, DIM, alpha).tolist() == dims.tolist()


def test_too_small_a_budget_is_refused(features, vocabulary):
    with pytest.raises(ValueError, match="too small for mde"):
        build_embedding(features, EmbeddingSpec("mde", DIM, Budget.parse("1/16")), vocabulary)


def test_the_unified_layout_shares_a_table_and_a_projection_per_width(features, vocabulary, sparse):
    spec = EmbeddingSpec("mde", DIM, Budget.parse("1"), options={"layout": "unified", "alpha": 0.1})
    layer = build_embedding(features, spec, vocabulary)
    assert isinstance(layer, MixedDimEmbedding) and layer.layout is Layout.UNIFIED
    dims = mixed_dims(CARDS, DIM, 0.1)
    assert dims.tolist() == [5, 5, 8, 7] and [layer.dims[n] for n in NAMES] == dims.tolist()
    # one table per width, widest first; user and item (width 5) share their summed rows
    assert [tuple(t.shape) for t in layer.tables] == [(5, 8), (19, 7), (1001 + 301, 5)]
    assert sorted(layer.projections) == ["1", "2"]  # widths 7 and 5; width 8 needs none
    assert layer.memory_bytes() == mde_floats(CARDS, dims, DIM, Layout.UNIFIED) * 4
    assert mde_floats(CARDS, dims, DIM) - mde_floats(CARDS, dims, DIM, Layout.UNIFIED) == 5 * DIM
    assert layer(sparse).shape == (6, 4, DIM)
    # user and item read the same table under different salts: one value, two vectors
    both = layer.embed(torch.tensor([[3, 3]]), slice(0, 2))  # [1, 2, D]
    assert not torch.equal(both[0, 0], both[0, 1])
    torch.testing.assert_close(both[0, 1], layer.embed(torch.tensor([3]), 1)[0], rtol=0, atol=0)


def test_unified_solve_fits_the_budget_and_pays_for_one_projection_per_width(features, vocabulary):
    per_feature = build_embedding(features, EmbeddingSpec("mde", DIM, Budget.parse("1/2")), vocabulary)
    spec = EmbeddingSpec("mde", DIM, Budget.parse("1/2"), options={"layout": "unified"})
    unified = build_embedding(features, spec, vocabulary)
    limit = round(FULL_FLOATS * 4 / 2)
    assert unified.memory_bytes() <= limit and per_feature.memory_bytes() <= limit
    dims = np.array([unified.dims[n] for n in NAMES])
    assert unified.memory_bytes() == mde_floats(CARDS, dims, DIM, Layout.UNIFIED) * 4
    assert mde_floats(CARDS, dims, DIM, Layout.UNIFIED) <= mde_floats(CARDS, dims, DIM)
    assert unified.config()["layout"] == "unified" and "layout" not in per_feature.config()


def test_unified_layers_round_trip_and_train_from_the_cli(
    features, vocabulary, sparse, tmp_path, monkeypatch
):
    spec = EmbeddingSpec("mde", DIM, Budget.parse("1/2"), options={"layout": "unified"})
    layer = build_embedding(features, spec, vocabulary)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn_like(p))
    torch.save({"config": layer.config(), "state": layer.state_dict()}, tmp_path / "mde.pt")
    saved = torch.load(tmp_path / "mde.pt", weights_only=True)
    rebuilt = embedding_from_config(features, saved["config"])
    rebuilt.load_state_dict(saved["state"])
    torch.testing.assert_close(rebuilt(sparse), layer(sparse), rtol=0, atol=0)
    (rebuilt(sparse) * torch.randn(6, 4, DIM)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in rebuilt.parameters())

    import json

    from typer.testing import CliRunner

    from featmux.cli.main import app

    monkeypatch.setenv("FEATMUX_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "result.json"
    args = ["train", "--dataset-option", "rows=1500", "--dataset-option", "cardinalities=[10, 100, 1000]"]
    args += ["--model", "dcnv2", "--model-option", "hidden=[16]", "--embedding", "mde", "--budget", "1/2"]
    args += ["--embedding-option", "layout=unified", "--batch-size", "256", "--epochs", "1", "--threads", "1"]
    args += ["--no-progress", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["embedding_config"]["layout"] == "unified"
    assert data["embedding_bytes"] <= data["budget_target"]["amount"]
