"""Shared rows (`CategoricalFeature.share_with`): a history bag reads its target feature's rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featmux.embeddings import (
    Budget,
    EmbeddingSpec,
    Vocabulary,
    build_embedding,
    collisionless_parameters,
    embedding_from_config,
)
from featmux.features import CategoricalFeature, Schema, ValueEncoding
from featmux.models import build_model
from featmux.models.base import slots_of
from featmux.sparse import Bag, SparseFeatures

INT = ValueEncoding.INT
D = 4
ITEMS = 40  # item ids 0..39 seen in training; 99 never


def features(share: bool = True) -> tuple[CategoricalFeature, ...]:
    return (
        CategoricalFeature("user_id", INT),
        CategoricalFeature("item_id", INT),
        CategoricalFeature("genres", INT, multivalent=True),
        CategoricalFeature("hist_item_id", INT, multivalent=True, share_with="item_id" if share else None),
        CategoricalFeature("hist_genres", INT, multivalent=True),
    )


def vocabulary() -> Vocabulary:
    vocab = Vocabulary([f.name for f in features()])
    rng = np.random.default_rng(0)
    vocab.update("user_id", np.arange(100, dtype=np.int64))  # above private_max_cardinality below
    for name in ("genres", "hist_genres"):
        vocab.update(name, np.arange(20, dtype=np.int64))
    # skewed item counts (hot rows pick the head); the history's own values differ from item_id's,
    # and a shared history ignores them: it reads item_id's vocabulary
    vocab.update("item_id", rng.zipf(1.5, 2000).clip(max=ITEMS).astype(np.int64) - 1)
    vocab.update("item_id", np.arange(ITEMS, dtype=np.int64))
    vocab.update("hist_item_id", np.arange(200, 260, dtype=np.int64))
    return vocab


CASES = {
    "collisionless": ("collisionless", None, {}),
    "hashing": ("hashing", "1/4", {}),
    "unified": ("unified", "1/4", {"num_tables": 2, "chunks": {"item_id": 2}}),
    "unified-private": ("unified", "1", {"private_max_cardinality": ITEMS}),
    "unified-hot": ("unified", "1/2", {"hot_share": 0.3, "default_chunks": 2}),
}


def layer(case: str, share: bool = True, chosen: tuple[CategoricalFeature, ...] | None = None):
    method, budget, options = CASES[case]
    spec = EmbeddingSpec(method, D, Budget.parse(budget) if budget else None, options=options)
    return build_embedding(chosen or features(share), spec, vocabulary())


def batch(items: torch.Tensor, history: Bag) -> SparseFeatures:
    n = items.numel()
    one = torch.arange(n + 1, dtype=torch.int64)  # one value per row
    return SparseFeatures(
        torch.stack([torch.zeros_like(items), items], dim=1),
        (
            Bag(torch.zeros(n, dtype=torch.int64), one),
            history,
            Bag(torch.zeros(history.values.numel(), dtype=torch.int64), history.offsets),
        ),
    )


def items() -> torch.Tensor:
    return torch.tensor([*range(ITEMS), 99, 7, 0], dtype=torch.int64)  # every known id, an unseen one


@pytest.mark.parametrize("case", list(CASES))
def test_an_id_reads_the_same_vectors_as_target_and_in_the_history(case):
    torch.manual_seed(0)
    emb = layer(case)
    ids = items()
    one_each = Bag(ids, torch.arange(ids.numel() + 1, dtype=torch.int64))  # each row's history: its item
    out = emb(batch(ids, one_each))  # [B, S, D]
    target = out[:, slots_of(emb, ["item_id"])]  # [B, K, D]
    assert target.shape[1] == (2 if case in ("unified", "unified-hot") else 1)
    torch.testing.assert_close(emb.bag_vectors("hist_item_id", ids), target, rtol=0, atol=0)
    # the pooled history slots too: a one-movie history is that movie's target vectors
    torch.testing.assert_close(out[:, slots_of(emb, ["hist_item_id"])], target, rtol=0, atol=0)


@pytest.mark.parametrize("case", list(CASES))
def test_gradients_from_the_history_train_the_targets_rows(case):
    torch.manual_seed(0)
    emb = layer(case)
    ids = items()
    params = emb.table_parameters()

    def grads(loss: torch.Tensor) -> list[torch.Tensor]:
        for p in params:
            p.grad = None
        loss.backward()
        return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]

    empty = Bag(torch.zeros(0, dtype=torch.int64), torch.zeros(ids.numel() + 1, dtype=torch.int64))
    w = torch.randn(ids.numel(), 1, D)  # any upstream gradient
    from_target = grads((emb(batch(ids, empty))[:, slots_of(emb, ["item_id"])] * w).sum())
    from_history = grads((emb.bag_vectors("hist_item_id", ids) * w).sum())
    assert any(g.abs().sum() > 0 for g in from_history)
    for a, b in zip(from_target, from_history, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("case", list(CASES))
def test_shared_rows_are_stored_and_budgeted_once(case):
    without = tuple(f for f in features() if f.name != "hist_item_id")
    shared, alone = layer(case), layer(case, chosen=without)
    own = layer(case, share=False)
    vocab = vocabulary()
    # the collisionless size, which fractional budgets are taken of, counts item_id's rows once
    assert collisionless_parameters(features(), vocab, D) == collisionless_parameters(without, vocab, D)
    full_without = collisionless_parameters(without, vocab, D)
    assert collisionless_parameters(features(False), vocab, D) == full_without + 61 * D  # 60 values + OOV
    # the sharing feature adds no table rows and no stored bytes: the same layer as without it
    assert shared.num_parameters() == alone.num_parameters()
    assert shared.memory_bytes() == alone.memory_bytes()
    assert shared.config() == alone.config()
    if case == "collisionless":  # with rows of its own the history pays for its own vocabulary
        assert own.num_parameters() == shared.num_parameters() + 61 * D


@pytest.mark.parametrize("case", ["collisionless", "hashing", "unified", "unified-private"])
def test_a_saved_din_with_shared_rows_loads_and_scores_identically(case, tmp_path):
    from featmux.training.checkpoint import load_model, save_model

    torch.manual_seed(0)
    options = {"attention_hidden": [8], "hidden": [16]}
    model = build_model("din", layer(case), 0, options).eval()
    schema = Schema("label", features())
    save_model(tmp_path / "din.pt", model, schema)
    again, schema_again = load_model(tmp_path / "din.pt")
    assert schema_again.feature("hist_item_id").share_with == "item_id"
    ids = items()
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(0, 6, (ids.numel(),), generator=g)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    history = Bag(torch.randint(0, ITEMS + 5, (int(offsets[-1]),), generator=g), offsets)
    sparse, dense = batch(ids, history), torch.zeros(ids.numel(), 0)
    torch.testing.assert_close(again.eval()(sparse, dense), model(sparse, dense), rtol=0, atol=0)
    # no tensor of the state is the history's own
    assert not any("hist_item_id" in k for k in again.state_dict())


def test_schema_checks_what_a_feature_shares():
    item = CategoricalFeature("item_id", INT)
    with pytest.raises(ValueError, match="not among the features"):
        Schema("y", (CategoricalFeature("hist", INT, multivalent=True, share_with="movie"),))
    with pytest.raises(ValueError, match="itself shares"):
        Schema(
            "y",
            (
                item,
                CategoricalFeature("a", INT, share_with="item_id"),
                CategoricalFeature("b", INT, share_with="a"),
            ),
        )
    with pytest.raises(ValueError, match="different fingerprints"):
        Schema("y", (item, CategoricalFeature("hist", multivalent=True, share_with="item_id")))
    with pytest.raises(ValueError, match="with itself"):
        CategoricalFeature("item_id", share_with="item_id")
    schema = Schema("y", features())
    assert Schema.from_dict(schema.to_dict()) == schema
    assert "share_with" not in Schema("y", features(False)).to_dict()["categorical"][3]  # old form kept


def test_methods_that_cannot_share_rows_refuse_and_unified_options_name_the_owner():
    with pytest.raises(ValueError, match="qr embedding does not support"):
        build_embedding(features(), EmbeddingSpec("qr", D, Budget.parse("1/4")), vocabulary())
    with pytest.raises(ValueError, match="does not support"):
        embedding_from_config(features(), {"method": "qr", "embedding_dim": D})
    spec = EmbeddingSpec("unified", D, Budget.parse("1/4"), options={"chunks": {"hist_item_id": 2}})
    with pytest.raises(ValueError, match="set those there"):
        build_embedding(features(), spec, vocabulary())


def test_unified_chunks_of_the_owner_apply_to_the_history_in_din():
    # without sharing a 2-chunk target needs a 2-chunk history; shared, it has the owner's chunks
    model = build_model("din", layer("unified"), 0, {"attention_hidden": [4], "hidden": [8]})
    assert len(model.query_slots) == 3  # item_id#0, item_id#1, genres#0


@pytest.mark.parametrize("case", ["collisionless", "hashing", "unified"])
def test_the_export_manifest_gives_the_history_its_owners_row_rules(case):
    from featmux.serving.artefact import describe_model

    model = build_model("deepfm", layer(case), 0, {"hidden": [8]})
    manifest = describe_model(model, Schema("label", features()))
    (rules,) = manifest["tables"].values()
    if case == "unified":
        slots = {
            (s["feature"], s["chunk"]): {k: s[k] for k in ("salt", "rows", "start")} for s in rules["slots"]
        }
        assert (
            slots[("hist_item_id", 0)] == slots[("item_id", 0)]
            and slots[("hist_item_id", 1)] == slots[("item_id", 1)]
        )
    else:
        assert rules["features"]["hist_item_id"] == rules["features"]["item_id"]
    if case == "collisionless":
        assert manifest["vocabularies"]["hist_item_id"] == manifest["vocabularies"]["item_id"]


@pytest.mark.parametrize("case", ["collisionless", "hashing", "unified"])
def test_torchrec_sharding_refuses_shared_rows(case):
    pytest.importorskip("torchrec")
    from featmux.distributed import TorchRecEmbedding

    with pytest.raises(ValueError, match="does not support shared rows"):
        TorchRecEmbedding(layer(case))
