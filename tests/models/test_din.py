"""DIN: target attention over aligned history bags, over every embedding method."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featmux.embeddings import EmbeddingSpec, Vocabulary, build_embedding
from featmux.features import CategoricalFeature, ValueEncoding
from featmux.models import DIN, DINConfig, build_model
from featmux.sparse import Bag, SparseFeatures

INT = ValueEncoding.INT
B = 6
OPTIONS = {"attention_hidden": [8], "hidden": [16], "batch_norm": True}


def features() -> tuple[CategoricalFeature, ...]:
    return (
        CategoricalFeature("user_id", INT),
        CategoricalFeature("item_id", INT),
        CategoricalFeature("genres", INT, multivalent=True),
        CategoricalFeature("hist_item_id", INT, multivalent=True),
        CategoricalFeature("hist_genres", INT, multivalent=True),
    )


def layer(method: str, chunks: dict[str, int] | None = None):
    vocab = Vocabulary([f.name for f in features()])
    for f in features():
        vocab.update(f.name, np.arange(30, dtype=np.int64))
    if method == "unified":
        spec = EmbeddingSpec("unified", 4, options={"chunks": chunks or {}})
    else:
        spec = EmbeddingSpec(method, 4)
    return build_embedding(features(), spec, vocab)


def bag(lengths: list[int], g: torch.Generator) -> Bag:
    offsets = torch.tensor([0, *np.cumsum(lengths)], dtype=torch.int64)
    return Bag(torch.randint(0, 30, (int(offsets[-1]),), generator=g), offsets)


def batch(seed: int = 0, history: list[int] | None = None) -> SparseFeatures:
    g = torch.Generator().manual_seed(seed)
    lengths = history or [0, 1, 3, 5, 2, 4]  # row 0 has no history
    hist = bag(lengths, g)
    return SparseFeatures(
        torch.randint(0, 30, (B, 2), generator=g),
        (
            bag([1, 2, 1, 3, 2, 1], g),
            hist,
            Bag(torch.randint(0, 30, hist.values.shape, generator=g), hist.offsets),
        ),
    )


@pytest.mark.parametrize("method", ["collisionless", "hashing", "unified"])
def test_din_over_each_embedding_gives_a_logit_per_row_and_a_gradient_to_every_parameter(method):
    torch.manual_seed(0)
    model = build_model("din", layer(method), 2, OPTIONS)
    out = model(batch(), torch.randn(B, 2))
    assert out.shape == (B,) and torch.isfinite(out).all()
    torch.nn.functional.binary_cross_entropy_with_logits(out, torch.rand(B).round()).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad, f"no gradient reaches {no_grad}"


def test_attention_is_the_weighted_sum_of_each_rows_own_behaviours():
    torch.manual_seed(0)
    model = build_model("din", layer("unified"), 0, OPTIONS).eval()
    sparse = batch()
    emb = model.embedding(sparse)
    query = emb[:, model.query_slots].flatten(1)  # [B, E]
    got = model.attend(sparse, query)
    hist_items, hist_genres = sparse.bags[1], sparse.bags[2]
    for b in range(B):
        lo, hi = hist_items.offsets[b], hist_items.offsets[b + 1]
        keys = torch.cat(
            [
                model.embedding.bag_vectors("hist_item_id", hist_items.values[lo:hi]).flatten(1),
                model.embedding.bag_vectors("hist_genres", hist_genres.values[lo:hi]).flatten(1),
            ],
            dim=1,
        )
        q = query[b].expand_as(keys)
        w = model.attention_head(model.attention(torch.cat([q, keys, q - keys, q * keys], dim=1)))
        torch.testing.assert_close(got[b], (w * keys).sum(0))
    assert torch.equal(got[0], torch.zeros_like(got[0]))  # no history: nothing attended


def test_a_rows_output_depends_on_its_own_history_only():
    torch.manual_seed(0)
    model = build_model("din", layer("hashing"), 0, OPTIONS).eval()
    base, other = batch(0), batch(0)
    changed = list(other.bags)
    items = changed[1]
    values = items.values.clone()
    values[items.offsets[3] : items.offsets[4]] += 1  # row 3's history only
    changed[1] = Bag(values, items.offsets)
    other = SparseFeatures(other.ids, tuple(changed))
    moved = (model(other, torch.zeros(B, 0)) - model(base, torch.zeros(B, 0))).abs() > 1e-7
    assert moved.tolist() == [False, False, False, True, False, False]


def test_din_checks_its_history_features():
    with pytest.raises(ValueError, match="one history feature per target feature"):
        DINConfig(target=("item_id", "genres"), history=("hist_item_id",))
    with pytest.raises(ValueError, match="not a multivalent feature"):
        build_model("din", layer("hashing"), 0, {"target": ["item_id"], "history": ["user_id"]})
    # a 2-chunk target and a 1-chunk history cannot be compared; the same chunks can
    with pytest.raises(ValueError, match="same chunks"):
        build_model("din", layer("unified", {"item_id": 2}), 0, OPTIONS)
    model = build_model("din", layer("unified", {"item_id": 2, "hist_item_id": 2}), 0, OPTIONS)
    assert model(batch(), torch.zeros(B, 0)).shape == (B,)
    sparse = batch()
    g = torch.Generator().manual_seed(5)
    misaligned = SparseFeatures(sparse.ids, (*sparse.bags[:2], bag([1, 1, 1, 1, 1, 1], g)))
    with pytest.raises(ValueError, match="not aligned"):
        model(misaligned, torch.zeros(B, 0))


def test_config_roundtrip():
    model = build_model("din", layer("collisionless"), 0, OPTIONS)
    assert isinstance(model, DIN)
    assert build_model("din", layer("collisionless"), 0, model.model_config()).model_config() == (
        model.model_config()
    )


@pytest.mark.parametrize("method", ["collisionless", "hashing", "unified"])
def test_saved_din_loads_and_scores_identically(method, tmp_path):
    from featmux.features import Schema
    from featmux.training.checkpoint import load_model, save_model

    torch.manual_seed(0)
    model = build_model("din", layer(method), 0, OPTIONS).eval()
    schema = Schema("label", features())
    save_model(tmp_path / "din.pt", model, schema)
    again, schema_again = load_model(tmp_path / "din.pt")
    assert schema_again == schema and isinstance(again, DIN)
    sparse = batch()
    torch.testing.assert_close(again.eval()(sparse, torch.zeros(B, 0)), model(sparse, torch.zeros(B, 0)))
