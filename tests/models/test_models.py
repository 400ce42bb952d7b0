from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import featmux
from featmux.embeddings import UnifiedEmbedding, UnifiedEmbeddingConfig
from featmux.features import CategoricalFeature, ValueEncoding
from featmux.models import MODELS, DCNv2, DCNv2Config, build_model
from featmux.models.layers import CrossNetwork, fm_interaction, to_autocast_dtype
from featmux.sparse import Bag, SparseFeatures

FEATURES = (
    CategoricalFeature("u", ValueEncoding.INT),
    CategoricalFeature("i", ValueEncoding.INT),
    CategoricalFeature("tags", ValueEncoding.INT, multivalent=True),
)


def batch(b=5):
    ids = torch.randint(0, 1000, (b, 2))
    bag = Bag(torch.randint(0, 50, (7,)), torch.tensor([0, 1, 3, 3, 6, 7][: b + 1]))
    return SparseFeatures(ids, (bag,)), torch.randn(b, 3)


def embedding(chunks=2):
    return UnifiedEmbedding(
        FEATURES, UnifiedEmbeddingConfig(rows=200, embedding_dim=4, default_chunks=chunks)
    )


@pytest.mark.parametrize("name", sorted(set(MODELS) - {"din"}))  # DIN needs history features: test_din.py
@pytest.mark.parametrize("num_dense", [0, 3])
def test_every_model_gives_one_logit_per_row_and_trains_all_parts(name, num_dense):
    model = build_model(name, embedding(), num_dense)
    sparse, dense = batch()
    out = model(sparse, dense[:, :num_dense])
    assert out.shape == (5,)
    out.sum().backward()
    assert model.embedding.shared.weight.grad is not None
    assert all(p.grad is not None for p in model.dense_parameters() if p.requires_grad)


def test_fm_interaction_equals_pairwise_sum():
    emb = torch.randn(3, 5, 4)
    brute = sum((emb[:, i] * emb[:, j]).sum(-1) for i in range(5) for j in range(i + 1, 5))
    torch.testing.assert_close(fm_interaction(emb), brute)


def test_cross_layer_formula():
    net = CrossNetwork(6, 1)
    x0 = torch.randn(2, 6)
    lin = net.layers[0]
    torch.testing.assert_close(net(x0), x0 * (x0 @ lin.weight.T + lin.bias) + x0)
    low = CrossNetwork(6, 2, low_rank=2)
    assert sum(p.numel() for p in low.parameters()) == 2 * (6 * 2 + 2 * 6 + 6)


@pytest.mark.parametrize("structure", ["stacked", "parallel", "cross_only"])
def test_dcnv2_structures(structure):
    model = DCNv2(embedding(1), 3, DCNv2Config(cross_layers=2, structure=structure, hidden=(8,), low_rank=3))
    sparse, dense = batch()
    assert model(sparse, dense).shape == (5,)
    width = 3 * 4 + 3
    expected_head = {"stacked": 8, "parallel": 8 + width, "cross_only": width}[structure]
    assert model.head.in_features == expected_head


def test_unknown_option_is_an_error_naming_valid_ones():
    with pytest.raises(ValueError, match=r"unknown DCNv2Config option.*'hiden'.*valid options"):
        build_model("dcnv2", embedding(), 0, {"hiden": [10]})
    with pytest.raises(ValueError, match="unknown model"):
        build_model("transformer", embedding(), 0)


def test_model_config_roundtrip():
    model = build_model("dcnv2", embedding(), 3, {"cross_layers": 1, "hidden": [16], "structure": "stacked"})
    again = build_model("dcnv2", embedding(), 3, model.model_config())
    assert again.model_config() == model.model_config()


def test_layering_models_and_embeddings_import_no_training_data_or_distributed():
    """Models and embeddings stay pure modules: no trainer, readers, distributed code or CLI."""
    forbidden = (
        "featmux.training",
        "featmux.data",
        "featmux.distributed",
        "featmux.cli",
        "featmux.benchmarks",
    )
    package = Path(featmux.__file__).parent
    for folder in ("models", "embeddings", "hashing"):
        for path in (package / folder).glob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                bad = [n for n in names if n.startswith(forbidden)]
                assert not bad, f"{path.name} imports {bad}"


def test_dcnv2_cross_layers_stay_bf16_under_autocast():
    x = torch.randn(4, 3)
    assert to_autocast_dtype(x) is x  # no autocast: unchanged
    model = DCNv2(embedding(1), 3, DCNv2Config(cross_layers=2, hidden=(8,)))
    seen = []
    model.cross.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    sparse, dense = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert to_autocast_dtype(torch.arange(3)).dtype == torch.int64  # ids are left alone
        out = model(sparse, dense)
    out.float().sum().backward()
    assert seen == [torch.bfloat16]  # before: promoted back to float32 by x0 * (W x + b)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert model.embedding.shared.weight.grad is not None
    model(sparse, dense)
    assert seen[-1] == torch.float32
