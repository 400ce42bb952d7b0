"""The model zoo: every model over every embedding method, with a multivalent feature and numeric inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featmux.embeddings import EmbeddingSpec, Vocabulary, build_embedding
from featmux.features import CategoricalFeature, ValueEncoding
from featmux.models import MODELS, build_model
from featmux.models.dcn import CrossNetV1
from featmux.models.finalmlp import BilinearFusion
from featmux.models.finalnet import FactorizedInteraction
from featmux.models.xdeepfm import CIN
from featmux.sparse import Bag, SparseFeatures

FEATURES = (
    CategoricalFeature("user", ValueEncoding.INT),
    CategoricalFeature("item", ValueEncoding.INT),
    CategoricalFeature("tags", ValueEncoding.INT, multivalent=True),
)
ZOO = {  # small shapes of each new model, its non-default paths switched on
    "wdl": {"hidden": [16, 8], "dropout": 0.1, "batch_norm": True},
    "dcn": {"cross_layers": 2, "hidden": [16], "batch_norm": True},
    "xdeepfm": {"cin": [6, 4], "hidden": [16]},
    "autoint": {
        "attention_layers": 2,
        "attention_dim": 8,
        "num_heads": 2,
        "layer_norm": True,
        "hidden": [16],
    },
    "finalmlp": {
        "mlp1": [16],
        "mlp2": [8],
        "batch_norm": True,
        "fs_hidden": [8],
        "fs1_context": ["user"],
        "fs2_context": ["item", "tags"],
        "num_heads": 4,
    },
    "finalnet": {"block1": [16, 8], "block2": [8], "block1_dropout": 0.1},
    "dlrm": {"interaction": "cat", "bottom": [8], "top": [16], "dropout": 0.1},  # the cat variant
}
B = 16


def vocabulary() -> Vocabulary:
    vocab = Vocabulary([f.name for f in FEATURES])
    for f in FEATURES:
        vocab.update(f.name, np.arange(40, dtype=np.int64))
    return vocab


def layer(method: str, chunks: int = 1):
    spec = EmbeddingSpec(method, embedding_dim=4, budget=None)
    if method == "unified":
        spec = EmbeddingSpec("unified", 4, options={"default_chunks": chunks})
    return build_embedding(FEATURES, spec, vocabulary())


def batch(seed: int = 0) -> tuple[SparseFeatures, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 40, (B, 2), generator=g)
    lengths = torch.randint(0, 4, (B,), generator=g)  # some rows have an empty bag
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    values = torch.randint(0, 40, (int(offsets[-1]),), generator=g)
    return SparseFeatures(ids, (Bag(values, offsets),)), torch.randn(B, 3, generator=g)


@pytest.mark.parametrize("name", sorted(ZOO))
@pytest.mark.parametrize("method", ["collisionless", "hashing", "unified"])
def test_model_over_each_embedding_gives_a_logit_per_row_and_a_gradient_to_every_parameter(name, method):
    torch.manual_seed(0)
    model = build_model(name, layer(method, chunks=2 if method == "unified" else 1), 3, ZOO[name])
    sparse, dense = batch()
    out = model(sparse, dense)
    assert out.shape == (B,) and torch.isfinite(out).all()
    torch.nn.functional.binary_cross_entropy_with_logits(out, torch.rand(B).round()).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad, f"{name} over {method}: no gradient reaches {no_grad}"


@pytest.mark.parametrize("name", sorted(ZOO))
def test_multivalent_bag_changes_the_output_and_eval_mode_is_deterministic(name):
    torch.manual_seed(0)
    model = build_model(name, layer("unified"), 0, ZOO[name]).eval()
    sparse, _ = batch()
    no_dense = torch.zeros(B, 0)
    out = model(sparse, no_dense)
    torch.testing.assert_close(model(sparse, no_dense), out)
    bag = sparse.bags[0]
    other = SparseFeatures(sparse.ids, (Bag(bag.values + 1, bag.offsets),))
    has_bag = (bag.offsets[1:] > bag.offsets[:-1]).numpy()
    moved = (model(other, no_dense) - out).abs().detach().numpy() > 1e-7
    assert (moved == has_bag).all(), "exactly the rows with a non-empty bag must change"


@pytest.mark.parametrize("name", sorted(ZOO))
def test_config_roundtrip(name):
    model = build_model(name, layer("unified"), 3, ZOO[name])
    again = build_model(name, layer("unified"), 3, model.model_config())
    assert again.model_config() == model.model_config()
    assert sum(p.numel() for p in again.parameters()) == sum(p.numel() for p in model.parameters())


def test_dlrm_cat_interaction_reads_the_concatenated_vectors():
    model = build_model("dlrm", layer("hashing"), 3, {"interaction": "cat", "bottom": [8], "top": [16]})
    assert model.top[0].in_features == (3 + 1) * 4 + 4  # 3 slots + projected dense, each D = 4; dense D
    assert build_model("dlrm", layer("hashing"), 0, {}).top[0].in_features == 3  # dot: 3 pairs of 3 slots


def test_every_new_model_is_registered_by_its_cli_name():
    assert set(ZOO) <= set(MODELS)
    assert build_model("AutoInt", layer("unified"), 0, ZOO["autoint"]).name == "autoint"


def test_cross_v1_formula():
    net = CrossNetV1(5, 2)
    x0 = torch.randn(3, 5)
    x = x0
    for w, b in zip(net.weight, net.bias, strict=True):
        x = x0 * (x @ w)[:, None] + b + x
    torch.testing.assert_close(net(x0), x)


def test_cin_layer_equals_its_double_sum():
    torch.manual_seed(0)
    cin = CIN(3, [2])
    x0 = torch.randn(4, 3, 5)
    conv = cin.layers[0]
    w = conv.weight[:, :, 0].view(2, 3, 3)  # [H_1, H_0, S]
    brute = torch.stack(
        [
            sum(w[h, i, j] * x0[:, i] * x0[:, j] for i in range(3) for j in range(3)) + conv.bias[h]
            for h in range(2)
        ],
        dim=1,
    )  # [B, H_1, D]
    torch.testing.assert_close(cin(x0), brute.sum(dim=2))


def test_bilinear_fusion_equals_per_head_bilinear_forms():
    torch.manual_seed(0)
    fusion = BilinearFusion(6, 4, num_heads=2)
    x, y = torch.randn(3, 6), torch.randn(3, 4)
    heads = sum(
        torch.einsum("bi,ij,bj->b", x[:, 3 * h : 3 * h + 3], fusion.w_xy[h], y[:, 2 * h : 2 * h + 2])
        for h in range(2)
    )
    expected = fusion.w_x(x).squeeze(1) + fusion.w_y(y).squeeze(1) + heads
    torch.testing.assert_close(fusion(x, y), expected)
    with pytest.raises(ValueError, match="multiples of num_heads"):
        BilinearFusion(6, 5, num_heads=2)


def test_feature_selection_without_context_gates_from_a_learned_bias():
    torch.manual_seed(0)
    model = build_model("finalmlp", layer("hashing"), 0, {"mlp1": [8], "mlp2": [8], "fs_hidden": [4]})
    sparse, _ = batch()
    model(sparse, torch.zeros(B, 0)).sum().backward()
    for gate in (model.gate1, model.gate2):
        assert gate.bias is not None and gate.bias.grad.abs().sum() > 0  # starts at 0 (FuxiCTR), moves


def test_factorized_interaction_multiplies_halves():
    layer_ = FactorizedInteraction(3, 4)
    x = torch.randn(2, 3)
    h = layer_.linear(x)
    torch.testing.assert_close(layer_(x), torch.cat([h[:, :2], h[:, 2:] * h[:, :2]], dim=1))


@pytest.mark.parametrize(
    ("name", "options", "match"),
    [
        ("finalmlp", {"mlp1": [10], "mlp2": [8], "num_heads": 4}, "must divide"),
        ("finalmlp", {"fs1_context": ["nope"]}, r"unknown feature\(s\) \['nope'\]"),
        ("finalnet", {"block1": [7]}, "even"),
        ("autoint", {"attention_dim": 10, "num_heads": 4}, "multiple of num_heads"),
    ],
)
def test_bad_options_are_clear_errors(name, options, match):
    with pytest.raises(ValueError, match=match):
        build_model(name, layer("unified"), 0, options)
